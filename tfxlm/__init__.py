"""The project's shared names (`tfxlm.contract`) and its custom TFX artifact types.

On Kubeflow Pipelines v2, TFX's container entrypoint recovers a custom artifact's Python class
by importing its schema title, which KubeflowV2DagRunner sets to the artifact's TYPE_NAME. So
every custom TYPE_NAME `tfxlm.<Name>` must resolve to a class here. They load lazily, so that
importing `tfxlm.contract` stays free of TensorFlow.
"""

import importlib

_ARTIFACT_TYPES = {'Vocabulary': ('components.vocabulary', 'VocabularyArtifact')}


def __getattr__(name):
  if name in _ARTIFACT_TYPES:
    module, attr = _ARTIFACT_TYPES[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
