"""The data gate: anomalies become one error naming features, anomalies and the artifact."""

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components import validation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(uri, split, anomalies):
  os.makedirs(os.path.join(uri, f'Split-{split}'), exist_ok=True)
  with open(os.path.join(uri, f'Split-{split}', validation.ANOMALIES_FILE), 'wb') as f:
    f.write(anomalies.SerializeToString())


def _validate(texts_labels):
  import pandas as pd

  frame = pd.DataFrame(
    {'text': [t for t, _ in texts_labels], 'label': [lab for _, lab in texts_labels]}
  )
  stats = tfdv.generate_statistics_from_dataframe(frame)
  schema = tfdv.load_schema_text(os.path.join(REPO, 'schemas', 'labeled', 'schema.pbtxt'))
  return tfdv.validate_statistics(stats, schema)


def test_clean_data_passes(tmp_path):
  _write(str(tmp_path), 'train', _validate([('good film', '1'), ('bad film', '0')]))
  validation.raise_on_anomalies(str(tmp_path))


def test_label_outside_domain_and_missing_label(tmp_path):
  _write(str(tmp_path), 'train', _validate([('good', '1'), ('odd', 'maybe')]))
  _write(str(tmp_path), 'eval', _validate([('good', '1'), ('none', None)]))
  with pytest.raises(validation.DataError) as error:
    validation.raise_on_anomalies(str(tmp_path))
  message = str(error.value)
  assert str(tmp_path) in message
  assert "split 'train': feature 'label': Unexpected string values" in message
  assert 'maybe' in message
  assert "split 'eval': feature 'label'" in message


def test_not_an_anomalies_artifact(tmp_path):
  with pytest.raises(validation.DataError, match='no anomalies files'):
    validation.raise_on_anomalies(str(tmp_path))


def test_describe_dataset_level_anomaly():
  anomalies = anomalies_pb2.Anomalies()
  anomalies.dataset_anomaly_info.reason.add(
    short_description='Low num examples', description='Too few.'
  )
  assert validation.describe_anomalies({'train': anomalies}) == [
    "split 'train': dataset: Low num examples: Too few."
  ]


@pytest.mark.parametrize(
  'rows, hint',
  [
    (
      [('good', '1'), ('bad', 'negative')],
      "the labels must be those of the schema's `label` domain",
    ),
    ([('good', '1'), ('bad', '0.0')], "the labels must be those of the schema's `label` domain"),
    ([('good', None), ('bad', None)], 'rows need a label: check that data.label_column'),
    ([('good', '1'), ('bad', None)], 'rows need a label: check that data.label_column'),
  ],
)
def test_a_label_anomaly_says_what_to_do_once(tmp_path, rows, hint):
  for split in ('train', 'eval'):
    _write(str(tmp_path), split, _validate(rows))
  with pytest.raises(validation.DataError) as error:
    validation.raise_on_anomalies(str(tmp_path))
  assert str(error.value).count(f'What to do: {hint}') == 1, str(error.value)
