"""Beam: input files into serialized tf.Examples, split by text hash, with the empty-split check.

A DoFn per file runs its format's reader (`components.readers`): files are the unit of
parallelism, so split a large corpus into several files. Each document becomes a tf.Example with
a `text` feature and, when a label column is configured, a `label` feature
(`components.example_encoding`).

What is skipped or dropped is counted (Beam counters in `tfxlm.example_gen`) and logged per file:
empty or whitespace-only documents; with `label_values`, rows whose label is not listed; files
without documents; documents holding NUL bytes (kept, only logged). With the schema's label rules
(`label_domain`, `require_label`), a row whose label is missing or outside the domain is a
`DataError` naming the file and line (and how many rows of the file have one); without them such a
row is kept, for ExampleValidator to report. A kept label holding a line break (a quoted CSV field
or a JSON string over two lines), which Transform's label vocabulary (one label a line) would
refuse later without file and line, is such a `DataError` whatever the rules. A split without
examples, or an input pattern that matches no file, is a `DataError` naming the split or pattern.
Which files a pattern reads, and the warnings of what it leaves out, are
`components.file_selection`'s; the files read are logged (INFO), a count and the first few names.
In a TFRecord file, messages name records, not lines.

Hash splits hash each example's text (not the whole example), so duplicates stay in one split
and ExampleGens reading the same files with other options (the pretraining corpus) agree with
the labeled examples on which text is in which split.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from absl import logging
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs

from components import file_selection
from components.errors import DataError
from components.example_encoding import make_example
from components.readers import (
  LABEL_COLUMN_KEY,
  TEXT_COLUMN_KEY,
  TEXT_MODE_KEY,
  get_format,
  read_records,
)
from tfxlm import contract, near_labels

# TextExampleGen's exec properties read here, besides the readers' options.
INPUT_FORMAT_KEY = 'input_format'
LABEL_VALUES_KEY = 'label_values'  # JSON list of the labels to keep; empty keeps every row
LABEL_DOMAIN_KEY = 'label_domain'  # JSON list of the schema's labels; empty: any label
REQUIRE_LABEL_KEY = 'require_label'  # 1: the schema requires a label in every row

_METRICS_NAMESPACE = 'tfxlm.example_gen'
# How many line numbers of skipped empty documents a warning lists per file.
_MAX_REPORTED_LINES = 10
# How many file names an empty-split error lists.
_MAX_REPORTED_FILES = 3
# Serialized bytes of the lists of examples written a list at a time (see `_FileToExamples`):
# large enough that Beam's per-element costs vanish, small enough to hold one per split and worker.
_BATCH_BYTES = 1 << 20


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
    label_domain: Sequence[str] = (),
    require_label: bool = False,
  ):
    """Args as `ReadTextExamples`'s; `hash_splits`: (split name, hash buckets) pairs;
    `label_domain`, `require_label`: the schema's label rules (see `_bad_labels`)."""
    self._format = input_format_name
    self._unit = get_format(input_format_name).unit  # 'line', or 'record' (TFRecord)
    self._options = dict(options)
    self._label_values = frozenset(label_values)
    self._label_domain = frozenset(label_domain)
    self._require_label = require_label
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
    empty_lines, nul_lines = [], []
    dropped = collections.Counter()
    documents = 0
    # Per output (a split number, or None without hash splits): its pending list and bytes.
    pending: dict[int | None, list[bytes]] = collections.defaultdict(list)
    pending_bytes: collections.Counter = collections.Counter()
    bad_labels = []  # (line, label) of the rows the schema's label rules refuse
    for number, text, label in read_records(path, self._format, **self._options):
      if not text.strip():
        empty_lines.append(number)
        self._empty.inc()
        continue
      if self._label_values and label is not None and label not in self._label_values:
        dropped[label] += 1
        self._dropped.inc()
        continue
      if (label is None and self._require_label) or (
        label is not None
        and (_has_line_break(label) or (self._label_domain and label not in self._label_domain))
      ):
        bad_labels.append((number, label))
        continue
      documents += 1
      if '\x00' in text:
        nul_lines.append(number)
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
    if bad_labels:
      raise self._bad_labels(path, bad_labels)
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
        '%s: skipped %d empty or whitespace-only documents (%ss %s%s)',
        path,
        len(empty_lines),
        self._unit,
        shown,
        ', ...' if len(empty_lines) > _MAX_REPORTED_LINES else '',
      )
    if nul_lines:  # odd in text, but valid: kept, told once per file
      logging.warning(
        '%s: %d documents hold NUL bytes (\\x00; %ss %s%s), which tokenizers drop as control '
        'characters: if the file is binary or not UTF-8 text, re-create it; else remove them',
        path,
        len(nul_lines),
        self._unit,
        ', '.join(map(str, nul_lines[:_MAX_REPORTED_LINES])),
        ', ...' if len(nul_lines) > _MAX_REPORTED_LINES else '',
      )
    if dropped:  # as asked, but a misspelled label would lose its rows: the summary lists it
      logging.warning(
        '%s: dropped %d rows whose label is not in label_values %s (%s)',
        path,
        sum(dropped.values()),
        sorted(self._label_values),
        ', '.join(f'{label!r} ({count})' for label, count in dropped.most_common()),
      )

  def _bad_labels(self, path: str, bad: list[tuple[int, str | None]]) -> DataError:
    """The error of the rows of `path` whose label is missing or outside the domain: the
    first one's line and problem, how many there are, and what to do."""
    column = self._options.get(LABEL_COLUMN_KEY)
    line, label = bad[0]
    # Why the first row without a label has none (a missing JSONL field, an empty CSV column).
    unlabeled = next((number for number, lab in bad if lab is None), None)
    no_label = (
      get_format(self._format).no_label(path, unlabeled, column) if unlabeled is not None else None
    )
    if label is None:
      problem = no_label[0]
    elif _has_line_break(label):
      problem = f'label {label!r} has a line break: the label vocabulary holds one label per line'
    else:
      problem = f"label {label!r} is not in the schema's label domain {sorted(self._label_domain)}"
      near = near_labels.near_label(label, self._label_domain)
      if near is not None and near[1] == near_labels.NFC_ONLY:
        problem = (
          f"label {ascii(label)} is not in the schema's label domain, whose {ascii(near[0])} is "
          'the same text in another Unicode normal form'
        )
      elif near is not None:
        problem += f' ({near_labels.differs_only(label, near)})'
    more = ''
    if len(bad) > 1:
      shown = ', '.join(str(number) for number, _ in bad[:_MAX_REPORTED_LINES])
      labels = collections.Counter('none' if lab is None else repr(lab) for _, lab in bad)
      more = (
        f' ({len(bad)} {"rows" if self._unit == "line" else "records"} of this file: '
        f'{self._unit}s {shown}'
        f'{", ..." if len(bad) > _MAX_REPORTED_LINES else ""}; labels '
        f'{", ".join(f"{lab} {count}" for lab, count in labels.most_common(8))})'
      )
    broken = [lab for _, lab in bad if lab is not None and _has_line_break(lab)]
    nears = {
      lab: near_labels.near_label(lab, self._label_domain)
      for _, lab in bad
      if lab is not None and lab not in broken
    }
    spelled = [
      (lab, near[0]) for lab, near in nears.items() if near and near[1] != near_labels.NFC_ONLY
    ]
    todo = []
    if no_label is not None:
      todo.append(no_label[1])
    if broken:
      todo.append('write each label on one line')
    if any(near and near[1] == near_labels.NFC_ONLY for near in nears.values()):
      todo.append('normalize the data or the schema to NFC (unicodedata.normalize)')
    if spelled:
      lab, value = spelled[0]
      todo.append(
        f'write the labels as the schema does ({lab!r} as {value!r}), or list them in a copy'
        " of the schema's domain (data.schema_dir)"
      )
    if any(near is None for near in nears.values()):
      todo.append('relabel the rows, or list the labels in a copy of the schema (data.schema_dir)')
    return DataError(
      f'{path}, {self._unit} {line}: {problem}{more}\n  What to do: {"; ".join(todo)}'
    )


