"""ExampleGen for text: CSV, TFRecord of tf.Example, plain-text folders and JSON Lines.

Every format comes out the same way: tf.Examples with a `text` feature (UTF-8 bytes) and, when a
label column is configured, a `label` feature (the label as a string, so one schema domain covers
`0`/`1` as well as `positive`/`negative`). Source column or field names are renamed here, once,
so nothing downstream knows them.

Formats live in one registry, `FORMATS`: each entry names its reader (a generator of
(line or record number, text, label) from one file), its default file pattern and the options the
reader takes. A new format is one entry and one reader (and its name in `tfxlm.contract`).

Files are read as streams, one record at a time, by a DoFn per file (file names and line numbers
stay known for error messages): files are the unit of parallelism, so split a large corpus into
several files. Files named `*.gz` or `*.bz2` are decompressed as they are read (csv, text, jsonl;
tfrecord: gzip).

Handling of bad records (each is either an error naming file, line and problem, or counted):
  * empty or whitespace-only text: skipped and counted (Beam counter `empty_documents_skipped`,
    and a warning per file with the count and the first line numbers);
  * invalid UTF-8, ragged CSV rows, a missing text column/field, malformed JSON, a corrupt or
    truncated compressed file or TFRecord: `DataError`;
  * a missing or empty label: kept without a `label` value, so ExampleValidator reports it
    against the schema (and `label` outside the schema's domain likewise) and the Vocabulary
    gate stops the run;
  * an input pattern that matches no file: `DataError` naming the pattern;
  * a split without examples (empty files, a CSV header without rows, a pre-split folder with
    nothing in it, a hash split of too few examples): `DataError` naming the split and its files;
    a file without documents beside others is counted (`files_without_documents`) and warned;
  * a byte-order mark starting a file: stripped; a repeated CSV column name: `DataError`; CSV
    fields up to 64 Mi characters are read;
  * with `label_values`, a row whose label is not listed: dropped and counted (Beam counter
    `rows_dropped_by_label`, and a log line per file with the count per label).

Hash splits hash each example's text (not the whole example), so duplicates stay in one split
and `TextExampleGen.without_labels()` (the pretraining corpus of the same files) agrees with the
labeled examples on which text is in which split.
"""

from __future__ import annotations

import bisect
import bz2
import collections
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import json
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import apache_beam as beam
import google_crc32c
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import (
  artifact_utils,
  channel,
  component_spec,
  standard_artifacts,
  standard_component_specs,
)
from tfx.utils import proto_utils

from components import tfrecords
from components.validation import DataError
from tfxlm import contract

# Exec property keys of TextExampleGen, on top of FileBasedExampleGen's. The reader options among
# them (text_column, label_column, text_mode) are also the readers' keyword arguments.
INPUT_FORMAT_KEY = 'input_format'
TEXT_COLUMN_KEY = 'text_column'
LABEL_COLUMN_KEY = 'label_column'
TEXT_MODE_KEY = 'text_mode'
SHUFFLE_KEY = 'shuffle'
LABEL_VALUES_KEY = 'label_values'  # JSON list of the labels to keep; empty keeps every row
COMPRESSION_KEY = 'compression'  # of the output TFRecord files: a contract.TFRECORD_COMPRESSIONS

_METRICS_NAMESPACE = 'tfxlm.example_gen'
# How many line numbers of skipped empty documents a warning lists per file.
_MAX_REPORTED_LINES = 10
# How many file names an empty-split error lists.
_MAX_REPORTED_FILES = 3

# (line number, or record number for TFRecord; text; label or None)
Record = tuple[int, str, str | None]

# Decompression by file name extension. The streams decompress as they are read.
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
  '.gz': lambda raw: gzip.GzipFile(fileobj=raw, mode='rb'),
  '.bz2': lambda raw: bz2.BZ2File(raw, mode='rb'),
}
# What a damaged compressed stream raises while it is read (BadGzipFile is an OSError).
_STREAM_ERRORS = (OSError, EOFError, zlib.error)

_CHECK_CHUNK_BYTES = 1 << 20
# Serialized bytes of the lists of examples the executor writes a list at a time (see
# `_FileToExamples`): large enough that Beam's per-element costs vanish, small enough to hold one
# per split and worker.
_BATCH_BYTES = 1 << 20
_BOM = '\ufeff'
# Longest CSV field read (Python's csv default is 131,072 characters); bounded so that a file
# with an unbalanced quote fails instead of reading everything into one field.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024

