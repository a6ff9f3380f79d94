"""The project's shared names (`tfxlm.contract`) and its custom TFX artifact types
(`tfxlm.artifacts`).

An artifact's TYPE_NAME `tfxlm.<Name>` must resolve to its class here: on Kubeflow Pipelines v2,
TFX's container entrypoint imports it by that name. The classes come from `tfxlm.artifacts` on
first use, so that importing `tfxlm.contract` stays free of TFX and TensorFlow.
"""


def __getattr__(name):
  if name == 'Vocabulary':
    from tfxlm import artifacts

    return artifacts.VocabularyArtifact
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
