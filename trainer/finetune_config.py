"""The config sections of efficient fine-tuning: `train.lora` and `train.freeze` (no TensorFlow).

Both train a small part of a pretrained backbone (a preset, a Hugging Face checkpoint or a
`base_model`); trainer/adapters.py applies them. Measured on all-MiniLM-L6-v2 with the demo's
Rotten Tomatoes snippets (bench/finetune_bench.py, README "Efficient fine-tuning").
"""

import dataclasses

from tfxlm import typed_config
from tfxlm.typed_config import NON_NEGATIVE, POSITIVE

# keras-hub's names of the projections inside BertBackbone's and GPT2Backbone's transformer
# layers (`Backbone.default_lora_layer_names()` returns the first two of them).
ATTENTION_LAYERS = ('query', 'value')
ALL_ATTENTION_LAYERS = ('query', 'key', 'value', 'attention_output')
FEED_FORWARD_LAYERS = ('feedforward_intermediate_dense', 'feedforward_output_dense')


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
      Keras does).
    target_layers: Names of the backbone's layers that get adapters (every layer of that name,
      in every transformer layer): 'query', 'key', 'value', 'attention_output',
      'feedforward_intermediate_dense', 'feedforward_output_dense'.
    train_layers: Names of backbone layers trained fully beside the adapters, e.g.
      'pooled_dense' (BERT's [CLS] pooler, part of the classify head with cls pooling). They
      are written beside the adapter.
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
    if not self.target_layers:
      raise typed_config.FieldError(
        'target_layers', f'name at least one layer, e.g. {list(ATTENTION_LAYERS)}'
      )
    if any(not name.strip() for name in self.target_layers):
      raise typed_config.FieldError('target_layers', 'a layer name is empty')

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
