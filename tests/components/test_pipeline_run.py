"""Every ingestion format, the Vocabulary gate and Transform inside real LocalDagRunner pipelines.

The module's pipeline holds both forms of intermediate TFRecord files (`COMPRESSIONS`): gzipped
CSV examples feed StatisticsGen, a Vocabulary and an uncompressed-writing Transform; uncompressed
JSONL examples a Vocabulary and a gzip-writing Transform.
"""

import glob
import json
import logging
import os

import pytest
import tensorflow as tf
import tensorflow_transform as tft
import text_data
from ml_metadata.metadata_store import metadata_store
from tensorflow_metadata.proto.v0 import statistics_pb2

from components import example_gen, transform, vocabulary
from components.validation import DataError
from pipeline import baseline, local_runner
from pipeline.tfx_api import tfx
from tfxlm import contract
from trainer import inputs
from trainer.config import TrainerConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELED_SCHEMA = os.path.join(REPO, 'schemas', 'labeled', 'schema.pbtxt')
SEQ_LEN = 16
MULTI_PROCESSING = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
# (component id, output key) -> the compression it is built with.
COMPRESSIONS = {
  ('CsvExampleGen', 'examples'): contract.GZIP,
  ('Transform', 'transformed_examples'): contract.NO_COMPRESSION,
  ('JsonlExampleGen', 'examples'): contract.NO_COMPRESSION,
  ('ClmTransform', 'transformed_examples'): contract.GZIP,
}
GZIP_MAGIC = b'\x1f\x8b'


def _run(root, name, components):
  pipeline = tfx.dsl.Pipeline(
    pipeline_name=name,
    pipeline_root=os.path.join(root, 'root'),
    components=components,
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
      os.path.join(root, 'metadata.sqlite')
    ),
    beam_pipeline_args=local_runner.in_process_beam_args(),
  )
  tfx.orchestration.LocalDagRunner().run(pipeline)


