"""Reading each input format, and what happens to bad input (errors name file, line, problem)."""

import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
import text_data
from tfx.types import standard_component_specs

from components import example_gen
from components.validation import DataError
from tfxlm import contract


def _read(input_format, folder, pattern, **options):
  """Runs ReadTextExamples; returns (examples as (text, label) pairs, counters by name)."""
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: str(folder),
    example_gen.INPUT_FORMAT_KEY: input_format,
    example_gen.TEXT_COLUMN_KEY: options.get('text_column', 'text'),
    example_gen.LABEL_COLUMN_KEY: options.get('label_column'),
    example_gen.TEXT_MODE_KEY: options.get('text_mode', 'line'),
  }
  sink = os.path.join(str(folder), '..', f'{os.path.basename(str(folder))}-out.txt')
  pipeline = beam.Pipeline()
  _ = (pipeline | example_gen.ReadTextExamples(exec_properties, pattern)
       | beam.Map(bytes.hex) | beam.io.WriteToText(sink, shard_name_template=''))
  result = pipeline.run()
  result.wait_until_finish()
  with open(sink) as f:
    out = [bytes.fromhex(line) for line in f.read().split()]
  counters = {c.key.metric.name: c.committed
              for c in result.metrics().query()['counters']}
  pairs = []
  for record in out:
    feature = tf.train.Example.FromString(record).features.feature
    label = feature[contract.LABEL_KEY].bytes_list.value if contract.LABEL_KEY in feature else []
    pairs.append((feature['text'].bytes_list.value[0].decode(),
                  label[0].decode() if label else None))
  return sorted(pairs, key=str), counters


def test_csv_quoted_multiline_and_unicode(tmp_path):
  rows = [['1', 'He said "hi",\nthen left — déjà vu.'], ['0', 'plain']]
  text_data.write_csv(str(tmp_path / 'a.csv'), rows, ['label', 'body'])
  pairs, counters = _read('csv', tmp_path, '*.csv', text_column='body', label_column='label')
  assert pairs == sorted([(t, lab) for lab, t in rows], key=str)
  assert counters['documents'] == 2


def test_csv_with_byte_order_mark(tmp_path):
  (tmp_path / 'bom.csv').write_bytes('\ufefftext,label\nhello,1\n'.encode())
  pairs, _ = _read('csv', tmp_path, '*.csv', label_column='label')
  assert pairs == [('hello', '1')]


def test_empty_and_whitespace_documents_are_skipped_and_counted(tmp_path):
  text_data.write_text(str(tmp_path / 'a.txt'), ['one doc', '', '   \t', 'two docs'])
  text_data.write_csv(str(tmp_path / 'b.csv'), [['x', '  '], ['y', 'ok']], ['label', 'text'])
  pairs, counters = _read('text', tmp_path, '*.txt')
  assert [p[0] for p in pairs] == ['one doc', 'two docs']
  assert counters['empty_documents_skipped'] == 2
  pairs, counters = _read('csv', tmp_path, '*.csv', label_column='label')
  assert pairs == [('ok', 'y')] and counters['empty_documents_skipped'] == 1


def test_text_one_document_per_file(tmp_path):
  text_data.write_text(str(tmp_path / 'a.txt'), ['line one', 'line two'])
  pairs, _ = _read('text', tmp_path, '*.txt', text_mode='file')
  assert pairs == [('line one\nline two\n', None)]


def test_invalid_utf8_names_file_and_line(tmp_path):
  (tmp_path / 'bad.txt').write_bytes(b'fine\nbro\xffken\n')
  with pytest.raises(Exception, match=r"bad\.txt, line 2: invalid UTF-8 \(byte 3 .*0xff"):
    _read('text', tmp_path, '*.txt')
  (tmp_path / 'bad.csv').write_bytes(b'label,text\n1,ok\n0,caf\xe9\n')
  with pytest.raises(Exception, match=r'bad\.csv, line 3: invalid UTF-8'):
    _read('csv', tmp_path, '*.csv', label_column='label')


def test_five_megabyte_single_line_document(tmp_path):
  doc = ' '.join(text_data.sentences(60_000))[:5 * 1024 * 1024]
  text_data.write_text(str(tmp_path / 'big.txt'), [doc, 'small'])
  pairs, counters = _read('text', tmp_path, '*.txt')
  assert counters['documents'] == 2
  assert sorted(len(t) for t, _ in pairs) == [5, len(doc)]


def test_missing_label_is_kept_without_value_for_validation(tmp_path):
  text_data.write_csv(str(tmp_path / 'a.csv'), [['', 'no label'], ['1', 'labeled']],
                      ['label', 'text'])
  pairs, _ = _read('csv', tmp_path, '*.csv', label_column='label')
  assert pairs == sorted([('no label', None), ('labeled', '1')], key=str)


def test_missing_text_column_names_file_and_columns(tmp_path):
  text_data.write_csv(str(tmp_path / 'a.csv'), [['1', 'x']], ['label', 'review'])
  with pytest.raises(Exception, match=r"a\.csv: no column 'text' in the header .*'review'"):
    _read('csv', tmp_path, '*.csv')
  text_data.write_jsonl(str(tmp_path / 'a.jsonl'), [{'text': 'ok'}, {'body': 'x'}])
  with pytest.raises(Exception, match=r"a\.jsonl, line 2: no text field 'text' \(fields: \['body'\]"):
    _read('jsonl', tmp_path, '*.jsonl')


def test_ragged_csv_row_names_file_and_line(tmp_path):
  (tmp_path / 'r.csv').write_text('label,text\n1,fine\n0,too,many\n')
  with pytest.raises(Exception, match=r'r\.csv, line 3: ragged row with 3 fields, the header has 2'):
    _read('csv', tmp_path, '*.csv', label_column='label')


def test_malformed_jsonl_names_file_and_line(tmp_path):
  (tmp_path / 'a.jsonl').write_text(json.dumps({'text': 'ok'}) + '\n{"text": \n')
  with pytest.raises(Exception, match=r'a\.jsonl, line 2: not valid JSON'):
    _read('jsonl', tmp_path, '*.jsonl')


def test_empty_input_folder(tmp_path):
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(DataError, match=r"no input files match '.*empty/\*\.txt'"):
    _read('text', tmp_path / 'empty', '*.txt')


def test_tfrecord_missing_text_feature(tmp_path):
  text_data.write_tfrecord(str(tmp_path / 'x.tfrecord'), [{'body': 'hello'}])
  with pytest.raises(Exception, match=r"has no feature 'text' \(features: \['body'\]\)"):
    _read('tfrecord', tmp_path, '*')


def test_create_example_gen_rejects_bad_options():
  with pytest.raises(ValueError, match='input_format'):
    example_gen.create_example_gen('parquet', '/tmp')
  with pytest.raises(ValueError, match='text_mode'):
    example_gen.create_example_gen('text', '/tmp', text_mode='paragraph')
  with pytest.raises(ValueError, match='train_eval_ratio'):
    example_gen.create_example_gen('text', '/tmp', train_eval_ratio=(9, 0))
