"""ExampleGen for text: CSV, TFRecord of tf.Example, plain-text folders and JSON Lines.

Every format comes out the same way: tf.Examples with a `text` feature (UTF-8 bytes) and, when a
label column is configured, a `label` feature (the label as a string, so one schema domain covers
`0`/`1` as well as `positive`/`negative`). Source column or field names are renamed here, once,
so nothing downstream knows them.

Files are read as streams, one record at a time, by a DoFn per file (file names and line numbers
stay known for error messages): files are the unit of parallelism, so split a large corpus into
several files (TFRecord input is split by Beam itself).

Handling of bad records (each is either an error naming file, line and problem, or counted):
  * empty or whitespace-only text: skipped and counted (Beam counter `empty_documents_skipped`,
    and a warning per file with the count and the first line numbers);
  * invalid UTF-8, ragged CSV rows, a missing text column/field, malformed JSON: `DataError`;
  * a missing or empty label: kept without a `label` value, so ExampleValidator reports it
    against the schema (and `label` outside the schema's domain likewise) and the Vocabulary
    gate stops the run;
  * an input pattern that matches no file: `DataError` naming the pattern.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
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

from components.validation import DataError
from tfxlm import contract as features  # the ingest branch adopts the contract here

INPUT_FORMATS = ('csv', 'tfrecord', 'text', 'jsonl')
TEXT_MODES = ('line', 'file')

# Exec property keys of TextExampleGen, on top of FileBasedExampleGen's.
INPUT_FORMAT_KEY = 'input_format'
TEXT_COLUMN_KEY = 'text_column'
LABEL_COLUMN_KEY = 'label_column'
TEXT_MODE_KEY = 'text_mode'
SHUFFLE_KEY = 'shuffle'

_METRICS_NAMESPACE = 'tfxlm.example_gen'
# How many line numbers of skipped empty documents a warning lists per file.
_MAX_REPORTED_LINES = 10


def _decode(raw: bytes, path: str, line: int) -> str:
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(
      f'{path}, line {line}: invalid UTF-8 (byte {e.start} of the line is 0x{raw[e.start]:02x}: '
      f'{e.reason}); re-encode the file as UTF-8'
    ) from None


def make_example(text: str, label: str | None) -> bytes:
  """Serializes one tf.Example with `text` and, if not None or empty, `label`."""
  feature = {
    features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
  }
  if label:
    feature[features.LABEL_KEY] = tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[label.encode()])
    )
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _label_str(value: Any) -> str | None:
  if value is None:
    return None
  if isinstance(value, bytes):
    value = value.decode('utf-8')
  return str(value).strip() or None


def _read_text_lines(path: str) -> Iterator[tuple[int, str, None]]:
  with fileio.open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      yield number, _decode(raw.rstrip(b'\r\n'), path, number), None


def _read_text_file(path: str) -> Iterator[tuple[int, str, None]]:
  # One document per file: the document is the unit, so it is read whole.
  with fileio.open(path, 'rb') as f:
    yield 1, _decode(f.read(), path, 1), None


def _read_jsonl(path: str, text_field: str, label_field: str | None):
  with fileio.open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      line = _decode(raw, path, number).strip()
      if not line:
        yield number, '', None
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f'{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})') from None
      if not isinstance(record, dict):
        raise DataError(f'{path}, line {number}: expected a JSON object, got {type(record).__name__}')
      if text_field not in record:
        raise DataError(
          f'{path}, line {number}: no text field {text_field!r} (fields: {sorted(record)})'
        )
      text = record[text_field]
      if not isinstance(text, str):
        raise DataError(
          f'{path}, line {number}: text field {text_field!r} is {type(text).__name__}, not a string'
        )
      yield number, text, _label_str(record.get(label_field)) if label_field else None


def _read_csv(path: str, text_column: str, label_column: str | None):
  with fileio.open(path, 'rb') as f:
    # csv needs text; decode each physical line ourselves to report invalid UTF-8 precisely.
    physical = {'line': 0}

    def lines():
      for raw in f:
        physical['line'] += 1
        yield _decode(raw, path, physical['line'])

    reader = csv.reader(lines())
    try:
      header = next(reader)
    except StopIteration:
      raise DataError(f'{path}: empty CSV file (no header row)') from None
    # A byte-order mark (spreadsheet exports) is not part of the first column's name.
    header = [name.strip() for name in header]
    header[0] = header[0].lstrip('\ufeff')
    wanted = [text_column] + ([label_column] if label_column else [])
    for column in wanted:
      if column not in header:
        raise DataError(f'{path}: no column {column!r} in the header (columns: {header})')
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
      raise DataError(f'{path}, line {physical["line"]}: malformed CSV ({e})') from None


def read_records(path: str, input_format: str, *, text_column: str = 'text',
                 label_column: str | None = None,
                 text_mode: str = 'line') -> Iterator[tuple[int, str, str | None]]:
  """Streams (line number, text, label) from one file of a non-TFRecord format.

  Args:
    path: The file.
    input_format: 'csv', 'text' or 'jsonl'.
    text_column: CSV column or JSON field with the text.
    label_column: CSV column or JSON field with the label, or None for a corpus.
    text_mode: For 'text': 'line' (one document per line) or 'file' (one per file).

  Raises:
    DataError: naming the file, line and problem.
  """
  if input_format == 'csv':
    return _read_csv(path, text_column, label_column)
  if input_format == 'jsonl':
    return _read_jsonl(path, text_column, label_column)
  if input_format == 'text':
    return _read_text_lines(path) if text_mode == 'line' else _read_text_file(path)
  raise ValueError(f'input_format {input_format!r} is not one of {INPUT_FORMATS}')


class _FileToExamples(beam.DoFn):
  """Turns one file into serialized tf.Examples, counting what it skips."""

  def __init__(self, input_format, text_column, label_column, text_mode):
    self._args = dict(input_format=input_format, text_column=text_column,
                      label_column=label_column, text_mode=text_mode)
    self._documents = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'documents')
    self._empty = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'empty_documents_skipped')

  def process(self, path: str) -> Iterator[bytes]:
    empty_lines = []
    for number, text, label in read_records(path, **self._args):
      if not text.strip():
        empty_lines.append(number)
        self._empty.inc()
        continue
      self._documents.inc()
      yield make_example(text, label)
    if empty_lines:
      shown = ', '.join(map(str, empty_lines[:_MAX_REPORTED_LINES]))
      logging.warning('%s: skipped %d empty or whitespace-only documents (lines %s%s)', path,
                      len(empty_lines), shown, ', ...' if len(empty_lines) > _MAX_REPORTED_LINES
                      else '')


def _rename_example(serialized: bytes, pattern: str, text_column: str,
                    label_column: str | None) -> Iterator[bytes]:
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature
  if text_column not in feature:
    raise DataError(
      f'{pattern}: a tf.Example has no feature {text_column!r} (features: {sorted(feature)})'
    )
  values = feature[text_column].bytes_list.value
  if len(values) != 1:
    raise DataError(
      f'{pattern}: feature {text_column!r} must hold exactly one string, got {len(values)} '
      f'bytes values'
    )
  label = None
  if label_column and label_column in feature:
    label_feature = feature[label_column]
    kind = label_feature.WhichOneof('kind')
    label_values = list(getattr(label_feature, kind).value) if kind else []
    label = _label_str(label_values[0]) if label_values else None
  text = _decode(values[0], pattern, 0)
  if not text.strip():
    beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'empty_documents_skipped').inc()
    return
  beam.metrics.Metrics.counter(_METRICS_NAMESPACE, 'documents').inc()
  yield make_example(text, label)


@beam.ptransform_fn
def ReadTextExamples(pipeline: beam.Pipeline, exec_properties: Mapping[str, Any],  # noqa: N802
                     split_pattern: str) -> beam.PCollection:
  """Reads one input split (a glob under input_base) into serialized tf.Examples."""
  pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
  input_format = exec_properties[INPUT_FORMAT_KEY]
  text_column = exec_properties.get(TEXT_COLUMN_KEY) or features.TEXT_KEY
  label_column = exec_properties.get(LABEL_COLUMN_KEY) or None
  text_mode = exec_properties.get(TEXT_MODE_KEY) or 'line'
  files = sorted(p for p in fileio.glob(pattern) if not fileio.isdir(p))
  if not files:
    raise DataError(f'no input files match {pattern!r} (input_format={input_format!r})')
  logging.info('Reading %d %s file(s) matching %s', len(files), input_format, pattern)
  if input_format == 'tfrecord':
    records = (
      pipeline
      | 'ReadTFRecord' >> beam.io.ReadFromTFRecord(pattern)
      | 'Rename' >> beam.FlatMap(_rename_example, pattern, text_column, label_column)
    )
  else:
    # Files are the unit of parallelism (Create spreads them over the workers); there is no
    # reshuffle of the records here, as ExampleGen's writer already shuffles once.
    records = (
      pipeline
      | 'Files' >> beam.Create(files)
      | 'Read' >> beam.ParDo(_FileToExamples(input_format, text_column, label_column, text_mode))
    )
  return records


class Executor(BaseExampleGenExecutor):
  """ExampleGen executor for csv, tfrecord, text and jsonl input (see the module docstring)."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
    return ReadTextExamples

  def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 (TFX API)
         output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
    """The stock ExampleGen run; without the shuffle before writing when `shuffle` is off.

    The stock writer reshuffles every record, which on the DirectRunner passes the whole corpus
    through the runner process's memory. Unshuffled, records stream from reader to writer.
    """
    if exec_properties.get(SHUFFLE_KEY, 1):
      super().Do(input_dict, output_dict, exec_properties)
      return
    self._log_startup(input_dict, output_dict, exec_properties)
    input_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
    output_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output())
    outputs = output_dict[standard_component_specs.EXAMPLES_KEY]
    artifact_utils.get_single_instance(outputs).split_names = artifact_utils.encode_split_names(
      example_gen_utils.generate_output_split_names(input_config, output_config))
    with self._make_beam_pipeline() as pipeline:
      for split, records in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
        path = os.path.join(artifact_utils.get_split_uri(outputs, split),
                            write_split.DEFAULT_FILE_NAME)
        _ = records | f'Write[{split}]' >> beam.io.WriteToTFRecord(path, file_name_suffix='.gz')
    for artifact in outputs:
      examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
      examples_utils.set_file_format(
        artifact, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))