def _uri(root, component_id, key):
  found = glob.glob(os.path.join(root, 'root', component_id, key, '*'))
  assert len(found) == 1, (component_id, key, found)
  return found[0]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """One pipeline: csv -> stats -> schema -> validator -> vocabulary -> transform (classify),
  jsonl -> SentencePiece vocabulary -> transform (clm), and the text and tfrecord ExampleGens."""
  root = str(tmp_path_factory.mktemp('pipeline'))
  data = os.path.join(root, 'data')
  rows = text_data.labeled_rows(120)
  text_data.write_csv(os.path.join(data, 'csv', 'reviews.csv'), rows, ['sentiment', 'review'])
  text_data.write_jsonl(
    os.path.join(data, 'jsonl', 'docs.jsonl'),
    [{'body': t, 'id': i} for i, t in enumerate(text_data.sentences(150, 1))],
  )
  for split, seed in (('train', 2), ('eval', 3)):
    lines = text_data.sentences(40, seed)
    text_data.write_text(os.path.join(data, 'text', split, 'a.txt'), lines[:20] + ['', '   '])
    text_data.write_text(os.path.join(data, 'text', split, 'b.txt'), lines[20:])
  text_data.write_tfrecord(
    os.path.join(data, 'tfrecord', 'part-0.tfrecord'),
    [{'content': t, 'y': 'pos'} for t in text_data.sentences(30, 4)],
  )

  csv_gen = example_gen.create_example_gen(
    'csv',
    os.path.join(data, 'csv'),
    text_column='review',
    label_column='sentiment',
    compression=COMPRESSIONS['CsvExampleGen', 'examples'],
  ).with_id('CsvExampleGen')
  stats = tfx.components.StatisticsGen(examples=csv_gen.outputs['examples'])
  schema = tfx.components.ImportSchemaGen(schema_file=LABELED_SCHEMA)
  validator = tfx.components.ExampleValidator(
    statistics=stats.outputs['statistics'], schema=schema.outputs['schema']
  )
  vocab = vocabulary.Vocabulary(
    examples=csv_gen.outputs['examples'],
    anomalies=validator.outputs['anomalies'],
    vocab_size=120,
    min_count=1,
  )
  classify = transform.create_transform(
    csv_gen.outputs['examples'],
    schema.outputs['schema'],
    vocab.outputs['vocabulary'],
    trainer_config=TrainerConfig(task='classify', seq_len=SEQ_LEN),
    compression=COMPRESSIONS['Transform', 'transformed_examples'],
    # '2' has no rows: listed (the pipeline's config check would also want it in the schema's
    # domain), it gets an id, and the train split's counts make Transform warn of it.
    label_values=['0', '1', '2'],
    statistics=stats.outputs['statistics'],
  ).with_beam_pipeline_args(MULTI_PROCESSING)

  jsonl_gen = example_gen.create_example_gen(
    'jsonl',
    os.path.join(data, 'jsonl'),
    jsonl_text_field='body',
    compression=COMPRESSIONS['JsonlExampleGen', 'examples'],
  ).with_id('JsonlExampleGen')
  corpus_schema = tfx.components.ImportSchemaGen(
    schema_file=os.path.join(REPO, 'schemas', 'corpus', 'schema.pbtxt')
  ).with_id('CorpusSchema')
  spm_vocab = vocabulary.Vocabulary(
    examples=jsonl_gen.outputs['examples'], vocab_size=60, kind='sentencepiece'
  ).with_id('SpmVocabulary')
  clm = transform.create_transform(
    jsonl_gen.outputs['examples'],
    corpus_schema.outputs['schema'],
    spm_vocab.outputs['vocabulary'],
    trainer_config=TrainerConfig(task='clm', seq_len=SEQ_LEN),
    compression=COMPRESSIONS['ClmTransform', 'transformed_examples'],
  ).with_id('ClmTransform')

  text_gen = example_gen.create_example_gen(
    'text',
    os.path.join(data, 'text'),
    input_splits={'train': 'train/*.txt', 'eval': 'eval/*.txt'},
    shuffle=False,
  ).with_id('TextExampleGen')
  tfrecord_gen = example_gen.create_example_gen(
    'tfrecord', os.path.join(data, 'tfrecord'), text_column='content', label_column='y'
  ).with_id('TFRecordExampleGen')

  warnings = local_runner.WarningCollector(lambda: None)
  logging.getLogger().addHandler(warnings)
  try:
    _run(
      root,
      'data-all-formats',
      [
        csv_gen,
        stats,
        schema,
        validator,
        vocab,
        classify,
        jsonl_gen,
        corpus_schema,
        spm_vocab,
        clm,
        text_gen,
        tfrecord_gen,
      ],
    )
  finally:
    logging.getLogger().removeHandler(warnings)
  store = metadata_store.MetadataStore(
    tfx.orchestration.metadata.sqlite_metadata_connection_config(
      os.path.join(root, 'metadata.sqlite')
    )
  )
  recorded = {
    artifact.uri: artifact.custom_properties[contract.TFRECORD_COMPRESSION_PROPERTY].string_value
    for artifact in store.get_artifacts_by_type('Examples')
  }
  return {
    'root': root,
    'rows': rows,
    'recorded_compression': recorded,
    'warnings': warnings.messages,
  }


def _records(files):
  return list(tf.data.TFRecordDataset(files, compression_type=inputs.compression_type(files)))


@pytest.mark.parametrize('component_id, key', sorted(COMPRESSIONS))
def test_intermediates_are_written_and_recorded_as_configured(run, component_id, key):
  compression = COMPRESSIONS[component_id, key]
  uri = _uri(run['root'], component_id, key)
  assert run['recorded_compression'][uri] == compression
  files = glob.glob(os.path.join(uri, 'Split-*', '*'))
  assert len(files) >= 2  # train and eval
  for path in files:
    with open(path, 'rb') as f:
      gzipped = f.read(2) == GZIP_MAGIC
    assert gzipped == (compression == contract.GZIP) == path.endswith(contract.GZIP_SUFFIX), path
  assert _records(files)


@pytest.mark.parametrize('transform_id', ['Transform', 'ClmTransform'])
def test_transform_and_trainer_input_read_either_form(run, transform_id):
  """Each Transform read every example of its (gzipped or not) input, and the Trainer's reader
  reads its (uncompressed or gzipped) output."""
  transformed = _uri(run['root'], transform_id, 'transformed_examples')
  gen_id = 'CsvExampleGen' if transform_id == 'Transform' else 'JsonlExampleGen'
  raw = _uri(run['root'], gen_id, 'examples')
  for split in ('train', 'eval'):
    written = _records(glob.glob(os.path.join(transformed, f'Split-{split}', '*')))
    assert len(written) == len(_records(glob.glob(os.path.join(raw, f'Split-{split}', '*'))))
  pattern = os.path.join(transformed, 'Split-train', '*')
  dataset = inputs.records_dataset([pattern], shuffle=False, seed=0, shuffle_buffer=1)
  train = _records(glob.glob(pattern))
  assert [r.numpy() for r in dataset.take(len(train))] == [r.numpy() for r in train]


