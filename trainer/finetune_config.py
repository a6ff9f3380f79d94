"""The config sections of efficient fine-tuning: `train.lora` and `train.freeze` (no TensorFlow).

Both train a small part of a pretrained backbone (a preset, a Hugging Face checkpoint or a
`base_model`); trainer/adapters.py applies them. Measured on all-MiniLM-L6-v2 with the demo's
Rotten Tomatoes snippets (bench/finetune_bench.py, README "Efficient fine-tuning").
"""

import dataclasses
import re

from tfxlm import typed_config
from tfxlm.typed_config import NON_NEGATIVE, POSITIVE

# keras-hub's names of the projections inside BertBackbone's and GPT2Backbone's transformer
# layers (`Backbone.default_lora_layer_names()` returns the first two of them).
ATTENTION_LAYERS = ('query', 'value')
ALL_ATTENTION_LAYERS = ('query', 'key', 'value', 'attention_output')
FEED_FORWARD_LAYERS = ('feedforward_intermediate_dense', 'feedforward_output_dense')
# keras-hub's names of the layers with weights in the backbones the Trainer fine-tunes
# (contract.TASK_BACKBONES), known before a model is built: those that take LoRA adapters
# (dense projections), the others, and the transformer layers (`transformer_layer_<i>`).
# tests/trainer/test_adapters.py checks them against built backbones.
# BertBackbone's [CLS] pooler: read by the classify head with cls pooling only.
POOLER = 'pooled_dense'
LORA_LAYERS = {
  'BertBackbone': (*ALL_ATTENTION_LAYERS, *FEED_FORWARD_LAYERS, POOLER),
  'GPT2Backbone': (*ALL_ATTENTION_LAYERS, *FEED_FORWARD_LAYERS),
}
OTHER_LAYERS = {
  'BertBackbone': (
    'token_embedding',
    'position_embedding',
    'segment_embedding',
    'embeddings_layer_norm',
    'self_attention_layer',
    'self_attention_layer_norm',
    'feedforward_layer_norm',
  ),
  'GPT2Backbone': (
    'token_embedding',
    'position_embedding',
    'layer_norm',
    'self_attention',
    'self_attention_layer_norm',
    'feedforward_layer_norm',
  ),
}
_TRANSFORMER_LAYER = re.compile(r'transformer_layer_(\d+)')
# The largest LoRA scale (alpha / rank) taken. A step moves A and B by about the learning rate
# whatever the scale (Adam), so it moves the merged kernel about `scale` times as far as at
# scale 1: the usual alpha of rank to 2 x rank gives 1-2, and far past that a fine-tuning
# learning rate diverges (alpha 1e30 at rank 8: a NaN loss from the first steps). 16 leaves room
# for alpha 16 at rank 1.
MAX_LORA_SCALE = 16.0


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters (LoRA) through keras-hub's `Backbone.enable_lora`.

  Every backbone weight is frozen; each target layer learns `kernel + alpha / rank * A @ B` with
  A (inputs x rank) and B (rank x outputs), B starting at zero. The task head (classifier,
  masked-LM head) is trained fully. The export merges A @ B into the kernels (the SavedModel is
  that of a fully fine-tuned model) and writes the adapter alone beside it
  (`assets.extra/lora/`, keras-hub's `.lora.h5`).

  The demo's recipe (bench/finetune_bench.py, README "Efficient fine-tuning"): rank 8, alpha 16
  on query and value, learning_rate 2e-3 for 0.9x the full run's steps, warmup_ratio 0.06,
  weight_decay 0.01, with `freeze: {layers: 2}` (adapters in the top four of six layers: 0.61x
  full fine-tuning's Trainer time, 0.008 below its accuracy; in all six layers at 1.5e-3 and the
  full run's steps: 0.71x and 0.005). Keras gives a
  query / value kernel (hidden, heads, head_dim) an A of (hidden, heads, rank), so rank 8 there
  is 1.96% of all-MiniLM-L6-v2's weights; the feed-forward layers take the classic
  (inputs, rank) A.

  Attributes:
    rank: Rank of the factorization (A and B have `rank` columns / rows).
    alpha: Scale numerator: the update is alpha / rank * A @ B. None takes `rank` (scale 1, as
      Keras does). alpha / rank is at most `MAX_LORA_SCALE` (16): a step moves the kernels
      about that many times as far, and far past it a fine-tuning learning rate diverges.
    target_layers: Names of the backbone's layers that get adapters (every layer of that name,
      in every transformer layer): 'query', 'key', 'value', 'attention_output',
      'feedforward_intermediate_dense', 'feedforward_output_dense'.
    train_layers: Names of backbone layers trained fully beside the adapters, e.g.
      'pooled_dense' (BERT's [CLS] pooler, part of the classify head with cls pooling; with
      mean pooling or mlm it is unused, and refused). They are written beside the adapter.
    train_layer_norms: Also train the backbone's LayerNorm scales and offsets fully (a few
      thousand weights). They are then written beside the adapter, which alone no longer
      reproduces the model on the base checkpoint.
  """

  rank: int = 8
  alpha: float | None = None
  target_layers: tuple[str, ...] = ATTENTION_LAYERS
  train_layers: tuple[str, ...] = ()
  train_layer_norms: bool = False

  def __post_init__(self):
    typed_config.check_fields(self, ranges={'rank': POSITIVE, 'alpha': POSITIVE})
    if self.scale > MAX_LORA_SCALE:
      raise typed_config.FieldError(
        'alpha',
        f'{self.alpha:g} at rank {self.rank} scales the update by alpha / rank = {self.scale:g}; '
        f'at most {MAX_LORA_SCALE:g} is taken (each step moves the kernels about that many times '
        'as far, and a larger scale diverges to a non-finite loss): give alpha at most '
        f'{MAX_LORA_SCALE * self.rank:g} (rank to 2 x rank is usual), or leave it unset (= rank)',
      )
    if not self.target_layers:
      raise typed_config.FieldError(
        'target_layers', f'name at least one layer, e.g. {list(ATTENTION_LAYERS)}'
      )
    if any(not name.strip() for name in self.target_layers):
      raise typed_config.FieldError('target_layers', 'a layer name is empty')
    # Keras' enable_lora refuses a layer twice ('lora is already enabled'), in the Trainer.
    for field in ('target_layers', 'train_layers'):
      names = getattr(self, field)
      for name in names:
        if names.count(name) > 1:
          raise typed_config.FieldError(field, f'{name!r} is listed twice')

  @property
  def scale(self) -> float:
    """alpha / rank, the factor of A @ B."""
    return (self.alpha if self.alpha is not None else self.rank) / self.rank


@dataclasses.dataclass(frozen=True)
class FreezeConfig:
  """Weights of the backbone left as they were loaded (no gradient, no optimizer state).

  Suggested optimizer (measured, see README): the full fine-tuning one (learning_rate 5e-5 to
  1e-4 on a pretrained checkpoint).

  Attributes:
    embeddings: Freeze the token, position and segment embeddings and their LayerNorm. With clm,
      whose output layer is the token embedding reversed, that output layer is frozen too.
    layers: Freeze the lowest this many transformer layers (0: none). Beside `lora` (which
      freezes the embeddings already), their adapters stay at zero as well: keras-hub's adapter
      file still holds them, and the backward pass stops at the lowest trained layer, so a
      step costs less than with adapters in every layer.
  """

  embeddings: bool = True
  layers: int = 0

  def __post_init__(self):
    typed_config.check_fields(self, ranges={'layers': NON_NEGATIVE})


def fit_problem(
  section: str,
  lora: LoraConfig | None,
  freeze: FreezeConfig | None,
  backbone: str,
  num_layers: int | None,
) -> str | None:
  """Why `lora` / `freeze` of config section `section` (e.g. 'train') cannot apply to a
  `backbone` (a class name) of `num_layers` transformer layers (None: not known before the
  model is built), naming the key, the value and what it can be; None if they fit as far as
  that is known."""
  adaptable = LORA_LAYERS.get(backbone)
  if lora is not None and adaptable:
    for name in lora.target_layers:
      if name not in adaptable:
        return (
          f'{section}.lora.target_layers: {name!r} is not a layer of {backbone} that takes LoRA '
          f'adapters; those are: {", ".join(adaptable)}'
        )
    known = sorted(adaptable + OTHER_LAYERS[backbone])
    for name in lora.train_layers:
      block = _TRANSFORMER_LAYER.fullmatch(name)
      if name in known or (block and (num_layers is None or int(block[1]) < num_layers)):
        continue
      last = f'transformer_layer_{num_layers - 1}' if num_layers else 'one per transformer layer'
      blocks = f'transformer_layer_0 to {last}'
      return (
        f'{section}.lora.train_layers: {backbone} has no layer named {name!r}; its layers with '
        f'weights: {", ".join(known)}, {blocks}'
      )
  if freeze is not None and num_layers is not None and freeze.layers > num_layers:
    return (
      f'{section}.freeze.layers: {freeze.layers} is more than the {num_layers} transformer layers '
      f'of the backbone ({backbone}); give 0 to {num_layers}'
    )
  if freeze is not None and num_layers is not None:
    return frozen_adapters_problem(section, lora, freeze, backbone, num_layers)
  return None


def frozen_adapters_problem(
  section: str, lora: LoraConfig | None, freeze: FreezeConfig, backbone: str, num_layers: int
) -> str | None:
  """Why `freeze.layers` leaves `lora` no adapter to train (every target layer sits in the
  `num_layers` transformer layers and all of them are frozen: the run would train the head
  alone and export an all-zero adapter); None if some adapter trains."""
  if lora is None or freeze.layers < num_layers or POOLER in lora.target_layers:
    return None
  fix = f'remove {section}.freeze'
  if num_layers > 1:
    fix = f'give {"1" if num_layers == 2 else f"1 to {num_layers - 1}"}, or {fix}'
  return (
    f'{section}.freeze.layers: {freeze.layers} freezes every layer LoRA adapts (the '
    f'{num_layers} transformer layers of {backbone}): no adapter would train; {fix}'
  )
