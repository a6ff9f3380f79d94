"""rest_api.predict's answers: TF Serving's JSON, made in slices of rows within the answer budget."""

import json
import threading
import time
import tracemalloc

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import codec, errors, rest_api
from serving.servable import Servable
from tests.serving import toy_model

LABELS = np.array([b'negative', b'neutral', b'positive'], dtype=object)


def _outputs(rows):
  """A classifier's outputs for `rows` rows."""
  rng = np.random.default_rng(rows)
  ids = rng.integers(0, 3, rows)
  return {
    'probabilities': rng.random((rows, 3), dtype=np.float32),
    'label_ids': ids,
    'labels': LABELS[ids],
  }


class _Signature:
  name = 'serving_default'
  inputs = {'text': tf.TensorSpec([None], tf.string)}
  outputs = {}


class _Stub:
  """A servable whose signature answers at once with `make(rows)`: the encoding on its own."""

  def __init__(self, make=_outputs, output_budget_bytes=None, during_run=None):
    self.make = make
    self.output_budget_bytes = output_budget_bytes
    self.during_run = during_run or (lambda: None)

  def signature(self, name):
    return _Signature()

  def run(self, signature, inputs, deadline=None, stop=None):
    self.during_run()
    return self.make(inputs['text'].shape[0])


def _old_json(outputs, rows):
  """The answer as the server encoded it before: the whole object, then one json.dumps."""
  converted = {k: codec.to_json(k, v) for k, v in outputs.items()}
  if not rows:
    answer = {'outputs': next(iter(converted.values())) if len(converted) == 1 else converted}
  elif len(converted) == 1:
    answer = {'predictions': next(iter(converted.values()))}
  else:
    batch = len(next(iter(converted.values())))
    answer = {'predictions': [{k: converted[k][i] for k in converted} for i in range(batch)]}
  return json.dumps(answer, separators=(',', ':')).encode()


def _body(texts, rows):
  return {'instances': list(texts)} if rows else {'inputs': {'text': list(texts)}}


def _predict(servable, body, deadline=None, stop=None, name=''):
  return rest_api.predict(servable, name, body, codec.DEFAULT_LIMITS.budget(), deadline, stop)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
  path = toy_model.export(str(tmp_path_factory.mktemp('toy')), 'toy', 1, seed=1)
  servable = Servable('toy', 1, path)
  servable.call_rows = {'predict_text': 4096}
  return servable


@pytest.mark.parametrize('rows', [True, False], ids=['row format', 'columnar format'])
@pytest.mark.parametrize('encode_rows', [7, rest_api._ENCODE_ROWS])
def test_the_answer_is_the_old_encoders_json(toy, monkeypatch, rows, encode_rows):
  monkeypatch.setattr(rest_api, '_ENCODE_ROWS', encode_rows)
  texts = [f'{word} film {i}' for i in range(4100) for word in ('a great', 'ünïcödé 中文 😀')]
  signature = toy.signature('predict_text')
  for batch in (50, len(texts)):  # one slice and several (the model's floats vary with batch)
    inputs = {'text': np.array([t.encode() for t in texts[:batch]], dtype=object)}
    outputs = toy.run(signature, inputs)
    assert set(outputs) == {'probabilities', 'label_ids', 'labels'}
    got = _predict(toy, _body(texts[:batch], rows), name='predict_text')
    assert got == _old_json(outputs, rows)


def _odd_outputs(rows):
  return {
    'scores': np.arange(rows * 4, dtype=np.float64).reshape(rows, 2, 2) / 3,
    'raw_bytes': np.array([b'\xff\x00'] * rows, dtype=object),
    'note': np.array([b'not utf-8 \xff'] * rows, dtype=object),
  }


@pytest.mark.parametrize(
  'make',
  [
    lambda rows: {'labels': LABELS[np.arange(rows) % 3]},
    _odd_outputs,
    lambda rows: {'nan': np.full(rows, np.nan, np.float32), 'flag': np.ones(rows, bool)},
  ],
  ids=['one output', 'b64 and 3-D outputs', 'NaN and bool'],
)
def test_the_answer_is_the_old_encoders_json_for_other_outputs(monkeypatch, make):
  monkeypatch.setattr(rest_api, '_ENCODE_ROWS', 3)
  for rows in (True, False):
    for batch in (1, 3, 10):
      got = _predict(_Stub(make), _body(['x'] * batch, rows))
      assert got == _old_json(make(batch), rows)


def test_columnar_outputs_without_rows_are_the_old_encoders_json(monkeypatch):
  monkeypatch.setattr(rest_api, '_ENCODE_ROWS', 2)

  def make(rows):
    return {'total': np.float32(rows), 'none': np.zeros((0, 3)), 'per_row': np.arange(rows)}

  assert _predict(_Stub(make), _body(['x'] * 5, False)) == _old_json(make(5), False)


