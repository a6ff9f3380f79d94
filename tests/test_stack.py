"""The environment holds exactly the locked stack, and every package of it loads."""

import ast
import importlib
import importlib.metadata
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lock():
  pins = {}
  with open(os.path.join(REPO, 'requirements.lock')) as f:
    for line in f:
      line = line.split('#')[0].strip()
      if line:
        name, version = line.split('==')
        pins[_canonical(name)] = version
  return pins


def _canonical(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def _setup_pins():
  tree = ast.parse(open(os.path.join(REPO, 'setup.py')).read())
  pins = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and node.targets[0].id in ('STACK', 'DEV'):
      for elt in node.value.elts:
        name, version = elt.value.split('==')
        pins[_canonical(name.split('[')[0])] = version
  return pins


def test_every_locked_package_is_installed_at_its_locked_version():
  wrong = {}
  for name, version in _lock().items():
    try:
      installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      installed = None
    if installed != version:
      wrong[name] = (version, installed)
  assert not wrong, f'locked vs installed: {wrong}'


def test_setup_pins_agree_with_the_lock():
  lock = _lock()
  disagree = {n: (v, lock.get(n)) for n, v in _setup_pins().items() if lock.get(n) != v}
  assert not disagree, f'setup.py vs requirements.lock: {disagree}'


@pytest.mark.parametrize(
  'module',
  [
    'tfx.v1',
    'tensorflow',
    'tensorflow_text',
    'tensorflow_transform',
    'tensorflow_model_analysis',
    'tensorflow_data_validation',
    'ml_metadata',
    'apache_beam',
    'keras',
    'keras_hub',
    'tensorboard',
    'tensorflow_serving.apis.prediction_service_pb2_grpc',
    'grpc',
    'kfp',
    'tokenizers',
    'yaml',
  ],
)
def test_stack_module_imports(module):
  importlib.import_module(module)


def test_tensorflow_text_ops_are_registered():
  import tensorflow as tf
  import tensorflow_text as tf_text

  tokenizer = tf_text.FastWordpieceTokenizer(
    vocab=['[UNK]', 'hello', '##s'], token_out_type=tf.int64
  )
  assert tokenizer.tokenize(tf.constant(['hellos'])).to_list() == [[1, 2]]


def test_ml_metadata_opens_a_sqlite_store(tmp_path):
  from ml_metadata.metadata_store import metadata_store
  from ml_metadata.proto import metadata_store_pb2

  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = str(tmp_path / 'm.sqlite')
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  store = metadata_store.MetadataStore(config)
  assert store.get_artifacts() == []
