"""Bad requests of many kinds: each gets the right status and message; the server keeps serving."""

import os
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2

from serving.batching import BatchingOptions
from serving.config import ModelConfig
from tests.serving import rest_util, toy_model
from tests.serving.conftest import MODEL, start_server

MAX_BYTES = 64 << 10
MAX_BATCH = 8
MAX_ROWS = 6
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope='module')
def strict(toy_base):
  """A server with a 64 KiB request limit, 6 rows per request, and batching (8 rows)."""
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL), labels={'stable': 2})],
    poll_wait_seconds=0,
    batching=BatchingOptions(max_batch_size=MAX_BATCH),
    options={'max_request_bytes': MAX_BYTES},
    max_request_rows=MAX_ROWS,
  )
  yield running
  running.close()


def _predict_request(
  signature='predict_text', key='text', values=('fine film',), dtype=None, **spec
):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = spec.get('name', MODEL)
  request.model_spec.signature_name = signature
  if 'version' in spec:
    request.model_spec.version.value = spec['version']
  if 'label' in spec:
    request.model_spec.version_label = spec['label']
  if key is not None:
    request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
  return request


def _two_inputs():
  request = _predict_request()
  request.inputs['extra'].CopyFrom(tf.make_tensor_proto(['x']))
  return request


def _bad_tensor_content():
  request = _predict_request(values=[1.0, 2.0], dtype=tf.float32)
  request.inputs['text'].tensor_shape.dim[0].size = 5  # content holds 2 floats, shape says 5
  return request


def _classify(signature='', examples=1):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = signature
  for _ in range(examples):
    request.input.example_list.examples.add().ParseFromString(
      toy_model.serialized_examples(['fine'])[0]
    )
  return request


def _many_inputs():
  request = _predict_request()
  for i in range(2_000):
    request.inputs[f'x{i:06d}'].string_val.append(b'a')
  return request


def _metadata(fields):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
  request.model_spec.name = MODEL
  return request


def _filter(request):
  request.output_filter.append('logits')
  return request


GRPC_CASES = {
  'wrong input name': (
    'Predict',
    _predict_request(key='txt'),
    INVALID,
    "expects inputs ['text'] but got ['txt']",
  ),
  'missing input': ('Predict', _predict_request(key=None), INVALID, "missing: ['text']"),
  'extra input': ('Predict', _two_inputs(), INVALID, "extra: ['extra']"),
  # Refused before any is decoded, the first few named (once all were decoded first: 2M such
  # inputs held a request thread 23 s).
  '2,000 extra inputs': (
    'Predict',
    _many_inputs(),
    INVALID,
    "expects inputs ['text'] but got 2001 inputs (extra: ['x000000', 'x000001', 'x000002',"
    " 'x000003', 'x000004', 'x000005', 'x000006', 'x000007', 'x000008', 'x000009'] and 1990"
    ' more, missing: [])',
  ),
  'wrong dtype': (
    'Predict',
    _predict_request(values=[1.5], dtype=tf.float32),
    INVALID,
    'expects dtype string but got float',
  ),
  'wrong shape': (
    'Predict',
    _predict_request(values=[['a', 'b'], ['c', 'd']]),
    INVALID,
    'expects shape [-1] but got [2, 2]',
  ),
  'scalar instead of batch': (
    'Predict',
    _predict_request(values='lonely'),
    INVALID,
    'expects shape [-1] but got []',
  ),
  'empty batch': (
    'Predict',
    _predict_request(values=np.array([], dtype=object)),
    INVALID,
    'empty batch',
  ),
  'batch over the limit': (
    'Predict',
    _predict_request(values=['x'] * (MAX_ROWS + 1)),
    INVALID,
    'batch of 7 rows exceeds the limit of 6 rows',
  ),
  'oversize message': (
    'Predict',
    _predict_request(values=['x' * MAX_BYTES]),
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    'larger than max',
  ),
  'non-UTF-8 text': (
    'Predict',
    _predict_request(values=[b'\xff\xfe bad']),
    INVALID,
    'Invalid formatting on input string',
  ),
  'garbage tf.Example': (
    'Predict',
    _predict_request('serving_default', 'examples', [b'\x0a\xff garbage']),
    INVALID,
    'parse',
  ),
  'tf.Example without text': (
    'Predict',
    _predict_request('serving_default', 'examples', [tf.train.Example().SerializeToString()]),
    INVALID,
    'text',
  ),
  'malformed TensorProto': ('Predict', _bad_tensor_content(), INVALID, 'TensorProto'),
  'unknown signature': (
    'Predict',
    _predict_request(signature='predict_txt'),
    grpc.StatusCode.FAILED_PRECONDITION,
    'Serving signature key "predict_txt" not found',
  ),
  'unknown output': (
    'Predict',
    _filter(_predict_request()),
    INVALID,
    "output_filter ['logits'] not in the outputs",
  ),
  'unknown model': (
    'Predict',
    _predict_request(name='nope'),
    grpc.StatusCode.NOT_FOUND,
    'Servable not found for request: Latest(nope)',
  ),
  'missing model name': (
    'Predict',
    _predict_request(name=''),
    INVALID,
    'model_spec.name is missing',
  ),
  'wrong version': (
    'Predict',
    _predict_request(version=1),
    grpc.StatusCode.NOT_FOUND,
    'Specific(toy, 1)',
  ),
  'unknown label': (
    'Predict',
    _predict_request(label='canary'),
    INVALID,
    'Unrecognized servable version label: "canary"',
  ),
  'classify on a raw-text signature': (
    'Classify',
    _classify('predict_text'),
    INVALID,
    'cannot serve Classify',
  ),
  'classify without examples': ('Classify', _classify(examples=0), INVALID, 'empty batch'),
  'metadata without fields': (
    'GetModelMetadata',
    _metadata([]),
    INVALID,
    'at least one metadata_field',
  ),
  'metadata of an unknown field': (
    'GetModelMetadata',
    _metadata(['weights']),
    INVALID,
    "['weights'] not supported",
  ),
  # Answered on the event loop: refused at once rather than read through (20M entries held
  # every client 3.5 s).
  'a thousand metadata fields': (
    'GetModelMetadata',
    _metadata(['x'] * 1_000),
    INVALID,
    'GetModelMetadataRequest has 1000 metadata_field entries; the only field is "signature_def"',
  ),
}


