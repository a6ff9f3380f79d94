"""ExampleGen's input listing: a match that cannot be read as a file is named when the read is
built, before any Beam worker opens it (a named pipe would block one forever)."""

import json
import os
import re

import pytest
from tfx.types import standard_component_specs

from components import example_gen, file_selection, readers, tfrecords
from components.validation import DataError
from tests.components import text_data

GOOD_CSV = 'text,label\n"a good film",1\n'


def _build_read(folder, pattern='*.csv'):
  """Builds (does not run) the read of the `pattern` files in `folder`."""
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: str(folder),
    example_gen.INPUT_FORMAT_KEY: 'csv',
    example_gen.TEXT_COLUMN_KEY: 'text',
    example_gen.LABEL_COLUMN_KEY: 'label',
  }
  with text_data.local_pipeline() as pipeline:
    _ = pipeline | example_gen.ReadTextExamples(exec_properties, pattern)


def _create_component(folder, pattern='*.csv'):
  """Creates the ExampleGen of `folder`, as the pipeline is built."""
  example_gen.create_example_gen('csv', str(folder), label_column='label', file_pattern=pattern)


def _fifo(folder):
  os.mkfifo(folder / 'pipe.csv')
  return folder / 'pipe.csv'


def _dangling(folder):
  os.symlink(folder / 'gone' / 'x.csv', folder / 'gone.csv')
  return folder / 'gone.csv'


def _loop(folder):
  os.symlink(folder / 'b.csv', folder / 'a.csv')
  os.symlink(folder / 'a.csv', folder / 'b.csv')
  return folder / 'a.csv'


@pytest.mark.parametrize('step', [_create_component, _build_read])
@pytest.mark.parametrize(
  'make, message',
  [
    (_fifo, 'not a regular file'),
    (_dangling, 'cannot read this input file'),
    (_loop, 'cannot read this input file'),
  ],
)
def test_a_match_that_is_not_a_readable_file_is_named_with_what_to_do(
  tmp_path, step, make, message
):
  (tmp_path / 'good.csv').write_text(GOOD_CSV)
  bad = make(tmp_path)
  with pytest.raises(DataError, match=message) as error:
    step(tmp_path)
  assert str(error.value).startswith(f'{bad}: ')
  assert 'move it out of the input folder' in str(error.value)


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
  (tmp_path / 'good.csv').write_text(GOOD_CSV)
  (tmp_path / 'secret.csv').write_text(GOOD_CSV)
  real_access = os.access
  # The tests may run as root, whom file modes do not stop: deny the read instead.
  monkeypatch.setattr(
    os,
    'access',
    lambda path, mode: not str(path).endswith('secret.csv') and real_access(path, mode),
  )
  for step in (_create_component, _build_read):
    with pytest.raises(DataError, match='no permission to read') as error:
      step(tmp_path)
    assert str(tmp_path / 'secret.csv') in str(error.value)


def test_editor_leftovers_and_backups_are_left_out_and_unread_archives_named(tmp_path):
  # What a folder holds while its CSV is open in an editor, or after one saved a backup.
  for name in (
    'data.csv',
    'more.csv.gz',
    '.~lock.data.csv#',
    '.data.csv.swp',
    'data.csv.orig',
    'data.csv~',
  ):
    (tmp_path / name).write_bytes(b'x')
  default = os.path.join(str(tmp_path), readers.FORMATS['csv'].default_pattern)
  assert file_selection.input_files(default) == [
    str(tmp_path / 'data.csv'),
    str(tmp_path / 'more.csv.gz'),
  ]
  # A pattern that names them is taken at its word.
  assert file_selection.input_files(str(tmp_path / '.data*')) == [str(tmp_path / '.data.csv.swp')]
  assert file_selection.input_files(str(tmp_path / '*.orig')) == [str(tmp_path / 'data.csv.orig')]
  (tmp_path / 'old.csv.zip').write_bytes(b'PK')
  with pytest.raises(DataError, match=r'old\.csv\.zip: compressed as \.zip, which is not read'):
    file_selection.input_files(default)


def test_a_folder_matching_the_pattern_is_left_out(tmp_path):
  (tmp_path / 'good.csv').write_text(GOOD_CSV)
  (tmp_path / 'archive.csv').mkdir()
  (tmp_path / 'archive.csv' / 'old.csv').write_text(GOOD_CSV)
  _create_component(tmp_path)  # the folder is no input file
  _build_read(tmp_path)
  (tmp_path / 'good.csv').unlink()
  with pytest.raises(DataError, match='no input files match'):
    _build_read(tmp_path)


