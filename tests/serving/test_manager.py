"""Model manager: warm-up replay, discovery under a root, health while nothing is loaded."""

import json
import os
import urllib.error
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving import errors
from serving.config import ModelConfig
from serving.manager import WARMUP_FILE, ModelManager
from tests.serving.conftest import MODEL, push, start_server


def _write_warmup(version_dir, input_key):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs[input_key].CopyFrom(tf.make_tensor_proto(['warm me up']))
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  os.makedirs(os.path.join(version_dir, 'assets.extra'), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(version_dir, WARMUP_FILE)) as writer:
    writer.write(log.SerializeToString())


def test_warmup_requests_are_replayed_and_a_failing_one_fails_the_load(tmp_path):
  base = str(tmp_path)
  _write_warmup(push(base, MODEL, 1, seed=1), 'text')
  _write_warmup(push(base, MODEL, 2, seed=2), 'txt')  # names an input the model lacks
  manager = ModelManager([ModelConfig(MODEL, os.path.join(base, MODEL), latest=2)],
                         poll_wait_seconds=0)
  manager.start()
  try:
    status = {v: (state, code, message) for v, state, code, message in manager.status(MODEL)}
    assert status[1][:2] == ('AVAILABLE', grpc.StatusCode.OK)
    assert status[2][0] == 'END' and status[2][1] != grpc.StatusCode.OK
    assert "expects inputs ['text'] but got ['txt']" in status[2][2]
    assert manager.resolve(MODEL).version == 1
  finally:
    manager.stop()


def test_models_pushed_under_a_root_are_found_on_later_polls(tmp_path):
  manager = ModelManager(discover_root=str(tmp_path), poll_wait_seconds=0)
  manager.start()
  with pytest.raises(errors.ServingError) as raised:
    manager.resolve('imdb')
  assert raised.value.code == grpc.StatusCode.NOT_FOUND
  push(str(tmp_path / 'demo' / 'serving'), 'imdb', 1, seed=1)
  manager.poll()
  try:
    assert manager.resolve('imdb').version == 1
    assert manager.model_names() == ['imdb']
  finally:
    manager.stop()


def test_health_is_503_until_a_version_is_loaded(tmp_path):
  base = str(tmp_path)
  running = start_server(base, [ModelConfig(MODEL, os.path.join(base, MODEL))],
                         poll_wait_seconds=0)
  try:
    with pytest.raises(urllib.error.HTTPError) as raised:
      urllib.request.urlopen(running.rest_url + '/healthz', timeout=10)
    assert raised.value.code == 503
    body = json.loads(raised.value.read())
    assert body['status'] == 'unavailable'
    with pytest.raises(urllib.error.HTTPError) as raised:
      urllib.request.urlopen(urllib.request.Request(
          running.rest_url + f'/v1/models/{MODEL}:predict',
          data=json.dumps({'instances': ['x']}).encode()), timeout=10)
    assert raised.value.code == 503
    assert 'no version available' in json.loads(raised.value.read())['error']
    push(base, MODEL, 1, seed=1)
    running.server.manager.poll()
    with urllib.request.urlopen(running.rest_url + '/healthz', timeout=10) as response:
      assert response.status == 200
  finally:
    running.close()
