"""The REST API, TF Serving's JSON conventions: rows, columns, b64, classify, status, metadata."""

import base64
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import rest_util, toy_model
from tests.serving.conftest import MODEL

TEXTS = ['a truly great film', 'dull and far too long']


def _call(served, path, body=None):
  return rest_util.rest_json(served.rest_url, path, body)


def _b64(values):
  return [{'b64': base64.b64encode(v).decode()} for v in values]


def test_row_format_with_b64_examples_matches_in_process(served, in_process):
  examples = toy_model.serialized_examples(TEXTS)
  status, body = _call(
    served, f'/v1/models/{MODEL}/versions/1:predict', {'instances': _b64(examples)}
  )
  expected = in_process[1]['serving_default'](examples=tf.constant(examples))
  assert status == 200
  assert len(body['predictions']) == 2
  for i, row in enumerate(body['predictions']):
    assert set(row) == {'probabilities', 'label_ids', 'labels'}
    np.testing.assert_allclose(row['probabilities'], expected['probabilities'][i], rtol=1e-6)
    assert row['label_ids'] == expected['label_ids'][i]
    assert row['labels'] == expected['labels'][i].numpy().decode()


def test_columnar_format_matches_in_process(served, in_process):
  status, body = _call(
    served,
    f'/v1/models/{MODEL}:predict',
    {'signature_name': 'predict_text', 'inputs': {'text': TEXTS}},
  )
  expected = in_process[2]['predict_text'](text=tf.constant(TEXTS))
  assert status == 200
  outputs = body['outputs']
  np.testing.assert_allclose(outputs['probabilities'], expected['probabilities'], rtol=1e-6)
  assert outputs['labels'] == [v.decode() for v in expected['labels'].numpy()]


def test_instances_may_name_their_input_and_inputs_may_be_bare(served):
  named = _call(
    served,
    f'/v1/models/{MODEL}:predict',
    {'signature_name': 'predict_text', 'instances': [{'text': t} for t in TEXTS]},
  )
  bare = _call(
    served, f'/v1/models/{MODEL}:predict', {'signature_name': 'predict_text', 'inputs': TEXTS}
  )
  plain = _call(
    served, f'/v1/models/{MODEL}:predict', {'signature_name': 'predict_text', 'instances': TEXTS}
  )
  assert named[0] == bare[0] == plain[0] == 200
  assert named[1]['predictions'] == plain[1]['predictions']
  assert [r['labels'] for r in plain[1]['predictions']] == bare[1]['outputs']['labels']


def test_labels_in_the_path(served):
  stable = _call(
    served,
    f'/v1/models/{MODEL}/labels/stable:predict',
    {'signature_name': 'predict_text', 'instances': TEXTS},
  )
  one = _call(
    served,
    f'/v1/models/{MODEL}/versions/1:predict',
    {'signature_name': 'predict_text', 'instances': TEXTS},
  )
  assert stable == one


def test_classify(served, in_process):
  status, body = _call(
    served, f'/v1/models/{MODEL}/versions/2:classify', {'examples': [{'text': t} for t in TEXTS]}
  )
  expected = in_process[2]['serving_default'](
    examples=tf.constant(toy_model.serialized_examples(TEXTS))
  )['probabilities'].numpy()
  assert status == 200
  assert [[c[0] for c in row] for row in body['results']] == [['0', '1', '2']] * 2
  np.testing.assert_allclose([[c[1] for c in row] for row in body['results']], expected, rtol=1e-6)


def test_classify_with_context(served):
  with_context = _call(
    served,
    f'/v1/models/{MODEL}:classify',
    {'context': {'text': TEXTS[0]}, 'examples': [{}, {'text': TEXTS[1]}]},
  )
  direct = _call(served, f'/v1/models/{MODEL}:classify', {'examples': [{'text': t} for t in TEXTS]})
  assert with_context == direct


@pytest.mark.parametrize(
  'suffix,versions', [('', ['2', '1']), ('/versions/1', ['1']), ('/labels/canary', ['2'])]
)
def test_model_status(served, suffix, versions):
  status, body = _call(served, f'/v1/models/{MODEL}{suffix}')
  assert status == 200
  assert [s['version'] for s in body['model_version_status']] == versions
  for s in body['model_version_status']:
    assert s['state'] == 'AVAILABLE'
    assert s['status'] == {'error_code': 'OK', 'error_message': ''}


def test_metadata(served):
  status, body = _call(served, f'/v1/models/{MODEL}/versions/1/metadata')
  assert status == 200
  assert body['model_spec']['name'] == MODEL and body['model_spec']['version'] == '1'
  signatures = body['metadata']['signature_def']['signature_def']
  assert signatures['predict_text']['inputs']['text']['dtype'] == 'DT_STRING'
  assert set(signatures['serving_default']['outputs']) == {'probabilities', 'label_ids', 'labels'}


def test_health_and_metrics(served):
  status, body = _call(served, '/healthz')
  assert status == 200 and body['models'] == [MODEL]
  _call(
    served, f'/v1/models/{MODEL}:predict', {'signature_name': 'predict_text', 'instances': TEXTS}
  )
  with urllib.request.urlopen(served.rest_url + '/monitoring/prometheus/metrics') as response:
    assert response.headers['Content-Type'].startswith('text/plain; version=0.0.4')
    text = response.read().decode()
  assert '# TYPE serving_request_latency_seconds histogram' in text
  assert (
    'serving_requests_total{model="toy",signature="predict_text",method="predict",'
    'protocol="rest",code="OK"}'
  ) in text
  assert (
    'serving_request_latency_seconds_bucket{model="toy",signature="predict_text",'
    'method="predict",protocol="rest",le="+Inf"}'
  ) in text
  assert 'serving_model_version_available{model="toy",version="2"} 1' in text