@pytest.mark.parametrize('separator', [';', '\t', '|'])
def test_a_header_with_another_separator_says_csv_is_comma_separated(tmp_path, separator):
  path = tmp_path / 'a.csv'
  path.write_text(f'text{separator}label\nhello{separator}1\n')
  with pytest.raises(DataError, match=re.escape(f'separated by {separator!r}? CSV input is comma')):
    list(readers.read_records(str(path), 'csv', text_column='text', label_column='label'))


def test_no_match_lists_what_the_folder_holds(tmp_path):
  for name in ('reviews.csv', 'notes.md'):
    (tmp_path / name).write_text(GOOD_CSV)
  with pytest.raises(DataError, match=r'no input files match .*\*\.txt') as error:
    _build_read(tmp_path, '*.txt')
  assert 'the folder holds notes.md, reviews.csv' in str(error.value)
  assert 'data.format or data.file_pattern' in str(error.value)


def test_no_match_in_an_empty_folder_says_it_is_empty(tmp_path):
  with pytest.raises(DataError, match=r'no input files match') as error:
    _build_read(tmp_path, '*.csv')
  assert 'the folder is empty: put the data files there' in str(error.value)
  assert 'data.format' not in str(error.value)


@pytest.mark.parametrize(
  'record, problem',
  [
    ({'text': None, 'label': '1'}, "text field 'text' is null, not a string"),
    ({'text': 7, 'label': '1'}, "text field 'text' is a number, not a string"),
    ({'text': ['a', 'b'], 'label': '1'}, "text field 'text' is an array, not a string"),
    ({'text': {'en': 'a'}, 'label': '1'}, "text field 'text' is an object, not a string"),
    ({'text': 'a film', 'label': ['1']}, "label field 'label' is an array, not a string or number"),
    ({'text': 'a film', 'label': {'id': 1}}, "label field 'label' is an object, not a string"),
  ],
)
def test_a_jsonl_field_of_the_wrong_json_type_names_file_line_and_type(tmp_path, record, problem):
  path = tmp_path / 'a.jsonl'
  path.write_text(json.dumps({'text': 'fine', 'label': '0'}) + '\n' + json.dumps(record) + '\n')
  with pytest.raises(DataError, match=re.escape(f'{path}, line 2: {problem}')):
    list(readers.read_records(str(path), 'jsonl', text_column='text', label_column='label'))


@pytest.mark.parametrize(
  'line, kind',
  [('["a", "b"]', 'an array'), ('42', 'a number'), ('"a film"', 'a string'), ('true', 'a boolean')],
)
def test_a_jsonl_line_that_is_not_an_object_names_its_json_type(tmp_path, line, kind):
  path = tmp_path / 'a.jsonl'
  path.write_text('{"text": "fine"}\n' + line + '\n')
  with pytest.raises(DataError, match=re.escape(f'line 2: expected a JSON object, got {kind}')):
    list(readers.read_records(str(path), 'jsonl', text_column='text'))


@pytest.mark.parametrize('label, read', [(1, '1'), (0.5, '0.5'), (' 1 ', '1'), (None, None)])
def test_a_jsonl_label_that_is_a_number_or_padded_is_read_as_text(tmp_path, label, read):
  path = tmp_path / 'a.jsonl'
  path.write_text(json.dumps({'text': 'a film', 'label': label}) + '\n')
  records = readers.read_records(str(path), 'jsonl', text_column='text', label_column='label')
  assert list(records) == [(1, 'a film', read)]


@pytest.mark.parametrize(
  'line, field',
  [
    (r'{"text": "lone \ud800 surrogate", "label": "pos"}', 'text'),
    (r'{"text": "fine", "label": "p\uDC00s"}', 'label'),
  ],
)
def test_a_jsonl_lone_surrogate_escape_names_the_file_line_and_field(tmp_path, line, field):
  path = tmp_path / 'a.jsonl'
  path.write_text(
    '{"text": "an emoji \\ud83d\\ude00 pair is fine", "label": "pos"}\n' + line + '\n'
  )
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'jsonl', text_column='text', label_column='label'))
  message = str(error.value)
  assert message.startswith(f"{path}, line 2: field '{field}' has a lone surrogate escape")
  assert 'write the character whole, or remove the escape' in message


@pytest.mark.parametrize(
  'label, read', [('true', 'true'), ('false', 'false'), ('1.0', '1.0'), ('1e2', '1e2'), ('0', '0')]
)
def test_a_jsonl_label_that_is_a_boolean_or_number_is_spelled_as_the_file_writes_it(
  tmp_path, label, read
):
  path = tmp_path / 'a.jsonl'
  path.write_text(f'{{"text": "a film", "label": {label}, "score": 1.5}}\n')
  records = readers.read_records(str(path), 'jsonl', text_column='text', label_column='label')
  assert list(records) == [(1, 'a film', read)]


