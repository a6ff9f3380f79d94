"""The deployment files parse, and TF Serving's config files in them are read by this server."""

import os

import tensorflow as tf
import yaml

from serving import config

DEPLOY = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'serving', 'deploy'
)


def _documents(name):
  with open(os.path.join(DEPLOY, name)) as f:
    return [d for d in yaml.safe_load_all(f) if d]


def test_kubernetes_manifest_serves_with_tensorflow_serving(tmp_path):
  documents = {d['kind']: d for d in _documents('kubernetes.yaml')}
  assert {'Deployment', 'Service', 'ConfigMap', 'ServiceAccount'} <= set(documents)
  container = documents['Deployment']['spec']['template']['spec']['containers'][0]
  assert container['image'].startswith('tensorflow/serving:')
  assert {p['containerPort'] for p in container['ports']} == {8500, 8501}
  assert {p['port'] for p in documents['Service']['spec']['ports']} == {8500, 8501}
  assert (
    documents['Service']['spec']['selector']
    == documents['Deployment']['spec']['selector']['matchLabels']
  )
  # The ConfigMap's files are TF Serving's formats, which this server reads too.
  files = documents['ConfigMap']['data']
  for name in ('models.config', 'batching_parameters.txt'):
    (tmp_path / name).write_text(files[name])
  assert config.parse_model_config_file(str(tmp_path / 'models.config'))[0].name == 'imdb'
  batching = config.parse_batching_parameters_file(str(tmp_path / 'batching_parameters.txt'))
  assert (batching.max_batch_size, batching.execution_batch_size) == (1024, 32)
  args = container['args']
  assert '--model_config_file=/config/models.config' in args


def test_kserve_and_compose_files():
  (service,) = _documents('kserve.yaml')
  assert service['kind'] == 'InferenceService'
  assert service['spec']['predictor']['model']['modelFormat']['name'] == 'tensorflow'
  (compose,) = _documents('docker-compose.yaml')
  serving = compose['services']['tensorflow-serving']
  assert serving['image'].startswith('tensorflow/serving:')
  assert all(port.startswith('127.0.0.1:') for port in serving['ports'])


def test_shipped_tf_serving_configs_are_read_by_this_server():
  models = config.parse_model_config_file(os.path.join(DEPLOY, 'models.config'))
  assert [(m.name, m.latest) for m in models] == [('imdb', 2), ('lm', 1)]
  options = config.parse_batching_parameters_file(os.path.join(DEPLOY, 'batching_parameters.txt'))
  # Requests of up to 1,024 rows are answered, in merged calls of at most 32 rows.
  assert (options.max_batch_size, options.execution_batch_size, options.num_batch_threads) == (
    1024,
    32,
    4,
  )


def _tf_serving_versions():
  (compose,) = _documents('docker-compose.yaml')
  kubernetes = {d['kind']: d for d in _documents('kubernetes.yaml')}
  (kserve,) = _documents('kserve.yaml')
  images = [
    compose['services']['tensorflow-serving']['image'],
    kubernetes['Deployment']['spec']['template']['spec']['containers'][0]['image'],
  ]
  return [image.split(':', 1)[1] for image in images] + [
    kserve['spec']['predictor']['model']['runtimeVersion']
  ]


def test_stock_images_are_at_least_as_new_as_the_exporting_tensorflow():
  # An older TF Serving cannot load ops added in a newer TensorFlow ("Op type not registered").
  exporter = tuple(int(p) for p in tf.__version__.split('.')[:2])
  for version in _tf_serving_versions():
    assert tuple(int(p) for p in version.split('.')[:2]) >= exporter, version
