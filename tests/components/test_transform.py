"""The Transform component: its custom_config comes from the Trainer's own config."""

import json
import logging

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing import util as beam_testing
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx import types
from tfx.types import standard_artifacts
from tfx_bsl.tfxio import tf_example_record

from components import example_encoding, tfrecord_files, tfrecords, transform
from components.errors import DataError
from components.vocabulary import VocabularyArtifact
from pipeline import local_runner
from tfxlm import contract
from trainer.config import TrainerConfig


def _transform(config, pretrain_config=None, **options):
  return transform.create_transform(
    types.Channel(type=standard_artifacts.Examples),
    types.Channel(type=standard_artifacts.Schema),
    types.Channel(type=VocabularyArtifact),
    trainer_config=config,
    pretrain_config=pretrain_config,
    **options,
  )


@pytest.mark.parametrize('task', contract.TASKS)
def test_task_and_seq_len_are_the_trainer_configs(task):
  config = TrainerConfig(task=task, seq_len=24, learning_rate=1e-3)
  component = _transform(config)
  assert json.loads(component.exec_properties['custom_config']) == {
    contract.TASK_KEY: task,
    contract.SEQ_LEN_KEY: 24,
  }
  assert component.exec_properties['preprocessing_fn'] == contract.PREPROCESSING_FN


def test_training_hyperparameters_do_not_change_the_transform():
  base = TrainerConfig(task='classify', seq_len=32)
  tuned = TrainerConfig(task='classify', seq_len=32, learning_rate=1e-5, train_steps=7)
  assert (
    _transform(base).exec_properties['custom_config']
    == _transform(tuned).exec_properties['custom_config']
  )


@pytest.mark.parametrize('compression', contract.TFRECORD_COMPRESSIONS)
def test_output_compression_is_an_exec_property(compression):
  component = transform.create_transform(
    types.Channel(type=standard_artifacts.Examples),
    types.Channel(type=standard_artifacts.Schema),
    types.Channel(type=VocabularyArtifact),
    trainer_config=TrainerConfig(task='mlm'),
    compression=compression,
  )
  assert component.exec_properties[transform.COMPRESSION_KEY] == compression


def test_unknown_compression_is_refused_naming_the_choices():
  with pytest.raises(ValueError, match="'zstd' is not one of none, gzip"):
    transform.create_transform(
      types.Channel(type=standard_artifacts.Examples),
      types.Channel(type=standard_artifacts.Schema),
      types.Channel(type=VocabularyArtifact),
      trainer_config=TrainerConfig(task='mlm'),
      compression='zstd',
    )


def test_analysis_reads_records_only_for_the_columns_its_analyzers_need(tmp_path):
  """A dataset to analyze, projected to no column (mlm, clm), is not read; else it is."""
  path = str(tmp_path / 'data')
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(5):
      writer.write(example_encoding.make_example(f'text {i}', str(i % 2)))
  schema = schema_pb2.Schema()
  for name in (contract.TEXT_KEY, contract.LABEL_KEY):
    schema.feature.add(name=name, type=schema_pb2.BYTES)
  source = transform._AnalysisTFXIO(
    tf_example_record.TFExampleRecord(path, schema=schema, telemetry_descriptors=['test'])
  )
  for columns, rows in (([], 0), ([contract.LABEL_KEY], 5), ([contract.TEXT_KEY], 5)):
    with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
      counted = (
        pipeline
        | source.Project(columns).BeamSource()
        | beam.Map(lambda batch: batch.num_rows)
        | beam.CombineGlobally(sum)
      )
      beam_testing.assert_that(counted, beam_testing.equal_to([rows]))


@pytest.mark.parametrize('pretrain_task', [contract.MLM, contract.CLM])
@pytest.mark.parametrize('task', contract.TASKS)
def test_a_transform_serving_pretraining_too_adds_the_lm_features_to_classify_only(
  task, pretrain_task
):
  config = TrainerConfig(task=task, seq_len=24)
  pretrain = TrainerConfig(task=pretrain_task, seq_len=64, learning_rate=1e-2)
  custom = json.loads(_transform(config, pretrain).exec_properties['custom_config'])
  # The pretraining stage's own hyperparameters (its seq_len included) do not reach Transform:
  # its Trainer packs the pieces into its own windows.
  expected = {contract.TASK_KEY: task, contract.SEQ_LEN_KEY: 24}
  if task == contract.CLASSIFY:
    expected[contract.LM_FEATURES_KEY] = True
  assert custom == expected


def test_a_classify_pretraining_stage_is_refused():
  config = TrainerConfig(task=contract.CLASSIFY, seq_len=24)
  with pytest.raises(ValueError, match='pretrain_config: task must be mlm or clm'):
    _transform(config, TrainerConfig(task=contract.CLASSIFY, seq_len=24))


