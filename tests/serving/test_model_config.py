"""TF Serving's config files (ModelServerConfig, BatchingParameters, MonitoringConfig), version
policies, discovery."""

import os
import re

import pytest

from serving import config
from serving.batching import BatchingOptions
from serving.manager import ModelManager
from tests.serving.conftest import push

MODEL_CONFIG = """
model_config_list {
  config {
    name: 'imdb'
    base_path: '/models/imdb'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 3 versions: 1 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 3 }
  }
  config {
    name: 'lm'
    base_path: 'relative/lm'
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: 'all' base_path: '/models/all' model_version_policy { all {} } }
}
"""


def test_model_config_file(tmp_path):
  path = tmp_path / 'models.config'
  path.write_text(MODEL_CONFIG)
  imdb, lm, every = config.parse_model_config_file(str(path))
  assert (imdb.name, imdb.base_path, imdb.versions) == ('imdb', '/models/imdb', (1, 3))
  assert imdb.labels == {'stable': 1, 'canary': 3}
  assert (lm.latest, lm.base_path) == (2, os.path.abspath('relative/lm'))
  assert every.latest == 0
  assert imdb.wanted({1, 2, 3, 4}) == {1, 3}
  assert lm.wanted({1, 2, 3, 4}) == {3, 4}
  assert every.wanted({1, 2, 3, 4}) == {1, 2, 3, 4}


@pytest.mark.parametrize(
  'text,message',
  [
    ('model_config_list { config { name: "x" } }', 'needs both name and base_path'),
    (
      'model_config_list { config { name: "x" base_path: "/a" } config { name: "x" '
      'base_path: "/b" } }',
      'appears twice',
    ),
    ('model_config_list { config { nme: "x" } }', 'not a ModelServerConfig'),
    (
      'model_config_list { config { name: "x" base_path: "/a" model_platform: "pytorch" } }',
      'platform "pytorch"',
    ),
    ('custom_model_config { }', 'only model_config_list'),
  ],
)
def test_bad_model_config_file_names_the_problem(tmp_path, text, message):
  path = tmp_path / 'models.config'
  path.write_text(text)
  with pytest.raises(ValueError, match=message) as raised:
    config.parse_model_config_file(str(path))
  assert str(path) in str(raised.value)


def test_fields_not_used_are_named_in_one_warning_at_load(tmp_path, caplog):
  models = tmp_path / 'models.config'
  models.write_text(
    'model_config_list { config { name: "a" base_path: "/a" } config { name: "b"'
    ' base_path: "/b" logging_config { sampling_config { sampling_rate: 0.1 } } } }'
  )
  batching = tmp_path / 'batching.config'
  batching.write_text('allowed_batch_sizes: 8\npad_variable_length_inputs: true\n')
  with caplog.at_level('WARNING', logger='serving.config'):
    config.parse_model_config_file(str(models))
    config.parse_batching_parameters_file(str(batching))
  assert [r.getMessage() for r in caplog.records] == [
    f'{models}: logging_config of model(s) b is not used by this server (no request'
    ' logging); ignored',
    f'{batching}: allowed_batch_sizes and pad_variable_length_inputs are not used by this'
    ' server (batches run at their own size, unpadded); ignored',
  ]
  caplog.clear()
  batching.write_text('max_batch_size { value: 8 }\n')
  with caplog.at_level('WARNING', logger='serving.config'):
    config.parse_batching_parameters_file(str(batching))
  assert not caplog.records


def test_batching_parameters_file_of_tf_serving(tmp_path):
  path = tmp_path / 'batching.config'
  path.write_text(
    'max_batch_size { value: 64 }\nbatch_timeout_micros { value: 500 }\n'
    'num_batch_threads { value: 3 }\nmax_enqueued_batches { value: 7 }\n'
    'allowed_batch_sizes: 8\nallowed_batch_sizes: 64\n'
    'pad_variable_length_inputs: true\n'
  )
  assert config.parse_batching_parameters_file(str(path)) == BatchingOptions(64, 500, 3, 7)
  path.write_text(
    'max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n'
    'max_execution_batch_size { value: 16 }\n'
  )
  options = config.parse_batching_parameters_file(str(path))
  assert options.execution_batch_size == 16 and options.max_batch_size == 64


@pytest.mark.parametrize(
  'text,message',
  [
    ('max_batch_size: 8', 'not a BatchingParameters'),
    ('max_batch_size { value: 0 }', 'must be positive'),
  ],
)
def test_bad_batching_parameters_file(tmp_path, text, message):
  path = tmp_path / 'batching.config'
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    config.parse_batching_parameters_file(str(path))


