"""AdamW with a warmup-then-decay schedule, no decay on LayerNorm and bias weights."""

import math
from typing import Any

import keras
import tensorflow as tf

from tfxlm import contract
from trainer import keras_internals


@keras.saving.register_keras_serializable(package='trainer')
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak`, then linear or cosine decay to `peak * end_ratio`.

  The decay ends at `total_steps` and stays flat afterwards.
  """

  def __init__(self, peak, total_steps, warmup_steps, decay=contract.LINEAR, end_ratio=0.0):
    if decay not in contract.DECAYS:
      raise ValueError(f'decay must be one of {contract.DECAYS}, got {decay!r}')
    if warmup_steps > total_steps:
      raise ValueError(f'warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})')
    self.peak = peak
    self.total_steps = total_steps
    self.warmup_steps = warmup_steps
    self.decay = decay
    self.end_ratio = end_ratio

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak, tf.float32)
    warmup = float(self.warmup_steps)
    # Step 0 is the first update: warmup reaches the peak on step `warmup_steps - 1`.
    warm = peak * (step + 1.0) / max(warmup, 1.0)
    decay_len = max(float(self.total_steps - self.warmup_steps), 1.0)
    progress = tf.clip_by_value((step - warmup) / decay_len, 0.0, 1.0)
    if self.decay == contract.LINEAR:
      shape = 1.0 - progress
    else:
      shape = 0.5 * (1.0 + tf.cos(math.pi * progress))
    decayed = peak * (self.end_ratio + (1.0 - self.end_ratio) * shape)
    return tf.where(step < warmup, warm, decayed)

  def get_config(self) -> dict:
    return {
      'peak': self.peak,
      'total_steps': self.total_steps,
      'warmup_steps': self.warmup_steps,
      'decay': self.decay,
      'end_ratio': self.end_ratio,
    }


def _tf_variable(variable):
  """The TensorFlow variable behind a Keras one (a tf.Variable's own `value` is a method)."""
  return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package='trainer')
class AdamW(keras.optimizers.AdamW):
  """Keras' AdamW, with each weight's Adam step one TensorFlow kernel.

  Keras' `update_step` builds some ten elementwise ops per weight, and its weight decay evaluates
  the learning-rate schedule again for every weight it decays. `ResourceApplyAdam` computes the
  same step as Keras (m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
  w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)) in one pass over the weight and its
  two moments, and the schedule runs once per update. At all-MiniLM-L6-v2's size the update
  takes about half the time and its tracing a quarter (bench/optimizer_bench.py). Weights of a
  strategy with several replicas (mirrored variables) and amsgrad keep Keras' own path.
  """

  def _one_kernel(self, *variables) -> bool:
    return not self.amsgrad and not any(
      isinstance(_tf_variable(v), tf.distribute.DistributedValues) for v in variables
    )

  def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
    # Keras' loop (the TensorFlow backend's), with b1^t and b2^t built once per update.
    powers = {}

    def apply(variable, gradient, learning_rate):
      return self._step(gradient, variable, learning_rate, powers)

    for gradient, variable in grads_and_vars:
      distribution.extended.update(variable, apply, args=(gradient, learning_rate), group=False)

  def update_step(self, gradient, variable, learning_rate):
    return self._step(gradient, variable, learning_rate, {})

  def _step(self, gradient, variable, learning_rate, powers):
    index = self._get_variable_index(variable)
    m, v = self._momentums[index], self._velocities[index]
    if not self._one_kernel(variable, m, v):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    if dtype not in powers:
      step = tf.cast(self.iterations + 1, dtype)
      powers[dtype] = (
        tf.pow(tf.constant(self.beta_1, dtype), step),
        tf.pow(tf.constant(self.beta_2, dtype), step),
      )
    beta_1_power, beta_2_power = powers[dtype]
    tf.raw_ops.ResourceApplyAdam(
      var=_tf_variable(variable).handle,
      m=_tf_variable(m).handle,
      v=_tf_variable(v).handle,
      beta1_power=beta_1_power,
      beta2_power=beta_2_power,
      lr=tf.cast(learning_rate, dtype),
      beta1=tf.constant(self.beta_1, dtype),
      beta2=tf.constant(self.beta_2, dtype),
      epsilon=tf.constant(self.epsilon, dtype),
      grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
    )

  def _apply_weight_decay(self, variables):
    if self.weight_decay is None:
      return
    variables = [_tf_variable(v) for v in variables]
    if not self._one_kernel(*variables):
      return super()._apply_weight_decay(variables)
    learning_rate = None
    for variable in variables:
      if self._use_weight_decay(variable):
        if learning_rate is None:
          learning_rate = self.learning_rate
        # Keras' expression, in its order: the same rounding.
        wd = tf.cast(self.weight_decay, variable.dtype)
        variable.assign_sub(variable * wd * tf.cast(learning_rate, variable.dtype))


def warmup_steps_for(
  total_steps: int, warmup_steps: int | None = None, warmup_ratio: float = 0.0
) -> int:
  """Warmup length in steps: explicit, else a fraction of the total.

  An explicit length longer than the run is not shortened: TrainerConfig refuses it, and
  `WarmupDecay` raises on it.
  """
  if warmup_steps is not None:
    return warmup_steps
  return int(round(total_steps * warmup_ratio))


def no_decay_variables(model: keras.Model) -> list[keras.Variable]:
  """The model's LayerNorm weights and biases: AdamW must not decay them."""
  excluded = []
  seen = set()
  for layer in keras_internals.sublayers(model):
    if isinstance(layer, keras.layers.LayerNormalization):
      candidates = layer.trainable_weights
    else:
      candidates = [w for w in keras_internals.own_trainable_variables(layer) if w.name == 'bias']
    for variable in candidates:
      if id(variable) not in seen:
        seen.add(id(variable))
        excluded.append(variable)
  return excluded


def create_optimizer(
  model: keras.Model,
  *,
  learning_rate: float,
  total_steps: int,
  warmup_steps: int,
  decay: str = contract.LINEAR,
  end_ratio: float = 0.0,
  weight_decay: float = 0.01,
  clip_norm: float = 0.0,
  loss_scaling: bool = False,
) -> keras.optimizers.Optimizer:
  """AdamW over `model` with the warmup/decay schedule and global-norm clipping.

  Args:
    model: The Keras model whose LayerNorm and bias weights are excluded from weight decay.
    learning_rate: Peak learning rate.
    total_steps: Optimizer steps of the whole run.
    warmup_steps: Steps of linear warmup.
    decay: 'linear' or 'cosine'.
    end_ratio: Final learning rate as a fraction of the peak.
    weight_decay: Decoupled weight decay.
    clip_norm: Global-norm clipping threshold of the gradient each replica contributes
      (0 disables it). The train loop divides the user's threshold by the number of replicas,
      which bounds the norm of their sum by the user's threshold.
    loss_scaling: Wrap in a dynamic LossScaleOptimizer (for float16).

  Returns:
    A Keras optimizer.
  """
  schedule = WarmupDecay(learning_rate, total_steps, warmup_steps, decay, end_ratio)
  optimizer = AdamW(
    learning_rate=schedule,
    weight_decay=weight_decay,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    global_clipnorm=clip_norm or None,
  )
  optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
  if loss_scaling:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> Any:
  """The learning rate the next update will use."""
  inner = getattr(optimizer, 'inner_optimizer', optimizer)
  return inner.learning_rate