def _has_line_break(label: str) -> bool:
  """Whether `label` holds a line break, which Transform's label vocabulary (a file of one label
  per line) refuses: the same rule, checked where the file and line are known."""
  return '\n' in label or '\r' in label


def _text_bucket(text: str, total_buckets: int) -> int:
  """The hash bucket of an example's text: equal texts land in the same split whatever their
  label, in every ExampleGen of the pipeline."""
  # The digest as a big-endian number, as int(hexdigest, 16) reads it, without the hex text.
  return int.from_bytes(hashlib.sha256(text.encode()).digest()) % total_buckets


def _reader(exec_properties: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """The input format's name and the options its reader takes, from the exec properties."""
  name = exec_properties[INPUT_FORMAT_KEY]
  given = {
    TEXT_COLUMN_KEY: exec_properties.get(TEXT_COLUMN_KEY) or contract.TEXT_KEY,
    LABEL_COLUMN_KEY: exec_properties.get(LABEL_COLUMN_KEY) or None,
    TEXT_MODE_KEY: exec_properties.get(TEXT_MODE_KEY) or contract.LINE,
  }
  return name, {k: given[k] for k in get_format(name).options}


def label_rules(exec_properties: Mapping[str, Any]) -> tuple[list[str], bool]:
  """The schema's label domain (empty: any label) and whether it requires a label, from the
  exec properties."""
  domain = json.loads(exec_properties.get(LABEL_DOMAIN_KEY) or '[]')
  return domain, bool(exec_properties.get(REQUIRE_LABEL_KEY))


def dropped_labels(exec_properties: Mapping[str, Any], patterns: Sequence[str]) -> str:
  """When label_values dropped rows of the files `patterns` match: which labels, how often
  (the first _DROPPED_SCAN_ROWS rows), for an error; '' when label_values is not set."""
  values = frozenset(label_values(exec_properties))
  if not values:
    return ''
  name, options = _reader(exec_properties)
  dropped, seen = collections.Counter(), 0
  for pattern in patterns:
    for path in file_selection.select(pattern).files:
      for _, text, label in read_records(path, name, **options):
        seen += 1
        if seen > _DROPPED_SCAN_ROWS:
          break
        if text.strip() and label is not None and label not in values:
          dropped[label] += 1
  if not dropped:
    return ''
  shown = ', '.join(f'{label!r} ({count})' for label, count in dropped.most_common(8))
  return (
    f'; data.label_values {sorted(values)} dropped rows labeled {shown} (labels match exactly,'
    ' case included): list the labels the data has in data.label_values, or relabel the rows'
  )


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
  name, options = _reader(exec_properties)
  files = file_selection.input_files(pattern)
  if not files:
    folder = os.path.dirname(file_selection.shown(pattern))
    held = sorted(fileio.listdir(folder)) if fileio.isdir(folder) else []
    shown = ', '.join(held[:_MAX_REPORTED_FILES]) + (', ...' if held[_MAX_REPORTED_FILES:] else '')
    what = (
      f'the folder holds {shown}: set data.format or data.file_pattern to match them'
      if shown
      else 'the folder is empty: put the data files there, or point data.input_base at the '
      'folder that holds them'
    )
    raise DataError(
      f'no input files match {file_selection.shown(pattern)!r} (input_format={name!r}); {what}'
    )
  into = f' (hash-split into {", ".join(s for s, _ in hash_splits)})' if hash_splits else ''
  logging.info(
    'input: reading %d %s file(s) matching %s%s: %s',
    len(files),
    name,
    file_selection.shown(pattern),
    into,
    file_selection.named([os.path.basename(f) for f in files]),
  )
  # Files are the unit of parallelism (Create spreads them over the workers); there is no
  # reshuffle of the records here, as ExampleGen's writer already shuffles once.
  domain, require_label = label_rules(exec_properties) if options.get(LABEL_COLUMN_KEY) else ([], 0)
  read = beam.ParDo(
    _FileToExamples(
      name,
      options,
      label_values(exec_properties),
      hash_splits,
      batched,
      domain,
      require_label,
    )
  )
  if hash_splits:
    read = read.with_outputs(*(split for split, _ in hash_splits))
  return pipeline | 'Files' >> beam.Create(files) | 'Read' >> read


_DROPPED_SCAN_ROWS = 200_000  # rows read again to say which labels label_values dropped


def label_values(exec_properties: Mapping[str, Any]) -> list[str]:
  """The labels to keep, from the exec properties; empty keeps every row."""
  return json.loads(exec_properties.get(LABEL_VALUES_KEY) or '[]')


def check_not_empty(
  splits: Mapping[str, beam.PCollection],
  sources: Mapping[str, str],
  hash_ratio: str | None,
  batched: bool = False,
  why_dropped=lambda: '',
) -> None:
  """Fails the pipeline, naming the split and its files, if a split has no examples (`batched`:
  the splits hold lists of examples); `why_dropped()` (see `dropped_labels`) is added to the
  error when no split has any."""
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
    | 'CheckNotEmpty' >> beam.Map(_raise_on_empty_split, dict(sources), hash_ratio, why_dropped)
  )


def _raise_on_empty_split(
  counts: list[tuple[str, int]],
  sources: Mapping[str, str],
  hash_ratio: str | None,
  why_dropped=lambda: '',
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
  dropped = why_dropped()
  if dropped:
    raise DataError(f'{where}no examples in {sources[empty[0]]}{dropped}')
  raise DataError(
    f'{where}no examples in {sources[empty[0]]}: every file is empty, a CSV header without rows, '
    'or blank or dropped rows only; add examples or point the input at other files'
  )
