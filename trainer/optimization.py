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


def warmup_steps_for(
  total_steps: int, warmup_steps: int | None = None, warmup_ratio: float = 0.0
) -> int:
  """Warmup length in steps: explicit, else a fraction of the total."""
  if warmup_steps is not None:
    return min(warmup_steps, total_steps)
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
  optimizer = keras.optimizers.AdamW(
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