class TextExampleGenSpec(component_spec.ComponentSpec):
  """FileBasedExampleGen's spec plus the text options."""

  PARAMETERS = {
    **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
    INPUT_FORMAT_KEY: component_spec.ExecutionParameter(type=str),
    TEXT_COLUMN_KEY: component_spec.ExecutionParameter(type=str),
    LABEL_COLUMN_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    TEXT_MODE_KEY: component_spec.ExecutionParameter(type=str),
    SHUFFLE_KEY: component_spec.ExecutionParameter(type=int),
  }
  INPUTS = {}
  OUTPUTS = standard_component_specs.FileBasedExampleGenSpec.OUTPUTS


class TextExampleGen(base_beam_component.BaseBeamComponent):
  """File-based ExampleGen whose examples always carry `text` (and `label`)."""

  SPEC_CLASS = TextExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
  DRIVER_CLASS = example_gen_driver.FileBasedDriver

  def __init__(self, *, input_base: str, input_format: str, input_config: example_gen_pb2.Input,
               output_config: example_gen_pb2.Output, text_column: str = features.TEXT_KEY,
               label_column: str | None = None, text_mode: str = 'line', shuffle: bool = True):
    """Builds the component; see `create_example_gen` for the arguments."""
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
      examples=channel.Channel(type=standard_artifacts.Examples),
    )
    super().__init__(spec=spec)


