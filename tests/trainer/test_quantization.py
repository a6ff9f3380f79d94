"""Quantized export: each mode serves through the float export's signatures, close to it."""

import gc
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import adapters, quantization
from trainer import task as task_lib
from trainer.compression_config import ExportConfig
from trainer.config import TrainerConfig

# Largest difference of a class probability from the float export's, per mode, on a tiny
# classifier with random weights (int8 rounds each weight to 1/127 of its channel's largest;
# int4 to 1/7, and quantizes no activations either).
TOLERANCE = {contract.INT8_WEIGHTS: 0.01, contract.INT8: 0.03, contract.INT4: 0.08}


def _saved_model_bytes(folder):
  """Bytes of what a server loads: everything but assets.extra."""
  total = 0
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if d != contract.EXTRA_DIR]
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


@pytest.fixture(scope='module')
def float_export(classify_data, tmp_path_factory):
  # Wide enough that the kernels, not the Transform graph, make the size.
  config = TrainerConfig.from_dict(
    trainer_data.tiny_config(contract.CLASSIFY, hidden_dim=64, intermediate_dim=256)
  )
  tft_output = tft.TFTransformOutput(classify_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  model = task_lib.build_task_model(config, vocabularies)
  folder = str(tmp_path_factory.mktemp('float'))
  task_lib._export(model, tft_output, config, vocabularies, folder)
  return model, tft_output, config, vocabularies, folder


def test_a_float_export_keeps_one_copy_of_the_backbone_weights_beside_its_variables(float_export):
  # The keras-hub preset in assets.extra is the copy warm starts and the distill stage's teacher
  # read; a second one (the .npz it used to hold as well) doubled what a pushed version weighs.
  folder = float_export[-1]
  extras = _bytes(os.path.join(folder, contract.EXTRA_DIR))
  variables = _bytes(os.path.join(folder, 'variables'))
  assert extras < 1.5 * variables, (extras, variables)


def _bytes(folder):
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(folder) for f in files)


TEXTS = tf.constant(['good film', 'the awful plot of a movie', 'nice', 'bad bad sad ending'])


@pytest.mark.parametrize('mode', [contract.INT8_WEIGHTS, contract.INT8, contract.INT4])
def test_quantized_export_answers_like_the_float_one_with_tensorflow_alone(
  mode, float_export, tmp_path
):
  model, tft_output, config, vocabularies, float_dir = float_export
  copy = task_lib.build_task_model(config, vocabularies)
  copy.set_weights(model.get_weights())
  task_lib._export(copy, tft_output, config, vocabularies, str(tmp_path), ExportConfig(mode))
  quantized = tf.saved_model.load(str(tmp_path)).signatures
  reference = tf.saved_model.load(float_dir).signatures
  assert set(quantized) == set(reference)
  got = quantized[contract.PREDICT_TEXT](text=TEXTS)
  want = reference[contract.PREDICT_TEXT](text=TEXTS)
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].shape == want[key].shape, key
  difference = np.abs(got[contract.PROBABILITIES].numpy() - want[contract.PROBABILITIES].numpy())
  assert difference.max() <= TOLERANCE[mode], difference
  # The quantized weights are what is saved, not the float ones beside them.
  assert not os.path.exists(os.path.join(str(tmp_path), contract.EXTRA_DIR, contract.PRESET_DIR))
  # The graph (Transform, signatures) is most of so small a model: the kernels shrink still.
  assert _saved_model_bytes(str(tmp_path)) < 0.85 * _saved_model_bytes(float_dir)
  examples = tf.constant(
    [
      tf.train.Example(
        features=tf.train.Features(
          feature={contract.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t]))}
        )
      ).SerializeToString()
      for t in TEXTS.numpy()
    ]
  )
  by_example = quantized[contract.SERVING_DEFAULT](examples=examples)
  np.testing.assert_array_equal(by_example[contract.LABELS], got[contract.LABELS])
  # The labels are the argmax of the probabilities, and the float export's wherever its top
  # two probabilities are further apart than the quantization can move them (with random
  # weights some rows sit near 0.5 and may flip).
  probabilities = got[contract.PROBABILITIES].numpy()
  np.testing.assert_array_equal(got[contract.LABEL_IDS], probabilities.argmax(axis=-1))
  top2 = np.sort(want[contract.PROBABILITIES].numpy(), axis=-1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 2 * TOLERANCE[mode]
  np.testing.assert_array_equal(
    got[contract.LABEL_IDS].numpy()[clear], want[contract.LABEL_IDS].numpy()[clear]
  )


def test_a_lora_model_quantized_keeps_its_float_adapter_beside_the_export(float_export, tmp_path):
  _, tft_output, _, vocabularies, _ = float_export
  config = TrainerConfig.from_dict(
    trainer_data.tiny_config(
      contract.CLASSIFY, hidden_dim=64, intermediate_dim=256, lora={'rank': 2}
    )
  )
  base = task_lib.build_task_model(config, vocabularies)
  trained = task_lib.build_task_model(config, vocabularies)
  trained.set_weights(base.get_weights())
  adapters.apply(trained, config, pretrained=True)
  rng = np.random.default_rng(0)
  for variable in trained.weights:
    if adapters.is_lora_variable(variable):  # as if trained: B away from its zeros
      variable.assign(rng.normal(0, 0.1, variable.shape).astype('float32'))
  task_lib._export(
    trained, tft_output, config, vocabularies, str(tmp_path), ExportConfig('int8_weights')
  )
  # The adapter on its base is the trained model, in float32, whatever the export rounded.
  adapted = task_lib.build_task_model(config, vocabularies)
  adapted.set_weights(base.get_weights())
  adapters.load_adapter(
    adapted, os.path.join(str(tmp_path), contract.EXTRA_DIR, adapters.ADAPTER_DIR)
  )
  for got, want in zip(adapters.merged_weights(adapted), adapters.merged_weights(trained)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert tf.saved_model.load(str(tmp_path)).signatures[contract.PREDICT_TEXT](text=TEXTS)


def test_quantize_refuses_other_tasks(clm_data, tmp_path):
  config = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLM))
  tft_output = tft.TFTransformOutput(clm_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLM)
  model = task_lib.build_task_model(config, vocabularies)
  with pytest.raises(ValueError, match='export.quantize: int8_weights applies to classify'):
    task_lib._export(
      model, tft_output, config, vocabularies, str(tmp_path), ExportConfig('int8_weights')
    )


