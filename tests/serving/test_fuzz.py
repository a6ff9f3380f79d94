"""Seeded fuzzing of both decoders, loopback only: mutated gRPC messages and REST bodies made from
valid requests never get INTERNAL / UNKNOWN / 500, never crash the server, and leave its memory
flat. Bounded in count (GRPC_CASES + REST_CASES) and time (TIME_LIMIT_SECONDS)."""

import base64
import http.client
import json
import os
import random
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  get_model_status_pb2,
  predict_pb2,
)

from serving.config import ModelConfig
from tests.serving import toy_model
from tests.serving.conftest import MODEL, start_server
from tests.serving.hostile_util import rss_bytes

SEED = 20261129
GRPC_CASES = 1500
REST_CASES = 1500
TIME_LIMIT_SECONDS = 60
RSS_GROWTH_LIMIT = 200 << 20
BAD_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _grpc_seeds():
  """(method path, serialized valid request) pairs."""
  predict = predict_pb2.PredictRequest()
  predict.model_spec.name = MODEL
  predict.model_spec.signature_name = 'predict_text'
  predict.inputs['text'].CopyFrom(tf.make_tensor_proto(['a fine film', 'dull']))
  examples = predict_pb2.PredictRequest()
  examples.model_spec.name = MODEL
  examples.inputs['examples'].CopyFrom(
    tf.make_tensor_proto(toy_model.serialized_examples(['good', 'bad']))
  )
  numeric = predict_pb2.PredictRequest()
  numeric.model_spec.name = MODEL
  numeric.inputs['text'].CopyFrom(tf.make_tensor_proto([[1.0, 2.0]], dtype=tf.float32))
  classify = classification_pb2.ClassificationRequest()
  classify.model_spec.name = MODEL
  classify.input.example_list.examples.add().ParseFromString(
    toy_model.serialized_examples(['fine'])[0]
  )
  metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  metadata.model_spec.name = MODEL
  status = get_model_status_pb2.GetModelStatusRequest()
  status.model_spec.name = MODEL
  service = '/tensorflow.serving.PredictionService/'
  return [
    (service + 'Predict', predict.SerializeToString()),
    (service + 'Predict', examples.SerializeToString()),
    (service + 'Predict', numeric.SerializeToString()),
    (service + 'Classify', classify.SerializeToString()),
    (service + 'GetModelMetadata', metadata.SerializeToString()),
    ('/tensorflow.serving.ModelService/GetModelStatus', status.SerializeToString()),
  ]


def _mutate_bytes(rng, data):
  data = bytearray(data)
  for _ in range(rng.randint(1, 3)):
    kind = rng.randrange(6)
    at = rng.randrange(len(data) + 1)
    if kind == 0 and data:  # flip a bit
      data[at % len(data)] ^= 1 << rng.randrange(8)
    elif kind == 1 and data:  # an extreme byte (varint continuation, 0)
      data[at % len(data)] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
    elif kind == 2:  # truncate
      del data[at:]
    elif kind == 3:  # insert random bytes
      data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == 4 and data:  # duplicate a slice
      end = rng.randint(at, len(data))
      data[at:at] = data[at:end]
    else:  # a huge varint: declared sizes and lengths
      data[at:at] = b'\xff' * rng.randint(1, 9) + b'\x01'
  return bytes(data)


def _rest_seeds():
  example = base64.b64encode(toy_model.serialized_examples(['fine film'])[0]).decode()
  path = f'/v1/models/{MODEL}'
  return [
    (path + ':predict', {'signature_name': 'predict_text', 'instances': ['a fine film', 'dull']}),
    (path + ':predict', {'signature_name': 'predict_text', 'inputs': {'text': ['x', 'y']}}),
    (path + ':predict', {'instances': [{'b64': example}]}),
    (path + '/versions/2:predict', {'inputs': [{'b64': example}]}),
    (
      path + ':classify',
      {'examples': [{'text': 'fine'}, {'text': 'bad'}], 'context': {'text': 'x'}},
    ),
    (path + '/labels/stable:classify', {'examples': [{'text': 'a b', 'n': [1, 2]}]}),
  ]


_ODD_VALUES = (
  None,
  True,
  -1,
  2**70,
  1e308,
  -0.0,
  '',
  '\udcff',
  'é' * 10,
  [],
  {},
  [[[]]],
  {'b64': '!!'},
  {'b64': 'AAAA'},
  [1, 'a'],
  [[1], 2],
  {'text': None},
  [None] * 3,
)