def test_csv_labels_with_surrounding_spaces_are_read_without_them(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_text('text,label\nfirst, 1\nsecond,1 \nthird," 0 "\n')
  records = readers.read_records(str(path), 'csv', text_column='text', label_column='label')
  assert [label for _, _, label in records] == ['1', '1', '0']


@pytest.mark.parametrize(
  'rows, line',
  [
    # The quoted text takes in every row after it (they were read as one document).
    (['1,fine', '0,"a stray quote', '1,next row', '0,last row'], 3),
    # The quoted label swallows the rest into one field (a ragged row at the end of the file).
    (['fine,1', '"stray,0', 'next row,1', 'last row,0'], 3),
    # The row starts with a quoted field over two lines; the unclosed quote is on the second.
    (['1,"two', 'lines" and ,"a stray quote', '1,next row'], 3),
  ],
  ids=['text field', 'label field', 'after a multi-line field'],
)
def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path, rows, line):
  path, message = _csv_error(tmp_path, rows)
  assert message.startswith(f'{path}, line {line}: an unclosed quote: ')
  assert 'runs to the end of the file' in message and '("")' in message


def _csv_error(tmp_path, rows):
  """(path, message) of the DataError reading `rows` under a label,text (or text,label) header."""
  path = tmp_path / 'a.csv'
  header = 'label,text' if rows[0].startswith('1,') else 'text,label'
  path.write_text('\n'.join([header, *rows]) + '\n')
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'csv', text_column='text', label_column='label'))
  return path, str(error.value)


@pytest.mark.parametrize('header, label', [('text,label', ',neg'), ('text', '')])
def test_a_carriage_return_in_an_unquoted_field_is_named(tmp_path, header, label):
  path = tmp_path / 'a.csv'
  path.write_bytes(f'{header}\nfine{label}\nstray\rcarriage return here{label}\n'.encode())
  options = {'label_column': 'label'} if label else {}
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'csv', text_column='text', **options))
  assert str(error.value) == (
    f'{path}, line 3: a carriage return (\\r) inside an unquoted field splits the row in two: '
    'remove it, or quote the field'
  )


def test_quotes_inside_fields_and_closed_multi_line_fields_are_read(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_text('label,text\n1,he said "hi"\n0,"two\nlines, ""quoted"""\n1,5" tall\n')
  records = readers.read_records(str(path), 'csv', text_column='text', label_column='label')
  assert list(records) == [
    (2, 'he said "hi"', '1'),
    (3, 'two\nlines, "quoted"', '0'),
    (5, '5" tall', '1'),
  ]


@pytest.mark.parametrize(
  'name, data, options, where',
  [
    # Blank lines and CRLF count as lines; a CR alone in a file of LF lines does not (as in an
    # editor), in one whose first line it ends (old Mac) it does.
    ('a.txt', b'one\n\ntwo\r\nthree\rfo\xffur\n', {}, 'line 4: invalid UTF-8 (byte 9 '),
    ('a.txt', b'one\r\rtwo\r\nthree\rfo\xffur\n', {}, 'line 5: invalid UTF-8 (byte 3 '),
    ('a.txt', b'one\nthr\xffee\n', {'text_mode': 'file'}, 'line 2: invalid UTF-8 (byte 4 '),
    ('a.csv', b'label,text\r1,ok\r0,caf\xe9\r1,x\r', {'label_column': 'label'}, 'line 3: '),
  ],
  ids=['text lines', 'text old Mac lines', 'text file', 'csv with bare CRs'],
)
def test_invalid_utf8_names_the_line_it_is_on(tmp_path, name, data, options, where):
  path = tmp_path / name
  path.write_bytes(data)
  input_format = 'text' if name.endswith('.txt') else 'csv'
  with pytest.raises(DataError, match=re.escape(f'{path}, {where}')):
    list(readers.read_records(str(path), input_format, **options))


@pytest.mark.parametrize('feature', ['text', 'label'])
def test_invalid_utf8_in_a_tfrecord_names_the_record_and_feature(tmp_path, feature):
  from tensorflow.core.example import example_pb2

  def example(text, label):
    record = example_pb2.Example()
    record.features.feature['text'].bytes_list.value.append(text)
    record.features.feature['label'].bytes_list.value.append(label)
    return record.SerializeToString()

  bad = {'text': (b'caf\xe9', b'1'), 'label': (b'fine', b'\xfe')}[feature]
  path = tmp_path / 'a.tfrecord'
  path.write_bytes(tfrecords.frame([example(b'ok', b'0'), example(*bad)]))
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'tfrecord', text_column='text', label_column='label'))
  assert str(error.value).startswith(f"{path}, record 2: feature '{feature}' is not valid UTF-8")
  assert 'line' not in str(error.value)
  assert f'(byte {4 if feature == "text" else 1}, counted from 1, is 0x' in str(error.value)