def _good_predict(running):
  response = running.predictions.Predict(_predict_request(values=['still fine']), timeout=30)
  assert tf.make_ndarray(response.outputs['probabilities']).shape == (1, 3)


@pytest.mark.parametrize('case', sorted(GRPC_CASES))
def test_grpc_bad_request(strict, case):
  method, request, code, message = GRPC_CASES[case]
  with pytest.raises(grpc.RpcError) as raised:
    getattr(strict.predictions, method)(request, timeout=30)
  assert raised.value.code() == code, raised.value.details()
  assert message in raised.value.details()
  _good_predict(strict)


def test_grpc_deadline_is_honoured(strict):
  # A deadline that has already passed when the request reaches its batch.
  with pytest.raises(grpc.RpcError) as raised:
    strict.predictions.Predict(_predict_request(values=['late']), timeout=1e-4)
  assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
  _good_predict(strict)


REST_CASES = {
  'malformed JSON': ('POST', ':predict', b'{"instances": [', 400, 'JSON Parse error'),
  'body not UTF-8': ('POST', ':predict', b'{"instances": ["\xff"]}', 400, 'not valid UTF-8'),
  'lone surrogate': (
    'POST',
    ':predict',
    b'{"signature_name": "predict_text", "instances": ["\\udcff"]}',
    400,
    'not valid UTF-8',
  ),
  'body not an object': ('POST', ':predict', b'["x"]', 400, 'must be a JSON object'),
  'instances and inputs': (
    'POST',
    ':predict',
    {'instances': ['a'], 'inputs': ['a']},
    400,
    'exactly one of "instances"',
  ),
  'neither instances nor inputs': (
    'POST',
    ':predict',
    {'signature_name': 'predict_text'},
    400,
    'exactly one of "instances"',
  ),
  'empty instances': ('POST', ':predict', {'instances': []}, 400, 'empty batch'),
  'numbers for a string input': ('POST', ':predict', {'instances': [1, 2]}, 400, 'expects strings'),
  'ragged instances': (
    'POST',
    ':predict',
    {'signature_name': 'predict_text', 'instances': [['a'], 'b']},
    400,
    'ragged',
  ),
  'invalid base64': ('POST', ':predict', {'instances': [{'b64': '***'}]}, 400, 'invalid base64'),
  'wrong input name (row)': (
    'POST',
    ':predict',
    {'signature_name': 'predict_text', 'instances': [{'txt': 'a'}]},
    400,
    'is not an input of signature "predict_text"',
  ),
  'wrong input name (columnar)': (
    'POST',
    ':predict',
    {'signature_name': 'predict_text', 'inputs': {'txt': ['a']}},
    400,
    'is not an input of signature "predict_text"',
  ),
  'unknown signature': (
    'POST',
    ':predict',
    {'signature_name': 'nope', 'instances': ['a']},
    400,
    'Serving signature key "nope" not found',
  ),
  'signature name not a string': (
    'POST',
    ':predict',
    {'signature_name': 3, 'instances': []},
    400,
    '"signature_name" must be a string',
  ),
  'oversize body': ('POST', ':predict', {'instances': ['x' * MAX_BYTES]}, 413, 'exceeds the limit'),
  'unknown verb': ('POST', ':explain', {'examples': []}, 501, 'not supported'),
  'GET on predict': ('GET', ':predict', None, 400, 'use POST'),
  'classify example not an object': (
    'POST',
    ':classify',
    {'examples': ['text']},
    400,
    'examples[0] must be an object',
  ),
  'classify empty feature list': (
    'POST',
    ':classify',
    {'examples': [{'text': []}]},
    400,
    'empty list',
  ),
  # Values are quoted as the JSON had them (null, NaN, true), not as Python prints them.
  'null instance': (
    'POST',
    ':predict',
    b'{"instances": [null], "signature_name": "predict_text"}',
    400,
    'but got null',
  ),
  'NaN instance': (
    'POST',
    ':predict',
    b'{"instances": [NaN], "signature_name": "predict_text"}',
    400,
    'but got NaN',
  ),
  'classify feature of mixed types': (
    'POST',
    ':classify',
    {'examples': [{'text': [True, 'x']}]},
    400,
    'unsupported value types: [true, "x"]',
  ),
  'classify without examples': (
    'POST',
    ':classify',
    {'context': {}},
    400,
    'classify needs "examples"',
  ),
}

