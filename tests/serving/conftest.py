"""Fixtures for the serving tests: toy SavedModels in the Pusher layout and running servers."""

import atexit
import os
import shutil
import tempfile
import uuid

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import server as server_lib
from serving.config import ModelConfig
from tests.serving import toy_model

MODEL = 'toy'


# seed -> the toy model of that seed, exported once per process (folder removed at exit): a push
# copies it, where exporting again took 0.15-0.3 s (tracing and saving) for the same files.
_EXPORTS: dict[int, str] = {}
_EXPORTS_DIR: list[str] = []


def _export(seed):
  if seed not in _EXPORTS or not os.path.isdir(_EXPORTS[seed]):
    if not _EXPORTS_DIR:
      _EXPORTS_DIR.append(tempfile.mkdtemp(prefix='toy-exports-'))
      atexit.register(shutil.rmtree, _EXPORTS_DIR[0], True)
    _EXPORTS[seed] = toy_model.export(_EXPORTS_DIR[0], MODEL, seed, seed=seed)
  return _EXPORTS[seed]


def push(base, name, version, seed):
  """Puts a toy model version (its weights from `seed`) at <base>/<name>/<version>: written
  next to it, then renamed into place atomically.

  Writing then renaming is how a version should appear to a polling server (TF Serving's
  advice too): the poller never sees a half-written directory.
  """
  staging = os.path.join(base, f'.staging-{uuid.uuid4().hex}')
  shutil.copytree(_export(seed), staging)
  os.makedirs(os.path.join(base, name), exist_ok=True)
  os.rename(staging, os.path.join(base, name, str(version)))
  return os.path.join(base, name, str(version))


def push_corrupt(base, name, version):
  """Pushes a version whose saved_model.pb is garbage."""
  path = os.path.join(base, name, str(version))
  staging = path + '.tmp'
  os.makedirs(staging)
  with open(os.path.join(staging, 'saved_model.pb'), 'wb') as f:
    f.write(b'this is not a SavedModel')
  os.rename(staging, path)
  return path


class Running:
  """A started server plus clients for it."""

  def __init__(self, server, base):
    self.server = server
    self.base = base
    self.grpc_target = f'127.0.0.1:{server.grpc_port}'
    self.rest_url = f'http://127.0.0.1:{server.rest_port}' if server.rest_port else None
    self.channel = grpc.insecure_channel(self.grpc_target)
    self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def close(self):
    self.channel.close()
    self.server.stop(grace_seconds=5)


def start_server(base, models, **kwargs):
  options = server_lib.ServerOptions(grpc_port=0, rest_port=0, **kwargs.pop('options', {}))
  server = server_lib.build(models, options=options, **kwargs).start()
  return Running(server, base)


def toy_server(base, **options):
  """A server of MODEL's versions under `base`, polled at once, with ServerOptions `options`."""
  return start_server(
    base, [ModelConfig(MODEL, os.path.join(base, MODEL))], poll_wait_seconds=0, options=options
  )


@pytest.fixture(scope='module')
def toy_base(tmp_path_factory):
  """A base directory with versions 1 and 2 of MODEL (seeds 1 and 2)."""
  base = str(tmp_path_factory.mktemp('models'))
  push(base, MODEL, 1, seed=1)
  push(base, MODEL, 2, seed=2)
  return base


@pytest.fixture(scope='module')
def served(toy_base):
  """A server for MODEL with versions 1 and 2 loaded and labels stable=1, canary=2."""
  running = start_server(
    toy_base,
    [
      ModelConfig(MODEL, os.path.join(toy_base, MODEL), latest=2, labels={'stable': 1, 'canary': 2})
    ],
    poll_wait_seconds=0,
  )
  yield running
  running.close()


@pytest.fixture(scope='module')
def in_process(toy_base):
  """version -> the loaded SavedModel's signatures, to compare the server against."""
  return {v: tf.saved_model.load(os.path.join(toy_base, MODEL, str(v))).signatures for v in (1, 2)}
