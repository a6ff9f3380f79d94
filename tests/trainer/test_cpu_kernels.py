"""trainer/cpu_kernels.py: the train step's dropout and GELU on a CPU, and where they
apply (the Trainer's traced step only; Keras' own functions everywhere else)."""

import logging
import math
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import nn as backend_nn
from keras.src.backend.tensorflow import random as backend_random

from tests.trainer import test_training
from trainer import cpu_kernels

SEED = tf.constant([3, 4], tf.int32)


def _ops(nodes):
  dtype = lambda n: tf.dtypes.as_dtype(n.attr['T'].type) if n.attr['T'].type else None
  return {(n.op, dtype(n)) for n in nodes}


def _step_ops(loop, batch):
  """(op type, its `T` dtype or None) of every node in the traced train step and the
  functions inside it outside XLA's, a set of them for each function XLA must compile, and the
  names of the nodes outside XLA's."""
  concrete = loop._train_step.get_concrete_function(
    iter(tf.data.Dataset.from_tensors(batch).repeat())
  )
  graph_def = concrete.graph.as_graph_def()
  nodes, compiled = list(graph_def.node), []
  for function in graph_def.library.function:
    if function.attr['_XlaMustCompile'].b:
      compiled.append(_ops(function.node_def))
    else:
      nodes.extend(function.node_def)
  return _ops(nodes), compiled, [n.name for n in nodes]


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_dropout_keeps_the_expected_share_and_the_expectation(dtype, rate):
  x = tf.ones((1000, 1001), dtype)  # an odd count of values: the last word's half is unused
  y = cpu_kernels.dropout(x, rate, SEED)
  assert y.dtype == dtype and y.shape == x.shape
  values = np.unique(y.numpy().astype('float32'))
  threshold = round(rate * 65536)
  scale = np.float32(65536 / (65536 - threshold))
  assert values.tolist() == [0.0, float(tf.cast(scale, dtype).numpy())]
  kept = float(np.mean(y.numpy() != 0))
  # A million draws: the share is within 6 standard deviations (0.0003 at 0.1, 0.0005 at 0.5).
  assert abs(kept - (1 - threshold / 65536)) < 0.003
  if dtype == tf.float32:
    assert abs(float(tf.reduce_mean(y)) - 1.0) < 0.004


def test_dropout_follows_its_seed_and_passes_gradients_through_the_kept_values():
  x = tf.random.stateless_normal((64, 48), SEED)
  a, b = cpu_kernels.dropout(x, 0.3, SEED), cpu_kernels.dropout(x, 0.3, SEED)
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  other = cpu_kernels.dropout(x, 0.3, tf.constant([3, 5], tf.int32))
  assert not np.array_equal(a.numpy() != 0, other.numpy() != 0)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = cpu_kernels.dropout(x, 0.3, SEED)
  gradient = tape.gradient(y, x).numpy()
  scale = 65536 / (65536 - round(0.3 * 65536))
  np.testing.assert_allclose(gradient, np.where(y.numpy() != 0, scale, 0.0), rtol=1e-6)
  np.testing.assert_array_equal(cpu_kernels.dropout(x, 0.0, SEED).numpy(), x.numpy())
  np.testing.assert_array_equal(cpu_kernels.dropout(x, 1.0, SEED).numpy(), 0 * x.numpy())


def test_dropout_compiles_with_xla():
  x = tf.ones((16, 33))
  eager = cpu_kernels.dropout(x, 0.2, SEED)
  compiled = tf.function(lambda t: cpu_kernels.dropout(t, 0.2, SEED), jit_compile=True)(x)
  np.testing.assert_array_equal(eager.numpy(), compiled.numpy())


def test_inside_keras_dropout_layers_use_it_and_their_seed_generator_advances():
  x = tf.ones((200, 300))
  layer = keras.layers.Dropout(0.1, seed=1)
  keras_scale = np.float32(1 / 0.9)
  ours = np.float32(65536 / (65536 - 6554))
  with cpu_kernels.replaced():
    first = layer(x, training=True).numpy()
    second = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer(x, training=False), x)  # not training: no drop
    # A noise shape (one decision per row) is Keras' own draw.
    rows = keras.layers.Dropout(0.5, noise_shape=(200, 1), seed=2)(x, training=True).numpy()
  assert set(np.unique(first)) == {0.0, ours}
  assert not np.array_equal(first != 0, second != 0)
  assert all(len(set(row)) == 1 for row in rows)
  assert set(np.unique(layer(x, training=True).numpy())) == {0.0, keras_scale}