@pytest.mark.parametrize('compression', contract.TFRECORD_COMPRESSIONS)
def test_records_written_a_list_at_a_time_are_the_files_a_per_record_write_makes(
  tmp_path, compression
):
  # Transform writes its examples a list (one RecordBatch) at a time; readers must see the same
  # files, names and records (checksums included) as Beam's per-record TFRecord writer makes.
  # Lengths from 0 to past the cached headers' (tfrecords._CACHED_HEADER_LENGTHS), repeated.
  batches = [[b'', b'a', b'\x00' * 300], [], [bytes(range(256)) * 40, 'é'.encode(), b'b']]
  batches.append([b'\x01' * (1 << 16), b'\x02' * ((1 << 16) - 1), b'\x03' * 300])
  with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
    lists = pipeline | beam.Create([batches], reshuffle=False) | beam.FlatMap(lambda b: b)
    _ = lists | 'Lists' >> tfrecord_files.write_batches(str(tmp_path / 'lists'), compression)
    _ = (
      lists
      | beam.FlatMap(lambda records: records)
      | 'Records' >> tfrecord_files.write(str(tmp_path / 'records'), compression)
    )
  written = {}
  for name in ('lists', 'records'):
    [path] = tmp_path.glob(f'{name}-*')
    assert path.name == f'{name}-00000-of-00001{tfrecords.suffix(compression)}'
    dataset = tf.data.TFRecordDataset(
      str(path), compression_type='GZIP' if compression == contract.GZIP else ''
    )
    written[name] = [record.numpy() for record in dataset]
  assert written['lists'] == [record for batch in batches for record in batch]
  assert written['records'] == written['lists']


def _examples_artifact(tmp_path, splits):
  """An Examples artifact of gzip TFRecord files, one per split, of (text, label) rows."""
  artifact = standard_artifacts.Examples()
  artifact.uri = str(tmp_path / 'examples')
  artifact.split_names = json.dumps(sorted(splits))
  for split, labels in splits.items():
    folder = tmp_path / 'examples' / f'Split-{split}'
    folder.mkdir(parents=True)
    options = tf.io.TFRecordOptions(compression_type='GZIP')
    with tf.io.TFRecordWriter(str(folder / 'data-00000-of-00001.gz'), options) as writer:
      for i, label in enumerate(labels):
        writer.write(example_encoding.make_example(f'text {i}', label))
  return artifact


def test_an_eval_label_without_training_rows_is_refused_naming_it_and_its_count(tmp_path):
  vocab = tmp_path / 'label_vocab'
  vocab.write_bytes(b'neg\npos\n')
  examples = _examples_artifact(
    tmp_path, {'train': ['pos', 'neg', 'odd'], 'eval': ['pos', 'café', 'café', 'neg']}
  )
  with pytest.raises(DataError, match=r"eval split has labels .*'café' \(2 rows\).*add training"):
    transform.check_labels_trained(examples, str(vocab))
  vocab.write_bytes('café\nneg\npos\n'.encode())
  transform.check_labels_trained(examples, str(vocab))  # the train split is not checked


def test_the_label_domain_is_read_from_the_schema_feature_or_a_named_domain(tmp_path):
  schema = schema_pb2.Schema()
  schema.feature.add(name=contract.TEXT_KEY, type=schema_pb2.BYTES)
  label = schema.feature.add(name=contract.LABEL_KEY, type=schema_pb2.BYTES)
  path = tmp_path / 'schema.pbtxt'
  path.write_text(str(schema))
  assert transform.label_domain(str(tmp_path)) == ()
  label.domain = 'label'
  schema.string_domain.add(name='label', value=['b', 'a'])
  path.write_text(str(schema))
  assert transform.label_domain(str(tmp_path)) == ('b', 'a')


def test_the_models_labels_are_label_values_and_the_schema_domain_sorted(tmp_path):
  schema = schema_pb2.Schema()
  schema.feature.add(name=contract.TEXT_KEY, type=schema_pb2.BYTES)
  label = schema.feature.add(name=contract.LABEL_KEY, type=schema_pb2.BYTES)
  (tmp_path / 'schema.pbtxt').write_text(str(schema))
  # No domain: data.label_values alone are the labels, rows of them or not.
  assert transform.model_labels(['rotten', 'fresh', 'plot'], str(tmp_path)) == [
    'fresh',
    'plot',
    'rotten',
  ]
  label.string_domain.value[:] = ['rotten', 'fresh']
  (tmp_path / 'schema.pbtxt').write_text(str(schema))
  assert transform.model_labels([], str(tmp_path)) == ['fresh', 'rotten']
  assert transform.model_labels(['rotten', 'fresh'], str(tmp_path)) == ['fresh', 'rotten']
  component = _transform(TrainerConfig(task=contract.CLASSIFY), label_values=['rotten', 'fresh'])
  custom_config = json.loads(component.exec_properties['custom_config'])
  assert custom_config[transform.LABEL_DOMAIN_KEY] == ['rotten', 'fresh']
  lm = _transform(TrainerConfig(task=contract.MLM), label_values=['rotten', 'fresh'])
  assert transform.LABEL_DOMAIN_KEY not in json.loads(lm.exec_properties['custom_config'])


