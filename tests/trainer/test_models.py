"""Backbones and heads from the config; presets from a local folder; named warm starts."""

import keras
import numpy as np
import pytest

from trainer import models
from trainer.config import TrainerConfig

VOCAB = 50


def _config(task, **overrides):
  values = dict(
    task=task, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32, seq_len=16
  )
  values.update(overrides)
  return TrainerConfig(**values)


def _inputs(batch=3, seq_len=16):
  ids = np.random.default_rng(0).integers(5, VOCAB, size=(batch, seq_len)).astype('int32')
  return {models.TOKEN_IDS: ids, models.PADDING_MASK: np.ones_like(ids)}


@pytest.mark.parametrize(
  'task, family, shape',
  [
    ('mlm', 'BertBackbone', (3, 3, VOCAB)),
    ('clm', 'GPT2Backbone', (3, 16, VOCAB)),
    ('classify', 'BertBackbone', (3, 4)),
  ],
)
def test_task_models_output_float32_logits_even_under_mixed_precision(task, family, shape):
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    backbone = models.build_backbone(_config(task), VOCAB)
    model = models.build_model(task, backbone, num_classes=4, max_predictions=3)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  assert type(backbone).__name__ == family
  assert backbone.vocabulary_size == VOCAB
  assert backbone.compute_dtype == 'bfloat16'
  x = _inputs()
  if task == 'mlm':
    x[models.MASK_POSITIONS] = np.array([[1, 2, 3]] * 3, 'int32')
  logits = model(x)
  assert tuple(logits.shape) == shape
  assert logits.dtype == 'float32'


def test_sizes_come_from_the_config():
  backbone = models.build_backbone(_config('mlm', num_layers=2, hidden_dim=24, num_heads=3), VOCAB)
  assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (2, 24, 3)


@pytest.mark.parametrize('num_classes', [None, 0, 1])
def test_classify_needs_two_classes_and_says_what_to_do(num_classes):
  with pytest.raises(ValueError, match="at least 2 classes.*'train' split.*add examples of other"):
    models.build_model(
      'classify', models.build_backbone(_config('classify'), VOCAB), num_classes=num_classes
    )


def test_backbone_from_a_local_preset(tmp_path):
  original = models.build_backbone(_config('clm'), VOCAB)
  original.save_to_preset(str(tmp_path / 'preset'))
  loaded = models.build_backbone(_config('clm', preset=str(tmp_path / 'preset')), VOCAB)
  for a, b in zip(original.weights, loaded.weights):
    np.testing.assert_array_equal(np.array(a), np.array(b))
  with pytest.raises(ValueError, match='vocabulary size 50, the token vocabulary has 60'):
    models.build_backbone(_config('clm', preset=str(tmp_path / 'preset')), 60)
  with pytest.raises(ValueError, match='GPT2Backbone preset has no mask token'):
    models.build_backbone(_config('mlm', preset=str(tmp_path / 'preset')), VOCAB)


def _training_outputs_vary(backbone):
  x = {**_inputs(), 'segment_ids': np.zeros((3, 16), 'int32')}
  first, second = (np.asarray(backbone(x, training=True)['sequence_output']) for _ in range(2))
  return not np.array_equal(first, second)


def test_dropout_set_in_the_config_replaces_a_presets_own(tmp_path):
  original = models.build_backbone(_config('mlm', dropout=0.3), VOCAB)
  original.save_to_preset(str(tmp_path / 'preset'))
  preset = str(tmp_path / 'preset')
  own = models.build_backbone(_config('mlm', preset=preset), VOCAB)  # unset: the preset's 0.3
  assert own.dropout == 0.3 and _training_outputs_vary(own)
  off = models.build_backbone(_config('mlm', preset=preset, dropout=0.0), VOCAB)
  assert off.dropout == 0.0 and not _training_outputs_vary(off)
  for a, b in zip(original.weights, off.weights):  # the same weights either way
    np.testing.assert_array_equal(np.array(a), np.array(b))
  # From random weights, unset is 0.1.
  assert models.build_backbone(_config('mlm'), VOCAB).dropout == 0.1
  assert TrainerConfig(task='classify').head_dropout() == 0.1
  assert TrainerConfig(task='classify', dropout=0.0).head_dropout() == 0.0


def test_dropout_for_a_backbone_without_that_setting_is_refused(tmp_path, monkeypatch):
  import keras_hub

  from trainer import pretrained

  models.build_backbone(_config('mlm'), VOCAB).save_to_preset(str(tmp_path / 'preset'))

  class NoDropoutBackbone(keras_hub.models.Backbone):
    def __init__(self, vocabulary_size, **kwargs):
      super().__init__(**kwargs)

  monkeypatch.setattr(
    pretrained, 'backbone_class', lambda preset, tokenizer=True: 'NoDropoutBackbone'
  )
  monkeypatch.setattr(keras_hub.models, 'NoDropoutBackbone', NoDropoutBackbone, raising=False)
  with pytest.raises(ValueError, match=r'train.dropout: .*\(NoDropoutBackbone\) has no dropout'):
    pretrained.load_backbone(str(tmp_path / 'preset'), dropout=0.0)


def test_warm_start_matches_by_name_and_fails_loudly(tmp_path):
  source = models.build_backbone(_config('mlm'), VOCAB)
  path = str(tmp_path / 'preset')
  source.save_to_preset(path)
  assert models.saved_positions(path) == source.max_sequence_length
  target = models.build_backbone(_config('mlm'), VOCAB)
  assert models.load_backbone_weights(target, path) == len(target.weights)
  for a, b in zip(source.weights, target.weights):
    np.testing.assert_array_equal(np.array(a), np.array(b))
  with pytest.raises(ValueError, match='shape mismatches'):
    models.load_backbone_weights(models.build_backbone(_config('mlm'), VOCAB + 1), path)
  with pytest.raises(ValueError, match='missing weights'):
    models.load_backbone_weights(models.build_backbone(_config('mlm', num_layers=2), VOCAB), path)
  with pytest.raises(ValueError, match='no backbone weights'):
    models.load_backbone_weights(target, str(tmp_path / 'absent'))