# TFRecord framing: uint64 length, masked crc32c of the length, payload, masked crc32c of it.
_TFRECORD_HEADER = struct.Struct('<QI')
_TFRECORD_CRC = struct.Struct('<I')
_TFRECORD_CRC_MASK_DELTA = 0xA282EAD8


def _decode(raw: bytes, path: str, line: int) -> str:
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(
      f'{path}, line {line}: invalid UTF-8 (byte {e.start} of the line is 0x{raw[e.start]:02x}: '
      f'{e.reason}); re-encode the file as UTF-8'
    ) from None


def _varint(value: int) -> bytes:
  out = bytearray()
  while value > 0x7F:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
  """One length-delimited protobuf field: tag, payload length (varint), payload."""
  return tag + _varint(len(payload)) + payload


# Protobuf tags of the length-delimited fields a tf.Example of bytes features is made of: field 1
# (Example.features, Features.feature map entries, their key, Feature.bytes_list, BytesList.value)
# and field 2 (a map entry's value).
_FIELD_1, _FIELD_2 = b'\x0a', b'\x12'
_TEXT_KEY_FIELD = _field(_FIELD_1, contract.TEXT_KEY.encode())
_LABEL_KEY_FIELD = _field(_FIELD_1, contract.LABEL_KEY.encode())


# The varints of lengths below 2**14 (two bytes or less), looked up rather than encoded: the
# four lengths of each feature make up most of the cost of an example.
_SHORT_VARINTS = tuple(_varint(length) for length in range(1 << 14))


def _length(value: int) -> bytes:
  """`value` as a varint (a length)."""
  return _SHORT_VARINTS[value] if value < 1 << 14 else _varint(value)


def _bytes_feature_entry(key_field: bytes, value: bytes) -> bytes:
  """A `Features.feature` map entry: key -> Feature(bytes_list=BytesList(value=[value])).

  Nested fields, innermost first: BytesList.value, Feature.bytes_list, the entry's value.
  """
  value_length = _length(len(value))
  bytes_list_size = 1 + len(value_length) + len(value)
  bytes_list_length = _length(bytes_list_size)
  feature_size = 1 + len(bytes_list_length) + bytes_list_size
  feature_length = _length(feature_size)
  entry_size = len(key_field) + 1 + len(feature_length) + feature_size
  return b''.join(
    (
      _FIELD_1,
      _length(entry_size),
      key_field,
      _FIELD_2,
      feature_length,
      _FIELD_1,
      bytes_list_length,
      _FIELD_1,
      value_length,
      value,
    )
  )


def make_example(text: str, label: str | None) -> bytes:
  """Serializes one tf.Example with `text` and, if not None or empty, `label`.

  Encoded here, field by field, rather than through the tf.train.Example classes: this runs
  once per document and takes less than half the CPU; the bytes parse as the same tf.Example.
  """
  features = _bytes_feature_entry(_TEXT_KEY_FIELD, text.encode())
  if label:
    features += _bytes_feature_entry(_LABEL_KEY_FIELD, label.encode())
  return _FIELD_1 + _length(len(features)) + features


def _label_str(value: Any) -> str | None:
  if value is None:
    return None
  if isinstance(value, bytes):
    value = value.decode('utf-8')
  return str(value).strip() or None


def _compression(path: str) -> str | None:
  extension = os.path.splitext(path)[1]
  return extension[1:] if extension in _DECOMPRESSORS else None


def _open_raw(path: str) -> IO[bytes]:
  # Local files through Python's own buffered reader: TFX's fileio (TensorFlow's GFile) costs
  # ~20 us a line more. URIs (gs://, s3://, ...) need fileio.
  return fileio.open(path, 'rb') if '://' in path else open(path, 'rb')  # noqa: SIM115


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


def _damaged(path: str, where: str, error: BaseException) -> DataError:
  kind = f'{_compression(path)} data' if _compression(path) else 'data'
  return DataError(
    f'{path}: unreadable {kind} {where} ({error or type(error).__name__}); the '
    'file is corrupt or truncated: re-create or re-download it'
  )


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """Streams the decoded lines of a file (line endings kept), numbered from 1."""
  number = 0
  with _open(path) as f:
    try:
      for number, raw in enumerate(f, start=1):
        line = _decode(raw, path, number)
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
    yield 1, _decode(data, path, 1).removeprefix(_BOM), None
    return
  extra = 0  # lines ended by a bare CR (old Mac files) that the \n-split did not count
  for number, line in _lines(path):
    for i, part in enumerate(line.rstrip('\r\n').split('\r')):
      extra += i > 0
      yield number + extra, part, None


