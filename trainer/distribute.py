"""Distribution strategy: detected once, created once, before any model is built.

`choose_strategy` is a pure function of detected facts, so `auto` can be tested with a faked
environment; `create_strategy` turns the choice into a `tf.distribute.Strategy`.
"""

import dataclasses
import json
import os

import tensorflow as tf

from tfxlm.contract import AUTO, DEFAULT, MIRRORED, MULTI_WORKER, TPU


@dataclasses.dataclass(frozen=True)
class Environment:
  """What `auto` looks at.

  Attributes:
    tpu_found: A TPU cluster resolver resolved to a TPU.
    num_workers: Workers (chief included) listed in TF_CONFIG's cluster; 1 without TF_CONFIG.
    num_gpus: Local GPUs visible to TensorFlow.
  """

  tpu_found: bool = False
  num_workers: int = 1
  num_gpus: int = 0


def num_workers_in_tf_config(tf_config: str | None) -> int:
  """Counts chief + worker tasks in a TF_CONFIG JSON text (1 when unset or empty)."""
  if not tf_config:
    return 1
  try:
    cluster = json.loads(tf_config).get('cluster', {})
  except json.JSONDecodeError as e:
    raise ValueError(f'TF_CONFIG is not valid JSON: {e}') from e
  count = len(cluster.get('chief', [])) + len(cluster.get('worker', []))
  return max(count, 1)


def choose_strategy(requested: str, env: Environment) -> str:
  """Resolves `requested` ('auto' or an explicit name) to a strategy name.

  `auto` prefers a TPU, then several workers, then several GPUs, else the default strategy.
  """
  if requested != AUTO:
    if requested not in (DEFAULT, MIRRORED, MULTI_WORKER, TPU):
      raise ValueError(f'unknown strategy {requested!r}')
    return requested
  if env.tpu_found:
    return TPU
  if env.num_workers > 1:
    return MULTI_WORKER
  if env.num_gpus > 1:
    return MIRRORED
  return DEFAULT


def _find_tpu():
  """Returns a connected TPUClusterResolver, or None when there is no TPU."""
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    resolver.cluster_spec()  # raises when nothing answers
  except (ValueError, RuntimeError, tf.errors.NotFoundError):
    return None
  return resolver


def detect_environment() -> tuple[Environment, object]:
  """Looks at the machine once: TPU resolver, TF_CONFIG and GPUs. Returns (facts, tpu resolver)."""
  resolver = _find_tpu()
  env = Environment(
    tpu_found=resolver is not None,
    num_workers=num_workers_in_tf_config(os.environ.get('TF_CONFIG')),
    num_gpus=len(tf.config.list_physical_devices('GPU')),
  )
  return env, resolver


def create_strategy(requested: str) -> tf.distribute.Strategy:
  """Creates the strategy for `requested`, resolving 'auto' from the detected environment."""
  if requested == AUTO:
    env, resolver = detect_environment()
    name = choose_strategy(requested, env)
  else:
    name = choose_strategy(requested, Environment())
    resolver = _find_tpu() if name == TPU else None
  if name == TPU:
    if resolver is None:
      raise RuntimeError('strategy "tpu" requested but no TPU cluster resolver was found')
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if name == MULTI_WORKER:
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == MIRRORED:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one worker that writes exports and summaries."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None or task_type == 'chief':
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> str:
  """A name for this worker, for per-worker temporary paths."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or resolver.task_type is None:
    return 'chief'
  return f'{resolver.task_type}_{resolver.task_id}'