REST_PATH_CASES = {
  'unknown model': (
    'POST',
    '/v1/models/nope:predict',
    {'instances': ['a']},
    404,
    'Servable not found',
  ),
  'wrong version': (
    'POST',
    f'/v1/models/{MODEL}/versions/1:predict',
    {'instances': ['a']},
    404,
    'Specific(toy, 1)',
  ),
  'version not a number': (
    'POST',
    f'/v1/models/{MODEL}/versions/two:predict',
    {'instances': ['a']},
    400,
    'is not a number',
  ),
  'unknown label': (
    'GET',
    f'/v1/models/{MODEL}/labels/canary',
    None,
    400,
    'Unrecognized servable version label',
  ),
  'label with a trailing space, percent-encoded': (
    'GET',
    f'/v1/models/{MODEL}/labels/stable%20',
    None,
    400,
    'Unrecognized servable version label: "stable "',
  ),
  'malformed path': ('GET', '/v1/modelz/toy', None, 400, 'Malformed request'),
  'unknown path': ('GET', '/favicon.ico', None, 404, 'no such path'),
}


def _http(running, method, path, body):
  return rest_util.rest_json(running.rest_url, path, body, method)


def _good_rest(running):
  status, body = _http(
    running,
    'POST',
    f'/v1/models/{MODEL}:predict',
    {'signature_name': 'predict_text', 'instances': ['still fine']},
  )
  assert status == 200 and len(body['predictions']) == 1


@pytest.mark.parametrize('case', sorted(REST_CASES))
def test_rest_bad_request(strict, case):
  method, verb, body, status, message = REST_CASES[case]
  got_status, got = _http(strict, method, f'/v1/models/{MODEL}{verb}', body)
  assert (got_status, list(got)) == (status, ['error'])
  assert message in got['error']
  _good_rest(strict)


@pytest.mark.parametrize('case', sorted(REST_PATH_CASES))
def test_rest_bad_path(strict, case):
  method, path, body, status, message = REST_PATH_CASES[case]
  got_status, got = _http(strict, method, path, body)
  assert got_status == status
  assert message in got['error']
  _good_rest(strict)


def test_errors_are_counted_in_the_metrics(strict):
  _http(
    strict, 'POST', f'/v1/models/{MODEL}:predict', {'signature_name': 'nope', 'instances': ['a']}
  )
  with urllib.request.urlopen(strict.rest_url + '/monitoring/prometheus/metrics') as response:
    text = response.read().decode()
  assert (
    'serving_request_errors_total{model="toy",signature="unknown",method="predict",'
    'protocol="rest",code="FAILED_PRECONDITION"}'
  ) in text


@pytest.mark.parametrize('part', ['signature', 'input key', 'output filter', 'model name'])
def test_a_huge_name_in_a_grpc_request_gets_its_error_in_a_bounded_message(strict, part):
  """A 16 KB (or non-ASCII, 4 bytes a character) name quoted in the error made a status message
  over gRPC's 8 KiB of metadata: the client got RESOURCE_EXHAUSTED 'Stream removed'."""
  for name in ('s' * 16_000, '\U0001f600' * 5_000):
    request = _predict_request(
      signature=name if part == 'signature' else 'predict_text',
      key=name if part == 'input key' else 'text',
      name=name if part == 'model name' else MODEL,
    )
    if part == 'output filter':
      request.output_filter.append(name)
    with pytest.raises(grpc.RpcError) as raised:
      strict.predictions.Predict(request, timeout=30)
    # Its own code (what TF Serving answers for that name), not gRPC's 'Stream removed'.
    assert raised.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value.details()
    assert len(raised.value.details()) <= 1100
  _good_predict(strict)


def test_a_huge_signature_name_over_rest_gets_a_bounded_answer(strict):
  status, body = _http(
    strict,
    'POST',
    f'/v1/models/{MODEL}:predict',
    {'signature_name': 'x' * 50_000, 'instances': ['fine']},
  )
  assert status in (400, 404) and len(body['error']) <= 1100, body['error'][:200]
  _good_rest(strict)