def _read_jsonl(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  for number, line in _lines(path):
    line = line.strip()
    if not line:
      yield number, '', None
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(
        f'{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})'
      ) from None
    if not isinstance(record, dict):
      raise DataError(f'{path}, line {number}: expected a JSON object, got {_json_type(record)}')
    if text_column not in record:
      raise DataError(
        f'{path}, line {number}: no text field {text_column!r} (fields: {sorted(record)})'
      )
    text = record[text_column]
    if not isinstance(text, str):
      raise DataError(
        f'{path}, line {number}: text field {text_column!r} is {_json_type(text)}, not a string'
      )
    label = record.get(label_column) if label_column else None
    if isinstance(label, (dict, list)):  # str() would make a label no schema lists
      raise DataError(
        f'{path}, line {number}: label field {label_column!r} is {_json_type(label)}, not a '
        'string or number'
      )
    yield number, text, _label_str(label)


def _json_type(value: Any) -> str:
  """JSON's name of the type of a decoded `value`."""
  kinds = ((str, 'a string'), (bool, 'a boolean'), ((int, float), 'a number'), (list, 'an array'))
  for kind, name in kinds:
    if isinstance(value, kind):
      return name
  return 'null' if value is None else 'an object'


# After a CR that is not part of a CRLF: where a line ended by a bare CR stops (the CR kept, so
# that csv still sees a line end, and a quoted field spanning it keeps it).
_BARE_CR = re.compile(r'(?<=\r)(?!\n)(?=.)', re.DOTALL)


def _read_csv(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  # csv needs text; the lines are decoded one by one to report invalid UTF-8 precisely, and the
  # physical line number is the last one the csv reader consumed (a quoted field spans lines).
  physical = {'line': 0}

  def lines():
    extra = 0  # lines ended by a bare CR (old Mac exports), which the \n-split did not count
    for number, line in _lines(path):
      for i, part in enumerate(_BARE_CR.split(line)):
        extra += i > 0
        physical['line'] = number + extra
        yield part

  csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
  reader = csv.reader(lines())
  try:
    header = next(reader)
  except StopIteration:
    raise DataError(f'{path}: empty CSV file (no header row)') from None
  except csv.Error as e:
    raise DataError(f'{path}, line {physical["line"]}: malformed CSV header ({e})') from None
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
  try:
    for row in reader:
      if not row:  # A blank line is not a record.
        continue
      if len(row) != len(header):
        raise DataError(
          f'{path}, line {physical["line"]}: ragged row with {len(row)} fields, the header '
          f'has {len(header)} ({header})'
        )
      label = _label_str(row[label_index]) if label_index is not None else None
      yield physical['line'], row[text_index], label
  except csv.Error as e:
    hint = (
      f': a field is longer than {_CSV_FIELD_LIMIT:,} characters (an unclosed quote?)'
      if 'field limit' in str(e)
      else ''
    )
    raise DataError(f'{path}, line {physical["line"]}: malformed CSV ({e}){hint}') from None


def _example_fields(
  serialized: bytes, where: str, text_column: str, label_column: str | None
) -> tuple[str, str | None]:
  """(text, label) of one serialized tf.Example from `where` (file and record)."""
  try:
    example = tf.train.Example.FromString(serialized)
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
    label = _label_str(label_values[0]) if label_values else None
  return _decode(values[0], where, 0), label


def _masked_crc32c(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _TFRECORD_CRC_MASK_DELTA) & 0xFFFFFFFF


def _tfrecords(path: str) -> Iterator[tuple[int, bytes]]:
  """Streams (record number, payload) from a TFRecord file, checking each record's CRCs.

  Read here rather than with tf.data, which ends a truncated gzip file silently.
  """
  number = 0

  def bad(problem: str) -> DataError:
    return DataError(
      f'{path}: record {number} is unreadable ({problem}); the file is corrupt, '
      'truncated or not a TFRecord file (gzip-compressed ones must be named *.gz)'
    )

  with _open(path) as f:
    try:
      while header := f.read(_TFRECORD_HEADER.size):
        number += 1
        if len(header) < _TFRECORD_HEADER.size:
          raise bad('the file ends inside its header')
        length, length_crc = _TFRECORD_HEADER.unpack(header)
        if _masked_crc32c(header[:8]) != length_crc:
          raise bad('its length does not match its checksum')
        body = f.read(length + _TFRECORD_CRC.size)
        if len(body) < length + _TFRECORD_CRC.size:
          raise bad('the file ends inside it')
        payload = body[:length]
        if _masked_crc32c(payload) != _TFRECORD_CRC.unpack(body[length:])[0]:
          raise bad('its data does not match its checksum')
        yield number, payload
    except _STREAM_ERRORS as e:
      raise _damaged(path, f'in record {number}', e) from None


def _read_tfrecord(
  path: str, text_column: str = contract.TEXT_KEY, label_column: str | None = None
) -> Iterator[Record]:
  for number, serialized in _tfrecords(path):
    text, label = _example_fields(serialized, f'{path}, record {number}', text_column, label_column)
    yield number, text, label


@dataclasses.dataclass(frozen=True)
class InputFormat:
  """How ExampleGen reads one input format.

  Attributes:
    reader: streams `Record`s from one file: `reader(path, **options)`.
    default_pattern: glob of the format's files under input_base when the config gives none
      (compressed files included).
    options: the reader's keyword options, named as TextExampleGen's exec properties.
  """

  reader: Callable[..., Iterator[Record]]
  default_pattern: str
  options: tuple[str, ...]


FORMATS: dict[str, InputFormat] = {
  contract.CSV: InputFormat(_read_csv, '*.csv*', (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY)),
  contract.TFRECORD: InputFormat(_read_tfrecord, '*', (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY)),
  contract.TEXT: InputFormat(_read_text, '*.txt*', (TEXT_MODE_KEY,)),
  contract.JSONL: InputFormat(_read_jsonl, '*.jsonl*', (TEXT_COLUMN_KEY, LABEL_COLUMN_KEY)),
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


class _FileToExamples(beam.DoFn):
  """Turns one file into serialized tf.Examples, counting what it skips or drops.

  With `hash_splits`, each example goes to the tagged output of its split (see `_text_bucket`),
  decided here from its text rather than by parsing it again downstream. With `batched`, the
  examples come out as lists (per split, in file order, of about `_BATCH_BYTES` each) rather than
  one element each: Beam's per-element steps (the output's tag, the writer's) then run per list.
  """

  def __init__(
    self,
    input_format_name: str,
    options: Mapping[str, Any],
    label_values: Sequence[str] = (),
    hash_splits: Sequence[tuple[str, int]] = (),
    batched: bool = False,
  ):
    """Args as `ReadTextExamples`'s; `hash_splits`: (split name, hash buckets) pairs."""
    self._format = input_format_name
    self._options = dict(options)
    self._label_values = frozenset(label_values)
    self._split_names = [name for name, _ in hash_splits]
    buckets = [count for _, count in hash_splits]
    self._bounds = [sum(buckets[: i + 1]) for i in range(len(buckets))]
    self._batched = batched
    self._documents = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'documents')
    self._empty = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'empty_documents_skipped')
    self._dropped = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'rows_dropped_by_label')
    self._empty_files = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'files_without_documents')

  def _output(self, split: int | None, value: bytes | list[bytes]) -> Any:
    """`value` as an element of split number `split`'s output (None: the only output)."""
    return value if split is None else beam.pvalue.TaggedOutput(self._split_names[split], value)

  def process(self, path: str) -> Iterator[Any]:
    empty_lines = []
    dropped = collections.Counter()
    documents = 0
    # Per output (a split number, or None without hash splits): its pending list and bytes.
    pending: dict[int | None, list[bytes]] = collections.defaultdict(list)
    pending_bytes: collections.Counter = collections.Counter()
    for number, text, label in read_records(path, self._format, **self._options):
      if not text.strip():
        empty_lines.append(number)
        self._empty.inc()
        continue
      # A missing label is kept: validation reports it against the schema.
      if self._label_values and label is not None and label not in self._label_values:
        dropped[label] += 1
        self._dropped.inc()
        continue
      documents += 1
      example = make_example(text, label)
      split = (
        bisect.bisect(self._bounds, _text_bucket(text, self._bounds[-1])) if self._bounds else None
      )
      if not self._batched:
        yield self._output(split, example)
        continue
      pending[split].append(example)
      pending_bytes[split] += len(example)
      if pending_bytes[split] >= _BATCH_BYTES:
        yield self._output(split, pending.pop(split))
        del pending_bytes[split]
    for split, examples in pending.items():
      yield self._output(split, examples)
    self._documents.inc(documents)
    if not documents:
      self._empty_files.inc()
      logging.warning(
        '%s: no documents (an empty file, a CSV header without rows, or only blank '
        'or dropped rows)',
        path,
      )
    if empty_lines:
      shown = ', '.join(map(str, empty_lines[:_MAX_REPORTED_LINES]))
      logging.warning(
        '%s: skipped %d empty or whitespace-only documents (lines %s%s)',
        path,
        len(empty_lines),
        shown,
        ', ...' if len(empty_lines) > _MAX_REPORTED_LINES else '',
      )
    if dropped:
      logging.info(
        '%s: dropped %d rows whose label is not in label_values %s (%s)',
        path,
        sum(dropped.values()),
        sorted(self._label_values),
        ', '.join(f'{label}: {count}' for label, count in dropped.most_common()),
      )


