"""The batch queue: merging, limits, deadlines, and isolation of a bad request in a batch."""

import os
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import errors, memory
from serving.batching import BatchingOptions, BatchQueue
from serving.config import ModelConfig
from serving.manager import ModelManager
from serving.servable import Servable
from tests.serving.conftest import MODEL, start_server


class FakeSignature:
  """Doubles its input; fails on the row 'bad'; records the size of every call."""

  name = 'double'
  inputs = {'x': None}

  def __init__(self, delay=0.0):
    self.calls = []
    self.delay = delay

  def __call__(self, inputs):
    x = inputs['x']
    self.calls.append(len(x))
    time.sleep(self.delay)
    if (x == 'bad').any():
      raise errors.invalid_argument('row "bad" rejected')
    return {'y': np.char.add(x.astype(str), x.astype(str)).astype(object)}


def _run_concurrently(queue, rows, deadline=None):
  results = [None] * len(rows)

  def call(i):
    try:
      results[i] = queue.run({'x': np.array(rows[i], dtype=object)}, len(rows[i]), deadline)
    except errors.ServingError as e:
      results[i] = e

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return results


def test_concurrent_requests_merge_and_get_their_own_rows_back():
  signature = FakeSignature(delay=0.01)
  queue = BatchQueue(
    signature, BatchingOptions(max_batch_size=8, batch_timeout_micros=20000, num_batch_threads=1)
  )
  rows = [[f'a{i}', f'b{i}'] for i in range(8)]
  results = _run_concurrently(queue, rows)
  queue.close()
  for i, result in enumerate(results):
    assert list(result['y']) == [f'a{i}a{i}', f'b{i}b{i}']
  assert sum(signature.calls) == 16
  assert max(signature.calls) > 2  # merged
  assert max(signature.calls) <= 8  # never above max_batch_size


def test_a_bad_request_fails_alone():
  signature = FakeSignature(delay=0.01)
  queue = BatchQueue(
    signature, BatchingOptions(max_batch_size=16, batch_timeout_micros=20000, num_batch_threads=1)
  )
  results = _run_concurrently(queue, [['ok1'], ['bad'], ['ok2'], ['ok3']])
  queue.close()
  assert isinstance(results[1], errors.ServingError)
  assert 'row "bad" rejected' in results[1].message
  assert [list(r['y']) for i, r in enumerate(results) if i != 1] == [
    ['ok1ok1'],
    ['ok2ok2'],
    ['ok3ok3'],
  ]


def test_limits():
  queue = BatchQueue(
    FakeSignature(delay=0.2),
    BatchingOptions(
      max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1
    ),
  )
  with pytest.raises(errors.ServingError, match='larger than max_batch_size 2'):
    queue.run({'x': np.array(['a', 'b', 'c'], dtype=object)}, 3)
  results = _run_concurrently(queue, [['a', 'b']] * 4)
  queue.close()
  full = [r for r in results if isinstance(r, errors.ServingError)]
  assert full and all(r.code == grpc.StatusCode.UNAVAILABLE for r in full)
  assert 'queue is full' in full[0].message
  assert any(not isinstance(r, errors.ServingError) for r in results)


def test_deadline_passes_while_waiting():
  signature = FakeSignature(delay=0.3)
  queue = BatchQueue(
    signature, BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1)
  )
  slow = threading.Thread(target=queue.run, args=({'x': np.array(['a'], dtype=object)}, 1))
  slow.start()
  time.sleep(0.05)
  with pytest.raises(errors.ServingError) as raised:
    queue.run({'x': np.array(['b'], dtype=object)}, 1, deadline=time.monotonic() + 0.05)
  assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
  slow.join()
  queue.close()
  assert signature.calls == [1]  # the expired request never ran


def test_close_drains_queued_requests():
  signature = FakeSignature(delay=0.2)
  queue = BatchQueue(
    signature, BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1)
  )
  results = []
  threads = [
    threading.Thread(
      target=lambda: results.append(queue.run({'x': np.array(['a'], dtype=object)}, 1))
    )
    for _ in range(3)
  ]
  for thread in threads:
    thread.start()
  while not signature.calls:  # the first runs, the other two wait in the queue
    time.sleep(0.01)
  time.sleep(0.05)
  queue.close()
  for thread in threads:
    thread.join()
  assert len(results) == 3 and sum(signature.calls) == 3
  # A request that picked this version just before it was swapped out still gets served.
  assert list(queue.run({'x': np.array(['b'], dtype=object)}, 1)['y']) == ['bb']


def test_options_are_validated():
  with pytest.raises(ValueError, match='max_batch_size must be positive'):
    BatchingOptions(max_batch_size=0)
  with pytest.raises(ValueError, match=r'max_execution_batch_size \(8\) must be at most'):
    BatchingOptions(max_batch_size=4, max_execution_batch_size=8)