def test_an_answer_over_the_budget_is_refused_before_it_is_encoded(monkeypatch):
  converted = []
  to_json = codec.to_json

  def counting_to_json(key, array):
    converted.append(len(array))
    return to_json(key, array)

  monkeypatch.setattr(codec, 'to_json', counting_to_json)
  stub = _Stub(output_budget_bytes=1 << 20)  # the JSON of 100,000 rows is about 10 MiB
  with pytest.raises(errors.ServingError) as raised:
    _predict(stub, _body(['good film'] * 100_000, True))
  assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert raised.value.http_status == 429
  assert 'the answer to 100000 rows of signature "serving_default" would take about' in (
    raised.value.message
  )
  assert 'send fewer rows per request' in raised.value.message
  assert sum(converted) <= 3 * rest_api._ENCODE_ROWS  # the first slice of each output only
  # Within the budget, the same request is answered.
  assert json.loads(_predict(_Stub(output_budget_bytes=64 << 20), _body(['x'] * 10_000, True)))


def test_stop_and_deadline_end_the_encoding():
  stop = threading.Event()
  with pytest.raises(errors.ServingError) as raised:
    _predict(_Stub(during_run=stop.set), _body(['x'] * 10_000, True), stop=stop)
  assert raised.value.code == grpc.StatusCode.CANCELLED
  assert f'stopped after {rest_api._ENCODE_ROWS} of 10000 rows' in raised.value.message

  deadline = time.monotonic() + 0.5
  with pytest.raises(errors.ServingError) as raised:
    stub = _Stub(during_run=lambda: time.sleep(max(0, deadline - time.monotonic())))
    _predict(stub, _body(['x'] * 10_000, True), deadline=deadline)
  assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
  assert 'while the answer of signature "serving_default" was encoded' in raised.value.message


@pytest.mark.parametrize('rows', [True, False], ids=['row format', 'columnar format'])
def test_the_parsed_body_is_let_go_before_the_model_runs(rows):
  body = {'signature_name': '', **_body(['good film'] * 10, rows)}
  seen = []
  _predict(_Stub(during_run=lambda: seen.append(sorted(body))), body)
  assert seen == [['signature_name']]


def _peak(batch):
  """Peak Python memory of a predict call, above what its parsed body held, and the answer."""
  body = json.loads(json.dumps({'instances': ['good film'] * batch}))
  tracemalloc.start()
  try:
    base = tracemalloc.get_traced_memory()[0]
    answer = _predict(_Stub(), body)
    return tracemalloc.get_traced_memory()[1] - base, len(answer)
  finally:
    tracemalloc.stop()


@pytest.mark.parametrize('batch', [50_000, 200_000])
def test_memory_follows_the_answers_json_not_its_python_objects(batch):
  # The answer's bytes are made once as pieces and once joined; the decoded inputs and the
  # outputs take under 100 bytes a row. The whole answer as Python objects took 5.5 times
  # its JSON (measured: 117 MiB for these 200,000 rows, 48 MiB then; 38 MiB since float32
  # outputs are written with their own shortest digits, 86 bytes a row instead of 111).
  peak, size = _peak(batch)
  assert size > 80 * batch
  assert peak < 2 * size + 100 * batch + (2 << 20), (peak, size)


@pytest.mark.parametrize('rows', [True, False], ids=['row format', 'columnar format'])
def test_a_row_too_wide_for_the_budget_is_refused_before_it_is_encoded(rows):
  # One row of 1M floats: 4 MB of JSON ("0.5," each) over a 2 MiB answer budget. A row wider
  # than a slice is encoded whole, so the check on the first slice came after 113 MB of Python
  # objects; its size is now estimated from a sample first.
  wide = {'scores': np.full((1, 1_000_000), 0.5, np.float32)}
  stub = _Stub(make=lambda n: wide, output_budget_bytes=2 << 20)
  tracemalloc.start()
  try:
    base = tracemalloc.get_traced_memory()[0]
    with pytest.raises(errors.ServingError) as raised:
      _predict(stub, _body(['x'], rows))
    peak = tracemalloc.get_traced_memory()[1] - base
  finally:
    tracemalloc.stop()
  assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert 'would take about 3 MiB of JSON, more than the 2 MiB' in raised.value.message
  assert peak < 8 << 20, peak >> 20
  # Within the budget it is answered, as before.
  stub.output_budget_bytes = 8 << 20
  assert _predict(stub, _body(['x'], rows)) == _old_json(wide, rows)
