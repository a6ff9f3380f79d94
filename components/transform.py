"""Transform with the Vocabulary as a real input channel, its output compression chosen, and no
data read for an analysis that needs none.

The stock Transform takes `custom_config` as a JSON string fixed when the pipeline is built, so the
vocabulary's URI cannot go there as a placeholder (it does not compile for Kubeflow V2; see
docs/runtime.md). This Transform's spec has one more input, `vocabulary`, and its executor writes that
artifact's URI into `custom_config['vocab_uri']` before running the stock executor.

Two changes to the stock executor's Beam job, made through the hooks of
`components.tfx_internals.TransformProcessor`:
  * the transformed examples are written with the `compression` exec property ('none' or 'gzip';
    TFX 1.21 always gzips), and the artifact records it (components/tfrecord_files.py);
  * when the preprocessing_fn's analyzers read no input column (mlm and clm: tokenizing needs no
    analysis), the analysis reads no records: the stock job reads the analyzed splits once for
    the analysis, with every column projected away, and again to transform them.

For classification, the executor also adds the schema's label domain to the labels in
`custom_config` (`data.label_values`): every one of them gets an id, trained on or not. Afterwards
it refuses a split (eval) holding a label the label vocabulary lacks: the model would have no
output for it, and the Evaluator would fail on it after the whole training. With StatisticsGen's
statistics as input, it also warns of the labels of the vocabulary that the train split has no
rows of (the model has outputs for them that it never trained), and of the train split's labels
an eval split has no rows of (the evaluation says nothing of them).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import transform_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import io_utils, json_utils
from tfx_bsl.coders import example_coder
from tfx_bsl.tfxio import tfxio

from components import beam_specs, tfrecord_files, tfrecords, tfx_internals
from components.errors import DataError
from components.vocabulary import VocabularyArtifact
from tfxlm import contract
from trainer.config import TrainerConfig
from trainer.preprocessing import LABEL_DOMAIN_KEY

beam_specs.install()  # Beam DoFn specs read once per kind of DoFn

VOCABULARY_KEY = 'vocabulary'
STATISTICS_KEY = 'statistics'  # optional: StatisticsGen's, for the train split's label counts
TRAIN_SPLIT = 'train'  # the split the label vocabulary is learned from (the stock default)
COMPRESSION_KEY = 'compression'  # of the transformed examples: a contract.TFRECORD_COMPRESSIONS


class TransformSpec(component_spec.ComponentSpec):
  """The stock TransformSpec plus the `vocabulary` input and the optional `statistics` one."""

  PARAMETERS = {
    **standard_component_specs.TransformSpec.PARAMETERS,
    COMPRESSION_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {
    **standard_component_specs.TransformSpec.INPUTS,
    VOCABULARY_KEY: component_spec.ChannelParameter(type=VocabularyArtifact),
    STATISTICS_KEY: component_spec.ChannelParameter(
      type=standard_artifacts.ExampleStatistics, optional=True
    ),
  }
  OUTPUTS = standard_component_specs.TransformSpec.OUTPUTS


class _NoRecordBatches(beam.PTransform):
  """An empty PCollection of RecordBatches, in place of a read."""

  def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
    return pipeline | 'NoRecords' >> beam.Create([]).with_output_types(pa.RecordBatch)


class _AnalysisTFXIO(tfxio.TFXIO):
  """The TFXIO of a dataset to analyze: reads nothing once projected to no column.

  The stock job projects the analyzed datasets to the columns the analyzers read (the same
  test decides TFX's in-place Transform), then reads them whatever the projection.
  """

  def __init__(self, source: tfxio.TFXIO, reads: bool = True):
    self._source = source
    self._reads = reads

  def BeamSource(self, batch_size: int | None = None) -> beam.PTransform:  # noqa: N802 (TFXIO API)
    return self._source.BeamSource(batch_size) if self._reads else _NoRecordBatches()

  def RecordBatches(self, options: Any) -> Iterator[pa.RecordBatch]:  # noqa: N802 (TFXIO API)
    return self._source.RecordBatches(options) if self._reads else iter(())

  def ArrowSchema(self) -> pa.Schema:  # noqa: N802 (TFXIO API)
    return self._source.ArrowSchema()

  def TensorRepresentations(self) -> dict[str, Any]:  # noqa: N802 (TFXIO API)
    return self._source.TensorRepresentations()

  def TensorFlowDataset(self, options: Any) -> Any:  # noqa: N802 (TFXIO API)
    return self._source.TensorFlowDataset(options)

  def _ProjectImpl(self, tensor_names: list[str]) -> tfxio.TFXIO:  # noqa: N802 (TFXIO API)
    return _AnalysisTFXIO(self._source.Project(tensor_names), reads=bool(tensor_names))


class _EncodeExamples(beam.DoFn):
  """A transformed RecordBatch to the list of its serialized tf.Examples (TFX's internal key
  column left out, as TFX leaves it out)."""

  def __init__(self, schema: Any):
    self._encoder = example_coder.RecordBatchToExamplesEncoder(schema)

  def process(self, data_batch: tuple[pa.RecordBatch, dict[str, pa.Array]]) -> Iterator[list]:
    record_batch, _ = data_batch
    yield self._encoder.encode(tfx_internals.without_key_column(record_batch))


def _processor(compression: str) -> type[tfx_internals.TransformProcessor]:
  """The stock TransformProcessor, writing `compression` and skipping needless analysis reads."""

  class Processor(tfx_internals.TransformProcessor):
    def __init__(self):
      super().__init__()
      self._analyzed: list[Any] = []

    def encode_and_write(self, schema: Any, file_format: str, output_path: str) -> beam.PTransform:
      # file_format is the input's ('tfrecords_gzip' for TFRecord files of any compression).
      del file_format
      # A list of serialized examples per RecordBatch, written a list at a time: TFX's
      # (key, example) pair per example, then Values(), then a per-record write, cost three
      # Python steps per example.
      return 'EncodeAndSerialize' >> beam.ParDo(_EncodeExamples(schema)) | (
        'WriteToTFRecord' >> tfrecord_files.write_batches(output_path, compression)
      )

    def made_datasets(self, datasets: list[Any], materialized: bool) -> None:
      # The datasets to transform are materialized (this component always writes its
      # transformed examples); the others are the datasets to analyze.
      if not materialized:
        self._analyzed.extend(datasets)

    def tfxio_for(self, dataset: Any, source: tfxio.TFXIO) -> tfxio.TFXIO:
      analyzed = any(dataset is d for d in self._analyzed)
      return _AnalysisTFXIO(source) if analyzed else source

  return Processor


class Executor(transform_executor.Executor):
  """Puts the vocabulary URI into custom_config, then runs the stock Transform executor with
  the output compression and the analysis reads described in the module docstring."""

  def Do(
    self,
    input_dict: dict[str, list[types.Artifact]],  # noqa: N802 (TFX API)
    output_dict: dict[str, list[types.Artifact]],
    exec_properties: dict[str, Any],
  ) -> None:
    input_dict = dict(input_dict)
    vocabulary = artifact_utils.get_single_instance(input_dict.pop(VOCABULARY_KEY))
    statistics = input_dict.pop(STATISTICS_KEY, None)
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    # Arrives as the JSON text 'null' when unset.
    config = json_utils.loads(exec_properties.get(key) or 'null') or {}
    config[contract.VOCAB_URI_KEY] = vocabulary.uri
    classify = config.get(contract.TASK_KEY) == contract.CLASSIFY
    if classify:
      schema = artifact_utils.get_single_instance(input_dict[standard_component_specs.SCHEMA_KEY])
      config[LABEL_DOMAIN_KEY] = model_labels(config.get(LABEL_DOMAIN_KEY, ()), schema.uri)
      if statistics:
        check_train_labels(artifact_utils.get_single_instance(statistics))
    exec_properties = {**exec_properties, key: json_utils.dumps(config)}
    compression = tfrecords.check(exec_properties.pop(COMPRESSION_KEY))
    with tfx_internals.running(_processor(compression)):
      super().Do(input_dict, output_dict, exec_properties)
    for artifact in output_dict[standard_component_specs.TRANSFORMED_EXAMPLES_KEY]:
      tfrecord_files.mark(artifact, compression)
    if classify:
      graph = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.TRANSFORM_GRAPH_KEY]
      )
      examples = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.EXAMPLES_KEY]
      )
      label_vocab = tft.TFTransformOutput(graph.uri).vocabulary_file_by_name(
        contract.LABEL_VOCAB_NAME
      )
      check_labels_trained(examples, label_vocab)
      if statistics:
        warn_labels_without_rows(artifact_utils.get_single_instance(statistics), label_vocab)


def label_domain(schema_uri: str) -> tuple[str, ...]:
  """The string domain of the `label` feature of the schema in folder `schema_uri` (empty: none)."""
  schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_uri))
  for feature in schema.feature:
    if feature.name != contract.LABEL_KEY:
      continue
    if feature.HasField('string_domain'):
      return tuple(feature.string_domain.value)
    for domain in schema.string_domain:
      if domain.name == feature.domain:
        return tuple(domain.value)
  return ()


def model_labels(label_values: Sequence[str], schema_uri: str) -> list[str]:
  """The labels that each get an id, trained on or not: `label_values` (`data.label_values`) and
  the label domain of the schema in folder `schema_uri`, sorted as the label vocabulary is."""
  return sorted({*label_values, *label_domain(schema_uri)})


def unknown_labels(files: Sequence[str], known: set[bytes]) -> collections.Counter:
  """The labels of the tf.Examples in the TFRecord `files` that are not in `known`, counted."""
  counts: collections.Counter = collections.Counter()
  spec = {contract.LABEL_KEY: tf.io.VarLenFeature(tf.string)}
  for path in files:
    records = tf.data.TFRecordDataset(
      path, compression_type='GZIP' if path.endswith(contract.GZIP_SUFFIX) else ''
    )
    for batch in records.batch(4096):
      labels = tf.io.parse_example(batch, spec)[contract.LABEL_KEY].values.numpy()
      counts.update(label for label in labels.tolist() if label not in known)
  return counts


def check_labels_trained(examples: types.Artifact, label_vocab: str) -> None:
  """Raises a DataError naming the first split (other than train) with labels outside the label
  vocabulary file `label_vocab` (the train split's labels and the schema's label domain).

  Raises:
    DataError: naming the split, the labels and their counts, and what to do.
  """
  with tf.io.gfile.GFile(label_vocab, 'rb') as f:
    known = set(f.read().splitlines())
  for split in artifact_utils.decode_split_names(examples.split_names):
    if split == TRAIN_SPLIT:
      continue
    folder = artifact_utils.get_split_uri([examples], split)
    files = sorted(tf.io.gfile.glob(f'{folder}/*'))
    counts = unknown_labels(files, known)
    if not counts:
      continue
    shown = ', '.join(
      f'{label.decode(errors="replace")!r} ({count} row{"s" if count > 1 else ""})'
      for label, count in counts.most_common(8)
    )
    raise DataError(
      f'the {split} split has labels the train split has no rows of: {shown}; the model would '
      f'have no output for them. What to do: add training rows with these labels, or list '
      "every label in the schema's label domain (a copy of schemas/labeled, data.schema_dir)"
    )


def label_counts(statistics: types.Artifact, split: str) -> dict[str, int] | None:
  """The rows of each label in split `split` of the ExampleStatistics `statistics`, or None when
  the statistics do not count every label (more labels than their histogram's buckets)."""
  path = f'{artifact_utils.get_split_uri([statistics], split)}/FeatureStats.pb'
  if not tf.io.gfile.exists(path):
    return None
  stats = statistics_pb2.DatasetFeatureStatisticsList()
  with tf.io.gfile.GFile(path, 'rb') as f:
    stats.ParseFromString(f.read())
  for dataset in stats.datasets:
    for feature in dataset.features:
      if list(feature.path.step) != [contract.LABEL_KEY] and feature.name != contract.LABEL_KEY:
        continue
      string_stats = feature.string_stats
      buckets = string_stats.rank_histogram.buckets
      if len(buckets) < string_stats.unique:
        return None
      return {bucket.label: int(bucket.sample_count) for bucket in buckets}
    return {}  # no example of the split has a label
  return None


def check_train_labels(statistics: types.Artifact) -> None:
  """Raises a DataError when the train split of the ExampleStatistics `statistics` has rows of
  fewer than two labels (a classifier learns nothing from one; with a schema domain listing
  more, the run would otherwise train, score 1.0 on such an eval split, and be blessed).

  Raises:
    DataError: naming the split, its labels and their counts, and what to do.
  """
  counts = label_counts(statistics, TRAIN_SPLIT)
  if counts is None:
    return
  labels = {label: count for label, count in counts.items() if label}
  if len(labels) >= 2:
    return
  found = ''.join(f'rows of one label only ({label!r}, {n} rows)' for label, n in labels.items())
  raise DataError(
    f'the {TRAIN_SPLIT} split has {found or "no labeled rows"}: a classifier needs rows of two '
    'labels or more to learn anything. What to do: add training rows of the other labels, or '
    'check data.label_column and data.label_values'
  )


def warn_labels_without_rows(statistics: types.Artifact, label_vocab: str) -> None:
  """Logs one warning naming the labels of the vocabulary file `label_vocab` that the train split
  of the ExampleStatistics `statistics` has no rows of, and one per other split (eval) naming
  the train split's labels it has no rows of (nothing when the statistics cannot tell)."""
  counts = label_counts(statistics, TRAIN_SPLIT)
  if counts is None:
    return
  for split in artifact_utils.decode_split_names(statistics.split_names):
    split_counts = label_counts(statistics, split) if split != TRAIN_SPLIT else None
    if split_counts is None:
      continue
    absent = [label for label in counts if label and label not in split_counts]
    if absent:
      logging.warning(
        'Transform: the %s split lacks labels of the %s split: %s; the evaluation says nothing '
        'of them. What to do: add rows with these labels, or change data.train_eval_ratio (or '
        'move some into %s/ when the input is pre-split)',
        split,
        TRAIN_SPLIT,
        ', '.join(f'{label!r} ({counts[label]} train rows)' for label in absent),
        split,
      )
  with tf.io.gfile.GFile(label_vocab, 'rb') as f:
    labels = f.read().decode('utf-8', errors='replace').splitlines()
  # An empty label stands for rows without one, which the statistics leave out.
  missing = [label for label in labels if label and label not in counts]
  if missing:
    logging.warning(
      'Transform: the %s split has no rows labeled %s: the model has an output for each that '
      'it never learns. What to do: add training rows with these labels, or remove them from '
      "the schema's label domain (data.schema_dir) and from data.label_values if listed there",
      TRAIN_SPLIT,
      ', '.join(repr(label) for label in missing),
    )


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
    statistics: types.BaseChannel | None = None,
    splits_config: transform_pb2.SplitsConfig | None = None,
    disable_statistics: bool = True,
    compression: str = contract.NO_COMPRESSION,
  ):
    spec = TransformSpec(
      examples=examples,
      schema=schema,
      vocabulary=vocabulary,
      statistics=statistics,
      preprocessing_fn=preprocessing_fn,
      force_tf_compat_v1=0,
      splits_config=splits_config,
      custom_config=json_utils.dumps(custom_config),
      disable_statistics=int(disable_statistics),
      compression=tfrecords.check(compression),
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
  compression: str = contract.NO_COMPRESSION,
  label_values: Sequence[str] = (),
  statistics: types.BaseChannel | None = None,
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
    compression: Of the transformed examples' TFRecord files: 'none' or 'gzip' (files *.gz).
    label_values: For classification, labels that each get an id in the label vocabulary, with
      or without training rows (`data.label_values`), as the schema's label domain does.
    statistics: StatisticsGen's statistics of `examples`: with them, a classify Transform warns
      of the labels of its vocabulary that the train split has no rows of.

  Returns:
    The component; outputs 'transform_graph' and 'transformed_examples'.

  Raises:
    ValueError: if `pretrain_config` is not an mlm or clm stage.
  """
  custom_config = trainer_config.transform_custom_config()
  if label_values and trainer_config.task == contract.CLASSIFY:
    custom_config[LABEL_DOMAIN_KEY] = list(label_values)
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
    statistics=statistics,
    preprocessing_fn=preprocessing_fn,
    custom_config=custom_config,
    splits_config=splits_config,
    disable_statistics=disable_statistics,
    compression=compression,
  )