def _mutate_tree(rng, value):
  """Replaces one node of a JSON tree by an odd value, or wraps, drops or duplicates one."""
  if isinstance(value, dict) and value and rng.random() < 0.7:
    key = rng.choice(list(value))
    value = dict(value)
    kind = rng.randrange(4)
    if kind == 0:
      del value[key]
    elif kind == 1:
      value[key + rng.choice(('x', '', '_'))] = value[key]
    else:
      value[key] = _mutate_tree(rng, value[key])
    return value
  if isinstance(value, list) and value and rng.random() < 0.7:
    value = list(value)
    at = rng.randrange(len(value))
    if rng.random() < 0.3:
      value.append(value[at])
    else:
      value[at] = _mutate_tree(rng, value[at])
    return value
  kind = rng.randrange(3)
  if kind == 0:
    return rng.choice(_ODD_VALUES)
  if kind == 1:
    return [value] * rng.randint(0, 3)
  return {'b64': value} if rng.random() < 0.5 else {rng.choice(('text', 'inputs', 'b64')): value}


@pytest.fixture(scope='module')
def fuzzed(toy_base):
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL), labels={'stable': 2})],
    poll_wait_seconds=0,
  )
  yield running
  running.close()


def _call_grpc(running, method, data):
  call = running.channel.unary_unary(method)  # bytes in, bytes out
  try:
    call(data, timeout=30)
    return grpc.StatusCode.OK
  except grpc.RpcError as e:
    return e.code()


def _call_rest(connection, path, body):
  try:
    connection.request('POST', path, body, {'Content-Type': 'application/json'})
    response = connection.getresponse()
    response.read()
    return response.status
  except (http.client.HTTPException, OSError):
    connection.close()  # reopened by the next request
    return None


def test_fuzzed_requests_never_fail_internally(fuzzed):
  rng = random.Random(SEED)
  grpc_seeds, rest_seeds = _grpc_seeds(), _rest_seeds()
  connection = http.client.HTTPConnection('127.0.0.1', fuzzed.server.rest_port, timeout=30)
  # Warm up both paths, so lazily built state is not counted as growth.
  for method, data in grpc_seeds:  # all valid but `numeric`, which has the wrong dtype
    assert _call_grpc(fuzzed, method, data) in (
      grpc.StatusCode.OK,
      grpc.StatusCode.INVALID_ARGUMENT,
    )
  for path, body in rest_seeds:
    assert _call_rest(connection, path, json.dumps(body)) == 200
  before = rss_bytes()
  started = time.monotonic()
  bad, codes = [], {}
  for i in range(GRPC_CASES):
    method, data = rng.choice(grpc_seeds)
    data = _mutate_bytes(rng, data)
    code = _call_grpc(fuzzed, method, data)
    codes[code.name] = codes.get(code.name, 0) + 1
    if code in BAD_GRPC:
      bad.append((i, method, data.hex(), code))
  for i in range(REST_CASES):
    path, body = rng.choice(rest_seeds)
    if rng.random() < 0.5:
      raw = json.dumps(_mutate_tree(rng, body)).encode()
    else:
      raw = _mutate_bytes(rng, json.dumps(body).encode())
    status = _call_rest(connection, path, raw)
    codes[status] = codes.get(status, 0) + 1
    if status is None or status >= 500:
      bad.append((i, path, raw[:200], status))
  elapsed = time.monotonic() - started
  growth = rss_bytes() - before
  connection.close()
  print(
    f'fuzz: {GRPC_CASES} gRPC + {REST_CASES} REST cases in {elapsed:.1f} s, RSS growth'
    f' {growth / 2**20:.1f} MiB, answers {codes}'
  )
  assert not bad, bad[:5]
  assert elapsed < TIME_LIMIT_SECONDS
  assert growth <= RSS_GROWTH_LIMIT
  # The server still serves.
  assert _call_grpc(fuzzed, *grpc_seeds[0]) == grpc.StatusCode.OK
  # Most cases were refused for a reason (not all accepted: the mutations do bite).
  assert codes.get('INVALID_ARGUMENT', 0) > GRPC_CASES // 10
  assert codes.get(400, 0) > REST_CASES // 10
