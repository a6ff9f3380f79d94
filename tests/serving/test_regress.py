"""Regress and MultiInference, as TF Serving's regressor and multi-inference: on a tiny
TF1-style SavedModel with real regression and classification signatures."""

import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  classification_pb2,
  inference_pb2,
  input_pb2,
  regression_pb2,
)

from serving import core, errors, rest_api
from serving.config import ModelConfig
from serving.servable import Servable
from tests.serving.conftest import start_server
from tests.serving.rest_util import rest_json

NAME = 'line'
REGRESS_METHOD = 'tensorflow/serving/regress'
CLASSIFY_METHOD = 'tensorflow/serving/classify'


def _export_line_model(path):
  """y = 2x + 1 on tf.Examples with a float feature `x`: signature `regress` (and
  serving_default) is a regression signature, `classify` a classification one whose `pos`
  score is sigmoid(y), `predict` a predict signature of the same input and output."""
  sig_utils = tf.compat.v1.saved_model.signature_def_utils
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    serialized = tf.compat.v1.placeholder(tf.string, [None], name='tf_example')
    x = tf.io.parse_example(serialized, {'x': tf.io.FixedLenFeature([], tf.float32)})['x']
    y = 2.0 * x + 1.0  # (batch,)
    positive = tf.sigmoid(y)
    scores = tf.stack([1.0 - positive, positive], axis=1)  # (batch, 2)
    classes = tf.tile(tf.constant([['neg', 'pos']]), [tf.shape(x)[0], 1])
    regression = sig_utils.regression_signature_def(serialized, y)
    builder = tf.compat.v1.saved_model.Builder(path)
    builder.add_meta_graph_and_variables(
      session,
      ['serve'],
      signature_def_map={
        'serving_default': regression,
        'regress': regression,
        'classify': sig_utils.classification_signature_def(serialized, classes, scores),
        'predict': sig_utils.predict_signature_def({'inputs': serialized}, {'outputs': y}),
      },
    )
    builder.save()


@pytest.fixture(scope='module')
def line_base(tmp_path_factory):
  base = str(tmp_path_factory.mktemp('line'))
  _export_line_model(os.path.join(base, NAME, '1'))
  return base


@pytest.fixture(scope='module')
def line(line_base):
  return Servable(NAME, 1, os.path.join(line_base, NAME, '1'))


def _input(xs, context=None):
  """An Input of tf.Examples with `x` = each of xs (the context, when given, shared)."""
  examples = [tf.train.Example() for _ in xs]
  for example, value in zip(examples, xs):
    if value is not None:
      example.features.feature['x'].float_list.value.append(value)
  proto = input_pb2.Input()
  if context is None:
    proto.example_list.examples.extend(examples)
  else:
    proto.example_list_with_context.examples.extend(examples)
    proto.example_list_with_context.context.features.feature['x'].float_list.value.append(context)
  return proto


def _regression_request(xs, signature='', **kwargs):
  request = regression_pb2.RegressionRequest(input=_input(xs, **kwargs))
  request.model_spec.name = NAME
  request.model_spec.signature_name = signature
  return request


def _values(response):
  return [r.value for r in response.result.regressions]


def test_regress_answers_one_regression_per_example(line):
  response = core.regress(line, _regression_request([0.0, 1.5, -2.0]))
  assert _values(response) == pytest.approx([1.0, 4.0, -3.0])
  assert response.model_spec.signature_name == 'serving_default'
  assert response.model_spec.version.value == 1
  response = core.regress(line, _regression_request([None, None], 'regress', context=3.0))
  assert _values(response) == pytest.approx([7.0, 7.0])  # x from the shared context


def test_an_examples_own_feature_wins_over_the_context(line):
  response = core.regress(line, _regression_request([1.0, None], 'regress', context=3.0))
  assert _values(response) == pytest.approx([3.0, 7.0])
  # REST too.
  body = {'signature_name': 'regress', 'examples': [{'x': 1.0}, {}], 'context': {'x': 3.0}}
  assert rest_api.regress(line, 'regress', body) == {'results': [3.0, 7.0]}