def _text_bucket(text: str, total_buckets: int) -> int:
  """The hash bucket of an example's text: equal texts land in the same split whatever their
  label, in every ExampleGen of the pipeline."""
  # The digest as a big-endian number, as int(hexdigest, 16) reads it, without the hex text.
  return int.from_bytes(hashlib.sha256(text.encode()).digest()) % total_buckets


@beam.ptransform_fn
def ReadTextExamples(  # noqa: N802 (Beam transform naming)
  pipeline: beam.Pipeline,
  exec_properties: Mapping[str, Any],
  split_pattern: str,
  hash_splits: Sequence[tuple[str, int]] = (),
  batched: bool = False,
) -> beam.PCollection | beam.pvalue.DoOutputsTuple:
  """Reads one input split (a glob under input_base) into serialized tf.Examples.

  Args:
    pipeline: The Beam pipeline.
    exec_properties: TextExampleGen's exec properties.
    split_pattern: Glob of the files under input_base.
    hash_splits: (split name, hash buckets) pairs to split the examples into by their text's
      hash; empty: no split.
    batched: Output lists of serialized tf.Examples (of about 1 MiB, in file order) rather than
      one element per example.

  Returns:
    The serialized tf.Examples (or lists of them); with `hash_splits`, one output of them per
    split name.
  """
  pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
  name = exec_properties[INPUT_FORMAT_KEY]
  entry = get_format(name)
  given = {
    TEXT_COLUMN_KEY: exec_properties.get(TEXT_COLUMN_KEY) or contract.TEXT_KEY,
    LABEL_COLUMN_KEY: exec_properties.get(LABEL_COLUMN_KEY) or None,
    TEXT_MODE_KEY: exec_properties.get(TEXT_MODE_KEY) or contract.LINE,
  }
  files = _input_files(pattern)
  if not files:
    folder = os.path.dirname(pattern)
    held = sorted(fileio.listdir(folder)) if fileio.isdir(folder) else []
    shown = ', '.join(held[:_MAX_REPORTED_FILES]) + (', ...' if held[_MAX_REPORTED_FILES:] else '')
    raise DataError(
      f'no input files match {pattern!r} (input_format={name!r}); the folder holds '
      f'{shown or "nothing"}: set data.format or data.file_pattern to match them'
    )
  logging.info('Reading %d %s file(s) matching %s', len(files), name, pattern)
  # Files are the unit of parallelism (Create spreads them over the workers); there is no
  # reshuffle of the records here, as ExampleGen's writer already shuffles once.
  read = beam.ParDo(
    _FileToExamples(
      name,
      {k: given[k] for k in entry.options},
      label_values(exec_properties),
      hash_splits,
      batched,
    )
  )
  if hash_splits:
    read = read.with_outputs(*(split for split, _ in hash_splits))
  return pipeline | 'Files' >> beam.Create(files) | 'Read' >> read


