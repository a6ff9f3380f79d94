"""Format readers: one input file into (line or record number, text, label) records.

TensorFlow-free (a tf.Example is parsed with TensorFlow's protobuf classes, imported only when a
TFRecord file is read), and Beam-free: `components.read_examples` runs them in Beam.

Formats live in one registry, `FORMATS`: each entry names its reader (a generator of `Record`s
from one file), its default file pattern and the options the reader takes. A new format is one
entry and one reader (and its name in `tfxlm.contract`).

Files are read as streams, one record at a time, so file names and line numbers stay known for
error messages. Files named `*.gz` or `*.bz2` are decompressed as they are read (csv, text,
jsonl; tfrecord: gzip). Every problem is a `DataError` naming the file, the line or record and
what to do; a byte-order mark starting a file is stripped; CSV fields up to 64 Mi characters
are read.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import dataclasses
import gzip
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from components import tfrecords
from components.errors import DataError
from tfxlm import contract

# The readers' keyword options; TextExampleGen's exec properties carry the same names.
TEXT_COLUMN_KEY = 'text_column'
LABEL_COLUMN_KEY = 'label_column'
TEXT_MODE_KEY = 'text_mode'

# (line number (a CSV row's first), or record number for TFRecord; text; label or None)
Record = tuple[int, str, str | None]

# Decompression by file name extension. The streams decompress as they are read.
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
  '.gz': lambda raw: gzip.GzipFile(fileobj=raw, mode='rb'),
  '.bz2': lambda raw: bz2.BZ2File(raw, mode='rb'),
}
# What a damaged compressed stream raises while it is read (BadGzipFile is an OSError).
_STREAM_ERRORS = (OSError, EOFError, zlib.error)

_CHECK_CHUNK_BYTES = 1 << 20
_BOM = '\ufeff'
# Longest CSV field read (Python's csv default is 131,072 characters); bounded so that a file
# with an unbalanced quote fails instead of reading everything into one field.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024


# Lines are counted as `grep -n` and editors count them: a file whose first line ends in LF or
# CRLF has lines ending in LF (a CR alone inside it is a character, e.g. in a quoted CSV field);
# a file whose first line ends in a CR alone (old Mac, Excel "CSV (Macintosh)") has lines ending
# in CR, LF or CRLF.
_LINE_END = re.compile(rb'\r\n|\r|\n')
_LF = re.compile(rb'\n')
# After a CR that is not part of a CRLF: where a line ended by a bare CR stops (the CR kept, so
# that csv still sees a line end, and a quoted field spanning it keeps it).
_BARE_CR = re.compile(rb'(?<=\r)(?!\n)(?=.)', re.DOTALL)


def _cr_ends_lines(first: bytes) -> bool:
  """Whether a file whose first bytes are `first` has lines ending in a CR alone (old Mac)."""
  end = _LINE_END.search(first)
  return end is not None and end.group() == b'\r' and end.end() < len(first)


# Byte-order marks of the encodings wider than UTF-8 (UTF-32's first: it starts as UTF-16's).
_WIDE_BOMS = (
  (b'\xff\xfe\x00\x00', 'UTF-32'),
  (b'\x00\x00\xfe\xff', 'UTF-32'),
  (b'\xff\xfe', 'UTF-16'),
  (b'\xfe\xff', 'UTF-16'),
)
_WIDE_SAMPLE_BYTES = 256


def _check_not_wide(first: bytes, path: str) -> None:
  """Refuses a file whose first bytes are UTF-16 or UTF-32 (a byte-order mark of theirs, or
  NUL bytes at every other place, as ASCII text in them has), which would read as invalid
  UTF-8 or as text with a NUL between letters."""
  wide = next((name for bom, name in _WIDE_BOMS if first.startswith(bom)), None)
  sample = first[:_WIDE_SAMPLE_BYTES]
  half = len(sample) // 2
  if wide is None and half >= 2 and max(sample[0::2].count(0), sample[1::2].count(0)) >= half - 1:
    wide = 'UTF-32' if sample.count(0) >= len(sample) * 3 // 4 - 1 else 'UTF-16'
  if wide:
    raise DataError(
      f'{path}, line 1: looks like {wide}, not UTF-8: save it as UTF-8 (e.g. iconv -f {wide} '
      f'-t UTF-8)'
    )


def _decode(raw: bytes, path: str, line: int, cr_ends_lines: bool = False) -> str:
  """`raw` (starting on line `line` of `path`) as text; invalid UTF-8 is an error naming the
  line and byte it is on."""
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    before = (_LINE_END if cr_ends_lines else _LF).split(raw[: e.start])
    raise DataError(
      f'{path}, line {line + len(before) - 1}: invalid UTF-8 (byte {len(before[-1]) + 1} of the line, counted from 1, '
      f'is 0x{raw[e.start]:02x}: {e.reason}); re-encode the file as UTF-8'
    ) from None


def _decode_value(raw: bytes, where: str, feature: str) -> str:
  """A tf.Example's bytes value as text; invalid UTF-8 is an error naming `where` (file and
  record) and the feature."""
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(
      f'{where}: feature {feature!r} is not valid UTF-8 (byte {e.start + 1}, counted from 1, is '
      f'0x{raw[e.start]:02x}: {e.reason}); write its strings as UTF-8'
    ) from None


def _label_str(value: Any) -> str | None:
  return None if value is None else str(value).strip() or None


def _compression(path: str) -> str | None:
  extension = os.path.splitext(path)[1]
  return extension[1:] if extension in _DECOMPRESSORS else None


def _open_raw(path: str) -> IO[bytes]:
  # Local files through Python's own buffered reader: TFX's fileio (TensorFlow's GFile) costs
  # ~20 us a line more. URIs (gs://, s3://, ...) need fileio.
  if '://' not in path:
    return open(path, 'rb')  # noqa: SIM115
  from tfx.dsl.io import fileio  # loads TensorFlow: only for remote files

  return fileio.open(path, 'rb')


@contextlib.contextmanager
def _open(path: str) -> Iterator[IO[bytes]]:
  """The file's bytes, decompressed when its name ends in .gz or .bz2."""
  with _open_raw(path) as raw:
    decompressor = _DECOMPRESSORS.get(os.path.splitext(path)[1])
    if decompressor is None:
      yield raw
    else:
      with decompressor(raw) as stream:
        yield stream


