"""Two ops of a transformer's train step done faster on a CPU: dropout and GELU.

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
- **GELU.** TensorFlow runs Keras' GELU as a chain of elementwise kernels, each a pass over the
  layer's largest activation, and its gradient as a longer one; in bfloat16 its tanh and erf
  kernels are not even vectorized. Here the forward pass is one XLA program and the backward
  pass another (the derivative written out, from the input alone), both computing in float32
  and rounding once: no less exact than Keras' float32 GELU against float64 (tested). Each
  shape compiles once (~50 ms); tensors under `GELU_MIN_VALUES` values keep Keras' ops (in
  float32 for bfloat16), as fast there, and so do those of a run too short to pay back the
  compiles (the Trainer's `gelu_min_values`, trainer/training.py). The step's matmuls stay on
  TensorFlow's oneDNN kernels, faster than XLA's on a CPU with AVX-512.

`bench/cpu_kernels_bench.py` times both against Keras' own on the demo step's tensors
(all-MiniLM-L6-v2; 2 cores with AVX512_BF16, forward and backward: dropout 1.4x, GELU 2.6x-2.8x
in float32 and 3.9x-4.0x in bfloat16; README "Tests and benchmarks"). GPUs and TPUs keep
Keras' kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
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


_GELU_DTYPES = (tf.float32, tf.bfloat16, tf.float16)
# Below this many values Keras' ops are as fast (forward and backward on 2 cores, 2026-12-07:
# 0.23 against 0.27 ms at 16,384 values, 0.40 against 0.30 at 65,536, 0.81 against 0.42 at
# 262,144), and each shape's compile (~50 ms) would not pay back: a test's tiny models.
GELU_MIN_VALUES = 1 << 15
# The smallest activation `replaced()` gives XLA's GELU, as set by its caller (per thread).
_gelu_min_values = contextvars.ContextVar('gelu_min_values', default=GELU_MIN_VALUES)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_value_and_slope(x, approximate: bool, slope: bool):
  """GELU of float32 `x` and, with `slope`, its derivative at `x`: the tanh form in Keras'
  terms (exp-based forms without its cancellations near tanh = -1 and 1 ran 1.17x-1.25x slower,
  for errors of a few 1e-6 at most); the erf form through erfc (XLA's erf stops a float32 step
  short of -1 far out, which 1 + erf would keep)."""
  if approximate:
    xx = x * x
    t = tf.tanh(x * (_SQRT_2_OVER_PI + _SQRT_2_OVER_PI * _TANH_CUBIC * xx))
    value = 0.5 * x * (1.0 + t)
    if not slope:
      return value, None
    du = _SQRT_2_OVER_PI + 3.0 * _SQRT_2_OVER_PI * _TANH_CUBIC * xx
    return value, 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
  cdf = 0.5 * tf.math.erfc(-x * _INV_SQRT_2)
  value = x * cdf
  if not slope:
    return value, None
  return value, cdf + x * _INV_SQRT_2PI * tf.exp(-0.5 * x * x)


def _gelu_forward(x, approximate):
  value, _ = _gelu_value_and_slope(tf.cast(x, tf.float32), approximate, slope=False)
  return tf.cast(value, x.dtype)


def _gelu_backward(x, upstream, approximate):
  _, slope = _gelu_value_and_slope(tf.cast(x, tf.float32), approximate, slope=True)
  return tf.cast(tf.cast(upstream, tf.float32) * slope, upstream.dtype)


def _xla(fn, approximate):
  # `reduce_retracing`: a classify step is traced for each batch length; XLA still compiles each
  # shape once.
  return tf.function(
    functools.partial(fn, approximate=approximate),
    jit_compile=True,
    autograph=False,
    reduce_retracing=True,
  )


_xla_forward = {a: _xla(_gelu_forward, a) for a in (True, False)}
_xla_backward = {a: _xla(_gelu_backward, a) for a in (True, False)}


def gelu(x, approximate: bool = True) -> tf.Tensor:
  """GELU of `x` (float32, bfloat16 or float16; computed in float32), its forward and its
  backward pass each one XLA program (compiled once per shape)."""
  approximate = bool(approximate)

  @tf.custom_gradient
  def fn(x):
    def grad(upstream):
      return _xla_backward[approximate](x, upstream)

    return _xla_forward[approximate](x), grad

  return fn(x)


def _gelu(original):
  def replacement(x, approximate=True):
    x = tf.convert_to_tensor(x)
    values = x.shape.num_elements()
    if x.dtype in _GELU_DTYPES and (values is None or values >= _gelu_min_values.get()):
      return gelu(x, approximate)
    if x.dtype == tf.bfloat16:  # TensorFlow's bfloat16 tanh and erf are the slower, and coarser
      return tf.cast(original(tf.cast(x, tf.float32), approximate), tf.bfloat16)
    return original(x, approximate)

  return replacement


@contextlib.contextmanager
def replaced(enabled: bool = True, gelu_min_values: int = GELU_MIN_VALUES) -> Iterator[None]:
  """Inside (when `enabled`), Keras' dropout and GELU are this module's; GELU as XLA programs
  on activations of at least `gelu_min_values` values (never fewer than `GELU_MIN_VALUES`), on
  smaller ones Keras' own (in float32 for bfloat16)."""
  if not enabled:
    yield
    return
  token = _gelu_min_values.set(max(GELU_MIN_VALUES, int(gelu_min_values)))
  try:
    with keras_internals.backend_functions_replaced({'random.dropout': _dropout, 'nn.gelu': _gelu}):
      yield
  finally:
    _gelu_min_values.reset(token)