def _statistics_artifact(tmp_path, labels, unique=None, eval_labels=None):
  """An ExampleStatistics artifact whose train split counts `labels` (label -> rows), and whose
  eval split counts `eval_labels` (None: no statistics of the eval split)."""
  artifact = standard_artifacts.ExampleStatistics()
  artifact.uri = str(tmp_path / 'statistics')
  artifact.split_names = json.dumps(['train', 'eval'])
  for split, counts in (('train', labels), ('eval', eval_labels)):
    if counts is None:
      continue
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=sum(counts.values()))
    feature = dataset.features.add()
    feature.path.step.append(contract.LABEL_KEY)
    feature.string_stats.unique = len(counts) if unique is None else unique
    for rank, (label, count) in enumerate(counts.items()):
      feature.string_stats.rank_histogram.buckets.add(
        low_rank=rank, high_rank=rank, label=label, sample_count=count
      )
    (tmp_path / 'statistics' / f'Split-{split}').mkdir(parents=True)
    (tmp_path / 'statistics' / f'Split-{split}' / 'FeatureStats.pb').write_bytes(
      stats.SerializeToString()
    )
  return artifact


def test_labels_without_training_rows_are_one_warning_the_run_summary_lists(tmp_path):
  vocab = tmp_path / 'label_vocab'
  vocab.write_bytes('café\nneg\npos\nzz\n'.encode())
  collector = local_runner.WarningCollector(lambda: contract.TRANSFORM_ID)
  logging.getLogger().addHandler(collector)
  try:
    transform.warn_labels_without_rows(
      _statistics_artifact(tmp_path / 'all', {'pos': 3, 'neg': 1}), str(vocab)
    )
    # More labels than the histogram's buckets: it cannot tell which have no rows.
    transform.warn_labels_without_rows(
      _statistics_artifact(tmp_path / 'part', {'pos': 3, 'neg': 1}, unique=1001), str(vocab)
    )
    vocab.write_bytes(b'neg\npos\n')
    transform.warn_labels_without_rows(
      _statistics_artifact(tmp_path / 'none', {'pos': 3, 'neg': 1}), str(vocab)
    )
  finally:
    logging.getLogger().removeHandler(collector)
  (message,) = collector.messages
  assert message.startswith("Transform: the train split has no rows labeled 'café', 'zz': ")
  assert 'add training rows' in message
  assert "the schema's label domain (data.schema_dir)" in message and 'data.label_values' in message
  assert collector.by_component == {contract.TRANSFORM_ID: [message]}


def test_a_train_split_of_one_label_is_refused_before_the_analysis(tmp_path):
  """With a schema domain of two labels, a train split of one used to train, score 1.0 on an
  eval split of that label too, and be blessed and pushed."""
  with pytest.raises(DataError) as error:
    transform.check_train_labels(_statistics_artifact(tmp_path / 'one', {'pos': 300}))
  assert str(error.value) == (
    "the train split has rows of one label only ('pos', 300 rows): a classifier needs rows of "
    'two labels or more to learn anything. What to do: add training rows of the other labels, '
    'or check data.label_column and data.label_values'
  )
  transform.check_train_labels(_statistics_artifact(tmp_path / 'two', {'pos': 299, 'neg': 1}))
  # More labels than the histogram's buckets: it cannot tell, so it lets the run go on.
  transform.check_train_labels(_statistics_artifact(tmp_path / 'many', {'pos': 3}, unique=1001))


def test_train_labels_without_eval_rows_are_one_warning_naming_the_split(tmp_path):
  vocab = tmp_path / 'label_vocab'
  vocab.write_bytes(b'neg\npos\n')
  collector = local_runner.WarningCollector(lambda: contract.TRANSFORM_ID)
  logging.getLogger().addHandler(collector)
  try:
    transform.warn_labels_without_rows(
      _statistics_artifact(tmp_path / 'absent', {'pos': 99, 'neg': 4}, eval_labels={'pos': 11}),
      str(vocab),
    )
    transform.warn_labels_without_rows(
      _statistics_artifact(
        tmp_path / 'both', {'pos': 99, 'neg': 4}, eval_labels={'pos': 9, 'neg': 1}
      ),
      str(vocab),
    )
  finally:
    logging.getLogger().removeHandler(collector)
  (message,) = collector.messages
  assert collector.by_component == {contract.TRANSFORM_ID: [message]}
  assert message.startswith(
    "Transform: the eval split lacks labels of the train split: 'neg' (4 train rows); the "
    'evaluation says nothing of them. What to do: add rows with these labels, or change '
    'data.train_eval_ratio'
  )
