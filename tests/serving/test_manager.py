"""Model manager: warm-up replay, discovery under a root, health while nothing is loaded."""

import json
import os
import shutil
import urllib.error
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving import config, errors
from serving.config import ModelConfig
from serving.manager import WARMUP_FILE, ModelManager
from tests.serving.conftest import MODEL, push, start_server


def _write_warmup(version_dir, input_key):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs[input_key].CopyFrom(tf.make_tensor_proto(['warm me up']))
  log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
  os.makedirs(os.path.join(version_dir, 'assets.extra'), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(version_dir, WARMUP_FILE)) as writer:
    writer.write(log.SerializeToString())


def test_warmup_requests_are_replayed_and_a_failing_one_fails_the_load(tmp_path):
  base = str(tmp_path)
  _write_warmup(push(base, MODEL, 1, seed=1), 'text')
  _write_warmup(push(base, MODEL, 2, seed=2), 'txt')  # names an input the model lacks
  manager = ModelManager(
    [ModelConfig(MODEL, os.path.join(base, MODEL), latest=2)], poll_wait_seconds=0
  )
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


def test_a_model_folder_symlinked_under_the_root_is_served_under_the_links_name(tmp_path):
  # It used to be skipped silently: `no model named "sentiment" is configured`.
  push(str(tmp_path / 'demo' / 'serving'), 'imdb', 1, seed=1)
  root = tmp_path / 'root'
  root.mkdir()
  os.symlink(tmp_path / 'demo' / 'serving' / 'imdb', root / 'sentiment')
  manager = ModelManager(discover_root=str(root), poll_wait_seconds=0)
  manager.start()
  try:
    assert manager.model_names() == ['sentiment']
    assert manager.resolve('sentiment').version == 1
  finally:
    manager.stop()


def test_health_is_503_until_a_version_is_loaded(tmp_path):
  base = str(tmp_path)
  running = start_server(base, [ModelConfig(MODEL, os.path.join(base, MODEL))], poll_wait_seconds=0)
  try:
    with pytest.raises(urllib.error.HTTPError) as raised:
      urllib.request.urlopen(running.rest_url + '/healthz', timeout=10)
    assert raised.value.code == 503
    body = json.loads(raised.value.read())
    assert body['status'] == 'unavailable'
    with pytest.raises(urllib.error.HTTPError) as raised:
      urllib.request.urlopen(
        urllib.request.Request(
          running.rest_url + f'/v1/models/{MODEL}:predict',
          data=json.dumps({'instances': ['x']}).encode(),
        ),
        timeout=10,
      )
    assert raised.value.code == 503
    assert 'no version available' in json.loads(raised.value.read())['error']
    push(base, MODEL, 1, seed=1)
    running.server.manager.poll()
    with urllib.request.urlopen(running.rest_url + '/healthz', timeout=10) as response:
      assert response.status == 200
  finally:
    running.close()


def _manager(base, **kwargs):
  manager = ModelManager(
    [ModelConfig(MODEL, os.path.join(base, MODEL), **kwargs)], poll_wait_seconds=0
  )
  manager.start()
  return manager


def test_a_listing_error_unloads_nothing(tmp_path, monkeypatch):
  base = str(tmp_path)
  push(base, MODEL, 1, seed=1)
  manager = _manager(base)
  try:
    os.rename(os.path.join(base, MODEL), os.path.join(base, 'away'))  # e.g. a remount
    manager.poll()
    assert manager.resolve(MODEL).version == 1
    os.rename(os.path.join(base, 'away'), os.path.join(base, MODEL))
    real_listdir = os.listdir

    def flaky(path):
      if path == os.path.join(base, MODEL):
        raise PermissionError(13, 'Permission denied', path)
      return real_listdir(path)

    monkeypatch.setattr(os, 'listdir', flaky)
    manager.poll()
    assert manager.resolve(MODEL).version == 1
  finally:
    manager.stop()


