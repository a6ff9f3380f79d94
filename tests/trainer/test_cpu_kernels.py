"""trainer/cpu_kernels.py: the train step's dropout and bfloat16 GELU on a CPU, and where they
apply (the Trainer's traced step only; Keras' own functions everywhere else)."""

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


def _step_ops(loop, batch):
  """(op type, its `T` dtype or None) of every node in the traced train step and the
  functions inside it."""
  concrete = loop._train_step.get_concrete_function(
    iter(tf.data.Dataset.from_tensors(batch).repeat())
  )
  graph_def = concrete.graph.as_graph_def()
  nodes = list(graph_def.node)
  for function in graph_def.library.function:
    nodes.extend(function.node_def)
  dtype = lambda n: tf.dtypes.as_dtype(n.attr['T'].type) if n.attr['T'].type else None
  return {(n.op, dtype(n)) for n in nodes}


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


def test_bfloat16_gelu_is_computed_in_float32_and_float32_is_unchanged():
  x32 = tf.random.stateless_normal((300, 200), SEED) * 3
  x16 = tf.cast(x32, tf.bfloat16)
  for approximate in (True, False):
    expected = tf.cast(tf.nn.gelu(tf.cast(x16, tf.float32), approximate), tf.bfloat16)
    keras_own = keras.activations.gelu(x16, approximate=approximate)
    with cpu_kernels.replaced():
      ours = keras.activations.gelu(x16, approximate=approximate)
      same32 = keras.activations.gelu(x32, approximate=approximate)
    assert ours.dtype == tf.bfloat16
    np.testing.assert_array_equal(ours.numpy(), expected.numpy())
    np.testing.assert_array_equal(same32.numpy(), tf.nn.gelu(x32, approximate).numpy())
    # Keras' own bfloat16 GELU rounds at every op: ours is the better, within bfloat16's steps.
    exact = tf.nn.gelu(tf.cast(x16, tf.float32), approximate).numpy()
    error = lambda y, exact=exact: np.abs(y.numpy().astype('float32') - exact)
    assert error(ours).max() <= error(keras_own).max()
    np.testing.assert_allclose(
      ours.numpy().astype('float32'), keras_own.numpy().astype('float32'), rtol=0.04, atol=0.02
    )


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
  loop = test_training._loop('classify', tmp_path, precision=precision, dropout=0.1)
  assert loop.cpu_kernels  # no GPU or TPU here
  batch = test_training._batch('classify', 4)
  sums = test_training._step(loop, batch)
  assert np.isfinite(sums).all()
  ops = _step_ops(loop, batch)
  types = {op for op, _ in ops}
  assert 'StatelessRandomUniformFullIntV2' in types and 'StatelessRandomUniformV2' not in types
  # GELU's tanh and its gradient in float32 either way (Keras' own runs them in bfloat16 under
  # mixed_bfloat16: see the test below).
  assert {('Tanh', tf.float32), ('TanhGrad', tf.float32)} <= ops
  # Outside the traced step, Keras' own functions.
  assert backend_random.dropout is original


def test_a_step_traced_without_them_uses_keras_own(tmp_path):
  loop = test_training._loop('classify', tmp_path, precision='mixed_bfloat16', dropout=0.1)
  loop.cpu_kernels = False  # as on a GPU host
  batch = test_training._batch('classify', 4)
  test_training._step(loop, batch)
  ops = _step_ops(loop, batch)
  types = {op for op, _ in ops}
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
    'GELU tanh bfloat16',
    'GELU erf bfloat16',
  ]
  assert all('Keras' in line and 'ours' in line and 'x (' in line for line in lines)
