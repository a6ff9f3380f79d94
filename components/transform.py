"""Transform with the Vocabulary as a real input channel.

The stock Transform takes `custom_config` as a JSON string fixed when the pipeline is built, so the
vocabulary's URI cannot go there as a placeholder (it does not compile for Kubeflow V2; see
docs/runtime.md). This Transform's spec has one more input, `vocabulary`, and its executor writes that
artifact's URI into `custom_config['vocab_uri']` before running the stock executor.
"""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import transform_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import json_utils

from components.vocabulary import VocabularyArtifact
from tfxlm import contract
from trainer.config import TrainerConfig

VOCABULARY_KEY = 'vocabulary'


class TransformSpec(component_spec.ComponentSpec):
  """The stock TransformSpec plus the `vocabulary` input."""

  PARAMETERS = standard_component_specs.TransformSpec.PARAMETERS
  INPUTS = {
    **standard_component_specs.TransformSpec.INPUTS,
    VOCABULARY_KEY: component_spec.ChannelParameter(type=VocabularyArtifact),
  }
  OUTPUTS = standard_component_specs.TransformSpec.OUTPUTS


class Executor(transform_executor.Executor):
  """Puts the vocabulary URI into custom_config, then runs the stock Transform executor."""

  def Do(
    self,
    input_dict: dict[str, list[types.Artifact]],  # noqa: N802 (TFX API)
    output_dict: dict[str, list[types.Artifact]],
    exec_properties: dict[str, Any],
  ) -> None:
    input_dict = dict(input_dict)
    vocabulary = artifact_utils.get_single_instance(input_dict.pop(VOCABULARY_KEY))
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    # Arrives as the JSON text 'null' when unset.
    config = json_utils.loads(exec_properties.get(key) or 'null') or {}
    config[contract.VOCAB_URI_KEY] = vocabulary.uri
    exec_properties = {**exec_properties, key: json_utils.dumps(config)}
    super().Do(input_dict, output_dict, exec_properties)


class Transform(base_beam_component.BaseBeamComponent):
  """TFX Transform whose preprocessing_fn receives the Vocabulary artifact's URI."""

  SPEC_CLASS = TransformSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(
    self,
    *,
    examples: types.BaseChannel,
    schema: types.BaseChannel,
    vocabulary: types.BaseChannel,
    preprocessing_fn: str,
    custom_config: dict[str, Any],
    splits_config: transform_pb2.SplitsConfig | None = None,
    disable_statistics: bool = True,
  ):
    spec = TransformSpec(
      examples=examples,
      schema=schema,
      vocabulary=vocabulary,
      preprocessing_fn=preprocessing_fn,
      force_tf_compat_v1=0,
      splits_config=splits_config,
      custom_config=json_utils.dumps(custom_config),
      disable_statistics=int(disable_statistics),
      transform_graph=types.Channel(type=standard_artifacts.TransformGraph),
      transformed_examples=_examples_channel(),
      # The only analyzer is the label vocabulary: a cache would not pay for itself.
      updated_analyzer_cache=None,
      **({} if disable_statistics else _statistics_channels()),
    )
    super().__init__(spec=spec)


def _examples_channel() -> types.Channel:
  channel = types.Channel(type=standard_artifacts.Examples)
  channel.matching_channel_name = 'examples'
  return channel


def _statistics_channels() -> dict[str, types.Channel]:
  return {
    'pre_transform_schema': types.Channel(type=standard_artifacts.Schema),
    'pre_transform_stats': types.Channel(type=standard_artifacts.ExampleStatistics),
    'post_transform_schema': types.Channel(type=standard_artifacts.Schema),
    'post_transform_stats': types.Channel(type=standard_artifacts.ExampleStatistics),
    'post_transform_anomalies': types.Channel(type=standard_artifacts.ExampleAnomalies),
  }


def create_transform(
  examples: types.BaseChannel,
  schema: types.BaseChannel,
  vocabulary: types.BaseChannel,
  *,
  trainer_config: TrainerConfig,
  pretrain_config: TrainerConfig | None = None,
  preprocessing_fn: str = contract.PREPROCESSING_FN,
  splits_config: transform_pb2.SplitsConfig | None = None,
  disable_statistics: bool = True,
) -> Transform:
  """Creates the Transform that tokenizes with the learned vocabulary.

  Args:
    examples: ExampleGen's examples.
    schema: The raw data schema (ImportSchemaGen's).
    vocabulary: The Vocabulary component's 'vocabulary' output.
    trainer_config: The config of the Trainer that consumes this Transform's output: its task
      selects the transformed features and its seq_len the classification length (see
      trainer/preprocessing.py), so the two stages cannot disagree.
    pretrain_config: The pretraining stage's config when this Transform serves its Trainer too
      (it reads the same examples with the same vocabulary): a classify Transform then also
      outputs the mlm/clm pieces (`lm_token_ids`), so the examples are read, tokenized and
      written once for both stages. An mlm/clm Transform already outputs them.
    preprocessing_fn: Dotted path of the preprocessing function.
    splits_config: Which splits to analyze and transform; None: analyze 'train',
      transform every split.
    disable_statistics: Skip TFDV statistics of the pre/post-transform data (StatisticsGen
      already describes the raw data; token-id statistics cost a full pass and say little).

  Returns:
    The component; outputs 'transform_graph' and 'transformed_examples'.

  Raises:
    ValueError: if `pretrain_config` is not an mlm or clm stage.
  """
  custom_config = trainer_config.transform_custom_config()
  if pretrain_config is not None:
    if pretrain_config.task == contract.CLASSIFY:
      raise ValueError(
        f'pretrain_config: task must be {contract.MLM} or {contract.CLM}, got {contract.CLASSIFY}'
      )
    if trainer_config.task == contract.CLASSIFY:
      custom_config[contract.LM_FEATURES_KEY] = True
  return Transform(
    examples=examples,
    schema=schema,
    vocabulary=vocabulary,
    preprocessing_fn=preprocessing_fn,
    custom_config=custom_config,
    splits_config=splits_config,
    disable_statistics=disable_statistics,
  )
