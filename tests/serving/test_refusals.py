"""What a refused request leaves behind: its body is freed as soon as it is answered, without
waiting for Python's cycle collector (a 60 MiB refused body once stayed until a full GC)."""

import gc
import json
import os
import time
import types

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import errors
from serving.config import ModelConfig
from tests.serving import rest_util
from tests.serving.conftest import MODEL, start_server

PREDICT_PATH = f'/v1/models/{MODEL}:predict'
SERVING_DIR = os.path.dirname(errors.__file__)
BIG = 10000  # elements (or bytes) of the refused requests below


@pytest.fixture(scope='module')
def running(toy_base):
  server = start_server(
    toy_base, [ModelConfig(MODEL, os.path.join(toy_base, MODEL))], poll_wait_seconds=0
  )
  yield server
  server.close()


def _holds_request(value):
  if isinstance(value, predict_pb2.PredictRequest):
    return True
  if isinstance(value, dict):
    return 'instances' in value
  return isinstance(value, (bytes, str, list)) and len(value) >= BIG


def _left():
  """Request errors alive, and frames of the server's code holding a request or its body."""
  left = []
  for o in gc.get_objects():
    if isinstance(o, errors.ServingError):
      left.append(f'ServingError: {o}'[:120])
    elif (
      isinstance(o, types.FrameType)
      and o.f_code.co_filename.startswith(SERVING_DIR)
      and any(_holds_request(v) for v in o.f_locals.values())
    ):
      left.append(f'frame of {o.f_code.co_name} ({os.path.basename(o.f_code.co_filename)})')
  return left


def _left_after(send):
  """What stays alive (the cycle collector off) of a refused request once it is answered."""
  gc.collect()
  before = set(_left())
  gc.disable()
  try:
    send()
    for _ in range(40):  # the loop may still be finishing the handler after the answer
      left = [o for o in _left() if o not in before]
      if not left:
        break
      time.sleep(0.05)
    return left
  finally:
    gc.enable()


def test_a_refused_rest_body_is_freed_once_answered(running):
  # Many strings, then a number: decoded as far as the number, then refused (400).
  body = json.dumps({'signature_name': 'predict_text', 'instances': ['a film'] * BIG + [1]})

  def send():
    status, answer = rest_util.rest_json(running.rest_url, PREDICT_PATH, body.encode())
    assert status == 400, answer

  assert _left_after(send) == []


def test_a_refused_grpc_request_is_freed_once_answered(running):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['no_such_input'].CopyFrom(tf.make_tensor_proto([b'a film'] * BIG))

  def send():
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

  assert _left_after(send) == []