class _BatchSizes:
  """The Metrics calls a ModelManager makes, recording the rows of every merged call."""

  def __init__(self):
    self.rows = []

  def track_versions(self, fn):
    pass

  def track_served(self, fn):
    pass

  def observe_batch(self, model, signature, rows):
    self.rows.append(rows)


def _batched_manager(toy_base, batching):
  sizes = _BatchSizes()
  manager = ModelManager(
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    batching=batching,
    poll_wait_seconds=0,
    metrics=sizes,
    execution=memory.ExecutionOptions(max_execution_batch_size=64),
  )
  manager.start()
  return manager, sizes


def _run_rows(manager, rows):
  servable = manager.resolve(MODEL)
  texts = np.array([f'text {i}' for i in range(rows)], dtype=object)
  return servable.run(servable.signature('predict_text'), {'text': texts})


def test_a_request_over_max_batch_size_is_refused_as_tf_serving_does(toy_base):
  options = BatchingOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1)
  manager, sizes = _batched_manager(toy_base, options)
  try:
    assert _run_rows(manager, 4)['labels'].shape == (4,)
    with pytest.raises(errors.ServingError) as raised:
      _run_rows(manager, 5)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = raised.value.message
    assert 'batch of 5 rows is larger than max_batch_size 4' in message
    assert 'send at most 4 rows' in message and 'max_batch_size in --batching_parameters_file' in (
      message
    )
    assert sizes.rows[-1:] == [4]  # the refused request never reached the queue
  finally:
    manager.stop()


def test_large_batch_splitting_runs_calls_of_max_execution_batch_size(toy_base):
  options = BatchingOptions(
    max_batch_size=5,
    batch_timeout_micros=0,
    num_batch_threads=1,
    enable_large_batch_splitting=True,
    max_execution_batch_size=2,
  )
  manager, sizes = _batched_manager(toy_base, options)
  try:
    sizes.rows.clear()  # warm-up and calibration calls
    assert _run_rows(manager, 5)['labels'].shape == (5,)
    assert sizes.rows == [2, 2, 1]
    with pytest.raises(errors.ServingError, match='larger than max_batch_size 5'):
      _run_rows(manager, 6)
  finally:
    manager.stop()


def test_server_drops_a_request_whose_grpc_deadline_passes_in_the_queue(toy_base):
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1),
  )
  try:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = 'predict_text'
    request.inputs['text'].CopyFrom(tf.make_tensor_proto(['too slow']))
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=0.3)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.0)  # past the batch timeout: the dropped request must not have run
    with urllib.request.urlopen(running.rest_url + '/monitoring/prometheus/metrics') as r:
      metrics = r.read().decode()
    # The server itself gave up on it (the client is not the only one to know) ...
    assert (
      'serving_requests_total{model="toy",signature="predict_text",method="predict",'
      'protocol="grpc",code="DEADLINE_EXCEEDED"} 1'
    ) in metrics
    # ... and never ran it.
    assert 'serving_batch_size_count{model="toy",signature="predict_text"}' not in metrics
  finally:
    running.close()


class _Affine(tf.Module):
  """y = 3x + 1 on float32 rows: a signature with no string input."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def affine(self, x):
    return {'y': 3.0 * x + 1.0}


@pytest.fixture(scope='module')
def numeric(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('affine') / '1')
  module = _Affine()
  tf.saved_model.save(module, path, signatures={'affine': module.affine})
  return Servable('affine', 1, path)


def test_a_numeric_request_split_into_calls_answers_as_one_call(numeric):
  signature = numeric.signature('affine')
  x = np.arange(7, dtype=np.float32)
  whole = numeric.run(signature, {'x': x})['y']
  np.testing.assert_array_equal(whole, 3 * x + 1)
  numeric.call_rows = {'affine': 2}  # as the memory budget would set it
  try:
    np.testing.assert_array_equal(numeric.run(signature, {'x': x})['y'], whole)
  finally:
    numeric.call_rows = {}


def test_a_numeric_request_split_by_the_batch_queue_answers_as_one_call(numeric):
  signature = numeric.signature('affine')
  options = BatchingOptions(
    max_batch_size=4,
    batch_timeout_micros=0,
    num_batch_threads=1,
    enable_large_batch_splitting=True,
    max_execution_batch_size=2,
  )
  numeric.batch_queues = {'affine': BatchQueue(signature, options)}
  try:
    for rows in (1, 3, 4):
      x = np.linspace(-1, 1, rows, dtype=np.float32)
      np.testing.assert_array_equal(numeric.run(signature, {'x': x})['y'], 3 * x + 1)
  finally:
    numeric.batch_queues.pop('affine').close()