def _input_files(pattern: str) -> list[str]:
  """The files `pattern` matches, folders left out; a local match that cannot be read as a
  file is an error here, naming it, not later in a Beam worker (a named pipe would block it)."""
  files = []
  for path in sorted(fileio.glob(pattern)):
    if '://' in path:
      if not fileio.isdir(path):
        files.append(path)
      continue
    try:
      mode = os.stat(path).st_mode
    except OSError as e:
      raise DataError(
        f'{path}: cannot read this input file ({e.strerror}; a broken or looping symbolic '
        'link?): fix it, or move it out of the input folder'
      ) from None
    if stat.S_ISDIR(mode):
      continue
    if not stat.S_ISREG(mode):
      raise DataError(
        f'{path}: not a regular file (a named pipe, socket or device): move it out of the '
        'input folder or narrow data.file_pattern'
      )
    if not os.access(path, os.R_OK):
      raise DataError(f'{path}: no permission to read this input file: chmod it or copy it')
    files.append(path)
  return files


def label_values(exec_properties: Mapping[str, Any]) -> list[str]:
  """The labels to keep, from the exec properties; empty keeps every row."""
  return json.loads(exec_properties.get(LABEL_VALUES_KEY) or '[]')


def _describe_files(pattern: str) -> str:
  files = sorted(p for p in fileio.glob(pattern) if not fileio.isdir(p))
  shown = ', '.join(os.path.basename(f) for f in files[:_MAX_REPORTED_FILES])
  more = ', ...' if len(files) > _MAX_REPORTED_FILES else ''
  return f'{pattern} ({len(files)} file(s): {shown}{more})'


