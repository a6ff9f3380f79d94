"""The trainer's typed configuration (importable without TensorFlow).

The pipeline hands it to the Trainer as `custom_config={'trainer': TrainerConfig(...).to_dict()}`;
`run_fn` reads it back with `TrainerConfig.from_dict` and writes the one it used next to the model.
"""

import dataclasses
import json
import typing
from typing import Any

MODEL_SIZES = {
  # name: (num_layers, hidden_dim, num_heads, intermediate_dim)
  'tiny': (2, 128, 2, 512),
  'small': (4, 256, 4, 1024),
  'base': (12, 768, 12, 3072),
}
STRATEGIES = ('auto', 'default', 'mirrored', 'multi_worker', 'tpu')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
DECAYS = ('linear', 'cosine')
TASKS = ('mlm', 'clm', 'classify')

# Key under which the pipeline puts the trainer's config in the Trainer's `custom_config`.
CUSTOM_CONFIG_KEY = 'trainer'


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Hyperparameters and runtime choices of one training run.

  Attributes:
    task: 'mlm' (masked-LM pretraining, BertBackbone), 'clm' (causal LM, GPT2Backbone) or
      'classify' (sequence classification on a BertBackbone).
    model_size: 'tiny' (2 layers, hidden 128), 'small' (4 / 256) or 'base' (12 / 768).
    num_layers: Overrides the number of transformer layers of `model_size`.
    hidden_dim: Overrides the hidden size of `model_size`.
    num_heads: Overrides the number of attention heads of `model_size`.
    intermediate_dim: Overrides the feed-forward size of `model_size`.
    dropout: Dropout rate inside the backbone.
    preset_dir: Local keras-hub preset directory to start the backbone from (no download);
      it overrides the size fields.
    seq_len: Tokens per training example (window length for mlm/clm, Transform's length for
      classify).
    per_replica_batch_size: Examples per replica per micro-batch; the global batch is this times
      the number of replicas.
    train_steps: Optimizer steps; None takes the Trainer's `TrainArgs(num_steps=...)`.
    eval_steps: Batches per evaluation; None takes the Trainer's `EvalArgs(num_steps=...)`.
    eval_every_steps: Evaluate (and log eval scalars) every this many steps and at the end.
    log_every_steps: Write train scalars to TensorBoard every this many steps.
    checkpoint_every_steps: Save a checkpoint every this many steps (and at the end).
    max_nonfinite_steps: Stop with an error after this many consecutive steps whose loss is not
      finite (NaN or infinite); such a step's gradients are dropped, and no checkpoint is saved
      while the weights or the last loss are not finite.
    keep_checkpoints: Keep the run's checkpoints after a successful export (by default they are
      removed then, so the disk does not grow with every run).
    learning_rate: Peak learning rate, reached at the end of warmup.
    end_learning_rate_ratio: Final learning rate as a fraction of the peak.
    weight_decay: AdamW decoupled weight decay (not applied to LayerNorm and bias weights).
    warmup_ratio: Warmup length as a fraction of `train_steps` (used when `warmup_steps` is None).
    warmup_steps: Warmup length in steps; overrides `warmup_ratio`.
    decay: Shape of the decay after warmup: 'linear' or 'cosine'.
    clip_norm: Global-norm gradient clipping threshold; 0 disables clipping. With several
      replicas each clips its share at clip_norm / replicas, which bounds the summed gradient.
    grad_accum_steps: Micro-batches whose gradients are summed into one optimizer step.
    strategy: 'auto', 'default', 'mirrored', 'multi_worker' or 'tpu' (see trainer/distribute.py).
    precision: 'float32', 'mixed_bfloat16' or 'mixed_float16' (with dynamic loss scaling).
    jit_compile: Compile the train step with XLA.
    mask_rate: Fraction of the maskable tokens chosen per sequence for mlm.
    mask_token_rate: Of the chosen tokens, the fraction replaced by [MASK].
    random_token_rate: Of the chosen tokens, the fraction replaced by a random token (the rest
      are left unchanged).
    mask_top_k: Number of candidates the mlm export returns for the first [MASK] of a text.
    shuffle_buffer: Shuffle buffer (examples) of the training input.
    seed: Seed of initialisation, shuffling and masking.
  """

  task: str = 'mlm'
  model_size: str = 'tiny'
  num_layers: int | None = None
  hidden_dim: int | None = None
  num_heads: int | None = None
  intermediate_dim: int | None = None
  dropout: float = 0.1
  preset_dir: str | None = None
  seq_len: int = 128
  per_replica_batch_size: int = 32
  train_steps: int | None = None
  eval_steps: int | None = None
  eval_every_steps: int = 500
  log_every_steps: int = 50
  checkpoint_every_steps: int = 500
  max_nonfinite_steps: int = 3
  keep_checkpoints: bool = False
  learning_rate: float = 5e-4
  end_learning_rate_ratio: float = 0.0
  weight_decay: float = 0.01
  warmup_ratio: float = 0.06
  warmup_steps: int | None = None
  decay: str = 'linear'
  clip_norm: float = 1.0
  grad_accum_steps: int = 1
  strategy: str = 'auto'
  precision: str = 'float32'
  jit_compile: bool = False
  mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  mask_top_k: int = 5
  shuffle_buffer: int = 10_000
  seed: int = 42

  def __post_init__(self):
    _check_choice('task', self.task, TASKS)
    _check_choice('model_size', self.model_size, tuple(MODEL_SIZES))
    _check_choice('strategy', self.strategy, STRATEGIES)
    _check_choice('precision', self.precision, PRECISIONS)
    _check_choice('decay', self.decay, DECAYS)
    positive = ('seq_len', 'per_replica_batch_size', 'eval_every_steps', 'log_every_steps',
                'checkpoint_every_steps', 'grad_accum_steps', 'mask_top_k', 'shuffle_buffer',
                'num_layers', 'hidden_dim', 'num_heads', 'intermediate_dim', 'train_steps',
                'eval_steps', 'max_nonfinite_steps')
    for name in positive:
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f'TrainerConfig.{name} must be > 0, got {value}')
    fractions = ('dropout', 'end_learning_rate_ratio', 'warmup_ratio', 'mask_token_rate',
                 'random_token_rate')
    for name in fractions:
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f'TrainerConfig.{name} must be in [0, 1], got {value}')
    if not 0.0 < self.mask_rate < 1.0:
      raise ValueError(f'TrainerConfig.mask_rate must be in (0, 1), got {self.mask_rate}')
    if self.mask_token_rate + self.random_token_rate > 1.0:
      raise ValueError('TrainerConfig.mask_token_rate + random_token_rate must be <= 1, got '
                       f'{self.mask_token_rate} + {self.random_token_rate}')
    if self.learning_rate <= 0:
      raise ValueError(f'TrainerConfig.learning_rate must be > 0, got {self.learning_rate}')
    for name in ('weight_decay', 'clip_norm'):
      if getattr(self, name) < 0:
        raise ValueError(f'TrainerConfig.{name} must be >= 0, got {getattr(self, name)}')
    if self.warmup_steps is not None and self.warmup_steps < 0:
      raise ValueError(f'TrainerConfig.warmup_steps must be >= 0, got {self.warmup_steps}')
    if self.task == 'mlm' and self.seq_len < 3:
      raise ValueError(f'TrainerConfig.seq_len must be >= 3 for mlm ([CLS] x [SEP]), got '
                       f'{self.seq_len}')

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None) -> 'TrainerConfig':
    """Builds a config from a plain dict, rejecting unknown keys and wrong types.

    Raises:
      ValueError: naming the offending key and what was expected.
    """
    d = dict(d or {})
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
      raise ValueError(f'TrainerConfig: unknown key(s) {unknown}; known keys: {sorted(hints)}')
    for key, value in d.items():
      d[key] = _coerce(key, value, hints[key])
    return cls(**d)

  def to_dict(self) -> dict[str, Any]:
    """Returns the config as a JSON-serialisable dict that `from_dict` accepts."""
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  def model_dims(self) -> tuple[int, int, int, int]:
    """(num_layers, hidden_dim, num_heads, intermediate_dim): the size with its overrides."""
    layers, hidden, heads, intermediate = MODEL_SIZES[self.model_size]
    hidden = self.hidden_dim or hidden
    return (self.num_layers or layers, hidden, self.num_heads or heads,
            self.intermediate_dim or (intermediate if self.hidden_dim is None else 4 * hidden))


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f'TrainerConfig.{name} must be one of {list(choices)}, got {value!r}')


def _coerce(key, value, hint):
  """Checks `value` against the field's type hint; ints are accepted where floats are."""
  optional = type(None) in typing.get_args(hint)
  base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
  if value is None:
    if optional:
      return None
    raise ValueError(f'TrainerConfig.{key} must not be null')
  if base is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if base is int and isinstance(value, bool):
    raise ValueError(f'TrainerConfig.{key} must be int, got bool {value!r}')
  if not isinstance(value, base):
    raise ValueError(f'TrainerConfig.{key} must be {base.__name__}'
                     f'{" or null" if optional else ""}, got {type(value).__name__} {value!r}')
  return value
