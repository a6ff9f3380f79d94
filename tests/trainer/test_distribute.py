"""Strategy choice from faked environments; the CPU-runnable strategies build."""

import json

import pytest
import tensorflow as tf

from trainer import distribute
from trainer.distribute import Environment, choose_strategy


def _tf_config(workers, chief=0):
  cluster = {'worker': [f'localhost:{2000 + i}' for i in range(workers)]}
  if chief:
    cluster['chief'] = ['localhost:1999']
  return json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': 0}})


@pytest.mark.parametrize(
  'env, expected',
  [
    (Environment(), 'default'),
    (Environment(num_gpus=1), 'default'),
    (Environment(num_gpus=4), 'mirrored'),
    (Environment(num_workers=distribute.num_workers_in_tf_config(_tf_config(2))), 'multi_worker'),
    (
      Environment(
        num_workers=distribute.num_workers_in_tf_config(_tf_config(1, chief=1)), num_gpus=2
      ),
      'multi_worker',
    ),
    (Environment(num_workers=distribute.num_workers_in_tf_config(_tf_config(1))), 'default'),
    (Environment(tpu_found=True, num_workers=3, num_gpus=8), 'tpu'),
  ],
)
def test_auto_picks_from_facts(env, expected):
  assert choose_strategy('auto', env) == expected


def test_explicit_choice_wins():
  assert choose_strategy('mirrored', Environment(tpu_found=True)) == 'mirrored'
  with pytest.raises(ValueError, match='unknown strategy'):
    choose_strategy('horovod', Environment())


def test_tf_config_parsing():
  assert distribute.num_workers_in_tf_config(None) == 1
  assert distribute.num_workers_in_tf_config('') == 1
  assert distribute.num_workers_in_tf_config(_tf_config(3, chief=1)) == 4
  with pytest.raises(ValueError, match='TF_CONFIG is not valid JSON'):
    distribute.num_workers_in_tf_config('{cluster')


def test_detect_reads_tf_config(monkeypatch):
  monkeypatch.setenv('TF_CONFIG', _tf_config(2))
  env, _ = distribute.detect_environment()
  assert env.num_workers == 2 and not env.tpu_found
  assert choose_strategy('auto', env) == 'multi_worker'


@pytest.mark.parametrize(
  'name, kind',
  [('default', type(tf.distribute.get_strategy())), ('mirrored', tf.distribute.MirroredStrategy)],
)
def test_cpu_strategies_build_and_are_chief(name, kind):
  strategy = distribute.create_strategy(name)
  assert isinstance(strategy, kind)
  assert strategy.num_replicas_in_sync == 1
  assert distribute.is_chief(strategy)


def test_auto_without_tpu_gpu_or_tf_config_is_default(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  strategy = distribute.create_strategy('auto')
  assert strategy is tf.distribute.get_strategy()


class _FakeResolver:
  def __init__(self, task_type, task_id, cluster):
    self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

  def cluster_spec(self):
    return tf.train.ClusterSpec(self._cluster)


class _FakeStrategy:
  def __init__(self, resolver):
    self.cluster_resolver = resolver


@pytest.mark.parametrize(
  'task_type, task_id, has_chief, expected',
  [
    ('worker', 0, False, True),
    ('worker', 1, False, False),
    ('worker', 0, True, False),
    ('chief', 0, True, True),
  ],
)
def test_only_one_chief(task_type, task_id, has_chief, expected):
  cluster = {'worker': ['a:1', 'b:1']}
  if has_chief:
    cluster['chief'] = ['c:1']
  strategy = _FakeStrategy(_FakeResolver(task_type, task_id, cluster))
  assert distribute.is_chief(strategy) is expected