def _check_not_empty(
  splits: Mapping[str, beam.PCollection],
  sources: Mapping[str, str],
  hash_ratio: str | None,
  batched: bool = False,
) -> None:
  """Fails the pipeline, naming the split and its files, if a split has no examples (`batched`:
  the splits hold lists of examples)."""
  count = (lambda: beam.CombineGlobally(sum)) if batched else beam.combiners.Count.Globally
  counts = [
    (records | f'Sizes[{name}]' >> beam.Map(len) if batched else records)
    | f'Count[{name}]' >> count()
    | f'Name[{name}]' >> beam.Map(lambda count, name=name: (name, count))
    for name, records in splits.items()
  ]
  _ = (
    counts
    | 'Counts' >> beam.Flatten()
    | 'AllCounts' >> beam.combiners.ToList()
    | 'CheckNotEmpty' >> beam.Map(_raise_on_empty_split, dict(sources), hash_ratio)
  )


def _raise_on_empty_split(
  counts: list[tuple[str, int]], sources: Mapping[str, str], hash_ratio: str | None
) -> None:
  counts = dict(sorted(counts))
  empty = [name for name, count in counts.items() if not count]
  if not empty:
    return
  if hash_ratio and len(empty) < len(counts):
    shown = ', '.join(f'{name} {count}' for name, count in counts.items())
    raise DataError(
      f'split {empty[0]!r} is empty after the hash split ({hash_ratio}) of '
      f'{sources[empty[0]]}: examples per split: {shown}; add examples, change '
      'train_eval_ratio, or pre-split the input into folders (input_splits)'
    )
  where = f'split {empty[0]!r}: ' if not hash_ratio else ''
  raise DataError(
    f'{where}no examples in {sources[empty[0]]}: every file is empty, a CSV header without rows, '
    'or blank or dropped rows only; add examples or point the input at other files'
  )