def test_discover_models_finds_pushed_models(tmp_path):
  push(str(tmp_path / 'pipe_a' / 'serving'), 'imdb', 5, seed=1)
  os.makedirs(tmp_path / 'pipe_b' / 'serving' / 'lm' / '7')
  os.makedirs(tmp_path / 'pipe_b' / 'root' / 'Trainer')
  found = config.discover_models(str(tmp_path))
  assert [(m.name, m.base_path) for m in found] == [
    ('imdb', str(tmp_path / 'pipe_a' / 'serving' / 'imdb')),
    ('lm', str(tmp_path / 'pipe_b' / 'serving' / 'lm')),
  ]


def test_discover_models_follows_symlinked_model_folders(tmp_path):
  # `ln -s <serving>/sentiment <root>/sentiment` used to be skipped, with no log line.
  os.makedirs(tmp_path / 'pushed' / 'sentiment' / '1')
  root = tmp_path / 'root'
  (root / 'pipe').mkdir(parents=True)
  os.symlink(tmp_path / 'pushed' / 'sentiment', root / 'sentiment')
  os.symlink(tmp_path / 'pushed', root / 'pipe' / 'serving')  # a symlinked parent folder
  os.symlink(root, root / 'pipe' / 'loop')  # a loop ends at max_depth
  found = config.discover_models(str(root))
  # One folder reached by three paths under one name is one model, from the shallowest path.
  assert [(m.name, m.base_path) for m in found] == [('sentiment', str(root / 'sentiment'))]


def test_discover_models_refuses_two_models_with_one_name(tmp_path):
  os.makedirs(tmp_path / 'a' / 'imdb' / '1')
  os.makedirs(tmp_path / 'b' / 'imdb' / '1')
  with pytest.raises(ValueError, match='two models named "imdb"'):
    config.discover_models(str(tmp_path))


def test_specific_and_latest_policies_load_the_right_versions(tmp_path):
  base = str(tmp_path)
  for version in (1, 2, 3):
    push(base, 'm', version, seed=version)
  manager = ModelManager(
    [config.ModelConfig('m', os.path.join(base, 'm'), latest=2)], poll_wait_seconds=0
  )
  manager.start()
  assert [row[:2] for row in manager.status('m')] == [(3, 'AVAILABLE'), (2, 'AVAILABLE')]
  assert manager.resolve('m').version == 3
  manager.stop()
  manager = ModelManager(
    [config.ModelConfig('m', os.path.join(base, 'm'), versions=(1, 3))], poll_wait_seconds=0
  )
  manager.start()
  assert [row[:2] for row in manager.status('m')] == [(3, 'AVAILABLE'), (1, 'AVAILABLE')]
  assert manager.resolve('m', version=1).version == 1
  manager.stop()
  assert [row[1] for row in manager.status('m')] == ['END', 'END']


METRICS = '/monitoring/prometheus/metrics'


@pytest.mark.parametrize(
  'text,path',
  [
    ('prometheus_config { enable: true path: "/metrics" }', '/metrics'),
    ('prometheus_config { enable: true }', METRICS),
    ('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }', METRICS),
    # TF Serving serves no metrics page unless the config enables it.
    ('prometheus_config { enable: false path: "/metrics" }', None),
    ('', None),
  ],
)
def test_monitoring_config_file_of_tf_serving(tmp_path, text, path):
  file = tmp_path / 'monitoring.config'
  file.write_text(text)
  assert config.parse_monitoring_config_file(str(file), METRICS, ('/healthz',)) == path


@pytest.mark.parametrize(
  'text,message',
  [
    ('prometheus { enable: true }', 'not a MonitoringConfig text proto'),
    ('prometheus_config { enable: 2 }', 'not a MonitoringConfig text proto'),
    ('prometheus_config { enable: true path: "metrics" }', 'must start with "/"'),
    ('prometheus_config { enable: true path: "/m?x=1" }', 'must start with "/"'),
    ('prometheus_config { enable: true path: "/my metrics" }', 'must start with "/"'),
    ('prometheus_config { enable: true path: "/healthz" }', "is one of the REST API's"),
    ('prometheus_config { enable: true path: "/V1/models/lm" }', "is one of the REST API's"),
  ],
)
def test_bad_monitoring_config_file_names_the_file_and_the_problem(tmp_path, text, message):
  file = tmp_path / 'monitoring.config'
  file.write_text(text)
  with pytest.raises(ValueError, match=re.escape(message)) as raised:
    config.parse_monitoring_config_file(str(file), METRICS, ('/healthz',))
  assert str(raised.value).startswith(f'{file}: ')