def test_more_examples_than_the_request_budget_holds_are_refused_before_they_are_read(line):
  line.request_budget_bytes = 3 * core.EXAMPLE_BYTES
  try:
    assert _values(core.regress(line, _regression_request([0.0] * 3, 'regress'))) == [1.0] * 3
    message = (
      'the Regress input has 4 examples, more than the 3 a request may carry within'
      ' --request_memory_budget_mb (0 MiB, about 1024 bytes an example); send fewer examples'
      ' per request'
    )
    with pytest.raises(errors.ServingError) as raised:
      core.regress(line, _regression_request([0.0] * 4, 'regress'))
    assert (raised.value.code, raised.value.message) == (
      grpc.StatusCode.RESOURCE_EXHAUSTED,
      message,
    )
    multi = inference_pb2.MultiInferenceRequest(
      tasks=[_task('regress', REGRESS_METHOD)], input=_input([0.0] * 4)
    )
    with pytest.raises(errors.ServingError, match='the MultiInference input has 4 examples'):
      core.multi_inference(multi, lambda spec: line)
    body = {'signature_name': 'classify', 'examples': [{'x': 0.0}] * 4}
    with pytest.raises(errors.ServingError, match='the classify input has 4 examples'):
      rest_api.classify(line, 'classify', body)
  finally:
    line.request_budget_bytes = None


def test_reading_the_examples_stops_at_the_deadline(line):
  with pytest.raises(errors.ServingError) as raised:
    core.regress(line, _regression_request([0.0] * 5000, 'regress'), deadline=time.monotonic())
  assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
  assert 'deadline exceeded while the examples were read: 0 of 5000 done' in raised.value.message


