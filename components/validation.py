"""The data gate: turn ExampleValidator's anomalies into one clear error."""

from __future__ import annotations

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.io import fileio

from components.errors import DataError as DataError  # raised by every component's checks
from tfxlm import contract

# The file ExampleValidator writes per split (tfx.components.example_validator.executor).
ANOMALIES_FILE = 'SchemaDiff.pb'


def read_anomalies(anomalies_uri: str) -> dict[str, anomalies_pb2.Anomalies]:
  """Reads the per-split Anomalies protos under an ExampleAnomalies artifact URI.

  Returns:
    Split name -> Anomalies, for every `Split-<name>/SchemaDiff.pb` found.
  """
  found = {}
  for entry in sorted(fileio.listdir(anomalies_uri)) if fileio.exists(anomalies_uri) else []:
    path = os.path.join(anomalies_uri, entry.rstrip('/'), ANOMALIES_FILE)
    if entry.startswith('Split-') and fileio.exists(path):
      with fileio.open(path, 'rb') as f:
        found[entry.rstrip('/')[len('Split-') :]] = anomalies_pb2.Anomalies.FromString(f.read())
  return found


def describe_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
  """One line per anomaly: `split 'train': feature 'label': <short>: <description>`."""
  lines = []
  for split, anomalies in sorted(anomalies_by_split.items()):
    for feature, info in sorted(anomalies.anomaly_info.items()):
      for reason in info.reason or [info]:
        lines.append(
          f'split {split!r}: feature {feature!r}: {reason.short_description}: {reason.description}'
        )
    if anomalies.HasField('dataset_anomaly_info'):
      for reason in anomalies.dataset_anomaly_info.reason:
        lines.append(f'split {split!r}: dataset: {reason.short_description}: {reason.description}')
  return lines


_T = anomalies_pb2.AnomalyInfo.Type
_MISSING_LABEL = (
  'rows need a label: check that data.label_column names the column holding the labels and '
  'that no row leaves it empty'
)
# What to do about the label anomalies a new user meets first.
_LABEL_HINTS = {
  _T.ENUM_TYPE_UNEXPECTED_STRING_VALUES: (
    "the labels must be those of the schema's `label` domain (the default schema, "
    'schemas/labeled, has 0 and 1): '
    'relabel the rows, or copy the schema, list your labels in it and set data.schema_dir '
    '(data.label_values then drops rows with other labels)'
  ),
  _T.SCHEMA_MISSING_COLUMN: _MISSING_LABEL,
  _T.FEATURE_TYPE_NOT_PRESENT: _MISSING_LABEL,
  _T.FEATURE_TYPE_LOW_FRACTION_PRESENT: _MISSING_LABEL,
  _T.FEATURE_TYPE_LOW_NUMBER_PRESENT: _MISSING_LABEL,
}


def _hints(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
  """`What to do: ...` for each kind of label anomaly found, once."""
  hints = []
  for anomalies in anomalies_by_split.values():
    info = anomalies.anomaly_info.get(contract.LABEL_KEY)
    for reason in info.reason if info else ():
      hint = _LABEL_HINTS.get(reason.type)
      if hint and f'What to do: {hint}' not in hints:
        hints.append(f'What to do: {hint}')
  return hints


def raise_on_anomalies(anomalies_uri: str) -> None:
  """Raises DataError listing every anomaly ExampleValidator found; returns if there are none.

  Args:
    anomalies_uri: URI of an ExampleAnomalies artifact.

  Raises:
    DataError: naming each anomalous feature, the anomaly and the artifact path.
  """
  anomalies = read_anomalies(anomalies_uri)
  if not anomalies:
    raise DataError(
      f'no anomalies files (Split-*/{ANOMALIES_FILE}) under {anomalies_uri}; '
      'is this an ExampleValidator output?'
    )
  lines = describe_anomalies(anomalies)
  if lines:
    raise DataError(
      'ExampleValidator found anomalies; the run stops before Vocabulary and '
      f'Transform. Anomalies artifact: {anomalies_uri}\n  ' + '\n  '.join(lines + _hints(anomalies))
    )
