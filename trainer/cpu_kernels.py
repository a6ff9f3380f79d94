"""Two ops of a transformer's train step done faster on a CPU: dropout and bfloat16 GELU.

The Trainer traces its train step inside `replaced()` when it trains on the CPU (no GPU or TPU),
so the step's graph holds these kernels; the model itself is not changed (its config, saved
files, presets and serving signatures are Keras' own, and `fit` or a served model call Keras').

- **Dropout.** Keras draws a float per value (`tf.nn.experimental.stateless_dropout`: a Philox
  draw, a conversion to the value's dtype, a compare). Here 16 random bits per value decide:
  half the Philox work, and the same work in float32 and bfloat16 (Keras' bfloat16 draw is the
  slower). A value is kept when its bits are at least `round(rate * 65536)` and scaled by the
  inverse of the exact keep probability, so the output is unbiased; the drop rate differs from
  `rate` by under 8e-6 (Keras' own draw in bfloat16 is coarser: a bfloat16 has 8 significant
  bits). The seed is Keras' (the layer's `SeedGenerator` advances as before); the mask differs
  from Keras'.
- **GELU on bfloat16.** TensorFlow's CPU kernels for tanh, erf and their gradients are not
  vectorized for bfloat16; computed in float32 and rounded to bfloat16, GELU is as exact as
  rounding allows and faster.

`bench/cpu_kernels_bench.py` times both against Keras' own on the demo step's tensors
(all-MiniLM-L6-v2; 2 cores with AVX512_BF16, forward and backward: dropout 1.34x-1.52x, GELU
1.30x in its tanh form, 1.77x in its erf form; README "Tests and benchmarks"). GPUs and TPUs keep
Keras' kernels.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import tensorflow as tf

from trainer import keras_internals

_BITS = 16
_LEVELS = 1 << _BITS


def dropout(inputs, rate, seed) -> tf.Tensor:
  """`inputs` with each value zeroed with probability ~`rate` (16 random bits a value) and
  the rest scaled to keep the expectation; `seed` an int32 [2] stateless seed."""
  inputs = tf.convert_to_tensor(inputs)
  threshold = round(float(rate) * _LEVELS)
  if threshold <= 0:
    return inputs
  if threshold >= _LEVELS:
    return tf.zeros_like(inputs)
  size = tf.size(inputs)
  words = tf.random.stateless_uniform(
    [(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32
  )
  bits = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
  keep = tf.reshape(bits >= tf.constant(threshold, tf.uint16), tf.shape(inputs))
  scale = tf.constant(_LEVELS / (_LEVELS - threshold), inputs.dtype)
  return tf.where(keep, inputs * scale, tf.zeros((), inputs.dtype))


def _dropout(original):
  def replacement(inputs, rate, noise_shape=None, seed=None):
    inputs = tf.convert_to_tensor(inputs)
    whole = noise_shape is None or list(noise_shape) == inputs.shape.as_list()
    if not whole or not inputs.dtype.is_floating or rate in (0.0, 1.0):
      return original(inputs, rate, noise_shape=noise_shape, seed=seed)
    return dropout(inputs, rate, keras_internals.stateless_seed(seed))

  return replacement


def _gelu(original):
  def replacement(x, approximate=True):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.bfloat16:
      return original(x, approximate)
    return tf.cast(original(tf.cast(x, tf.float32), approximate), tf.bfloat16)

  return replacement


@contextlib.contextmanager
def replaced(enabled: bool = True) -> Iterator[None]:
  """Inside (when `enabled`), Keras' dropout and GELU are this module's."""
  if not enabled:
    yield
    return
  with keras_internals.backend_functions_replaced({'random.dropout': _dropout, 'nn.gelu': _gelu}):
    yield