# How the data of each compression starts.
_MAGIC = {'gz': b'\x1f\x8b', 'bz2': b'BZh'}


def _damaged(path: str, where: str, error: BaseException) -> DataError:
  compression = _compression(path)
  if compression:
    with _open_raw(path) as raw:
      start = raw.read(len(_MAGIC[compression]))
    if start and start != _MAGIC[compression]:
      hint = ' (plain text?)' if start.isascii() else ''
      return DataError(
        f'{path}: not {compression} data{hint}, though named .{compression}: rename it without '
        f'.{compression}, or compress it'
      )
  kind = f'{compression} data' if compression else 'data'
  return DataError(
    f'{path}: unreadable {kind} {where} ({error or type(error).__name__}); the '
    'file is corrupt or truncated: re-create or re-download it'
  )


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """Streams the decoded lines of a file (line endings kept), numbered from 1, a CR alone ending
  a line only in a file whose first line it ends (see `_LINE_END`). Lines are split before they
  are decoded, so invalid UTF-8 is reported on its own line."""
  number = 0
  cr_ends_lines = None
  with _open(path) as f:
    try:
      for raw in f:
        if cr_ends_lines is None:
          _check_not_wide(raw, path)
          cr_ends_lines = _cr_ends_lines(raw)
        for piece in _BARE_CR.split(raw) if cr_ends_lines and b'\r' in raw else (raw,):
          number += 1
          line = _decode(piece, path, number)
          # A byte-order mark (Windows editors, spreadsheet exports) is not part of the data.
          yield number, line.removeprefix(_BOM) if number == 1 else line
    except _STREAM_ERRORS as e:
      raise _damaged(path, f'after line {number}', e) from None