def test_a_failed_version_is_retried_when_only_its_variables_change(tmp_path):
  base = str(tmp_path)
  push(base, MODEL, 1, seed=1)
  good = push(str(tmp_path / 'staging'), MODEL, 2, seed=2)
  data = [n for n in os.listdir(os.path.join(good, 'variables')) if n.startswith('variables.data')]
  broken = os.path.join(base, MODEL, '2')
  shutil.copytree(good, broken)
  with open(os.path.join(broken, 'variables', data[0]), 'wb') as f:
    f.write(b'truncated')
  manager = _manager(base)
  try:
    assert manager.status(MODEL, 2)[0][1] == 'END'
    assert manager.resolve(MODEL).version == 1
    manager.poll()  # unchanged files: not retried
    assert manager.status(MODEL, 2)[0][1] == 'END'
    shutil.copy(
      os.path.join(good, 'variables', data[0]), os.path.join(broken, 'variables', data[0])
    )
    manager.poll()
    assert manager.status(MODEL, 2)[0][1] == 'AVAILABLE'
    assert manager.resolve(MODEL).version == 2
  finally:
    manager.stop()


def test_a_new_base_path_reloads_the_model(tmp_path):
  first, second = str(tmp_path / 'a'), str(tmp_path / 'b')
  push(first, MODEL, 1, seed=1)
  push(second, MODEL, 1, seed=2)
  manager = _manager(first)
  try:
    assert manager.resolve(MODEL).path.startswith(first)
    manager.reload([ModelConfig(MODEL, os.path.join(second, MODEL))])
    assert manager.resolve(MODEL).path.startswith(second)
    assert [row[:2] for row in manager.status(MODEL)] == [(1, 'AVAILABLE')]
  finally:
    manager.stop()


def test_only_ascii_numbers_are_versions(tmp_path):
  base = str(tmp_path)
  one = push(base, MODEL, 1, seed=1)
  for name in ('\u00b2', '\u0663', '7a', '-3', ' 4', '9' * 30):
    shutil.copytree(one, os.path.join(base, MODEL, name))
  manager = _manager(base, latest=0)
  try:
    assert [row[0] for row in manager.status(MODEL)] == [1]
    assert config.discover_models(base)[0].name == MODEL
  finally:
    manager.stop()


@pytest.mark.parametrize('call', ['resolve', 'status'])
def test_a_negative_version_in_a_model_spec_is_not_found_and_says_why(tmp_path, call):
  # gRPC passes ModelSpec.version as given; REST refuses '/versions/-1' with the same reason.
  manager = ModelManager([ModelConfig(MODEL, str(tmp_path))], poll_wait_seconds=0)
  with pytest.raises(errors.ServingError, match='versions are numbered from 0 up') as raised:
    getattr(manager, call)(MODEL, -1)
  assert raised.value.code == grpc.StatusCode.NOT_FOUND
  with pytest.raises(errors.ServingError) as raised:
    getattr(manager, call)(MODEL, 0)  # 0 is a version folder's name like any other
  assert raised.value.code == grpc.StatusCode.NOT_FOUND
  assert 'from 0 up' not in raised.value.message


@pytest.mark.parametrize(
  'label, shown', [('stable ', '"stable "'), ('a\nb"\u200b', r'"a\nb\"\u200b"')]
)
def test_an_unknown_label_is_quoted_with_what_would_not_show_escaped(tmp_path, label, shown):
  manager = ModelManager([ModelConfig(MODEL, str(tmp_path), labels={'stable': 1})])
  with pytest.raises(errors.ServingError) as raised:
    manager.resolve(MODEL, label=label)
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert f'Unrecognized servable version label: {shown} (model' in raised.value.message
  with pytest.raises(errors.ServingError, match='no model named "my lm " is configured'):
    manager.resolve('my lm ')


def test_generate_rows_per_call_are_sized_for_the_models_whole_window(tmp_path, monkeypatch):
  # The calibration runs a short prompt and one new token; a real row may fill seq_len (here
  # 512 positions, 128 times the calibrated window), so a call takes 128 times fewer rows.
  import types

  from serving import manager as manager_lib
  from serving import memory

  monkeypatch.setattr(memory, 'call_rows', lambda budget, make_call: (1024, 30_000))
  extra = tmp_path / 'assets.extra'
  extra.mkdir()
  (extra / 'trainer_config.json').write_text(json.dumps({'seq_len': 512}))
  text = tf.TensorSpec([None], tf.string)
  count = tf.TensorSpec([None], tf.int32)

  def signature(name, inputs):
    return types.SimpleNamespace(name=name, batchable=True, inputs=inputs)

  servable = types.SimpleNamespace(
    name='lm',
    version=1,
    path=str(tmp_path),
    call_rows={},
    signatures={
      'generate': signature('generate', {'prompt': text, 'max_new_tokens': count}),
      'predict_text': signature('predict_text', {'text': text}),
    },
  )
  manager = ModelManager.__new__(ModelManager)
  manager._execution = memory.ExecutionOptions(memory_budget_bytes=64 << 20)
  manager._string_gate = memory.StringGate(64 << 20)
  manager._size_calls(servable)
  assert servable.call_rows['predict_text'] == 1024
  assert servable.call_rows['generate'] == (32 << 20) // (30_000 * 128)
  # A model without the trainer config (not one of this pipeline's exports) is left as measured.
  (extra / 'trainer_config.json').unlink()
  manager._size_calls(servable)
  assert servable.call_rows['generate'] == 1024
  assert manager_lib._generation_scale(servable, servable.signatures['predict_text']) == 1


