"""The project's custom TFX artifact types, importable by their type names (`tfxlm.Vocabulary`).

On Kubeflow Pipelines v2, TFX's container entrypoint recovers a custom artifact's Python class
by importing its schema title, which KubeflowV2DagRunner sets to the artifact's TYPE_NAME. So
every custom TYPE_NAME `tfxlm.<Name>` must resolve to a class here.
"""

from components.vocabulary import VocabularyArtifact as Vocabulary  # noqa: F401
