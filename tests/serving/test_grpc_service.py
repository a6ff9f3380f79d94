"""The official TF Serving stubs against the server: every RPC, same numbers as in-process."""

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_management_pb2,
  predict_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.config import ModelConfig
from tests.serving import toy_model
from tests.serving.conftest import MODEL, push, start_server

TEXTS = ['a truly great film', 'dull and far too long', 'okay I guess']


def _predict(served, signature, key, values, **spec):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = signature
  if 'version' in spec:
    request.model_spec.version.value = spec['version']
  if 'label' in spec:
    request.model_spec.version_label = spec['label']
  request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
  return served.predictions.Predict(request, timeout=30)


@pytest.mark.parametrize(
  'signature,key', [('serving_default', 'examples'), ('predict_text', 'text')]
)
@pytest.mark.parametrize('version', [1, 2])
def test_predict_matches_the_in_process_call(served, in_process, signature, key, version):
  values = toy_model.serialized_examples(TEXTS) if key == 'examples' else TEXTS
  response = _predict(served, signature, key, values, version=version)
  expected = in_process[version][signature](**{key: tf.constant(values)})
  assert response.model_spec.name == MODEL
  assert response.model_spec.version.value == version
  assert response.model_spec.signature_name == signature
  assert set(response.outputs) == {'probabilities', 'label_ids', 'labels'}
  for name, tensor in expected.items():
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs[name]), tensor.numpy())


def test_versions_differ_so_resolution_is_observable(in_process):
  one = in_process[1]['predict_text'](text=tf.constant(TEXTS))['probabilities'].numpy()
  two = in_process[2]['predict_text'](text=tf.constant(TEXTS))['probabilities'].numpy()
  assert not np.allclose(one, two)


def test_default_signature_and_latest_version(served, in_process):
  response = _predict(served, '', 'examples', toy_model.serialized_examples(TEXTS))
  assert response.model_spec.version.value == 2
  assert response.model_spec.signature_name == 'serving_default'
  expected = in_process[2]['serving_default'](
    examples=tf.constant(toy_model.serialized_examples(TEXTS))
  )
  np.testing.assert_array_equal(
    tf.make_ndarray(response.outputs['probabilities']), expected['probabilities'].numpy()
  )


@pytest.mark.parametrize('label,version', [('stable', 1), ('canary', 2)])
def test_version_labels_resolve(served, label, version):
  response = _predict(served, 'predict_text', 'text', TEXTS, label=label)
  assert response.model_spec.version.value == version


def test_output_filter(served):
  request = predict_pb2.PredictRequest(output_filter=['labels'])
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(TEXTS))
  response = served.predictions.Predict(request, timeout=30)
  assert list(response.outputs) == ['labels']


def test_classify_matches_the_in_process_probabilities(served, in_process):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  request.model_spec.version.value = 1
  for text in TEXTS:
    request.input.example_list.examples.add().ParseFromString(
      toy_model.serialized_examples([text])[0]
    )
  response = served.predictions.Classify(request, timeout=30)
  expected = in_process[1]['serving_default'](
    examples=tf.constant(toy_model.serialized_examples(TEXTS))
  )['probabilities'].numpy()
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == 'serving_default'
  assert len(response.result.classifications) == len(TEXTS)
  for row, probabilities in zip(response.result.classifications, expected):
    assert [c.label for c in row.classes] == ['0', '1', '2']
    np.testing.assert_allclose([c.score for c in row.classes], probabilities, rtol=1e-6)


def test_classify_merges_the_context_into_each_example(served, in_process):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  with_context = request.input.example_list_with_context
  with_context.context.ParseFromString(toy_model.serialized_examples([TEXTS[0]])[0])
  with_context.examples.add()  # takes `text` from the context
  with_context.examples.add().ParseFromString(toy_model.serialized_examples([TEXTS[1]])[0])
  response = served.predictions.Classify(request, timeout=30)
  expected = in_process[2]['serving_default'](
    examples=tf.constant(toy_model.serialized_examples(TEXTS[:2]))
  )['probabilities'].numpy()
  scores = [[c.score for c in row.classes] for row in response.result.classifications]
  np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_get_model_metadata_returns_the_saved_signature_defs(served, toy_base):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = MODEL
  request.model_spec.version.value = 1
  response = served.predictions.GetModelMetadata(request, timeout=30)
  assert response.model_spec.version.value == 1
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata['signature_def'].Unpack(signature_defs)
  default = signature_defs.signature_def['serving_default']
  assert list(default.inputs) == ['examples']
  assert default.inputs['examples'].dtype == tf.string.as_datatype_enum
  assert set(default.outputs) == {'probabilities', 'label_ids', 'labels'}
  assert list(signature_defs.signature_def['predict_text'].inputs) == ['text']