@pytest.mark.parametrize(
  'rows, taken',
  [
    # A stray quote in the text, closed by another one three lines down: two rows between.
    (['1,fine', '0,ok', '1,"a stray quote', '0,next row', '1,another row', '0,end" here'], '5-6'),
    # Closed on the next line: that line alone.
    (['1,fine', '0,ok', '1,"a stray quote', '0,closing" quote'], '5'),
    # The label column last: the text's stray quote takes the label lines in.
    (['fine,1', 'ok,0', '"stray,1', 'next row,0', 'closing",1'], '5'),
    # The label last, closed on the next line by a quote inside a field: that line alone.
    (['fine,1', 'ok,0', '"stray,1', 'closing" quote,0'], '5'),
  ],
  ids=['rows between', 'next line', 'label last', 'label last, next line'],
)
def test_rows_taken_into_a_quoted_field_by_a_stray_quote_are_named(tmp_path, rows, taken):
  path, message = _csv_error(tmp_path, rows)
  assert message.startswith(f'{path}, line 4: a quoted field runs on to line {len(rows) + 1} ')
  assert f'takes in line{"s" if "-" in taken else ""} {taken}, which read as rows' in message
  assert '("")' in message


def test_a_multi_line_text_with_commas_and_label_like_words_is_one_document(tmp_path):
  path = tmp_path / 'a.csv'
  text = 'Pros, first:\n1. the cast\nneg, but only a little\n0 stars for the ending, really'
  path.write_text(f'label,text\npos,fine\nneg,bad\npos,"{text}"\n')
  records = readers.read_records(str(path), 'csv', text_column='text', label_column='label')
  assert list(records) == [(2, 'fine', 'pos'), (3, 'bad', 'neg'), (4, text, 'pos')]


@pytest.mark.parametrize('ending', ['\n', '\r\n'])
@pytest.mark.parametrize('label_first', [False, True])
@pytest.mark.parametrize(
  'cell',
  [
    'first line of review\nsecond line of review',
    'one, two\nthree, neg\nfour',  # commas, a label-like word
    'a\n\nb\nc, d\ne',
  ],
  ids=['two lines', 'commas', 'five lines'],
)
def test_a_multi_line_cell_after_rows_of_its_label_is_read(tmp_path, ending, label_first, cell):
  path = tmp_path / 'a.csv'
  rows = [('good film', 'pos'), ('bad film', 'neg'), (f'"{cell}"', 'pos'), ('last', 'neg')]
  lines = ['label,text' if label_first else 'text,label']
  lines += [f'{label},{text}' if label_first else f'{text},{label}' for text, label in rows]
  # An Excel export: CRLF between rows, LF inside the cell.
  path.write_bytes((ending.join(lines) + ending).encode())
  records = readers.read_records(str(path), 'csv', text_column='text', label_column='label')
  assert [(text, label) for _, text, label in records] == [
    ('good film', 'pos'),
    ('bad film', 'neg'),
    (cell, 'pos'),
    ('last', 'neg'),
  ]


@pytest.mark.parametrize('kind', ['bytes_list', 'int64_list'])
def test_a_tfrecord_label_with_several_values_is_refused_like_a_text_with_several(tmp_path, kind):
  from tensorflow.core.example import example_pb2

  record = example_pb2.Example()
  record.features.feature['text'].bytes_list.value.append(b'a film')
  values = [b'pos', b'neg'] if kind == 'bytes_list' else [1, 0]
  getattr(record.features.feature['label'], kind).value.extend(values)
  path = tmp_path / 'a.tfrecord'
  path.write_bytes(tfrecords.frame([record.SerializeToString()]))
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'tfrecord', text_column='text', label_column='label'))
  assert str(error.value) == (
    f"{path}, record 1: feature 'label' must hold one label, got 2 {kind} values "
    f'({values[0]!r}, {values[1]!r}): write one label per example'
  )


