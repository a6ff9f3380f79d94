"""Reading each input format, and what happens to bad input (errors name file, line, problem)."""

import bz2
import glob
import gzip
import hashlib
import json
import os
import re
import unicodedata

import apache_beam as beam
import pytest
import tensorflow as tf
import text_data
from apache_beam.options.pipeline_options import PipelineOptions
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components import (
  example_encoding,
  example_gen,
  read_examples,
  readers,
  tfrecord_files,
  tfrecords,
)
from components.validation import DataError
from pipeline import local_runner
from tfxlm import contract


def _read(input_format, folder, pattern, **options):
  """Runs ReadTextExamples; returns (examples as (text, label) pairs, counters by name)."""
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: str(folder),
    example_gen.INPUT_FORMAT_KEY: input_format,
    example_gen.TEXT_COLUMN_KEY: options.get('text_column', 'text'),
    example_gen.LABEL_COLUMN_KEY: options.get('label_column'),
    example_gen.TEXT_MODE_KEY: options.get('text_mode', 'line'),
    example_gen.LABEL_VALUES_KEY: json.dumps(options['label_values'])
    if 'label_values' in options
    else None,
  }
  sink = os.path.join(str(folder), '..', f'{os.path.basename(str(folder))}-out.txt')
  with text_data.local_pipeline() as pipeline:
    _ = (
      pipeline
      | example_gen.ReadTextExamples(exec_properties, pattern)
      | beam.Map(bytes.hex)
      | beam.io.WriteToText(sink, shard_name_template='')
    )
    result = pipeline.run()
    result.wait_until_finish()
  with open(sink) as f:
    out = [bytes.fromhex(line) for line in f.read().split()]
  counters = {c.key.metric.name: c.committed for c in result.metrics().query()['counters']}
  pairs = []
  for record in out:
    feature = tf.train.Example.FromString(record).features.feature
    label = feature[contract.LABEL_KEY].bytes_list.value if contract.LABEL_KEY in feature else []
    pairs.append(
      (feature['text'].bytes_list.value[0].decode(), label[0].decode() if label else None)
    )
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


@pytest.mark.parametrize('ending', ['\n', '\r\n', '\r'], ids=['LF', 'CRLF', 'CR'])
def test_text_lines_end_at_any_line_ending_and_keep_their_numbers(tmp_path, ending):
  (tmp_path / 'a.txt').write_bytes(ending.join(['one doc', 'two doc', 'three']).encode() + b'\n')
  pairs, counters = _read('text', tmp_path, '*.txt')
  assert counters['documents'] == 3
  assert pairs == sorted([('one doc', None), ('two doc', None), ('three', None)])
  records = list(readers.read_records(str(tmp_path / 'a.txt'), 'text'))
  assert [number for number, _, _ in records] == [1, 2, 3]


@pytest.mark.parametrize('ending', ['\n', '\r\n', '\r'], ids=['LF', 'CRLF', 'CR'])
def test_csv_rows_end_at_any_line_ending_and_errors_keep_their_line(tmp_path, ending):
  rows = ['review,sentiment', '"a good film",1', f'"two{ending}lines",0', '"dull",1']
  (tmp_path / 'a.csv').write_bytes(ending.join(rows).encode() + ending.encode())
  pairs, _ = _read('csv', tmp_path, '*.csv', text_column='review', label_column='sentiment')
  assert pairs == sorted([('a good film', '1'), (f'two{ending}lines', '0'), ('dull', '1')])
  (tmp_path / 'a.csv').write_bytes(ending.join([*rows, '"unterminated,1']).encode())
  with pytest.raises(Exception, match=r'a\.csv, line 6'):
    _read('csv', tmp_path, '*.csv', text_column='review', label_column='sentiment')