DEFAULT_PATTERNS = {'csv': '*.csv', 'tfrecord': '*', 'text': '*.txt', 'jsonl': '*.jsonl'}


def create_example_gen(input_format: str, input_base: str, *, text_column: str = 'text',
                       label_column: str | None = None, text_mode: str = 'line',
                       jsonl_text_field: str = 'text',
                       input_splits: Mapping[str, str] | None = None,
                       train_eval_ratio: Sequence[int] = (9, 1),
                       file_pattern: str | None = None, shuffle: bool = True) -> TextExampleGen:
  """Creates the ExampleGen for one input format.

  Args:
    input_format: 'csv' (with a header row), 'tfrecord' (tf.Example, gzip if named *.gz),
      'text' (UTF-8 files) or 'jsonl' (one JSON object per line).
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

  Returns:
    A TFX component whose output 'examples' has `text` (and `label`) features.

  Raises:
    ValueError: for an unknown format or text mode, or a bad ratio.
  """
  if input_format not in INPUT_FORMATS:
    raise ValueError(f'input_format {input_format!r} is not one of {INPUT_FORMATS}')
  if text_mode not in TEXT_MODES:
    raise ValueError(f'text_mode {text_mode!r} is not one of {TEXT_MODES}')
  if input_splits:
    input_config = example_gen_pb2.Input(splits=[
      example_gen_pb2.Input.Split(name=name, pattern=pattern)
      for name, pattern in input_splits.items()
    ])
    output_config = example_gen_pb2.Output()
  else:
    if len(train_eval_ratio) != 2 or min(train_eval_ratio) < 1:
      raise ValueError(f'train_eval_ratio must be two positive ints, got {train_eval_ratio}')
    input_config = example_gen_utils.make_default_input_config(
      file_pattern or DEFAULT_PATTERNS[input_format])
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
      example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=int(train_eval_ratio[0])),
      example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=int(train_eval_ratio[1])),
    ]))
  source_text = jsonl_text_field if input_format == 'jsonl' else text_column
  return TextExampleGen(input_base=input_base, input_format=input_format,
                        input_config=input_config, output_config=output_config,
                        text_column=source_text, label_column=label_column, text_mode=text_mode,
                        shuffle=shuffle)
