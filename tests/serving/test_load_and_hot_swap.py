"""Load, hot swap and a corrupt push, each under 16 concurrent clients, with zero failures."""

import http.client
import json
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from serving.batching import BatchingOptions
from serving.config import ModelConfig
from tests.serving.conftest import MODEL, push, push_corrupt, start_server

CLIENTS = 16
TEXT = 'the plot was thin but the acting carried it'


def _expected(path):
  signature = tf.saved_model.load(path).signatures['predict_text']
  return signature(text=tf.constant([TEXT]))['probabilities'].numpy()[0]


class Load:
  """16 client threads (gRPC and REST alternately) sending requests until told to stop.

  Every response is matched to the model version whose in-process output it equals.
  """

  def __init__(self, running, expected):
    self.running = running
    self.expected = expected  # version -> probabilities for TEXT
    self.errors = []
    self.seen = [[] for _ in range(CLIENTS)]  # per client, versions in order
    self.done = threading.Event()
    self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

  def count(self):
    return sum(len(s) for s in self.seen)

  def start(self):
    for thread in self.threads:
      thread.start()
    return self

  def stop(self):
    self.done.set()
    for thread in self.threads:
      thread.join()

  def wait_for(self, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
      assert time.monotonic() < deadline, f'timed out; {self.count()} requests, {self.errors[:3]}'
      assert not self.errors, self.errors[:3]
      time.sleep(0.02)

  def _version_of(self, probabilities):
    for version, expected in self.expected.items():
      if np.allclose(probabilities, expected, rtol=1e-5, atol=1e-7):
        return version
    raise AssertionError(f'{probabilities} matches no version')

  def _client(self, index):
    send = self._grpc_sender() if index % 2 == 0 else self._rest_sender()
    while not self.done.is_set():
      try:
        version, probabilities = send()
        if version is None:
          version = self._version_of(probabilities)
        else:
          assert self._version_of(probabilities) == version
        self.seen[index].append(version)
      except Exception as e:  # noqa: BLE001 - collected and asserted on by the test.
        self.errors.append(repr(e))
        return  # one error ends this client: the test fails, without a flood of them

  def _grpc_sender(self):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
      grpc.insecure_channel(self.running.grpc_target)
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = 'predict_text'
    request.inputs['text'].CopyFrom(tf.make_tensor_proto([TEXT]))

    def send():
      response = stub.Predict(request, timeout=30)
      return (
        response.model_spec.version.value,
        tf.make_ndarray(response.outputs['probabilities'])[0],
      )

    return send

  def _rest_sender(self):
    connection = http.client.HTTPConnection('127.0.0.1', self.running.server.rest_port, timeout=30)
    body = json.dumps({'signature_name': 'predict_text', 'instances': [TEXT]})

    def send():
      connection.request(
        'POST', f'/v1/models/{MODEL}:predict', body, {'Content-Type': 'application/json'}
      )
      response = connection.getresponse()
      answer = json.loads(response.read())
      assert response.status == 200, answer
      return None, np.array(answer['predictions'][0]['probabilities'], dtype=np.float32)

    return send


def test_16_clients_5000_requests_zero_errors(tmp_path):
  base = str(tmp_path)
  path = push(base, MODEL, 1, seed=1)
  running = start_server(
    base,
    [ModelConfig(MODEL, os.path.join(base, MODEL))],
    poll_wait_seconds=0,
    batching=BatchingOptions(max_batch_size=16),
  )
  try:
    load = Load(running, {1: _expected(path)}).start()
    load.wait_for(lambda: load.count() >= 5000)
    load.stop()
    assert not load.errors, load.errors[:5]
    assert load.count() >= 5000
    assert all(len(s) > 50 for s in load.seen), [len(s) for s in load.seen]
    metrics = _metrics(running)
    # Batching merged concurrent requests: some signature calls had more than one row.
    ones = _metric_value(
      metrics, 'serving_batch_size_bucket{model="toy",signature="predict_text",le="1"}'
    )
    total = _metric_value(metrics, 'serving_batch_size_count{model="toy",signature="predict_text"}')
    assert ones < total
  finally:
    running.close()


def _metrics(running):
  connection = http.client.HTTPConnection('127.0.0.1', running.server.rest_port, timeout=30)
  connection.request('GET', '/monitoring/prometheus/metrics')
  return connection.getresponse().read().decode()


def _metric_value(text, series):
  for line in text.splitlines():
    if line.startswith(series + ' '):
      return float(line.rsplit(' ', 1)[1])
  raise AssertionError(f'{series} not in the metrics')


def _status(running):
  stub = model_service_pb2_grpc.ModelServiceStub(running.channel)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  return {s.version: s for s in stub.GetModelStatus(request, timeout=30).model_version_status}


@pytest.mark.parametrize(
  'batching', [None, BatchingOptions(max_batch_size=16)], ids=['direct', 'batching']
)
def test_hot_swap_then_corrupt_push_under_load(tmp_path, batching):
  base = str(tmp_path)
  expected = {1: _expected(push(base, MODEL, 1, seed=1))}
  running = start_server(
    base, [ModelConfig(MODEL, os.path.join(base, MODEL))], poll_wait_seconds=0.1, batching=batching
  )
  available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
  end = get_model_status_pb2.ModelVersionStatus.END
  try:
    load = Load(running, expected).start()
    load.wait_for(lambda: load.count() >= 1000)

    # A new version, pushed mid-run: requests move to it, none fails.
    expected[2] = _expected(push(base, MODEL, 2, seed=2))
    load.wait_for(lambda: all(s and s[-1] == 2 for s in load.seen))
    switched_at = load.count()
    load.wait_for(lambda: load.count() >= switched_at + 1000)
    status = _status(running)
    assert status[2].state == available
    assert status[1].state == end and status[1].status.error_code == 0

    # A corrupt version: the error shows in its status, version 2 keeps serving.
    push_corrupt(base, MODEL, 3)
    load.wait_for(lambda: 3 in _status(running))
    load.wait_for(lambda: _status(running)[3].state == end)
    corrupt_at = load.count()
    load.wait_for(lambda: load.count() >= max(corrupt_at + 1000, 5000))
    load.stop()

    assert not load.errors, load.errors[:5]
    status = _status(running)
    assert status[2].state == available
    assert status[3].status.error_code != 0
    assert 'failed to load version 3' in status[3].status.error_message
    for versions in load.seen:
      first_two = versions.index(2)
      assert set(versions[:first_two]) == {1}
      assert set(versions[first_two:]) == {2}  # no going back, and nothing from version 3
  finally:
    running.close()