def _gelu_and_slope(fn, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn(x)
  return y, tape.gradient(y, x)


@pytest.mark.parametrize('approximate', [True, False])
def test_gelu_and_its_gradient_are_as_exact_as_keras_float32(approximate):
  x32 = tf.random.stateless_normal((300, 200), SEED) * 3
  x32 = tf.concat([tf.reshape(x32, [-1]), tf.linspace(-40.0, 40.0, 8001)], 0)
  gelu = lambda x: keras.activations.gelu(x, approximate=approximate)
  exact, exact_slope = _gelu_and_slope(gelu, tf.cast(x32, tf.float64))
  keras_own, keras_slope = _gelu_and_slope(gelu, x32)
  with cpu_kernels.replaced():
    ours, slope = _gelu_and_slope(gelu, x32)
    same64, slope64 = _gelu_and_slope(gelu, tf.cast(x32, tf.float64))  # not replaced
  assert ours.dtype == slope.dtype == tf.float32
  for value, reference, keras_value in (
    (ours, exact, keras_own),
    (slope, exact_slope, keras_slope),
  ):
    error = np.abs(value.numpy() - reference.numpy())
    # No further from float64's than Keras' own (within a quarter); both lose ~4e-6 to the
    # cancellation in 1 - tanh^2 near the tails.
    assert error.max() <= 1.25 * np.abs(keras_value.numpy() - reference.numpy()).max()
    np.testing.assert_allclose(value.numpy(), reference.numpy(), rtol=1e-5, atol=5e-6)
  np.testing.assert_array_equal(same64.numpy(), exact.numpy())
  np.testing.assert_array_equal(slope64.numpy(), exact_slope.numpy())


@pytest.mark.parametrize('approximate', [True, False])
def test_bfloat16_gelu_is_computed_in_float32_and_rounded_once(approximate):
  x32 = tf.random.stateless_normal((300, 200), SEED) * 3
  x16 = tf.cast(x32, tf.bfloat16)
  gelu = lambda x: keras.activations.gelu(x, approximate=approximate)
  exact, exact_slope = _gelu_and_slope(gelu, tf.cast(x16, tf.float64))
  keras_own, keras_slope = _gelu_and_slope(gelu, x16)
  with cpu_kernels.replaced():
    ours, slope = _gelu_and_slope(gelu, x16)
  assert ours.dtype == slope.dtype == tf.bfloat16
  # Keras' own bfloat16 GELU rounds at every op: ours rounds once, to the nearest bfloat16 or
  # (where float32's rounding lands on a tie) the one next to it.
  for value, reference, keras_value in (
    (ours, exact, keras_own),
    (slope, exact_slope, keras_slope),
  ):
    error = np.abs(value.numpy().astype('float64') - reference.numpy())
    # Half a step of bfloat16's 8 significant bits is 2^-9 of the value, a tie lands a step off;
    # float32 leaves a few 1e-6 where GELU's terms cancel (its tails).
    assert (error <= np.abs(reference.numpy()) * 2.0**-8 + 5e-6).all()
    assert error.max() <= np.abs(keras_value.numpy().astype('float64') - reference.numpy()).max()


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
def test_small_tensors_keep_keras_gelu_computed_in_float32(dtype):
  x = tf.cast(tf.random.stateless_normal((cpu_kernels.GELU_MIN_VALUES // 64 - 1, 64), SEED), dtype)
  for approximate in (True, False):
    # Traced as ours is (a graph's rewrites round float32 a little differently from eager ops).
    expected = tf.function(lambda x, a=approximate: tf.cast(tf.nn.gelu(x, a), dtype))(
      tf.cast(x, tf.float32)
    )
    with cpu_kernels.replaced():
      step = tf.function(lambda x, a=approximate: keras.activations.gelu(x, approximate=a))
      ops = {n.op for n in step.get_concrete_function(x).graph.as_graph_def().node}
      np.testing.assert_array_equal(step(x).numpy(), expected.numpy())
    assert 'StatefulPartitionedCall' not in ops and 'PartitionedCall' not in ops


def _calls_a_function(fn, x):
  graph = tf.function(fn).get_concrete_function(x).graph.as_graph_def()
  return any(n.op in ('PartitionedCall', 'StatefulPartitionedCall') for n in graph.node)


def test_a_caller_sets_the_smallest_activation_gelu_compiles_for():
  gelu = lambda x: keras.activations.gelu(x, approximate=True)
  x = tf.random.stateless_normal((300, 200), SEED)  # 60,000 values
  small = tf.random.stateless_normal((cpu_kernels.GELU_MIN_VALUES // 2, 1), SEED)
  with cpu_kernels.replaced(gelu_min_values=60_001):
    assert not _calls_a_function(gelu, x)
  with cpu_kernels.replaced(gelu_min_values=60_000):
    assert _calls_a_function(gelu, x)
  with cpu_kernels.replaced(gelu_min_values=10):  # never under GELU_MIN_VALUES
    assert not _calls_a_function(gelu, small)
  # Per thread: one tracing with a high bar does not hold another's back.
  seen, entered = {}, threading.Barrier(2)

  def trace(name, bar):
    with cpu_kernels.replaced(gelu_min_values=bar):
      entered.wait(30)
      seen[name] = _calls_a_function(gelu, x)
      entered.wait(30)

  threads = [threading.Thread(target=trace, args=args) for args in (('high', 10**9), ('low', 1000))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert seen == {'high': False, 'low': True}


def test_the_originals_are_back_after_nested_concurrent_and_failing_uses():
  dropout, gelu = backend_random.dropout, backend_nn.gelu
  entered, release = threading.Barrier(3), threading.Event()

  def hold():
    with cpu_kernels.replaced():
      entered.wait()
      release.wait(30)

  threads = [threading.Thread(target=hold) for _ in range(2)]
  for t in threads:
    t.start()
  entered.wait()
  assert backend_random.dropout is not dropout and backend_nn.gelu is not gelu
  with pytest.raises(ValueError, match='inside'):
    with cpu_kernels.replaced(), cpu_kernels.replaced():
      raise ValueError('inside')
  assert backend_random.dropout is not dropout  # the threads are still inside
  release.set()
  for t in threads:
    t.join(30)
  assert backend_random.dropout is dropout and backend_nn.gelu is gelu
  with cpu_kernels.replaced(enabled=False):
    assert backend_random.dropout is dropout


@pytest.mark.parametrize('precision', ['float32', 'mixed_bfloat16'])
def test_the_trainers_cpu_step_has_them_and_the_model_stays_keras_own(tmp_path, precision):
  original = backend_random.dropout
  # A feed-forward activation of 4 x 8 x 1,024 values: over `GELU_MIN_VALUES`.
  loop = test_training._loop(
    'classify', tmp_path, precision=precision, dropout=0.1, intermediate_dim=1024
  )
  assert loop.cpu_kernels  # no GPU or TPU here
  batch = test_training._batch('classify', 4)
  sums = test_training._step(loop, batch)
  assert np.isfinite(sums).all()
  ops, compiled, names = _step_ops(loop, batch)
  types = {op for op, _ in ops}
  assert 'StatelessRandomUniformFullIntV2' in types and 'StatelessRandomUniformV2' not in types
  # GELU forward and backward: two XLA programs computing in float32 either way (Keras' own runs
  # its ops one by one, in bfloat16 under mixed_bfloat16: see the test below).
  gelus = [f for f in compiled if ('Tanh', tf.float32) in f]
  assert len(gelus) == 2 and not any(('Tanh', tf.bfloat16) in f for f in gelus)
  assert not [n for n in names if 'Gelu' in n]  # none outside them
  # Outside the traced step, Keras' own functions.
  assert backend_random.dropout is original


def test_a_run_too_short_to_pay_back_the_compiles_keeps_keras_gelu(tmp_path, caplog):
  from trainer import training

  # 8 x 8 x 1,024 values a feed-forward activation: compiled for an unknown or a long run.
  values = 8 * test_training.SEQ_LEN * 1024
  batch = test_training._batch('classify', 8)
  unknown = test_training._loop('classify', tmp_path, dropout=0.1, intermediate_dim=1024)
  assert unknown.gelu_min_values == cpu_kernels.GELU_MIN_VALUES < values
  short = test_training._loop(
    'classify', tmp_path, dropout=0.1, intermediate_dim=1024, train_steps=60
  )
  assert short.gelu_min_values == math.ceil(training.GELU_XLA_MIN_VALUE_STEPS / 60) > values
  test_training._step(short, batch)
  _, compiled, names = _step_ops(short, batch)
  assert not compiled and [n for n in names if 'Gelu' in n]
  assert training.Loop._gelu_min_values(10**6) == cpu_kernels.GELU_MIN_VALUES
  # `run` decides again from the steps it has left, and says what it chose.
  data = tf.data.Dataset.from_tensors(batch).repeat()
  caplog.set_level(logging.INFO, logger='absl')
  unknown.run(data, data, train_steps=2, eval_steps=1)
  assert unknown.gelu_min_values == 50_000_000
  assert 'GELU compiled by XLA for activations of 50,000,000 values or more' in caplog.text
  assert not _step_ops(unknown, batch)[1]


def test_a_step_traced_without_them_uses_keras_own(tmp_path):
  loop = test_training._loop('classify', tmp_path, precision='mixed_bfloat16', dropout=0.1)
  loop.cpu_kernels = False  # as on a GPU host
  batch = test_training._batch('classify', 4)
  test_training._step(loop, batch)
  ops, compiled, names = _step_ops(loop, batch)
  types = {op for op, _ in ops}
  assert not compiled and [n for n in names if 'Gelu' in n]
  assert 'StatelessRandomUniformV2' in types and 'StatelessRandomUniformFullIntV2' not in types
  assert ('Tanh', tf.float32) not in ops and ('Tanh', tf.bfloat16) in ops


def test_the_bench_times_every_case_against_keras_own(capsys):
  from bench import cpu_kernels_bench

  assert cpu_kernels_bench.main(['--quick']) == 0
  lines = [line for line in capsys.readouterr().out.splitlines() if ' ms (' in line]
  names = [line.split('  ')[0] for line in lines]
  assert names == [
    'dropout hidden float32',
    'dropout attention float32',
    'dropout hidden bfloat16',
    'dropout attention bfloat16',
    'GELU tanh float32',
    'GELU erf float32',
    'GELU tanh bfloat16',
    'GELU erf bfloat16',
  ]
  assert all('Keras' in line and 'ours' in line and 'x (' in line for line in lines)