def _listing_warnings(caplog):
  return [
    r.getMessage()
    for r in caplog.records
    if r.name == 'serving.manager' and 'base path' in r.getMessage()
  ]


def test_a_missing_base_path_is_logged_once_per_change_and_served_once_pushed(tmp_path, caplog):
  # `make serve` before the pipeline pushed: one warning, not one per poll, and not the
  # "keeping the versions loaded" of a base path that disappeared after a load.
  caplog.set_level('INFO', logger='serving.manager')
  base = str(tmp_path)
  manager = _manager(base)
  try:
    for _ in range(3):
      manager.poll()
    [missing] = _listing_warnings(caplog)
    assert MODEL in missing and os.path.join(base, MODEL) in missing
    assert 'does not exist' in missing and 'served once a version' in missing
    assert 'keeping the versions' not in missing
    caplog.clear()
    push(base, MODEL, 1, seed=1)
    manager.poll()
    manager.poll()
    assert manager.resolve(MODEL).version == 1
    assert [m for m in _listing_warnings(caplog) if 'exists now' in m]
    caplog.clear()
    os.rename(os.path.join(base, MODEL), os.path.join(base, 'away'))
    for _ in range(3):
      manager.poll()
    [gone] = _listing_warnings(caplog)
    assert 'disappeared' in gone and 'keeping the versions loaded from it' in gone
    assert manager.resolve(MODEL).version == 1
  finally:
    manager.stop()


def test_a_dangling_symlink_under_the_root_is_logged_once_with_its_target(tmp_path, caplog):
  # It used to be skipped silently, like a folder that holds no model.
  caplog.set_level('INFO', logger='serving.manager')
  root = tmp_path / 'root'
  root.mkdir()
  os.symlink(tmp_path / 'moved' / 'sentiment', root / 'sentiment')
  manager = ModelManager(discover_root=str(root), poll_wait_seconds=0)
  try:
    for _ in range(3):
      manager.poll()
    warned = [
      r.getMessage()
      for r in caplog.records
      if r.name == 'serving.manager' and r.levelname == 'WARNING'
    ]
    [line] = [m for m in warned if 'is a symlink to' in m]
    assert str(root / 'sentiment') in line and str(tmp_path / 'moved' / 'sentiment') in line
    assert 'does not exist' in line
    # Once the target exists, the model is served and nothing more is logged of the link.
    caplog.clear()
    push(str(tmp_path / 'moved'), 'sentiment', 1, seed=1)
    manager.poll()
    assert manager.resolve('sentiment').version == 1
    assert not [r for r in caplog.records if r.levelname == 'WARNING']
  finally:
    manager.stop()


def test_a_label_pointing_at_a_version_not_served_is_warned_of_once(tmp_path, caplog):
  caplog.set_level('WARNING', logger='serving.manager')
  base = str(tmp_path)
  push(base, MODEL, 1, seed=1)
  manager = _manager(base, labels={'stable': 1, 'canary': 5})
  try:
    manager.poll()
    [warning] = [r.getMessage() for r in caplog.records if 'label' in r.getMessage()]
    assert f'model {MODEL}: version label "canary" points at version 5' in warning
    assert 'served: [1]' in warning and 'push version 5' in warning
    with pytest.raises(errors.ServingError) as raised:
      manager.resolve(MODEL, label='canary')
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert manager.resolve(MODEL, label='stable').version == 1
  finally:
    manager.stop()