def _read_text(path: str, text_mode: str = contract.LINE) -> Iterator[Record]:
  if text_mode == contract.FILE:
    # One document per file: the document is the unit, so it is read whole.
    with _open(path) as f:
      try:
        data = f.read()
      except _STREAM_ERRORS as e:
        raise _damaged(path, 'in the file', e) from None
    _check_not_wide(data, path)
    yield 1, _decode(data, path, 1, _cr_ends_lines(data)).removeprefix(_BOM), None
    return
  for number, line in _lines(path):
    yield number, line.rstrip('\r\n'), None


def _read_jsonl(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  for number, line in _lines(path):
    line = line.strip()
    if not line:
      yield number, '', None
      continue
    try:
      record = json.loads(
        line, parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_JsonNumber
      )
    except json.JSONDecodeError as e:
      raise DataError(
        f'{path}, line {number}: not valid JSON ({e.msg}{"" if e.msg.endswith(" at") else " at"}'
        f' column {e.colno}){_layout_hint(e)}'
      ) from None
    if not isinstance(record, dict):
      hint = f'; {_ONE_PER_LINE}, not an array of them' if isinstance(record, list) else ''
      raise DataError(
        f'{path}, line {number}: expected a JSON object, got {_json_type(record)}{hint}'
      )
    if text_column not in record:
      raise DataError(
        f'{path}, line {number}: no text field {text_column!r} (fields: {sorted(record)}): '
        'set data.jsonl_text_field to the field holding the text'
      )
    text = record[text_column]
    if not isinstance(text, str) or isinstance(text, _JsonNumber):
      raise DataError(
        f'{path}, line {number}: text field {text_column!r} is {_json_type(text)}, not a string'
      )
    label = record.get(label_column) if label_column else None
    if isinstance(label, bool):
      label = 'true' if label else 'false'  # as the file spells it, not Python's True
    if isinstance(label, (dict, list)):  # str() would make a label no schema lists
      raise DataError(
        f'{path}, line {number}: label field {label_column!r} is {_json_type(label)}, not a '
        'string or number'
      )
    if '\\u' in line:  # a lone surrogate (no character, not UTF-8) comes only from an escape
      _check_surrogates(path, number, text_column, text)
      if isinstance(label, str):
        _check_surrogates(path, number, label_column, label)
    yield number, text, _label_str(label)


_SURROGATE = re.compile(r'[\ud800-\udfff]')


def _check_surrogates(path: str, number: int, field: str, value: str) -> None:
  """A JSON string with half a surrogate pair (`\\ud800` alone) is no text: an error."""
  found = _SURROGATE.search(value)
  if found:
    raise DataError(
      f'{path}, line {number}: field {field!r} has a lone surrogate escape '
      f'(\\u{ord(found.group()):04x}, character {found.start() + 1}), half of a pair that is no '
      'character (text cut inside an emoji?): write the character whole, or remove the escape'
    )


_ONE_PER_LINE = 'write one JSON object per line (JSON Lines)'


def _layout_hint(error: json.JSONDecodeError) -> str:
  """What to do when a JSONL line's JSON error is one of layout, not of syntax: more after its
  object (a trailing comma, two objects), or a line that ends inside one (pretty-printed JSON,
  an object or array over several lines); '' otherwise."""
  if error.msg == 'Extra data':
    return f'; {_ONE_PER_LINE}, nothing after it (a trailing comma?)'
  if error.pos >= len(error.doc) or error.doc in ('}', ']', '},', '],'):
    return f'; the line ends inside an object or array (pretty-printed JSON?): {_ONE_PER_LINE}'
  return ''


class _JsonNumber(str):
  """A JSON number as the file writes it (`1.0`, `1e2`): a label keeps its spelling."""


def _json_type(value: Any) -> str:
  """JSON's name of the type of a decoded `value`."""
  kinds = ((_JsonNumber, 'a number'), (str, 'a string'), (bool, 'a boolean'), (list, 'an array'))
  for kind, name in kinds:
    if isinstance(value, kind):
      return name
  return 'null' if value is None else 'an object'


def _read_csv(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  # csv needs text; the lines are decoded one by one to report invalid UTF-8 precisely. A row
  # is numbered by the line it starts on (a quoted field spans lines); the lines of the row
  # being read are kept to find an unclosed quote in them.
  parts: list[tuple[int, str]] = []  # (line number, text) of the row being read

  def lines():
    number = 0
    for number, line in _lines(path):
      parts.append((number, line))
      yield line
    # csv asks for a line after a row's first only inside a quoted field: this one never closed.
    if parts:
      why = f'runs to the end of the file (line {number})'
      raise _unclosed_quote(path, parts, why) or DataError(
        f'{path}, line {parts[0][0]}: a quoted field {why}; close its quote'
      )

  def next_row() -> list[str] | None:
    parts.clear()
    return next(reader, None)

  csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
  reader = csv.reader(lines())
  try:
    header = next_row()
  except csv.Error as e:
    raise DataError(f'{path}, line {parts[0][0]}: malformed CSV header ({e})') from None
  if header is None:
    raise DataError(f'{path}: empty CSV file (no header row)')
  header = [name.strip() for name in header]
  repeated = sorted({name for name in header if name and header.count(name) > 1})
  if repeated:
    raise DataError(
      f'{path}: column {repeated[0]!r} appears {header.count(repeated[0])} times in '
      f'the header ({header}); give each column its own name'
    )
  wanted = [text_column] + ([label_column] if label_column else [])
  for column in wanted:
    if column not in header:
      hint = ''
      other = [sep for sep in ';\t|' if len(header) == 1 and sep in header[0]]
      if other:  # one column holding the whole header: another separator than the comma
        hint = f' (fields separated by {other[0]!r}? CSV input is comma-separated)'
      raise DataError(f'{path}: no column {column!r} in the header (columns: {header}){hint}')
  text_index = header.index(text_column)
  label_index = header.index(label_column) if label_column else None
  seen_labels: set[str] = set()  # the labels of the rows before, to tell a row taken in
  try:
    while (fields := next_row()) is not None:
      if not fields:  # A blank line is not a record.
        continue
      if len(header) > 1 and [field.strip() for field in fields] == header:
        raise DataError(
          f'{path}, line {parts[0][0]}: this row repeats the header {header} (CSV files joined '
          'with their headers?): delete the row, or keep the files apart in the input folder'
        )
      if len(fields) != len(header):
        spans = (
          f' (the row runs on to line {parts[-1][0]}, inside a quoted field: an unclosed quote?)'
          if len(parts) > 1
          else ''
        )
        raise DataError(
          f'{path}, line {parts[0][0]}: ragged row with {len(fields)} fields, the header '
          f'has {len(header)} ({header}){spans}'
        )
      label = _label_str(fields[label_index]) if label_index is not None else None
      if len(parts) > 1 and label_index is not None:
        _check_swallowed_rows(path, parts, len(header), label_index, seen_labels)
      if label is not None and len(seen_labels) < _SEEN_LABELS_KEPT:
        seen_labels.add(label)
      yield parts[0][0], fields[text_index], label
  except csv.Error as e:
    if 'field limit' in str(e):
      why = f'grows past {_CSV_FIELD_LIMIT:,} characters (at line {parts[-1][0]})'
      raise _unclosed_quote(path, parts, why) or DataError(
        f'{path}, line {parts[0][0]}: a field {why}: split the document'
      ) from None
    if 'new-line character' in str(e) and any(_INNER_CR.search(text) for _, text in parts):
      raise _inner_cr(path, parts) from None
    raise DataError(f'{path}, line {parts[0][0]}: malformed CSV ({e})') from None


def _inner_cr(path: str, parts: list[tuple[int, str]]) -> DataError:
  """The error of a row (`parts`) with a CR alone in an unquoted field, in a file of LF lines."""
  return DataError(
    f'{path}, line {parts[0][0]}: a carriage return (\\r) inside an unquoted field splits the '
    'row in two: remove it, or quote the field'
  )


# A CR alone inside a line (not ending it): csv refuses it outside quotes.
_INNER_CR = re.compile(r'\r(?!\n|$)')
# The distinct labels remembered to recognize a row inside a quoted field (a bound for files with
# a label per row, e.g. ids in the label column).
_SEEN_LABELS_KEPT = 10_000


def _check_swallowed_rows(
  path: str, parts: list[tuple[int, str]], width: int, label_index: int, labels: set[str]
) -> None:
  """A row whose quoted field spans lines (`parts`: their (line, text)) may be a stray quote
  closed by another one lines later, every row between read as part of one field. Raises when
  the lines it took in read, each by itself, as rows of the file (`width` fields, a label seen
  before), and so does its first line without the quote that opened the field.

  The lines taken in are those between the first and the last; when there are none, the last,
  unless it ends the field as a field ends (its closing quote followed by a comma or the line
  end: a real cell's last line, `...",pos`). So a real multi-line cell passes, whichever column the label
  is in: its first line is no row when the label follows the cell, and its inner lines are
  rarely rows when the label leads."""

  def reads_as_row(text: str) -> bool:
    try:
      fields = next(csv.reader([text]), [])
    except csv.Error:
      return False
    return len(fields) == width and _label_str(fields[label_index]) in labels

  first_line = parts[0][1]
  opening = _opening_quote(first_line)
  if opening is not None and not reads_as_row(first_line[:opening] + first_line[opening + 1 :]):
    return
  taken = parts[1:-1] if _closes_field(parts[-1][1]) else parts[1:-1] or parts[1:]
  if not taken or not all(reads_as_row(text) for _, text in taken):
    return
  first, last = taken[0][0], taken[-1][0]
  rows = f'line {first}' if first == last else f'lines {first}-{last}'
  raise DataError(
    f'{path}, line {parts[0][0]}: a quoted field runs on to line {parts[-1][0]} and takes in '
    f'{rows}, which read as rows of their own (a stray quote?); close the quote where the field '
    'ends, or double a quote inside a quoted field ("")'
  )


def _opening_quote(line: str) -> int | None:
  """Where in `line` (a row's first line) the quoted field that runs on past it opens."""
  pos = 0
  while pos < len(line):
    if line[pos] == '"':
      closed = _CLOSED_QUOTED_FIELD.match(line, pos)
      if closed is None:
        return pos
      pos = closed.end()
    pos = _FIELD_REST.match(line, pos).end() + 1
  return None


def _closes_field(line: str) -> bool:
  """Whether `line`, the last of a quoted field spanning lines, closes it as a field closes:
  its first quote that is not doubled followed by a comma or the line end."""
  pos = 0
  while (pos := line.find('"', pos)) >= 0:
    if line.startswith('""', pos):
      pos += 2
      continue
    return line[pos + 1 : pos + 2] in ('', ',', '\r', '\n')
  return False


# A quoted CSV field that closes (a quote inside it doubled, not followed by another quote), and
# the rest of a field up to its comma or line end.
_CLOSED_QUOTED_FIELD = re.compile(r'"[^"]*(?:""[^"]*)*"(?!")')
_FIELD_REST = re.compile(r'[^,\r\n]*')


def _unclosed_quote(path: str, parts: list[tuple[int, str]], why: str) -> DataError | None:
  """The error of a row read as `parts` ((line, text) pairs) whose last field is a quoted one
  that does not close (`why`: what it did), naming the line of its opening quote; None if no
  quoted field of the row is open at its end."""
  text = ''.join(part for _, part in parts)
  pos = 0
  while pos < len(text):
    if text[pos] == '"':
      closed = _CLOSED_QUOTED_FIELD.match(text, pos)
      if closed is None:
        break
      pos = closed.end()
    pos = _FIELD_REST.match(text, pos).end() + 1  # past the comma or line end
  else:
    return None
  end = 0
  for line, part in parts:
    end += len(part)
    if pos < end:
      return DataError(
        f'{path}, line {line}: an unclosed quote: the quoted field it opens {why}; close the '
        'quote, or double a quote inside a quoted field ("")'
      )
  return None


def _example_fields(
  serialized: bytes, where: str, text_column: str, label_column: str | None
) -> tuple[str, str | None]:
  """(text, label) of one serialized tf.Example from `where` (file and record)."""
  from tensorflow.core.example import example_pb2  # loads TensorFlow: only for TFRecords

  try:
    example = example_pb2.Example.FromString(serialized)
  except Exception as e:  # noqa: BLE001 - protobuf's DecodeError has no stable import path
    raise DataError(f'{where}: not a serialized tf.Example ({e})') from None
  feature = example.features.feature
  if text_column not in feature:
    raise DataError(
      f'{where}: the tf.Example has no feature {text_column!r} (features: {sorted(feature)})'
    )
  values = feature[text_column].bytes_list.value
  if len(values) != 1:
    raise DataError(
      f'{where}: feature {text_column!r} must hold exactly one string, got {len(values)} '
      f'bytes values'
    )
  label = None
  if label_column and label_column in feature:
    label_feature = feature[label_column]
    kind = label_feature.WhichOneof('kind')
    label_values = list(getattr(label_feature, kind).value) if kind else []
    if len(label_values) > 1:
      shown = ', '.join(repr(v) for v in label_values[:3]) + (
        ', ...' if len(label_values) > 3 else ''
      )
      raise DataError(
        f'{where}: feature {label_column!r} must hold one label, got {len(label_values)} '
        f'{kind} values ({shown}): write one label per example'
      )
    label = label_values[0] if label_values else None
    if isinstance(label, bytes):
      label = _decode_value(label, where, label_column)
    label = _label_str(label)
  return _decode_value(values[0], where, text_column), label


def _tfrecords(path: str) -> Iterator[tuple[int, bytes]]:
  """Streams (record number, payload) from a TFRecord file, checking each record's CRCs.

  Read here rather than with tf.data, which ends a truncated gzip file silently.
  """
  number = 0
  with _open(path) as f:
    try:
      for number, payload in enumerate(tfrecords.unframe(f), start=1):
        yield number, payload
    except tfrecords.FramingError as e:
      raise DataError(
        f'{path}: record {e.record} is unreadable ({e.problem}); the file is corrupt, '
        'truncated or not a TFRecord file (gzip-compressed ones must be named *.gz)'
      ) from None
    except _STREAM_ERRORS as e:
      raise _damaged(path, f'in record {number + 1}', e) from None


def _read_tfrecord(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  for number, serialized in _tfrecords(path):
    text, label = _example_fields(serialized, f'{path}, record {number}', text_column, label_column)
    yield number, text, label


def _no_label_in_column(path: str, number: int, label_column: str) -> tuple[str, str]:
  """A CSV row without a label: its label column (in the header, as the reader checked) is
  empty."""
  return (
    f'no label (column {label_column!r} is empty)',
    'give each row a label (or set data.label_column to the column holding them)',
  )


def _no_label_in_jsonl(path: str, number: int, label_column: str) -> tuple[str, str]:
  """A JSONL record without a label: no such field, or the field is null or empty."""
  record = next(
    (json.loads(line) for n, line in _lines(path) if n == number and line.strip()), None
  )
  if isinstance(record, dict) and label_column not in record:
    return (
      f'the record has no label field {label_column!r} (its fields: {sorted(record)})',
      f'give each record a {label_column!r} field (or set data.label_column to the field '
      'holding the labels)',
    )
  kind = 'null' if isinstance(record, dict) and record[label_column] is None else 'empty'
  return (
    f'no label (field {label_column!r} is {kind})',
    'give each record a label (or set data.label_column to the field holding them)',
  )


def _no_label_in_tfrecord(path: str, number: int, label_column: str) -> tuple[str, str]:
  """A tf.Example without a label: no such feature, or the feature holds no value or an empty
  one."""
  from tensorflow.core.example import example_pb2  # loads TensorFlow: only for TFRecords

  payload = next((payload for n, payload in _tfrecords(path) if n == number), None)
  if payload is not None:
    feature = example_pb2.Example.FromString(payload).features.feature
    if label_column not in feature:
      return (
        f'the tf.Example has no label feature {label_column!r} (its features: {sorted(feature)})',
        f'give each tf.Example a {label_column!r} feature (or set data.label_column to the '
        'feature holding the labels)',
      )
  return (
    f'no label (feature {label_column!r} is empty)',
    'give each tf.Example a label (or set data.label_column to the feature holding them)',
  )


@dataclasses.dataclass(frozen=True)
class InputFormat:
  """How ExampleGen reads one input format.

  Attributes:
    reader: streams `Record`s from one file: `reader(path, **options)`.
    default_pattern: glob of the format's files under input_base when the config gives none
      (compressed files included).
    options: the reader's keyword options, named as TextExampleGen's exec properties.
    unit: what a `Record`'s number counts, as messages name it: 'line' (of a text file) or
      'record' (of a TFRecord file).
    no_label: why a record read without a label has none, and what to do, for an error:
      `no_label(path, number, label_column)` -> (problem, what to do). It reads the file again up
      to that record (errors only), to tell a missing field from an empty one.
  """

  reader: Callable[..., Iterator[Record]]
  default_pattern: str
  options: tuple[str, ...]
  unit: str = 'line'
  no_label: Callable[[str, int, str], tuple[str, str]] = _no_label_in_column


FORMATS: dict[str, InputFormat] = {
  contract.CSV: InputFormat(_read_csv, '*.csv*', (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY)),
  contract.TFRECORD: InputFormat(
    _read_tfrecord,
    '*',
    (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY),
    unit='record',
    no_label=_no_label_in_tfrecord,
  ),
  contract.TEXT: InputFormat(_read_text, '*.txt*', (TEXT_MODE_KEY,)),
  contract.JSONL: InputFormat(
    _read_jsonl, '*.jsonl*', (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY), no_label=_no_label_in_jsonl
  ),
}


def get_format(name: str) -> InputFormat:
  """The registry entry of format `name`; ValueError naming the known formats otherwise."""
  if name not in FORMATS:
    raise ValueError(f'input_format {name!r} is not one of {", ".join(FORMATS)}')
  return FORMATS[name]


def read_records(path: str, input_format_name: str, **options: Any) -> Iterator[Record]:
  """Streams (line or record number, text, label) from one file.

  Args:
    path: The file; `*.gz` and `*.bz2` are decompressed as they are read.
    input_format_name: A key of `FORMATS`.
    **options: The format's options (`text_column`, `label_column`, `text_mode`); those the
      format does not take are ignored, those missing take the reader's defaults.

  Raises:
    DataError: naming the file, line (or record) and problem.
  """
  entry = get_format(input_format_name)
  records = entry.reader(path, **{k: v for k, v in options.items() if k in entry.options})
  return _blame_damaged_stream(path, records) if _compression(path) else records


def _blame_damaged_stream(path: str, records: Iterator[Record]) -> Iterator[Record]:
  """Reports a damaged compressed file as such, not by the first bad line it produced.

  A bz2 block's checksum is checked at its end, after its (garbled) lines were read: a corrupt
  file would first show as invalid UTF-8 or malformed CSV. On such an error the rest of the
  stream is read: if it is damaged, that is the error reported.
  """
  try:
    yield from records
  except DataError:
    with _open(path) as f:
      try:
        while f.read(_CHECK_CHUNK_BYTES):
          pass
      except _STREAM_ERRORS as e:
        raise _damaged(path, 'in the file', e) from None
    raise