def test_get_model_status_lists_the_loaded_versions(served):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  response = served.models.GetModelStatus(request, timeout=30)
  states = {s.version: s.state for s in response.model_version_status}
  assert states == {
    1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
  }
  assert all(s.status.error_code == 0 for s in response.model_version_status)
  request.model_spec.version_label = 'stable'
  response = served.models.GetModelStatus(request, timeout=30)
  assert [s.version for s in response.model_version_status] == [1]


@pytest.mark.parametrize(
  'spec,code,message',
  [
    ({'name': 'nope'}, grpc.StatusCode.NOT_FOUND, 'Servable not found'),
    ({'name': MODEL, 'version': 7}, grpc.StatusCode.NOT_FOUND, 'Specific(toy, 7)'),
    (
      {'name': MODEL, 'label': 'beta'},
      grpc.StatusCode.INVALID_ARGUMENT,
      'Unrecognized servable version label: "beta"',
    ),
  ],
)
def test_every_rpc_resolves_models_like_tf_serving(served, spec, code, message):
  def fill(model_spec):
    model_spec.name = spec['name']
    if 'version' in spec:
      model_spec.version.value = spec['version']
    if 'label' in spec:
      model_spec.version_label = spec['label']

  predict = predict_pb2.PredictRequest()
  predict.inputs['text'].CopyFrom(tf.make_tensor_proto(TEXTS))
  classify = classification_pb2.ClassificationRequest()
  classify.input.example_list.examples.add().CopyFrom(example_pb2.Example())
  metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  calls = [
    (served.predictions.Predict, predict),
    (served.predictions.Classify, classify),
    (served.predictions.GetModelMetadata, metadata),
  ]
  if spec.get('version') is None:  # GetModelStatus of an unknown version is tested below
    calls.append((served.models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()))
  for call, request in calls:
    fill(request.model_spec)
    with pytest.raises(grpc.RpcError) as raised:
      call(request, timeout=30)
    assert raised.value.code() == code, (call, raised.value.details())
    assert message in raised.value.details() or spec['name'] in raised.value.details()


def test_status_of_an_unknown_version_is_not_found(served):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  request.model_spec.version.value = 9
  with pytest.raises(grpc.RpcError) as raised:
    served.models.GetModelStatus(request, timeout=30)
  assert raised.value.code() == grpc.StatusCode.NOT_FOUND
  assert 'version 9' in raised.value.details()


def test_status_without_a_model_name_is_invalid_argument(served):
  with pytest.raises(grpc.RpcError) as raised:
    served.models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
  assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert 'model_spec.name is missing' in raised.value.details()


def test_unavailable_while_nothing_is_loaded(tmp_path):
  running = start_server(
    str(tmp_path), [ModelConfig(MODEL, str(tmp_path / MODEL))], poll_wait_seconds=0
  )
  try:
    with pytest.raises(grpc.RpcError) as raised:
      _predict(running, 'predict_text', 'text', TEXTS)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 'no version available' in raised.value.details()
  finally:
    running.close()


def _reload(running, config_proto):
  running.models.HandleReloadConfigRequest(
    model_management_pb2.ReloadConfigRequest(config=config_proto), timeout=60
  )


def test_reload_config_is_refused_unless_management_is_enabled(served):
  empty = model_server_config_pb2.ModelServerConfig()
  empty.model_config_list.SetInParent()
  with pytest.raises(grpc.RpcError) as raised:
    _reload(served, empty)
  assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
  assert '--enable_model_management' in raised.value.details()
  assert _predict(served, 'predict_text', 'text', TEXTS).model_spec.version.value == 2


def test_reload_config_adds_and_drops_models(toy_base, tmp_path):
  push(str(tmp_path), 'other', 3, seed=3)
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'enable_model_management': True},
  )
  try:
    new_config = model_server_config_pb2.ModelServerConfig()
    entry = new_config.model_config_list.config.add(name='other', base_path=str(tmp_path / 'other'))
    entry.version_labels['stable'] = 3
    _reload(running, new_config)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'other'
    request.model_spec.version_label = 'stable'
    request.model_spec.signature_name = 'predict_text'
    request.inputs['text'].CopyFrom(tf.make_tensor_proto(TEXTS))
    assert running.predictions.Predict(request, timeout=30).model_spec.version.value == 3
    with pytest.raises(grpc.RpcError) as raised:
      _predict(running, 'predict_text', 'text', TEXTS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name='nameless-path')
    with pytest.raises(grpc.RpcError) as raised:
      running.models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=bad), timeout=60
      )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'needs both name and base_path' in raised.value.details()
    # An empty config would unload everything: refused, and 'other' keeps serving.
    empty = model_server_config_pb2.ModelServerConfig()
    empty.model_config_list.SetInParent()
    with pytest.raises(grpc.RpcError) as raised:
      _reload(running, empty)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'lists no model' in raised.value.details()
    assert running.predictions.Predict(request, timeout=30).model_spec.version.value == 3
  finally:
    running.close()
