"""The project's custom TFX artifact types.

On Kubeflow Pipelines v2, TFX's container entrypoint recovers a custom artifact's Python class by
importing its schema title, which KubeflowV2DagRunner sets to the artifact's TYPE_NAME: so each
TYPE_NAME here is `tfxlm.<Name>`, and `tfxlm/__init__.py` answers `tfxlm.<Name>` with the class.
"""

from tfx import types
from tfx.types.system_artifacts import Dataset


class VocabularyArtifact(types.Artifact):
  """A tokenizer vocabulary: vocab.txt, vocab.json and its kind's files
  (`trainer.vocabulary.Vocabulary` reads and writes them; components/vocabulary.py makes it)."""

  TYPE_NAME = 'tfxlm.Vocabulary'
  TYPE_ANNOTATION = Dataset