@pytest.mark.parametrize('gen_id', ['CsvExampleGen', 'TFRecordExampleGen'])
def test_baseline_reads_either_form(run, gen_id):
  uri = _uri(run['root'], gen_id, 'examples')
  texts, labels = baseline.read_labeled(uri, 'train')
  assert len(texts) == len(labels) == len(text_data.read_examples(uri, 'train')) > 0


def test_statistics_of_gzipped_examples(run):
  stats = statistics_pb2.DatasetFeatureStatisticsList()
  uri = _uri(run['root'], 'StatisticsGen', 'statistics')
  with open(os.path.join(uri, 'Split-train', 'FeatureStats.pb'), 'rb') as f:
    stats.ParseFromString(f.read())
  examples = _uri(run['root'], 'CsvExampleGen', 'examples')
  assert stats.datasets[0].num_examples == len(text_data.read_examples(examples, 'train'))


def test_csv_renames_columns_and_hash_splits(run):
  uri = _uri(run['root'], 'CsvExampleGen', 'examples')
  train = text_data.read_examples(uri, 'train')
  eval_ = text_data.read_examples(uri, 'eval')
  assert len(train) + len(eval_) == len(run['rows'])
  assert 0 < len(eval_) < len(train)
  assert set(train[0]) == {contract.TEXT_KEY, contract.LABEL_KEY}
  expected = {(text.encode(), label.encode()) for label, text in run['rows']}
  got = {(r['text'][0], r['label'][0]) for r in train + eval_}
  assert got == expected


def test_text_pre_split_folders_skip_blank_lines_unshuffled(run):
  uri = _uri(run['root'], 'TextExampleGen', 'examples')
  for split, seed in (('train', 2), ('eval', 3)):
    texts = [r['text'][0].decode() for r in text_data.read_examples(uri, split)]
    lines = text_data.sentences(40, seed)
    assert sorted(texts) == sorted(lines)
    # Unshuffled: each file's documents keep their order.
    assert [t for t in texts if t in lines[:20]] == lines[:20]


def test_jsonl_and_tfrecord_fields(run):
  jsonl = _uri(run['root'], 'JsonlExampleGen', 'examples')
  rows = text_data.read_examples(jsonl, 'train') + text_data.read_examples(jsonl, 'eval')
  assert sorted(r['text'][0].decode() for r in rows) == sorted(text_data.sentences(150, 1))
  assert all(set(r) == {contract.TEXT_KEY} for r in rows)
  tfrecord = _uri(run['root'], 'TFRecordExampleGen', 'examples')
  rows = text_data.read_examples(tfrecord, 'train') + text_data.read_examples(tfrecord, 'eval')
  assert sorted(r['text'][0].decode() for r in rows) == sorted(text_data.sentences(30, 4))
  assert {r['label'][0] for r in rows} == {b'pos'}


def test_vocabulary_artifact_layout(run):
  uri = _uri(run['root'], 'Vocabulary', 'vocabulary')
  with open(os.path.join(uri, contract.VOCAB_FILE)) as f:
    tokens = f.read().splitlines()
  with open(os.path.join(uri, contract.VOCAB_JSON)) as f:
    meta = json.load(f)
  assert tuple(tokens[:5]) == contract.RESERVED_TOKENS
  assert meta['kind'] == 'wordpiece' and meta['size'] == len(tokens) <= 120
  assert meta['lowercase'] and meta['strip_accents'] and meta['nfkc']
  train = text_data.read_examples(_uri(run['root'], 'CsvExampleGen', 'examples'), 'train')
  assert meta['documents'] == len(train)
  assert 'cafe' in tokens or 'ca' in tokens  # accents stripped before learning
  assert 'café' not in tokens and 'The' not in tokens


def _transformed(root, component_id, split='train'):
  uri = _uri(root, component_id, 'transformed_examples')
  tft_output = tft.TFTransformOutput(_uri(root, component_id, 'transform_graph'))
  spec = tft_output.transformed_feature_spec()
  files = tf.io.gfile.glob(os.path.join(uri, f'Split-{split}', '*'))
  dataset = tf.data.TFRecordDataset(files, compression_type=inputs.compression_type(files))
  return tft_output, [tf.io.parse_single_example(r, spec) for r in dataset]