def test_a_cr_alone_inside_an_lf_file_is_no_line_end_so_line_numbers_match_an_editor(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_bytes(b'text,label\nfine,pos\n"quoted\rwith CR",neg\nok,pos\nragged\n')
  records = readers.read_records(str(path), 'csv', text_column='text', label_column='label')
  assert [next(records) for _ in range(3)] == [
    (2, 'fine', 'pos'),
    (3, 'quoted\rwith CR', 'neg'),
    (4, 'ok', 'pos'),
  ]
  with pytest.raises(DataError, match=r'a\.csv, line 5: ragged row'):
    next(records)
  (tmp_path / 'a.txt').write_bytes(b'one\ntwo\rstill two\nthr\xffee\n')
  with pytest.raises(DataError, match=r'a\.txt, line 3: invalid UTF-8 \(byte 4 '):
    list(readers.read_records(str(tmp_path / 'a.txt'), 'text'))


def test_invalid_utf8_names_file_and_line(tmp_path):
  (tmp_path / 'bad.txt').write_bytes(b'fine\nbro\xffken\n')
  with pytest.raises(
    Exception,
    match=r'bad\.txt, line 2: invalid UTF-8 \(byte 4 of the line, counted from 1, is 0xff',
  ):
    _read('text', tmp_path, '*.txt')
  (tmp_path / 'bad.csv').write_bytes(b'label,text\n1,ok\n0,caf\xe9\n')
  with pytest.raises(Exception, match=r'bad\.csv, line 3: invalid UTF-8'):
    _read('csv', tmp_path, '*.csv', label_column='label')


def test_five_megabyte_single_line_document(tmp_path):
  doc = ' '.join(text_data.sentences(60_000))[: 5 * 1024 * 1024]
  text_data.write_text(str(tmp_path / 'big.txt'), [doc, 'small'])
  pairs, counters = _read('text', tmp_path, '*.txt')
  assert counters['documents'] == 2
  assert sorted(len(t) for t, _ in pairs) == [5, len(doc)]


def test_nul_bytes_in_text_are_kept_and_warned_once_per_file(tmp_path, caplog):
  (tmp_path / 'a.txt').write_bytes(b'fine line\nnul\x00 here\nand\x00 here\nfine again\n')
  with caplog.at_level('WARNING'), caplog.at_level('WARNING', logger='absl'):
    pairs, _ = _read('text', tmp_path, '*.txt')
  assert ('nul\x00 here', None) in pairs and len(pairs) == 4
  (warned,) = [r.getMessage() for r in caplog.records if 'NUL' in r.getMessage()]
  assert warned.startswith(f'{tmp_path / "a.txt"}: 2 documents hold NUL bytes (\\x00; lines 2, 3)')


def test_missing_label_is_kept_without_value_for_validation(tmp_path):
  text_data.write_csv(
    str(tmp_path / 'a.csv'), [['', 'no label'], ['1', 'labeled']], ['label', 'text']
  )
  pairs, _ = _read('csv', tmp_path, '*.csv', label_column='label')
  assert pairs == sorted([('no label', None), ('labeled', '1')], key=str)


def test_missing_text_column_names_file_and_columns(tmp_path):
  text_data.write_csv(str(tmp_path / 'a.csv'), [['1', 'x']], ['label', 'review'])
  with pytest.raises(Exception, match=r"a\.csv: no column 'text' in the header .*'review'"):
    _read('csv', tmp_path, '*.csv')
  text_data.write_jsonl(str(tmp_path / 'a.jsonl'), [{'text': 'ok'}, {'body': 'x'}])
  with pytest.raises(
    Exception,
    match=r"a\.jsonl, line 2: no text field 'text' \(fields: \['body'\]\): set data.jsonl_text",
  ):
    _read('jsonl', tmp_path, '*.jsonl')


def test_ragged_csv_row_names_file_and_line(tmp_path):
  (tmp_path / 'r.csv').write_text('label,text\n1,fine\n0,too,many\n')
  with pytest.raises(
    Exception, match=r'r\.csv, line 3: ragged row with 3 fields, the header has 2'
  ):
    _read('csv', tmp_path, '*.csv', label_column='label')


def test_malformed_jsonl_names_file_and_line(tmp_path):
  (tmp_path / 'a.jsonl').write_text(json.dumps({'text': 'ok'}) + '\n{"text": \n')
  with pytest.raises(Exception, match=r'a\.jsonl, line 2: not valid JSON'):
    _read('jsonl', tmp_path, '*.jsonl')
  # A last line cut inside a string: json's message ends in 'at' (it read 'at at' here).
  (tmp_path / 'a.jsonl').write_text(json.dumps({'text': 'ok'}) + '\n{"text": "cut sho')
  with pytest.raises(
    Exception,
    match=r'a\.jsonl, line 2: not valid JSON \(Unterminated string starting at column 10\)',
  ):
    _read('jsonl', tmp_path, '*.jsonl')


def test_empty_input_folder(tmp_path):
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(DataError, match=r"no input files match '.*empty/\*\.txt'"):
    _read('text', tmp_path / 'empty', '*.txt')


def test_tfrecord_missing_text_feature(tmp_path):
  text_data.write_tfrecord(str(tmp_path / 'x.tfrecord'), [{'body': 'hello'}])
  with pytest.raises(Exception, match=r"has no feature 'text' \(features: \['body'\]\)"):
    _read('tfrecord', tmp_path, '*')


def test_registry_holds_exactly_the_contract_formats_each_with_a_reader_and_pattern():
  assert tuple(example_gen.FORMATS) == contract.INPUT_FORMATS
  for name, entry in example_gen.FORMATS.items():
    assert callable(entry.reader) and entry.default_pattern, name
    assert set(entry.options) <= {
      example_gen.TEXT_COLUMN_KEY,
      example_gen.LABEL_COLUMN_KEY,
      example_gen.TEXT_MODE_KEY,
    }, name


_COMPRESS = {'': lambda data: data, '.gz': gzip.compress, '.bz2': bz2.compress}


def _write_format(folder, input_format, suffix, docs):
  """Writes labeled `docs` (text, label) in `input_format`, compressed by `suffix`."""
  if input_format == 'tfrecord':
    plain = text_data.write_tfrecord(
      str(folder / 'plain.tfrecord'), [{'text': t, 'label': lab} for t, lab in docs]
    )
    with open(plain, 'rb') as f:
      data = f.read()
    os.remove(plain)
    name = 'data.tfrecord'
  elif input_format == 'csv':
    data = ('text,label\n' + ''.join(f'"{t}",{lab}\n' for t, lab in docs)).encode()
    name = 'data.csv'
  elif input_format == 'jsonl':
    data = ''.join(json.dumps({'text': t, 'label': lab}) + '\n' for t, lab in docs).encode()
    name = 'data.jsonl'
  else:
    data = ''.join(t + '\n' for t, _ in docs).encode()
    name = 'data.txt'
  (folder / (name + suffix)).write_bytes(_COMPRESS[suffix](data))
  return name + suffix


@pytest.mark.parametrize(
  'input_format,suffix',
  [(fmt, suffix) for fmt in ('csv', 'text', 'jsonl') for suffix in ('.gz', '.bz2')]
  + [('tfrecord', '.gz'), ('tfrecord', '')],
)
def test_compressed_input_is_read_by_extension_with_the_default_pattern(
  tmp_path, input_format, suffix
):
  docs = [(sentence, str(i % 2)) for i, sentence in enumerate(text_data.sentences(50))]
  _write_format(tmp_path, input_format, suffix, docs)
  pattern = example_gen.FORMATS[input_format].default_pattern
  labeled = input_format != 'text'
  pairs, counters = _read(
    input_format, tmp_path, pattern, label_column='label' if labeled else None
  )
  assert pairs == sorted([(t, lab if labeled else None) for t, lab in docs], key=str)
  assert counters['documents'] == len(docs)


@pytest.mark.parametrize(
  'input_format,suffix',
  [(fmt, suffix) for fmt in ('csv', 'text', 'jsonl') for suffix in ('.gz', '.bz2')]
  + [('tfrecord', '.gz')],
)
@pytest.mark.parametrize('damage', ['truncated', 'corrupt'])
def test_damaged_compressed_file_is_named(tmp_path, input_format, suffix, damage):
  docs = [(sentence, '1') for sentence in text_data.sentences(400)]
  name = _write_format(tmp_path, input_format, suffix, docs)
  data = (tmp_path / name).read_bytes()
  if damage == 'truncated':
    data = data[: len(data) // 2]
  else:  # bytes flipped in the middle of the compressed stream
    middle = len(data) // 2
    data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
  (tmp_path / name).write_bytes(data)
  with pytest.raises(Exception, match=rf'{name}.*(corrupt|truncated)') as error:
    _read(input_format, tmp_path, '*' + suffix, label_column='label')
  assert len(str(error.value).splitlines()[-1]) < 400


def test_tfrecord_read_error_names_the_file_not_the_glob(tmp_path):
  text_data.write_tfrecord(str(tmp_path / 'good.tfrecord'), [{'text': 'fine'}])
  (tmp_path / 'bad.tfrecord').write_bytes(b'\x07' * 40)
  with pytest.raises(Exception, match=r'bad\.tfrecord: record 1 is unreadable'):
    _read('tfrecord', tmp_path, '*.tfrecord')


def test_rows_with_unlisted_labels_are_dropped_and_counted(tmp_path, caplog):
  rows = [
    ['fresh', 'good'],
    ['plot', 'a story'],
    ['rotten', 'bad'],
    ['plot', 'another story'],
    ['', 'unlabeled'],
  ]
  text_data.write_csv(str(tmp_path / 'rt.csv'), rows, ['category', 'text'])
  # absl's own logger filters too: its level depends on what ran before in this process.
  with caplog.at_level('INFO'), caplog.at_level('INFO', logger='absl'):
    pairs, counters = _read(
      'csv', tmp_path, '*.csv', label_column='category', label_values=['fresh', 'rotten']
    )
  # The missing label is kept, for validation to report against the schema.
  assert pairs == sorted([('good', 'fresh'), ('bad', 'rotten'), ('unlabeled', None)], key=str)
  assert counters['rows_dropped_by_label'] == 2 and counters['documents'] == 3
  # A WARNING: the run's summary lists it (a misspelled label in label_values loses rows).
  assert any(
    'rt.csv: dropped 2 rows' in r.getMessage()
    and "('plot' (2))" in r.getMessage()  # labels quoted: not read as counts
    and r.levelname == 'WARNING'
    for r in caplog.records
  )
  pairs, counters = _read('csv', tmp_path, '*.csv', label_column='category')
  assert len(pairs) == len(rows) and counters.get('rows_dropped_by_label', 0) == 0


def _split(input_format, folder, *, input_splits=None, ratio=(9, 1), **options):
  """Runs the executor's reading and splitting; returns {split: sorted (text, label) pairs}."""
  component = example_gen.create_example_gen(
    input_format, str(folder), input_splits=input_splits, train_eval_ratio=ratio, **options
  )
  exec_properties = {}
  for key, value in component.exec_properties.items():
    exec_properties[key] = (
      proto_utils.proto_to_json(value) if hasattr(value, 'DESCRIPTOR') else value
    )
  pipeline = beam.Pipeline(runner=local_runner.FN_API_RUNNER)
  splits = example_gen.Executor().GenerateExamplesByBeam(pipeline, exec_properties)
  sinks = {}
  for name, records in splits.items():
    sinks[name] = str(folder) + f'-{name}.txt'
    _ = (
      records
      | f'Hex[{name}]' >> beam.Map(bytes.hex)
      | f'Write[{name}]' >> beam.io.WriteToText(sinks[name], shard_name_template='')
    )
  pipeline.run().wait_until_finish()
  out = {}
  for name, sink in sinks.items():
    with open(sink) as f:
      examples = [
        tf.train.Example.FromString(bytes.fromhex(h)).features.feature for h in f.read().split()
      ]
    out[name] = sorted(
      (
        e['text'].bytes_list.value[0].decode(),
        e['label'].bytes_list.value[0].decode() if 'label' in e else None,
      )
      for e in examples
    )
  return out


def test_rows_without_a_label_or_outside_the_schema_domain_are_named_by_file_and_line(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_text('text,label\ngood,1\n"two\nlines",maybe\nbad,0\nnone,\nalso,pos\n')
  with pytest.raises(Exception) as error:
    _split('csv', tmp_path, label_column='label', label_domain=['0', '1'], require_label=True)
  message = str(error.value)
  assert f"{path}, line 3: label 'maybe' is not in the schema's label domain ['0', '1']" in message
  assert "(3 rows of this file: lines 3, 6, 7; labels 'maybe' 1, none 1, 'pos' 1)" in message
  assert 'What to do: give each row a label (or set data.label_column' in message
  assert 'list the labels in a copy of the schema (data.schema_dir)' in message
  path.write_text('text,label\ngood,1\nnone, \n')
  with pytest.raises(
    Exception, match=re.escape(f"{path}, line 3: no label (column 'label' is empty)")
  ):
    _split('csv', tmp_path, label_column='label', require_label=True)
  # Without the schema's rules the row is written without a label, for validation to report.
  pairs, _ = _read('csv', tmp_path, '*.csv', label_column='label')
  assert pairs == sorted([('good', '1'), ('none', None)], key=str)


@pytest.mark.parametrize(
  'record, problem, todo',
  [
    (
      {'text': 'no key', 'id': 7},
      "the record has no label field 'label' (its fields: ['id', 'text'])",
      "give each record a 'label' field (or set data.label_column to the field holding",
    ),
    ({'text': 'empty', 'label': ' '}, "no label (field 'label' is empty)", 'give each record a'),
    ({'text': 'null', 'label': None}, "no label (field 'label' is null)", 'give each record a'),
  ],
)
def test_a_jsonl_record_without_its_label_field_is_told_from_an_empty_label(
  tmp_path, record, problem, todo
):
  path = tmp_path / 'a.jsonl'
  text_data.write_jsonl(str(path), [{'text': 'good', 'label': '1'}, record])
  with pytest.raises(Exception) as error:
    _split('jsonl', tmp_path, label_column='label', require_label=True)
  message = str(error.value)
  assert f'{path}, line 2: {problem}\n  What to do: {todo}' in message
  assert "column 'label'" not in message


def test_a_tfrecord_example_without_its_label_feature_says_so(tmp_path):
  path = tmp_path / 'a.tfrecord'
  text_data.write_tfrecord(str(path), [{'text': 'good', 'label': '1'}, {'text': 'no label'}])
  with pytest.raises(Exception) as error:
    _split('tfrecord', tmp_path, label_column='label', require_label=True)
  assert (
    f"{path}, record 2: the tf.Example has no label feature 'label' (its features: ['text'])\n"
    "  What to do: give each tf.Example a 'label' feature"
  ) in str(error.value)
  text_data.write_tfrecord(str(path), [{'text': 'good', 'label': '1'}, {'text': 'a', 'label': ''}])
  with pytest.raises(Exception, match=re.escape("record 2: no label (feature 'label' is empty)")):
    _split('tfrecord', tmp_path, label_column='label', require_label=True)


@pytest.mark.parametrize('input_format', ['csv', 'jsonl'])
@pytest.mark.parametrize('label', ['pos\nitive', 'pos\r\nitive', 'pos\ritive'])
def test_a_label_with_a_line_break_is_refused_at_its_file_and_line(tmp_path, input_format, label):
  # Transform's label vocabulary (one label a line) refuses it too, but without file and line.
  path = tmp_path / f'a.{input_format}'
  rows = [('good', '1'), ('spans', label), ('kept', ' 0\n')]  # a trailing line break is trimmed
  if input_format == 'csv':
    text_data.write_csv(str(path), [[t, lab] for t, lab in rows], ['text', 'label'])
  else:
    text_data.write_jsonl(str(path), [{'text': t, 'label': lab} for t, lab in rows])
  with pytest.raises(Exception) as error:
    _split(input_format, tmp_path, label_column='label')
  line = 3 if input_format == 'csv' else 2  # the CSV header is line 1
  assert (
    f'{path}, line {line}: label {label!r} has a line break: the label vocabulary holds one label '
    'per line\n  What to do: write each label on one line'
  ) in str(error.value)
  # A row label_values drops never reaches the vocabulary: dropped, as any other label.
  pairs, counters = _read(
    input_format, tmp_path, f'*.{input_format}', label_column='label', label_values=['0', '1']
  )
  assert pairs == [('good', '1'), ('kept', '0')] and counters['rows_dropped_by_label'] == 1


def test_tfrecord_input_messages_count_records_not_lines(tmp_path, caplog):
  path = tmp_path / 'a.tfrecord'
  records = [('fine', '1'), ('  ', '1'), ('nul\x00 here', '0'), ('odd', 'maybe'), ('x', 'pos')]
  text_data.write_tfrecord(str(path), [{'text': t, 'label': lab} for t, lab in records])
  with pytest.raises(Exception) as error:
    _split('tfrecord', tmp_path, label_column='label', label_domain=['0', '1'])
  message = str(error.value).replace(str(tmp_path), '')
  assert message.startswith("/a.tfrecord, record 4: label 'maybe' is not in the schema's label")
  assert "(2 records of this file: records 4, 5; labels 'maybe' 1, 'pos' 1)" in message
  assert 'line' not in message
  text_data.write_tfrecord(str(path), [{'text': t, 'label': lab} for t, lab in records[:3]])
  with caplog.at_level('WARNING'), caplog.at_level('WARNING', logger='absl'):
    _read('tfrecord', tmp_path, '*.tfrecord', label_column='label')
  warned = [r.getMessage().replace(str(tmp_path), '') for r in caplog.records]
  assert '/a.tfrecord: skipped 1 empty or whitespace-only documents (records 2)' in warned
  assert any(
    w.startswith('/a.tfrecord: 1 documents hold NUL bytes (\\x00; records 3)') for w in warned
  )


def test_hash_split_follows_the_text_so_labeled_and_corpus_examples_agree(tmp_path):
  rows = [
    [('fresh', 'rotten', 'plot')[i % 3], text] for i, text in enumerate(text_data.sentences(300))
  ]
  rows += [['rotten', rows[0][1]]]  # a duplicate text with another label: same split
  text_data.write_csv(str(tmp_path / 'rt.csv'), rows, ['category', 'text'])
  labeled = _split('csv', tmp_path, label_column='category', label_values=['fresh', 'rotten'])
  corpus = _split('csv', tmp_path)
  for name in ('train', 'eval'):
    assert {t for t, _ in labeled[name]} <= {t for t, _ in corpus[name]}
  assert {lab for _, lab in labeled['train'] + labeled['eval']} == {'fresh', 'rotten'}
  assert sum(t == rows[0][1] for t, _ in labeled['eval']) in (0, 2)
  assert 10 < len(corpus['eval']) < 60  # about a tenth of 300 distinct texts


def test_label_values_need_a_label_column():
  with pytest.raises(ValueError, match='need a label_column'):
    example_gen.create_example_gen('csv', '/tmp', label_values=['a'])


def test_create_example_gen_rejects_bad_options():
  with pytest.raises(ValueError, match='input_format'):
    example_gen.create_example_gen('parquet', '/tmp')
  with pytest.raises(ValueError, match='text_mode'):
    example_gen.create_example_gen('text', '/tmp', text_mode='paragraph')
  with pytest.raises(ValueError, match='train_eval_ratio'):
    example_gen.create_example_gen('text', '/tmp', train_eval_ratio=(9, 0))


# --- Empty and tiny inputs, and other edge cases: each an error naming the file or split, or read.


def test_csv_with_a_header_and_no_rows_names_the_file(tmp_path):
  (tmp_path / 'only_header.csv').write_text('text,label\n')
  with pytest.raises(
    Exception,
    match=r'no examples in .*\*\.csv\* \(1 file\(s\): '
    r'only_header\.csv\): .*CSV header without rows',
  ):
    _split('csv', tmp_path, label_column='label')


def test_rows_all_dropped_by_label_values_say_which_labels_the_data_has(tmp_path):
  rows = [['pos', 'a good film'], ['neg', 'a bad one'], ['pos', 'fine'], ['neutral', 'meh']]
  text_data.write_csv(str(tmp_path / 'data.csv'), rows, ['sentiment', 'text'])
  with pytest.raises(
    Exception,
    match=r"no examples in .*data\.csv\); data\.label_values \['Neg', 'Pos'\] dropped rows labeled"
    r" 'pos' \(2\), 'neg' \(1\), 'neutral' \(1\) \(labels match exactly, case included\)",
  ):
    _split('csv', tmp_path, label_column='sentiment', label_values=['Pos', 'Neg'])


@pytest.mark.parametrize('input_format,name', [('text', 'empty.txt'), ('jsonl', 'empty.jsonl')])
def test_empty_text_or_jsonl_file_alone_is_an_error_naming_it(tmp_path, input_format, name):
  (tmp_path / name).write_bytes(b'')
  with pytest.raises(Exception, match=rf'no examples in .*\(1 file\(s\): {name}\)'):
    _split(input_format, tmp_path)


def test_empty_file_beside_others_is_counted_and_warned(tmp_path, caplog):
  (tmp_path / 'empty.txt').write_bytes(b'')
  text_data.write_text(str(tmp_path / 'full.txt'), ['one doc', 'two docs'])
  with caplog.at_level('WARNING'):
    pairs, counters = _read('text', tmp_path, '*.txt')
  assert [t for t, _ in pairs] == ['one doc', 'two docs']
  assert counters['files_without_documents'] == 1
  assert any('empty.txt: no documents' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize('empty_split', ['eval', 'train'])
def test_pre_split_input_with_an_empty_split_names_the_split(tmp_path, empty_split):
  for split in ('train', 'eval'):
    rows = [] if split == empty_split else text_data.labeled_rows(5)
    text_data.write_csv(str(tmp_path / split / 'part.csv'), rows, ['label', 'text'])
  with pytest.raises(
    Exception,
    match=rf"split '{empty_split}': no examples in "
    rf'.*{empty_split}/\*\.csv \(1 file\(s\): part\.csv\)',
  ):
    _split(
      'csv',
      tmp_path,
      label_column='label',
      input_splits={'train': 'train/*.csv', 'eval': 'eval/*.csv'},
    )


def test_hash_split_that_leaves_a_split_empty_says_so_with_the_counts(tmp_path):
  text_data.write_text(str(tmp_path / 'tiny.txt'), ['only one document'])
  with pytest.raises(
    Exception,
    match=r"split '(eval|train)' is empty after the hash split "
    r'\(9:1\) of .*tiny\.txt.*examples per split: eval \d, '
    r'train \d; add examples, change train_eval_ratio',
  ):
    _split('text', tmp_path)


def test_pre_split_input_with_examples_in_every_split_is_read(tmp_path):
  for split in ('train', 'eval'):
    text_data.write_csv(
      str(tmp_path / split / 'part.csv'), text_data.labeled_rows(3), ['label', 'text']
    )
  splits = _split(
    'csv',
    tmp_path,
    label_column='label',
    input_splits={'train': 'train/*.csv', 'eval': 'eval/*.csv'},
  )
  assert len(splits['train']) == len(splits['eval']) == 3


@pytest.mark.parametrize('input_format', ['text', 'jsonl', 'csv'])
def test_byte_order_mark_is_stripped(tmp_path, input_format):
  content = {
    'text': 'first line\nsecond\n',
    'jsonl': '{"text": "first line"}\n{"text": "second"}\n',
    'csv': 'text\nfirst line\nsecond\n',
  }[input_format]
  name = {'text': 'a.txt', 'jsonl': 'a.jsonl', 'csv': 'a.csv'}[input_format]
  (tmp_path / name).write_bytes(('\ufeff' + content).encode())
  pairs, _ = _read(input_format, tmp_path, '*')
  assert pairs == [('first line', None), ('second', None)]


def test_byte_order_mark_is_stripped_from_a_whole_file_document(tmp_path):
  (tmp_path / 'a.txt').write_bytes('\ufeffone document'.encode())
  pairs, _ = _read('text', tmp_path, '*.txt', text_mode='file')
  assert pairs == [('one document', None)]


def test_duplicate_csv_header_is_an_error_naming_the_column(tmp_path):
  (tmp_path / 'dup.csv').write_text('text,label,text\na,1,b\n')
  with pytest.raises(Exception, match=r"dup\.csv: column 'text' appears 2 times in the header"):
    _read('csv', tmp_path, '*.csv', label_column='label')


def test_csv_field_longer_than_the_csv_module_default_is_read(tmp_path):
  long_text = ' '.join(text_data.sentences(5000))[:300_000]
  assert len(long_text) > 131_072
  text_data.write_csv(
    str(tmp_path / 'long.csv'), [['1', long_text], ['0', 'short']], ['label', 'text']
  )
  pairs, _ = _read('csv', tmp_path, '*.csv', label_column='label')
  assert sorted(len(t) for t, _ in pairs) == [5, len(long_text)]


@pytest.mark.parametrize(
  'text, label',
  [
    ('a', None),
    ('a short review', ''),
    ('café naïve 😀 文字', 'positive'),
    ('x' * 127, '0'),  # lengths at the edges of one- and two-byte varints
    ('x' * 128, '1'),
    ('y' * 16_384, 'fresh'),
    ('z' * 2_000_000, 'rotten'),
  ],
)
def test_make_example_is_the_tf_example_of_its_text_and_label(text, label):
  feature = {'text': tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
  if label:
    feature['label'] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()]))
  expected = tf.train.Example(features=tf.train.Features(feature=feature))
  assert tf.train.Example.FromString(example_encoding.make_example(text, label)) == expected


def test_hash_split_puts_a_text_where_the_sha256_of_its_text_says(tmp_path):
  """The documented rule, unchanged across versions: bucket = sha256(text) mod 10, 9 train : 1."""
  texts = text_data.sentences(200, 5)
  text_data.write_text(str(tmp_path / 'docs.txt'), texts)
  splits = _split('text', tmp_path)
  for name, examples in splits.items():
    for text, _ in examples:
      bucket = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10
      assert name == ('train' if bucket < 9 else 'eval'), text
  assert sorted(t for examples in splits.values() for t, _ in examples) == sorted(texts)


def test_input_files_spread_over_the_workers_each_writing_its_own_shard(tmp_path):
  # Text files are the unit of parallelism and TFRecord files are read whole: every worker must
  # get input files and write its own shard, or ExampleGen and the Transform after it run on one.
  folder = tmp_path / 'input'
  folder.mkdir()
  texts = set()
  for index in range(4):
    lines = [f'document {index} {line}' for line in range(50)]
    texts.update(lines)
    (folder / f'part-{index}.txt').write_text('\n'.join(lines) + '\n')
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: str(folder),
    example_gen.INPUT_FORMAT_KEY: contract.TEXT,
    example_gen.TEXT_COLUMN_KEY: contract.TEXT_KEY,
    example_gen.TEXT_MODE_KEY: contract.LINE,
  }
  workers = 2
  options = PipelineOptions(
    [
      f'--runner={local_runner.FN_API_RUNNER}',
      '--direct_running_mode=multi_threading',
      f'--direct_num_workers={workers}',
    ]
  )
  prefix = str(tmp_path / 'out' / 'data')
  with beam.Pipeline(options=options) as pipeline:
    _ = (
      pipeline
      | example_gen.ReadTextExamples(exec_properties, '*.txt')
      | tfrecord_files.write(prefix, contract.NO_COMPRESSION)
    )
  shards = sorted(glob.glob(prefix + '-*'))
  per_shard = [
    [
      tf.train.Example.FromString(r.numpy())
      .features.feature[contract.TEXT_KEY]
      .bytes_list.value[0]
      .decode()
      for r in tf.data.TFRecordDataset(shard)
    ]
    for shard in shards
  ]
  assert len(shards) == workers
  assert all(per_shard), [len(shard) for shard in per_shard]
  assert sorted(t for shard in per_shard for t in shard) == sorted(texts)


def _exec_properties(component):
  return {
    key: proto_utils.proto_to_json(value) if hasattr(value, 'DESCRIPTOR') else value
    for key, value in component.exec_properties.items()
  }


def _run_executor(component, out):
  """Runs the executor's Do; returns {split: its records, file by file}, the file names and the
  input files it records having read."""
  examples = standard_artifacts.Examples()
  examples.uri = str(out)
  context = example_gen.Executor.Context(beam_pipeline_args=local_runner.in_process_beam_args())
  example_gen.Executor(context).Do(
    {}, {standard_component_specs.EXAMPLES_KEY: [examples]}, _exec_properties(component)
  )
  records, names = {}, set()
  for split in artifact_utils.decode_split_names(examples.split_names):
    files = sorted(glob.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*')))
    names.update(os.path.basename(f) for f in files)
    records[split] = [
      r.numpy()
      for f in files
      for r in tf.data.TFRecordDataset(f, compression_type='GZIP' if f.endswith('.gz') else '')
    ]
  inputs = json.loads(examples.get_string_custom_property(contract.INPUT_FILES_PROPERTY))
  return records, names, inputs


@pytest.mark.parametrize(
  ('compression', 'shuffle', 'presplit'),
  [(c, s, False) for c in contract.TFRECORD_COMPRESSIONS for s in (False, True)]
  + [(contract.NO_COMPRESSION, False, True)],
)
def test_the_executor_writes_the_records_and_splits_of_the_per_record_path(
  tmp_path, monkeypatch, compression, shuffle, presplit
):
  """Do writes lists of examples (several per file here): the files hold the same records, in
  the same splits, as the per-example output of GenerateExamplesByBeam."""
  monkeypatch.setattr(read_examples, '_BATCH_BYTES', 200)
  folder = tmp_path / 'in'
  folder.mkdir()
  texts = text_data.sentences(120)
  (folder / 'a.txt').write_text('\n'.join(texts[:70]) + '\n\n')
  (folder / 'b.txt').write_text('\n'.join(texts[70:]) + '\n')
  component = example_gen.create_example_gen(
    contract.TEXT,
    str(folder),
    shuffle=shuffle,
    compression=compression,
    input_splits={'train': 'a.txt', 'eval': 'b.txt'} if presplit else None,
  )
  written, names, inputs = _run_executor(component, tmp_path / 'out')
  assert names == {f'data_tfrecord-00000-of-00001{tfrecords.suffix(compression)}'}
  assert inputs == {'count': 2, 'files': ['a.txt', 'b.txt']}
  pipeline = beam.Pipeline(runner=local_runner.FN_API_RUNNER)
  splits = example_gen.Executor().GenerateExamplesByBeam(pipeline, _exec_properties(component))
  for name, records in splits.items():
    _ = records | f'Write[{name}]' >> tfrecord_files.write(
      str(tmp_path / name), contract.NO_COMPRESSION
    )
  pipeline.run().wait_until_finish()
  expected = {
    name: [r.numpy() for r in tf.data.TFRecordDataset(glob.glob(str(tmp_path / f'{name}-*')))]
    for name in splits
  }
  assert sorted(written) == sorted(expected) == ['eval', 'train']
  # Where each example comes from: (file, line index).
  origin = {example_encoding.make_example(t, None): (i >= 70, i) for i, t in enumerate(texts)}
  for name in expected:
    assert sorted(written[name]) == sorted(expected[name]) and expected[name]
    if not shuffle:  # each file's records in the order of its lines
      for part in (False, True):
        lines = [origin[r][1] for r in written[name] if origin[r][0] == part]
        assert lines == sorted(lines)
  texts_written = [
    tf.train.Example.FromString(r).features.feature[contract.TEXT_KEY].bytes_list.value[0]
    for records in written.values()
    for r in records
  ]
  assert sorted(texts_written) == sorted(t.encode() for t in texts)


def test_the_executor_names_a_split_left_empty_by_the_hash_split(tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  (folder / 'a.txt').write_text('one short document\n')
  component = example_gen.create_example_gen(contract.TEXT, str(folder), shuffle=False)
  with pytest.raises(Exception, match=r'is empty after the hash split \(9:1\) .*per split: '):
    _run_executor(component, tmp_path / 'out')


def test_a_label_that_differs_from_the_domain_only_in_case_or_spaces_says_so(tmp_path):
  (tmp_path / 'a.csv').write_text('text,label\ngood,positive\nbad,Positive\n')
  with pytest.raises(Exception) as error:
    _split('csv', tmp_path, label_column='label', label_domain=['negative', 'positive'])
  message = str(error.value)
  assert (
    "line 3: label 'Positive' is not in the schema's label domain ['negative', 'positive']"
    " ('Positive' differs from 'positive' only in case)" in message
  )
  assert (
    "What to do: write the labels as the schema does ('Positive' as 'positive'), or list them"
    " in a copy of the schema's domain (data.schema_dir)" in message
  )
  assert 'relabel' not in message
  # The readers strip labels; a schema's domain may still hold a stray space.
  (tmp_path / 'a.csv').write_text('text,label\nbad,POSITIVE\nother,maybe\n')
  with pytest.raises(Exception) as error:
    _split('csv', tmp_path, label_column='label', label_domain=['negative', 'positive '])
  message = str(error.value)
  assert "('POSITIVE' differs from 'positive ' only in case and surrounding whitespace)" in message
  assert 'relabel the rows' in message  # 'maybe' is no near miss


def test_a_label_in_another_unicode_normal_form_is_told_apart_with_escapes(tmp_path):
  decomposed = unicodedata.normalize('NFD', 'café')
  (tmp_path / 'a.csv').write_text(f'text,label\ngood,café\nbad,{decomposed}\n', encoding='utf-8')
  with pytest.raises(Exception) as error:
    _split('csv', tmp_path, label_column='label', label_domain=['café', 'tea'])
  message = str(error.value)
  assert (
    "line 3: label 'cafe\\u0301' is not in the schema's label domain, whose 'caf\\xe9' is the "
    'same text in another Unicode normal form' in message
  )
  assert 'What to do: normalize the data or the schema to NFC' in message
  assert 'relabel' not in message