@pytest.mark.parametrize(
  'encoding, wide',
  [
    ('utf-16', 'UTF-16'),  # with a byte-order mark
    ('utf-16-le', 'UTF-16'),
    ('utf-16-be', 'UTF-16'),
    ('utf-32', 'UTF-32'),
    ('utf-32-le', 'UTF-32'),
  ],
)
@pytest.mark.parametrize(
  'name, options',
  [
    ('a.csv', {'label_column': 'label'}),
    ('a.jsonl', {'label_column': 'label'}),
    ('a.txt', {}),
    ('b.txt', {'text_mode': 'file'}),
  ],
)
def test_a_utf16_or_utf32_file_says_to_save_it_as_utf8(tmp_path, encoding, wide, name, options):
  path = tmp_path / name
  data = {'.csv': 'text,label\nfine,pos\n', '.jsonl': '{"text": "fine", "label": "pos"}\n'}
  path.write_bytes(data.get(path.suffix, 'one fine line\n').encode(encoding))
  input_format = {'.csv': 'csv', '.jsonl': 'jsonl'}.get(path.suffix, 'text')
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), input_format, **options))
  assert str(error.value) == (
    f'{path}, line 1: looks like {wide}, not UTF-8: save it as UTF-8 (e.g. iconv -f {wide} -t UTF-8)'
  )


def test_a_short_or_ascii_first_line_is_not_taken_for_utf16(tmp_path):
  path = tmp_path / 'a.txt'
  path.write_bytes(b'a\nb\x00c\nfine\n')
  assert [text for _, text, _ in readers.read_records(str(path), 'text')] == ['a', 'b\x00c', 'fine']


@pytest.mark.parametrize(
  'data, where, hint',
  [
    # A pretty-printed array of objects.
    ('[\n  {"text": "a", "label": "pos"},\n  {"text": "b", "label": "neg"}\n]\n', 'line 1', 'ends'),
    # One object over several lines.
    ('{"text": "a", "label": "pos"}\n{\n  "text": "b"\n}\n', 'line 2', 'ends'),
    # A trailing comma; two objects on a line.
    ('{"text": "a", "label": "pos"},\n', 'line 1', 'after'),
    ('{"text": "a"} {"text": "b"}\n', 'line 1', 'after'),
    # An array of objects on one line.
    ('[{"text": "a"}, {"text": "b"}]\n', 'line 1', 'array'),
    # A syntax error inside the line: no layout hint.
    ('{"text": "a" "label": "pos"}\n', 'line 1', None),
  ],
  ids=['pretty array', 'object over lines', 'trailing comma', 'two objects', 'array', 'syntax'],
)
def test_a_jsonl_layout_error_says_one_object_per_line(tmp_path, data, where, hint):
  path = tmp_path / 'a.jsonl'
  path.write_text(data)
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'jsonl', text_column='text', label_column='label'))
  message = str(error.value)
  assert message.startswith(f'{path}, {where}: ')
  assert ('write one JSON object per line (JSON Lines)' in message) == (hint is not None)
  hints = {
    'ends': 'the line ends inside an object or array (pretty-printed JSON?)',
    'after': 'nothing after it (a trailing comma?)',
    'array': 'expected a JSON object, got an array; write one JSON object per line (JSON Lines)',
  }
  assert hint is None or hints[hint] in message


@pytest.mark.parametrize('ending', ['\r', '\r\n'], ids=['CR', 'CRLF'])
def test_jsonl_lines_end_at_any_line_ending(tmp_path, ending):
  path = tmp_path / 'a.jsonl'
  lines = ['{"text": "a", "label": "pos"}', '', '{"text": "b", "label": "neg"}']
  path.write_bytes((ending.join(lines) + ending).encode())
  records = readers.read_records(str(path), 'jsonl', text_column='text', label_column='label')
  assert list(records) == [(1, 'a', 'pos'), (2, '', None), (3, 'b', 'neg')]


def test_a_row_repeating_the_header_mid_file_says_so(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_text('text,label\ngood film,pos\ntext,label\nbad film,neg\n')
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'csv', text_column='text', label_column='label'))
  assert str(error.value) == (
    f"{path}, line 3: this row repeats the header ['text', 'label'] (CSV files joined with their"
    ' headers?): delete the row, or keep the files apart in the input folder'
  )


@pytest.mark.parametrize('suffix', ['.gz', '.bz2'])
def test_a_plain_file_named_as_compressed_says_to_rename_it(tmp_path, suffix):
  path = tmp_path / f'a.csv{suffix}'
  path.write_text('text,label\nfine,pos\n')
  with pytest.raises(DataError) as error:
    list(readers.read_records(str(path), 'csv', text_column='text', label_column='label'))
  compression = suffix[1:]
  assert str(error.value) == (
    f'{path}: not {compression} data (plain text?), though named {suffix}: rename it without '
    f'{suffix}, or compress it'
  )