def test_classify_transform_outputs(run):
  tft_output, rows = _transformed(run['root'], 'Transform')
  assert rows
  for row in rows:
    ids = row[contract.TOKEN_IDS_KEY].numpy()
    assert ids.shape == (SEQ_LEN,) and ids[0] == contract.CLS_ID
    assert contract.SEP_ID in ids
  with open(tft_output.vocabulary_file_by_name(contract.LABEL_VOCAB_NAME)) as f:
    assert f.read().splitlines() == ['0', '1', '2']
  assert {int(r[contract.TRANSFORMED_LABEL_KEY]) for r in rows} == {0, 1}
  (untrained,) = [m for m in run['warnings'] if 'no rows labeled' in m]
  assert untrained.startswith("Transform: the train split has no rows labeled '2': ")
  token_vocab = tft_output.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME)
  with open(token_vocab) as f:
    assert tuple(f.read().splitlines()[:5]) == contract.RESERVED_TOKENS


def test_sentencepiece_clm_transform_outputs(run):
  tft_output, rows = _transformed(run['root'], 'ClmTransform')
  uri = _uri(run['root'], 'SpmVocabulary', 'vocabulary')
  assert os.path.exists(os.path.join(uri, contract.SPM_MODEL_FILE))
  with open(os.path.join(uri, contract.VOCAB_FILE)) as f:
    pieces = f.read().splitlines()
  assert tuple(pieces[:5]) == contract.RESERVED_TOKENS
  ids = [r[contract.TOKEN_IDS_KEY].values.numpy() for r in rows]
  assert all(len(i) > 0 for i in ids)
  assert all(i.min() > contract.MASK_ID - 1 or i.min() == contract.UNK_ID for i in ids)
  assert max(i.max() for i in ids) < len(pieces)


def test_anomalies_stop_the_run_before_transform(tmp_path):
  root = str(tmp_path)
  rows = text_data.labeled_rows(40) + [['maybe', 'A label outside the domain.'], ['', 'No label.']]
  text_data.write_csv(os.path.join(root, 'data', 'bad.csv'), rows, ['label', 'text'])
  gen = example_gen.create_example_gen(
    'csv', os.path.join(root, 'data'), label_column='label', train_eval_ratio=(1, 1)
  )
  stats = tfx.components.StatisticsGen(examples=gen.outputs['examples'])
  schema = tfx.components.ImportSchemaGen(schema_file=LABELED_SCHEMA)
  validator = tfx.components.ExampleValidator(
    statistics=stats.outputs['statistics'], schema=schema.outputs['schema']
  )
  vocab = vocabulary.Vocabulary(
    examples=gen.outputs['examples'], anomalies=validator.outputs['anomalies'], vocab_size=60
  )
  classify = transform.create_transform(
    gen.outputs['examples'],
    schema.outputs['schema'],
    vocab.outputs['vocabulary'],
    trainer_config=TrainerConfig(task='classify', seq_len=SEQ_LEN),
  )
  with pytest.raises(DataError) as error:
    _run(root, 'data-gate', [gen, stats, schema, validator, vocab, classify])
  message = str(error.value)
  anomalies_uri = _uri(root, 'ExampleValidator', 'anomalies')
  assert anomalies_uri in message
  assert "feature 'label'" in message
  assert 'Unexpected string values' in message or 'maybe' in message
  assert not glob.glob(os.path.join(root, 'root', 'Transform', 'transform_graph', '*', '*'))


def test_no_train_serve_skew(run):
  """Token ids Transform wrote == what the transform graph gives for the same raw examples."""
  tft_output, rows = _transformed(run['root'], 'Transform', 'eval')
  raw_uri = _uri(run['root'], 'CsvExampleGen', 'examples')
  files = tf.io.gfile.glob(os.path.join(raw_uri, 'Split-eval', '*'))
  records = tf.data.TFRecordDataset(files, compression_type=inputs.compression_type(files))
  serialized = tf.stack(list(records))
  raw_spec = tft_output.raw_feature_spec()
  serving_spec = {k: v for k, v in raw_spec.items() if k != contract.LABEL_KEY}
  raw = tf.io.parse_example(serialized, serving_spec)
  served = tft_output.transform_features_layer()(raw)[contract.TOKEN_IDS_KEY].numpy()
  written = sorted(tuple(r[contract.TOKEN_IDS_KEY].numpy()) for r in rows)
  assert written == sorted(tuple(ids) for ids in served)
  assert len(written) == len(served) > 0
