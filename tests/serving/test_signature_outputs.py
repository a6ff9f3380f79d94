"""Answers of unusual shapes and sizes: rank-0 string outputs (a model's version tag, a joined
text), which TensorFlow hands back as bytes, not arrays (every protocol answered 500 /
INTERNAL), and a gRPC answer larger than the requests the server takes."""

import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2

from serving.config import ModelConfig
from tests.serving.conftest import start_server
from tests.serving.rest_util import rest_json

MODEL = 'tagged'


class _Tagged(tf.Module):
  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='text')])
  def tag(self, text):
    return {
      'version': tf.constant('v1'),
      'joined': tf.strings.reduce_join(text, separator=' '),
      'lengths': tf.strings.length(text),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def flat_scores(self, examples):
    return {'scores': tf.zeros(tf.shape(examples))}  # [batch]: not one score per class

  @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name='n')])
  def zeros(self, n):
    return {'zeros': tf.zeros([n])}


@pytest.fixture(scope='module')
def tagged(tmp_path_factory):
  base = str(tmp_path_factory.mktemp('scalar'))
  module = _Tagged()
  tf.saved_model.save(
    module,
    os.path.join(base, MODEL, '1'),
    signatures={
      'serving_default': module.tag,
      'zeros': module.zeros,
      'flat_scores': module.flat_scores,
    },
  )
  running = start_server(
    base,
    [ModelConfig(MODEL, os.path.join(base, MODEL))],
    poll_wait_seconds=0,
    options={'max_request_bytes': 1 << 20},
  )
  yield running
  running.close()


def test_scalar_string_outputs_are_answered_over_grpc_and_rest(tagged):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(np.array([b'a', b'bc'], dtype=object)))
  reply = tagged.predictions.Predict(request, timeout=30)
  assert tf.make_ndarray(reply.outputs['version']) == b'v1'
  assert reply.outputs['version'].tensor_shape.dim == []
  assert tf.make_ndarray(reply.outputs['joined']) == b'a bc'
  assert list(tf.make_ndarray(reply.outputs['lengths'])) == [1, 2]

  status, body = rest_json(tagged.rest_url, f'/v1/models/{MODEL}:predict', {'inputs': ['a', 'bc']})
  assert (status, body) == (
    200,
    {'outputs': {'version': 'v1', 'joined': 'a bc', 'lengths': [1, 2]}},
  )
  # Row format: outputs without a batch dimension cannot be cut into rows (as TF Serving says).
  status, body = rest_json(tagged.rest_url, f'/v1/models/{MODEL}:predict', {'instances': ['a']})
  assert status == 400, body


def test_an_output_filter_of_the_scalar_alone(tagged):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(np.array([b'x'], dtype=object)))
  request.output_filter.append('version')
  reply = tagged.predictions.Predict(request, timeout=30)
  assert list(reply.outputs) == ['version']
  with pytest.raises(grpc.RpcError) as error:
    request.output_filter[:] = ['nope']
    tagged.predictions.Predict(request, timeout=30)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  # Named twice: refused, as TF Serving refuses it (it was answered once).
  request.output_filter[:] = ['version', 'joined', 'version']
  with pytest.raises(grpc.RpcError) as error:
    tagged.predictions.Predict(request, timeout=30)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert error.value.details() == 'duplicate output tensor alias: version'
  # Many copies are counted once each, not compared with each other (quadratic before).
  request.output_filter[:] = ['version'] * 100_000  # within this server's 1 MiB requests
  started = time.monotonic()
  with pytest.raises(grpc.RpcError) as error:
    tagged.predictions.Predict(request, timeout=30)
  assert error.value.details() == 'duplicate output tensor alias: version'
  assert time.monotonic() - started < 10


def test_a_grpc_answer_may_be_larger_than_the_requests_the_server_takes(tagged):
  """--max_request_bytes bounds requests; it also bounded answers over gRPC, which failed after
  the work was done ("Sent message larger than max") and were counted OK."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'zeros'
  request.inputs['n'].CopyFrom(tf.make_tensor_proto(np.int32(1 << 19)))  # a 2 MiB answer
  reply = tagged.predictions.Predict(request, timeout=30)
  assert tf.make_ndarray(reply.outputs['zeros']).shape == (1 << 19,)


def test_classify_on_scores_that_are_not_batch_by_class_is_the_signatures_error(tagged):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'flat_scores'
  request.input.example_list.examples.add()
  with pytest.raises(grpc.RpcError) as error:
    tagged.predictions.Classify(request, timeout=30)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # was INTERNAL
  assert 'scores must be [batch, classes], got shape [1]' in error.value.details()
