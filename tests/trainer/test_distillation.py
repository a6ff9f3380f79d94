"""Distillation: the augmentations keep a row's frame, and the student learns the teacher's
answers, not the labels'."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import distillation
from trainer import task as task_lib
from trainer.compression_config import DistillConfig
from trainer.config import TrainerConfig
from trainer.vocabulary import LEARNED_SPECIAL_TOKENS as SPECIAL

CLS, SEP, PAD, MASK = SPECIAL.start, SPECIAL.end, SPECIAL.pad, SPECIAL.mask


def _batch():
  rows = [[CLS, *range(10, 10 + n), SEP] + [PAD] * (11 - n) for n in (3, 9, 6, 1)]
  return tf.constant(rows, tf.int32)


def test_augment_masks_replaces_and_samples_ngrams_inside_the_frame():
  ids = _batch()
  seed = tf.constant([1, 2], tf.int32)
  every = DistillConfig(augment_rate=1.0, token_mask_rate=1.0, ngram_rate=0.0)
  masked, rows = distillation.augment(ids, SPECIAL, every, seed)
  content = ids.numpy() >= 10
  assert rows.numpy().all()
  assert (masked.numpy()[content] == MASK).all()
  assert (masked.numpy()[~content] == ids.numpy()[~content]).all()

  replace = DistillConfig(augment_rate=1.0, token_mask_rate=0.0, token_replace_rate=1.0)
  replaced, _ = distillation.augment(
    ids, SPECIAL, dataclasses.replace(replace, ngram_rate=0.0), seed
  )
  assert set(replaced.numpy()[content]) <= set(ids.numpy()[content])
  assert (replaced.numpy()[content] != ids.numpy()[content]).any()

  ngram = DistillConfig(augment_rate=1.0, token_mask_rate=0.0, ngram_rate=1.0, ngram_max=3)
  sampled, _ = distillation.augment(ids, SPECIAL, ngram, seed)
  for before, after in zip(ids.numpy(), sampled.numpy()):
    words = [t for t in after if t >= 10]
    assert after[0] == CLS and after[len(words) + 1] == SEP
    assert 1 <= len(words) <= 3
    original = [t for t in before if t >= 10]
    start = original.index(words[0])
    assert original[start : start + len(words)] == words  # a contiguous span

  none = DistillConfig(augment_rate=0.0)
  same, rows = distillation.augment(ids, SPECIAL, none, seed)
  assert not rows.numpy().any()
  np.testing.assert_array_equal(same, ids)


def _predict(folder, texts):
  served = tf.saved_model.load(folder).signatures[contract.PREDICT_TEXT]
  return served(text=tf.constant(texts))[contract.LABEL_IDS].numpy()


def test_distilled_student_follows_a_teacher_that_contradicts_the_labels(classify_data, tmp_path):
  # The teacher learns the word rule, then its head is negated: it answers the opposite of
  # every label. A student that follows it has learned from the teacher, not the labels.
  teacher_cfg = trainer_data.tiny_config(contract.CLASSIFY, train_steps=40)
  task_lib.run_fn(trainer_data.fn_args(classify_data, str(tmp_path / 't'), teacher_cfg))
  trained = str(tmp_path / 't' / 'serving')
  config = TrainerConfig.from_dict(teacher_cfg)
  tft_output = tft.TFTransformOutput(classify_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  # A teacher of another vocabulary or other labels is refused, even at the same sizes.
  tokens = list(vocabularies.tokens)
  tokens[20], tokens[21] = tokens[21], tokens[20]
  with pytest.raises(ValueError, match=r'another vocabulary .*\(2 of \d+ ids differ; id 20 is'):
    distillation.load_teacher(trained, dataclasses.replace(vocabularies, tokens=tokens))
  with pytest.raises(ValueError, match=r"predicts the labels \['neg', 'pos'\] \(2\), the student"):
    distillation.load_teacher(
      trained, dataclasses.replace(vocabularies, labels=['neg', 'neutral', 'pos'])
    )
  teacher = distillation.load_teacher(trained, vocabularies)
  head = teacher.get_layer('classifier')
  head.set_weights([-w for w in head.get_weights()])
  teacher_dir = str(tmp_path / 'teacher')
  task_lib._export(teacher, tft_output, config, vocabularies, teacher_dir)

  texts = [text for text, _ in trainer_data.labeled_texts(200, 9)]
  labels = np.array([label == 'pos' for _, label in trainer_data.labeled_texts(200, 9)])
  teacher_answers = _predict(teacher_dir, texts)
  pos = vocabularies.labels.index('pos')
  # The negated teacher contradicts the labels.
  assert np.mean((teacher_answers == pos) != labels) > 0.8

  student_cfg = trainer_data.tiny_config(
    contract.CLASSIFY, hidden_dim=16, intermediate_dim=32, train_steps=60, seed=5
  )
  args = trainer_data.fn_args(
    classify_data, str(tmp_path / 's'), student_cfg, base_model=teacher_dir
  )
  args.custom_config[contract.DISTILL_CONFIG_KEY] = DistillConfig(soft_weight=1.0).to_dict()
  distillation.run_fn(args)
  student_answers = _predict(str(tmp_path / 's' / 'serving'), texts)
  agreement = np.mean(student_answers == teacher_answers)
  assert agreement > 0.8, agreement


def test_a_quantized_teacher_is_refused(classify_data, tmp_path):
  tft_output = tft.TFTransformOutput(classify_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  folder = tmp_path / 'quantized'
  os.makedirs(folder / contract.EXTRA_DIR)
  try:
    distillation.load_teacher(str(folder), vocabularies)
  except ValueError as e:
    assert 'export.quantize: none' in str(e)
  else:
    raise AssertionError('a teacher without float weights was accepted')


def _models(classify_data, teacher_width, student_width):
  tft_output = tft.TFTransformOutput(classify_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  build = lambda width: task_lib.build_task_model(
    TrainerConfig.from_dict(
      trainer_data.tiny_config(contract.CLASSIFY, hidden_dim=width, intermediate_dim=2 * width)
    ),
    vocabularies,
  )
  return build(teacher_width), build(student_width)


def test_student_embeddings_start_as_the_teachers_principal_directions(classify_data):
  teacher, student = _models(classify_data, 32, 8)
  rng = np.random.default_rng(0)
  tokens = teacher.backbone.token_embedding.embeddings
  # Embeddings of rank 4 plus noise: 8 principal directions keep nearly all of them.
  structured = rng.normal(size=(tokens.shape[0], 4)) @ rng.normal(size=(4, 32))
  tokens.assign(structured + 0.01 * rng.normal(size=tokens.shape))
  kept = distillation.init_embeddings_from_teacher(student, teacher)
  assert kept > 0.99
  got = np.asarray(student.backbone.token_embedding.embeddings)
  centred = np.asarray(tokens) - np.asarray(tokens).mean(axis=0)
  # The student's tokens are the teacher's up to a rotation and a scale: same dot products.
  np.testing.assert_allclose(
    np.corrcoef((got @ got.T).ravel(), (centred @ centred.T).ravel())[0, 1], 1.0, atol=1e-3
  )
  # Positions go through the same map.
  _, directions = distillation.embedding_projection(np.asarray(tokens), 8)
  positions = np.asarray(teacher.backbone.position_embedding.position_embeddings)
  scale = np.std(got) / np.std(centred @ directions)
  np.testing.assert_allclose(
    student.backbone.position_embedding.position_embeddings,
    positions[:16] @ directions * scale,
    rtol=1e-4,
    atol=1e-6,
  )


def test_a_student_wider_than_its_teacher_cannot_take_its_embeddings(classify_data):
  teacher, student = _models(classify_data, 8, 16)
  with pytest.raises(ValueError, match='init_embeddings: false'):
    distillation.init_embeddings_from_teacher(student, teacher)