@pytest.mark.parametrize(
  'signature,code,message',
  [
    (
      'classify',
      grpc.StatusCode.INVALID_ARGUMENT,
      'Expected regression signature method_name to be tensorflow/serving/regress. Was:'
      ' tensorflow/serving/classify',
    ),
    ('predict', grpc.StatusCode.INVALID_ARGUMENT, 'Was: tensorflow/serving/predict'),
    ('nope', grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found'),
  ],
)
def test_regress_refuses_a_signature_that_is_not_a_regression(line, signature, code, message):
  with pytest.raises(errors.ServingError) as raised:
    core.regress(line, _regression_request([1.0], signature))
  assert raised.value.code == code
  assert message in raised.value.message


def test_regress_without_examples_is_invalid(line):
  with pytest.raises(errors.ServingError, match='empty batch: the Regress input has no examples'):
    core.regress(line, _regression_request([]))


def _task(signature, method):
  task = inference_pb2.InferenceTask(method_name=method)
  task.model_spec.name = NAME
  task.model_spec.signature_name = signature
  return task


def test_multi_inference_runs_classify_and_regress_tasks_on_one_input(line):
  request = inference_pb2.MultiInferenceRequest(
    tasks=[_task('classify', CLASSIFY_METHOD), _task('regress', REGRESS_METHOD)],
    input=_input([0.0, -1.0]),
  )
  response = core.multi_inference(request, lambda spec: line)
  classified, regressed = response.results
  assert classified.model_spec.signature_name == 'classify'
  rows = [
    [(c.label, c.score) for c in r.classes]
    for r in classified.classification_result.classifications
  ]
  positive = 1 / (1 + np.exp(-np.array([1.0, -1.0])))
  assert [[label for label, _ in row] for row in rows] == [['neg', 'pos']] * 2
  assert [row[1][1] for row in rows] == pytest.approx(positive)
  assert regressed.model_spec.signature_name == 'regress'
  assert [r.value for r in regressed.regression_result.regressions] == pytest.approx([1.0, -1.0])
  # The same answers as the single calls.
  alone = classification_pb2.ClassificationRequest(input=request.input)
  alone.model_spec.signature_name = 'classify'
  assert core.classify(line, alone).result == classified.classification_result


@pytest.mark.parametrize(
  'tasks,message',
  [
    ([], 'has no tasks'),
    (
      [_task('classify', CLASSIFY_METHOD), _task('regress', 'tensorflow/serving/predict')],
      'Unsupported signature method_name: "tensorflow/serving/predict" (task 1)',
    ),
    (
      [_task('predict', CLASSIFY_METHOD)],
      'Expected classification signature method_name to be tensorflow/serving/classify. Was:'
      ' tensorflow/serving/predict',
    ),
    ([_task('nope', CLASSIFY_METHOD)], 'Requested signature not found in model graph: nope'),
    (
      [_task('regress', REGRESS_METHOD), _task('regress', REGRESS_METHOD)],
      'Duplicate evaluation of signature: regress',
    ),
    (
      [_task('regress', REGRESS_METHOD), _task('', REGRESS_METHOD)],
      None,  # '' is serving_default: a distinct signature, and a regression one
    ),
  ],
)
def test_multi_inference_checks_its_tasks(line, tasks, message):
  request = inference_pb2.MultiInferenceRequest(tasks=tasks, input=_input([1.0]))
  if message is None:
    assert len(core.multi_inference(request, lambda spec: line).results) == 2
    return
  with pytest.raises(errors.ServingError) as raised:
    core.multi_inference(request, lambda spec: line)
  unsupported = message.startswith('Unsupported')  # as TF Serving: UNIMPLEMENTED
  assert raised.value.code == (
    grpc.StatusCode.UNIMPLEMENTED if unsupported else grpc.StatusCode.INVALID_ARGUMENT
  )
  assert message in raised.value.message


def test_multi_inference_tasks_must_name_one_model(line):
  other = _task('classify', CLASSIFY_METHOD)
  other.model_spec.name = 'other'
  request = inference_pb2.MultiInferenceRequest(
    tasks=[_task('regress', REGRESS_METHOD), other], input=_input([1.0])
  )
  with pytest.raises(errors.ServingError, match='must access the same model name'):
    core.multi_inference(request, lambda spec: line)


def test_regress_and_multi_inference_over_grpc(line_base):
  running = start_server(
    line_base, [ModelConfig(NAME, os.path.join(line_base, NAME))], poll_wait_seconds=0
  )
  try:
    response = running.predictions.Regress(_regression_request([2.0], 'regress'), timeout=30)
    assert _values(response) == pytest.approx([5.0])
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Regress(_regression_request([2.0], 'classify'), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'Expected regression signature method_name' in raised.value.details()
    request = inference_pb2.MultiInferenceRequest(
      tasks=[_task('regress', REGRESS_METHOD), _task('classify', CLASSIFY_METHOD)],
      input=_input([2.0]),
    )
    results = running.predictions.MultiInference(request, timeout=30).results
    assert [r.regression_result.regressions[0].value for r in results[:1]] == pytest.approx([5.0])
    assert results[1].classification_result.classifications[0].classes[1].label == 'pos'
    # REST :regress, as TF Serving's: {"results": [one value per example]}, a context merged.
    path = f'/v1/models/{NAME}:regress'
    body = {'signature_name': 'regress', 'examples': [{'x': 2.0}, {'x': -0.5}]}
    assert rest_json(running.rest_url, path, body) == (200, {'results': [5.0, 0.0]})
    body = {'examples': [{}, {}], 'context': {'x': 1.5}}  # serving_default is the regression
    assert rest_json(running.rest_url, path, body) == (200, {'results': [4.0, 4.0]})
    status, answer = rest_json(running.rest_url, path, {'signature_name': 'classify', **body})
    assert status == 400 and 'Expected regression signature method_name' in answer['error']
    status, answer = rest_json(running.rest_url, path, {'examples': []})
    assert status == 400 and 'empty' in answer['error']
  finally:
    running.close()


def test_an_error_of_a_tf1_model_carries_no_server_stack(line):
  with pytest.raises(errors.ServingError) as raised:
    core.regress(line, _regression_request([None]))
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert raised.value.message == (
    'signature "serving_default": Name: <unknown>, Feature: x (data type: float) is required'
    ' but could not be found.'
  )