@pytest.mark.parametrize('mode', [contract.INT8_WEIGHTS, contract.INT8, contract.INT4])
def test_layers_without_weights_to_quantize_are_one_log_line_not_a_warning_each(
  mode, recwarn, caplog
):
  inputs = keras.Input([8])
  hidden = keras.layers.LayerNormalization()(keras.layers.Dense(4)(inputs))
  model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dropout(0.1)(hidden)))
  with caplog.at_level('INFO'):
    quantization.quantize_model(model, mode)
  assert not [w for w in recwarn if 'quantize' in str(w.message)], [str(w.message) for w in recwarn]
  lines = [r.getMessage() for r in caplog.records if 'stay as they are' in r.getMessage()]
  assert len(lines) == 1, caplog.text
  assert all(name in lines[0] for name in ('Dropout', 'InputLayer', 'LayerNormalization'))
  assert 'Dense,' in lines[0] and mode in lines[0]
  assert model.layers[1].quantization_mode == mode.split('_')[0]  # int8_weights: Keras' int8


def test_quantizing_walks_only_new_objects_and_leaves_the_collector_as_it_was(unfrozen_gc):
  """Keras collects garbage once per kernel `quantize` drops: those collections run with the
  earlier objects frozen, one full collection follows, and a caller's own freeze stays."""
  _check_quantizing_freezes_only_inside()


def _check_quantizing_freezes_only_inside():

  def model():
    inputs = keras.Input([8])
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))

  frozen_during = []

  def seen(phase, info):
    if phase == 'start' and info['generation'] == 2:
      frozen_during.append(gc.get_freeze_count())

  before = gc.get_freeze_count()
  gc.callbacks.append(seen)
  try:
    quantization.quantize_model(model(), contract.INT8_WEIGHTS)
  finally:
    gc.callbacks.remove(seen)
  assert len(frozen_during) >= 3  # one per Dense kernel dropped, then the final one
  assert all(count > 0 for count in frozen_during[:-1]), frozen_during
  assert gc.get_freeze_count() == before
  gc.freeze()  # a caller's own freeze: the collections inside walk only what is new there too
  try:
    kept = gc.get_freeze_count()
    del frozen_during[:]
    gc.callbacks.append(seen)
    try:
      quantization.quantize_model(model(), contract.INT8)
    finally:
      gc.callbacks.remove(seen)
    # None walks the caller's frozen objects: not Keras' per kernel, nor the one on entry
    # (what the caller left unfrozen) or on exit (what the step made).
    assert all(count >= kept for count in frozen_during), (kept, frozen_during)
    assert gc.get_freeze_count() >= kept
  finally:
    gc.unfreeze()
