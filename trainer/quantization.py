"""Quantized export: Keras' own quantizers applied to the trained classifier, which then serves
with its weights as graph constants.

`Model.quantize` swaps each Dense / EinsumDense / Embedding kernel for an int8 (or packed int4)
variable and a per-channel scale; every call then casts the kernel back to float and rescales
(keras/src/layers/core/dense.py `_int8_call`). Read from variables, that cast runs on every
request: at batch 1 they slowed a stack of MiniLM-shaped matrix products by half. Here the
quantized model is frozen into one function whose kernels and scales are constants
(TensorFlow's `convert_variables_to_constants_v2`); TensorFlow's graph optimizer (Grappler's
constant folding) then computes each float kernel once, when the serving function is first
instantiated (kernels up to Grappler's 10 MiB constant limit: every kernel of a BERT base), and
each request runs float matrix products. On disk the SavedModel holds the
int8 (or int4) constants only; in memory the folded float kernels take the float model's room.
Token embeddings stay int8 in memory: their rows are gathered, then rescaled. `int8` also
quantizes each Dense layer's input on every call (no folding helps there: it is slower than
float on CPU); `int4` unpacks its nibbles in the folded part. The signatures, inputs and outputs
are the float export's; only TensorFlow ops, so TF Serving and the project's server load it.
"""

import json
import logging
import os
import re
import warnings

import keras
import tensorflow as tf

# TensorFlow's freezing of a function's variables into constants (the TFLite converter's
# first step); module path as of TF 2.21.
from tensorflow.python.framework import convert_to_constants

from tfxlm import collector, contract
from trainer import export
from trainer.compression_config import ExportConfig
from trainer.config import TrainerConfig
from trainer.models import PADDING_MASK, TOKEN_IDS

# Keras' warning for a layer without weights to quantize (keras/src/models/model.py).
_NOT_QUANTIZABLE = re.compile(r'Layer (\w+) does not have a `quantize` method implemented')


def quantize_model(model: keras.Model, mode: str) -> keras.Model:
  """Quantizes `model` in place with Keras' quantizers for `mode` (contract.QUANTIZE_MODES).

  Raises:
    ValueError: for an unknown mode.
  """
  if mode == contract.QUANTIZE_NONE:
    return model
  if mode not in (contract.INT8_WEIGHTS, contract.INT8, contract.INT4):
    raise ValueError(
      f'export.quantize: {mode!r} is not one of {", ".join(contract.QUANTIZE_MODES)}'
    )
  # Keras runs a full `gc.collect()` each time a layer drops a variable attribute
  # (keras/src/layers/layer.py `__delattr__`), and `quantize` drops every kernel: one walk of
  # the whole process (about 0.4 s of CPU each in a test worker) per quantized layer, most of a
  # small model's quantized export, unless the objects from before are frozen meanwhile. One
  # full collection after it frees the dropped kernels as Keras' would have.
  with collector.new_objects_only(collect_after=True), warnings.catch_warnings(record=True) as seen:
    # Keras warns once per kind of layer that has nothing to quantize (LayerNormalization,
    # Softmax, Dropout, ...), as a UserWarning that reads like a failure: one line below instead.
    warnings.simplefilter('always')
    if mode == contract.INT8_WEIGHTS:
      # Keras 3.15 spells weight-only int8 as int8 without an activation quantizer.
      model.quantize(config=keras.quantizers.Int8QuantizationConfig(activation_quantizer=None))
    else:
      model.quantize(mode)
  kept_float = set()
  for warning in seen:
    match = _NOT_QUANTIZABLE.search(str(warning.message))
    if match:
      kept_float.add(match.group(1))
    else:  # anything else Keras says stays as loud as it was
      warnings.warn_explicit(
        warning.message, warning.category, warning.filename, warning.lineno, source=warning.source
      )
  if kept_float:
    logging.info(
      'export.quantize %s: the Dense, EinsumDense and Embedding kernels are quantized; layers '
      'without weights to quantize stay as they are (%s)',
      mode,
      ', '.join(sorted(kept_float)),
    )
  return model


def frozen_classifier_call(model: keras.Model):
  """`model`'s inference call with every weight a graph constant, as
  `call({token_ids, padding_mask}, training=False) -> logits` for `export.ExportModule`."""
  spec = tf.TensorSpec([None, None], tf.int32)
  traced = tf.function(
    lambda token_ids, padding_mask: model(
      {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}, training=False
    )
  ).get_concrete_function(spec, spec)
  frozen = convert_to_constants.convert_variables_to_constants_v2(traced)

  def call(inputs, training=False):
    del training  # an inference graph
    outputs = frozen(tf.cast(inputs[TOKEN_IDS], tf.int32), tf.cast(inputs[PADDING_MASK], tf.int32))
    # The frozen function returns its outputs as a flat list: give them the model's structure.
    return tf.nest.pack_sequence_as(traced.structured_outputs, tf.nest.flatten(outputs))

  return call


def export_quantized(
  model: keras.Model,
  mode: str,
  tft_output,
  config: TrainerConfig,
  vocabularies,
  export_dir: str,
) -> str:
  """Quantizes the float classifier `model` (in place) and exports it with the usual signatures,
  `assets.extra/trainer_config.json` and `assets.extra/export_config.json`.

  No float backbone weights or keras-hub preset are written (they would outweigh the model), so
  the export is no warm start and no distillation teacher.

  Raises:
    ValueError: if the task is not classify.
  """
  if config.task != contract.CLASSIFY:
    raise ValueError(
      f'export.quantize: {mode} applies to classify models; this one is {config.task} '
      '(set export.quantize: none)'
    )
  quantize_model(model, mode)
  export.export_saved_model(
    model,
    tft_output,
    config,
    vocabularies.tokens,
    vocabularies.labels,
    export_dir,
    kind=vocabularies.kind,
    special=vocabularies.special,
    model_call=frozen_classifier_call(model),
  )
  extra = os.path.join(export_dir, contract.EXTRA_DIR)
  tf.io.gfile.makedirs(extra)
  with tf.io.gfile.GFile(os.path.join(extra, contract.TRAINER_CONFIG_FILE), 'w') as f:
    f.write(config.to_json())
  with tf.io.gfile.GFile(os.path.join(extra, contract.EXPORT_CONFIG_FILE), 'w') as f:
    f.write(json.dumps(ExportConfig(quantize=mode).to_dict(), indent=2))
  return export_dir