class Executor(BaseExampleGenExecutor):
  """ExampleGen executor for the formats of `FORMATS` (see the module docstring)."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
    return ReadTextExamples

  def GenerateExamplesByBeam(  # noqa: N802 (TFX API)
    self,
    pipeline: beam.Pipeline,
    exec_properties: dict[str, Any],
  ) -> dict[str, beam.PCollection]:
    """The stock split logic, hashing each example's text rather than the whole example.

    So a text and its duplicates stay in one split, and ExampleGens reading the same files
    with different options (e.g. the corpus and the labeled examples) agree on the splits.
    """
    return self._generate(pipeline, exec_properties, batched=False)

  def _generate(
    self, pipeline: beam.Pipeline, exec_properties: Mapping[str, Any], batched: bool
  ) -> dict[str, beam.PCollection]:
    """`GenerateExamplesByBeam`, whose splits hold lists of examples if `batched`."""
    input_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input()
    )
    output_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output()
    )
    names = example_gen_utils.generate_output_split_names(input_config, output_config)
    read = self.GetInputSourceToExamplePTransform()
    base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    hash_splits = output_config.split_config.splits
    if not hash_splits:
      splits = {
        split.name: pipeline
        | f'InputToRecord[{split.name}]' >> read(exec_properties, split.pattern, batched=batched)
        for split in input_config.splits
      }
      sources = {
        split.name: _describe_files(os.path.join(base, split.pattern))
        for split in input_config.splits
      }
      _check_not_empty(splits, sources, hash_ratio=None, batched=batched)
      return splits
    pattern = input_config.splits[0].pattern
    buckets = [(name, split.hash_buckets) for name, split in zip(names, hash_splits, strict=True)]
    # The reader splits as it reads: a separate split step would parse every example again.
    parts = pipeline | 'InputToRecord' >> read(exec_properties, pattern, buckets, batched)
    splits = {name: parts[name] for name in names}
    source = _describe_files(os.path.join(base, pattern))
    _check_not_empty(
      splits,
      dict.fromkeys(names, source),
      hash_ratio=':'.join(str(s.hash_buckets) for s in hash_splits),
      batched=batched,
    )
    return splits

  def Do(  # noqa: N802 (TFX API)
    self,
    input_dict: dict[str, list[types.Artifact]],
    output_dict: dict[str, list[types.Artifact]],
    exec_properties: dict[str, Any],
  ) -> None:
    """The stock ExampleGen run, writing TFRecord files compressed as `compression` says, and
    without the shuffle before writing when `shuffle` is off.

    The stock writer always gzips, and reshuffles every record, which on the DirectRunner passes
    the whole corpus through the runner process's memory. Unshuffled, records stream from
    reader to writer a list at a time (see `_FileToExamples`): the same files, with Beam's
    per-element costs paid per list.
    """
    compression = tfrecords.check(exec_properties[COMPRESSION_KEY])
    self._log_startup(input_dict, output_dict, exec_properties)
    input_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input()
    )
    output_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output()
    )
    outputs = output_dict[standard_component_specs.EXAMPLES_KEY]
    artifact_utils.get_single_instance(outputs).split_names = artifact_utils.encode_split_names(
      example_gen_utils.generate_output_split_names(input_config, output_config)
    )
    with self._make_beam_pipeline() as pipeline:
      for split, lists in self._generate(pipeline, exec_properties, batched=True).items():
        path = os.path.join(
          artifact_utils.get_split_uri(outputs, split), write_split.DEFAULT_FILE_NAME
        )
        if exec_properties.get(SHUFFLE_KEY, 1):
          # Record by record, as the stock writer: reshuffling the lists would only reorder
          # runs of consecutive lines.
          records = lists | f'Flatten[{split}]' >> beam.FlatMap(iter)
          records = records | f'Shuffle[{split}]' >> beam.Reshuffle()
          _ = records | f'Write[{split}]' >> tfrecords.write(path, compression)
        else:
          _ = lists | f'Write[{split}]' >> tfrecords.write_batches(path, compression)
    for artifact in outputs:
      tfrecords.mark(artifact, compression)


class TextExampleGenSpec(component_spec.ComponentSpec):
  """FileBasedExampleGen's spec plus the text options."""

  PARAMETERS = {
    **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
    INPUT_FORMAT_KEY: component_spec.ExecutionParameter(type=str),
    TEXT_COLUMN_KEY: component_spec.ExecutionParameter(type=str),
    LABEL_COLUMN_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    TEXT_MODE_KEY: component_spec.ExecutionParameter(type=str),
    SHUFFLE_KEY: component_spec.ExecutionParameter(type=int),
    LABEL_VALUES_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    COMPRESSION_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = standard_component_specs.FileBasedExampleGenSpec.OUTPUTS


class TextExampleGen(base_beam_component.BaseBeamComponent):
  """File-based ExampleGen whose examples always carry `text` (and `label`)."""

  SPEC_CLASS = TextExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
  DRIVER_CLASS = example_gen_driver.FileBasedDriver

  def __init__(
    self,
    *,
    input_base: str,
    input_format: str,
    input_config: example_gen_pb2.Input,
    output_config: example_gen_pb2.Output,
    text_column: str = contract.TEXT_KEY,
    label_column: str | None = None,
    text_mode: str = contract.LINE,
    shuffle: bool = True,
    label_values: Sequence[str] = (),
    compression: str = contract.NO_COMPRESSION,
  ):
    """Builds the component; see `create_example_gen` for the arguments."""
    self._arguments = dict(
      input_base=input_base,
      input_format=input_format,
      input_config=input_config,
      output_config=output_config,
      text_column=text_column,
      label_column=label_column,
      text_mode=text_mode,
      shuffle=shuffle,
      label_values=tuple(label_values),
      compression=compression,
    )
    spec = TextExampleGenSpec(
      input_base=input_base,
      input_config=input_config,
      output_config=output_config,
      output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
      output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
      input_format=input_format,
      text_column=text_column,
      label_column=label_column,
      text_mode=text_mode,
      shuffle=int(shuffle),
      label_values=json.dumps(list(label_values)) if label_values else None,
      compression=tfrecords.check(compression),
      examples=channel.Channel(type=standard_artifacts.Examples),
    )
    super().__init__(spec=spec)

  @property
  def filters_labels(self) -> bool:
    """Whether rows are dropped by label (`label_values`)."""
    return bool(self._arguments['label_values'])

  def without_labels(self) -> TextExampleGen:
    """An ExampleGen of the same files and splits that keeps every row's text and no label
    (the text-keyed hash split puts each text in the same split as here)."""
    return TextExampleGen(**{**self._arguments, 'label_column': None, 'label_values': ()})


def create_example_gen(
  input_format: str,
  input_base: str,
  *,
  text_column: str = contract.TEXT_KEY,
  label_column: str | None = None,
  text_mode: str = contract.LINE,
  jsonl_text_field: str = contract.TEXT_KEY,
  input_splits: Mapping[str, str] | None = None,
  train_eval_ratio: Sequence[int] = (9, 1),
  file_pattern: str | None = None,
  shuffle: bool = True,
  label_values: Sequence[str] = (),
  compression: str = contract.NO_COMPRESSION,
) -> TextExampleGen:
  """Creates the ExampleGen for one input format.

  Args:
    input_format: A key of `FORMATS`: 'csv' (with a header row), 'tfrecord' (tf.Example),
      'text' (UTF-8 files) or 'jsonl' (one JSON object per line); files named *.gz (and for
      all but tfrecord *.bz2) are decompressed.
    input_base: Folder holding the input files.
    text_column: CSV column or tf.Example feature with the text.
    label_column: CSV column, JSON field or tf.Example feature with the label; None for a corpus.
    text_mode: For 'text': 'line' (one document per line; blank lines skipped and counted) or
      'file' (one document per file).
    jsonl_text_field: JSON field with the text (for 'jsonl').
    input_splits: Pre-split input: split name -> glob relative to input_base, e.g.
      {'train': 'train/*.csv', 'eval': 'eval/*.csv'}. None: every file matching `file_pattern`,
      hash-split by `train_eval_ratio`.
    train_eval_ratio: Hash buckets for (train, eval) when input_splits is None.
    file_pattern: Glob of the input files under input_base when input_splits is None;
      None means the format's default glob.
    shuffle: Shuffle the records before writing, as the stock ExampleGen does. Off, the
      records stream from reader to writer in file order (memory stays flat on the
      DirectRunner, ~2x faster); the trainer's own shuffle buffer then does the mixing.
    label_values: Labels to keep: rows with another (non-empty) label are dropped, counted
      (Beam counter `rows_dropped_by_label`) and logged per file. Empty keeps every row.
    compression: Of the output TFRecord files: 'none' or 'gzip' (files named *.gz).

  Returns:
    A TFX component whose output 'examples' has `text` (and `label`) features.

  Raises:
    ValueError: for an unknown format, text mode or compression, a bad ratio, or label_values
      without a label_column; DataError (a ValueError) for a local match that is not a readable
      file.
  """
  entry = get_format(input_format)
  if label_values and not label_column:
    raise ValueError(f'label_values {list(label_values)} need a label_column to read labels from')
  if text_mode not in contract.TEXT_MODES:
    raise ValueError(f'text_mode {text_mode!r} is not one of {contract.TEXT_MODES}')
  if input_splits:
    input_config = example_gen_pb2.Input(
      splits=[
        example_gen_pb2.Input.Split(name=name, pattern=pattern)
        for name, pattern in input_splits.items()
      ]
    )
    output_config = example_gen_pb2.Output()
  else:
    if len(train_eval_ratio) != 2 or min(train_eval_ratio) < 1:
      raise ValueError(f'train_eval_ratio must be two positive ints, got {train_eval_ratio}')
    input_config = example_gen_utils.make_default_input_config(
      file_pattern or entry.default_pattern
    )
    output_config = example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(
        splits=[
          example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=int(train_eval_ratio[0])),
          example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=int(train_eval_ratio[1])),
        ]
      )
    )
  if '://' not in input_base:
    # A match that cannot be read (a broken symlink, a named pipe) would first fail TFX's
    # fingerprint of the inputs with a message-less NotFoundError, or block a worker.
    for split in input_config.splits:
      _input_files(os.path.join(input_base, split.pattern))
  source_text = jsonl_text_field if input_format == contract.JSONL else text_column
  return TextExampleGen(
    input_base=input_base,
    input_format=input_format,
    input_config=input_config,
    output_config=output_config,
    text_column=source_text,
    label_column=label_column,
    text_mode=text_mode,
    shuffle=shuffle,
    label_values=label_values,
    compression=compression,
  )
