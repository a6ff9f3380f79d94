"""HandleReloadConfigRequest is all or nothing: a config whose model cannot serve changes
nothing, and the previous config keeps answering."""

import os

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_management_pb2, predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import errors, memory
from serving.config import ModelConfig
from serving.manager import ModelManager
from tests.serving.conftest import MODEL, push, push_corrupt, start_server

# A fixed call size: no memory calibration at each load, which these tests do not need.
_EXECUTION = memory.ExecutionOptions(max_execution_batch_size=8)


@pytest.fixture
def manager(toy_base):
  """A manager serving MODEL's latest version (2) from toy_base."""
  manager = ModelManager(
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    execution=_EXECUTION,
  )
  manager.start()
  yield manager
  manager.stop()


def _bad_base(tmp_path, kind):
  """A base path from which MODEL cannot serve, and the reason the error must give."""
  base = str(tmp_path / kind)
  if kind == 'corrupt':
    push_corrupt(base, MODEL, 3)
    return os.path.join(base, MODEL), 'failed to load version 3'
  if kind == 'empty':
    os.makedirs(os.path.join(base, MODEL))
    return os.path.join(base, MODEL), 'no version folder'
  return os.path.join(base, MODEL), 'does not exist'


def _assert_unchanged(manager, before):
  assert manager.model_names() == [MODEL]
  assert manager.resolve(MODEL) is before
  assert [row[:2] for row in manager.status(MODEL)] == [(2, 'AVAILABLE')]


@pytest.mark.parametrize('kind', ['corrupt', 'empty', 'missing'])
def test_a_moved_model_that_cannot_load_keeps_the_old_versions_serving(manager, tmp_path, kind):
  before = manager.resolve(MODEL)
  path, reason = _bad_base(tmp_path, kind)
  with pytest.raises(errors.ServingError) as raised:
    manager.reload([ModelConfig(MODEL, path)])
  assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
  message = raised.value.message
  assert f'model "{MODEL}" (base path {path})' in message and reason in message
  assert 'previous one still serves' in message
  _assert_unchanged(manager, before)


@pytest.mark.parametrize('kind', ['corrupt', 'empty', 'missing'])
def test_a_config_of_only_a_bad_model_unloads_nothing(manager, tmp_path, kind):
  before = manager.resolve(MODEL)
  path, reason = _bad_base(tmp_path, kind)
  with pytest.raises(errors.ServingError, match=reason):
    manager.reload([ModelConfig('typo', path)])
  _assert_unchanged(manager, before)


def test_one_bad_model_means_no_part_of_the_config_is_applied(manager, toy_base, tmp_path):
  before = manager.resolve(MODEL)
  push(str(tmp_path), 'other', 1, seed=3)
  with pytest.raises(errors.ServingError) as raised:
    manager.reload(
      [
        ModelConfig(MODEL, os.path.join(toy_base, MODEL), latest=2, labels={'old': 1}),
        ModelConfig('other', str(tmp_path / 'other')),
        ModelConfig('typo', str(tmp_path / 'nowhere')),
      ]
    )
  assert 'model "typo"' in raised.value.message
  assert 'model "other"' not in raised.value.message
  # Neither the good new model nor the kept model's new policy (version 1 too) took effect.
  _assert_unchanged(manager, before)
  with pytest.raises(errors.ServingError) as raised:
    manager.resolve(MODEL, label='old')
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  # The same config without the bad model applies whole.
  manager.reload(
    [
      ModelConfig(MODEL, os.path.join(toy_base, MODEL), latest=2, labels={'old': 1}),
      ModelConfig('other', str(tmp_path / 'other')),
    ]
  )
  assert manager.model_names() == ['other', MODEL]
  assert manager.resolve(MODEL, label='old').version == 1
  assert manager.resolve('other').version == 1


def test_a_failed_grpc_reload_answers_an_error_and_the_old_config_keeps_answering(
  toy_base, tmp_path
):
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    execution=_EXECUTION,
    options={'enable_model_management': True},
  )
  try:
    path, _ = _bad_base(tmp_path, 'corrupt')
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=MODEL, base_path=path)
    with pytest.raises(grpc.RpcError) as raised:
      running.models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=60
      )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert path in raised.value.details()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = 'predict_text'
    request.inputs['text'].CopyFrom(tf.make_tensor_proto(['still here']))
    assert running.predictions.Predict(request, timeout=30).model_spec.version.value == 2
  finally:
    running.close()
