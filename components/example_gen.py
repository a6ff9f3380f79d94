"""ExampleGen for text: CSV, TFRecord of tf.Example, plain-text folders and JSON Lines.

Every format comes out the same way: tf.Examples with a `text` feature (UTF-8 bytes) and, when a
label column is configured, a `label` feature (the label as a string, so one schema domain covers
`0`/`1` as well as `positive`/`negative`). Source column or field names are renamed here, once,
so nothing downstream knows them.

This module is the TFX component: its spec, executor and factory. The jobs it hands out:
  * `components.readers`: the format readers and their registry (`FORMATS`);
  * `components.file_selection`: which files a split's glob reads, and the warnings of what it
    leaves out beside them;
  * `components.read_examples`: the Beam side (a DoFn per file, hash splits, empty-split check);
  * `components.example_encoding`: the tf.Example encoder;
  * `components.tfrecord_files` and `components.tfrecords`: the TFRecord files it writes.
What bad input gets is listed there and in `components.readers`. Do records the files read on
its Examples (`contract.INPUT_FILES_PROPERTY`), for the run's summary.json.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import (
  artifact_utils,
  channel,
  component_spec,
  standard_artifacts,
  standard_component_specs,
)
from tfx.utils import proto_utils

from components import beam_specs, file_selection, read_examples, tfrecord_files, tfrecords

# The exec property keys it shares with its readers, and the registry, are part of its API.
from components.read_examples import INPUT_FORMAT_KEY as INPUT_FORMAT_KEY
from components.read_examples import LABEL_DOMAIN_KEY as LABEL_DOMAIN_KEY
from components.read_examples import LABEL_VALUES_KEY as LABEL_VALUES_KEY
from components.read_examples import REQUIRE_LABEL_KEY as REQUIRE_LABEL_KEY
from components.read_examples import ReadTextExamples
from components.readers import FORMATS as FORMATS
from components.readers import LABEL_COLUMN_KEY as LABEL_COLUMN_KEY
from components.readers import TEXT_COLUMN_KEY as TEXT_COLUMN_KEY
from components.readers import TEXT_MODE_KEY as TEXT_MODE_KEY
from components.readers import get_format
from tfxlm import contract

beam_specs.install()  # Beam DoFn specs read once per kind of DoFn

SHUFFLE_KEY = 'shuffle'
COMPRESSION_KEY = 'compression'  # of the output TFRecord files: a contract.TFRECORD_COMPRESSIONS


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
        split.name: file_selection.describe_files(os.path.join(base, split.pattern))
        for split in input_config.splits
      }
      patterns = [os.path.join(base, split.pattern) for split in input_config.splits]
      read_examples.check_not_empty(
        splits,
        sources,
        hash_ratio=None,
        batched=batched,
        why_dropped=functools.partial(read_examples.dropped_labels, exec_properties, patterns),
      )
      return splits
    pattern = input_config.splits[0].pattern
    buckets = [(name, split.hash_buckets) for name, split in zip(names, hash_splits, strict=True)]
    # The reader splits as it reads: a separate split step would parse every example again.
    parts = pipeline | 'InputToRecord' >> read(exec_properties, pattern, buckets, batched)
    splits = {name: parts[name] for name in names}
    source = file_selection.describe_files(os.path.join(base, pattern))
    read_examples.check_not_empty(
      splits,
      dict.fromkeys(names, source),
      hash_ratio=':'.join(str(s.hash_buckets) for s in hash_splits),
      batched=batched,
      why_dropped=functools.partial(
        read_examples.dropped_labels, exec_properties, [os.path.join(base, pattern)]
      ),
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
    with beam_specs.cleaned(self._make_beam_pipeline()) as pipeline:
      for split, lists in self._generate(pipeline, exec_properties, batched=True).items():
        path = os.path.join(
          artifact_utils.get_split_uri(outputs, split), write_split.DEFAULT_FILE_NAME
        )
        if exec_properties.get(SHUFFLE_KEY, 1):
          # Record by record, as the stock writer: reshuffling the lists would only reorder
          # runs of consecutive lines.
          records = lists | f'Flatten[{split}]' >> beam.FlatMap(iter)
          records = records | f'Shuffle[{split}]' >> beam.Reshuffle()
          _ = records | f'Write[{split}]' >> tfrecord_files.write(path, compression)
        else:
          _ = lists | f'Write[{split}]' >> tfrecord_files.write_batches(path, compression)
    read = file_selection.recorded(
      exec_properties[standard_component_specs.INPUT_BASE_KEY],
      [split.pattern for split in input_config.splits],
    )
    for artifact in outputs:
      tfrecord_files.mark(artifact, compression)
      artifact.set_string_custom_property(contract.INPUT_FILES_PROPERTY, read)


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
    LABEL_DOMAIN_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    REQUIRE_LABEL_KEY: component_spec.ExecutionParameter(type=int, optional=True),
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
    label_domain: Sequence[str] = (),
    require_label: bool = False,
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
      label_domain=tuple(label_domain),
      require_label=require_label,
    )
    spec = TextExampleGenSpec(
      # Escaped: TFX's driver globs input_base/pattern to fingerprint the inputs, as we read them.
      input_base=file_selection.escape(input_base),
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
      label_domain=json.dumps(list(label_domain)) if label_domain else None,
      require_label=int(require_label) if require_label else None,
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
    return TextExampleGen(
      **{
        **self._arguments,
        'label_column': None,
        'label_values': (),
        'label_domain': (),
        'require_label': False,
      }
    )


def create_example_gen(
  input_format: str,
  input_base: str,
  *,
  text_column: str = contract.TEXT_KEY,
  label_column: str | None = None,
  text_mode: str = contract.LINE,
  jsonl_text_field: str = contract.TEXT_KEY,
  input_splits: Mapping[str, str] | None = None,
  train_eval_ratio: Sequence[int] = contract.DEFAULT_TRAIN_EVAL_RATIO,
  file_pattern: str | None = None,
  shuffle: bool = True,
  label_values: Sequence[str] = (),
  compression: str = contract.NO_COMPRESSION,
  label_domain: Sequence[str] = (),
  require_label: bool = False,
) -> TextExampleGen:
  """Creates the ExampleGen for one input format.

  Args:
    input_format: A key of `FORMATS`: 'csv' (with a header row), 'tfrecord' (tf.Example),
      'text' (UTF-8 files) or 'jsonl' (one JSON object per line); files named *.gz (and for
      all but tfrecord *.bz2) are decompressed.
    input_base: Folder holding the input files, a path taken as written (`[`, `*` and `?` in
      its name are not wildcards); only the split patterns and `file_pattern` are globs.
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
    label_domain: The schema's labels: a row with another label (after `label_values`) is a
      DataError naming its file and line. Empty: any label.
    require_label: The schema requires a label: a row without one is a DataError naming its
      file and line. Off: it is written without a `label`, for ExampleValidator to report.

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
  if (label_domain or require_label) and not label_column:
    raise ValueError('label_domain and require_label need a label_column to read labels from')
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
      file_selection.input_files(os.path.join(file_selection.escape(input_base), split.pattern))
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
    label_domain=label_domain,
    require_label=require_label,
  )
