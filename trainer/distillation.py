"""The distill stage's `run_fn`: a student classifier trained on a teacher's soft labels.

The teacher is the Trainer's `base_model`: a float classify model this pipeline exported (the
`train` stage's model artifact, or a pushed version folder), rebuilt in Keras from its
`assets.extra` (config and keras-hub preset) and its SavedModel's variables. The student reads
the same Transform output, so both see the same token ids.

The transfer set is made on the fly, in the training step: each batch keeps its labeled rows and
replaces `augment_rate` of them by augmented copies (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks": tokens masked, tokens replaced by another
row's, an n-gram sampled), different at every step, and the teacher labels every row there and
then. So the student sees `train_steps x batch` distinct examples, many times the labeled data,
with no transfer set written to disk, and teacher and student always read the very same ids.
Labeling in a Beam step instead would fix the copies once and store them; the cost is the same
teacher forward pass per example either way.

Evaluation, blessing and the export are the ordinary Trainer's: eval metrics score the labels;
the training log's `accuracy` is the student's agreement with the teacher.
"""

import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from tfxlm import contract
from trainer import export, inputs, task, training
from trainer.compression_config import FLOAT_COPY_DIR, DistillConfig
from trainer.config import TrainerConfig
from trainer.vocabulary import SpecialTokens

# Salts of the augmentation's random draws, so each draw has its own stream.
_ROWS, _MASK, _REPLACE, _PICK, _NGRAM, _NGRAM_LEN, _NGRAM_START = range(7)


def augment(
  ids: tf.Tensor, special: SpecialTokens, options: DistillConfig, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """Augmented copies of some rows of a batch of framed token ids ([start] tokens [end] pad).

  Args:
    ids: (batch, seq_len) int32 token ids.
    special: The vocabulary's special tokens.
    options: The rates (`DistillConfig`).
    seed: (2,) int32, the stateless seed of this call.

  Returns:
    The new ids (same shape) and (batch,) bool: which rows were augmented.
  """
  shape = tf.shape(ids)
  draw = lambda salt, s: tf.random.stateless_uniform(s, seed=seed + [0, salt * 7919])
  rows = draw(_ROWS, shape[:1]) < options.augment_rate  # (batch,)
  content = (ids != special.start) & (ids != special.end) & (ids != special.pad)
  chosen = content & rows[:, tf.newaxis]
  out = ids
  if special.mask is not None:
    masked = chosen & (draw(_MASK, shape) < options.token_mask_rate)
    out = tf.where(masked, tf.cast(special.mask, ids.dtype), out)
  else:
    masked = tf.zeros_like(chosen)
  # Replacement tokens come from the batch's own content: drawn by the data's token frequencies.
  pool = tf.concat([tf.boolean_mask(ids, content), tf.cast([special.pad], ids.dtype)], axis=0)
  pick = tf.cast(
    draw(_PICK, shape) * tf.cast(tf.maximum(tf.size(pool) - 1, 1), tf.float32), tf.int32
  )
  replaced = chosen & ~masked & (draw(_REPLACE, shape) < options.token_replace_rate)
  replaced &= tf.size(pool) > 1
  out = tf.where(replaced, tf.gather(pool, pick), out)
  # n-gram sampling: keep tokens s+1 .. s+n of the content, framed again.
  length = tf.reduce_sum(tf.cast(content, tf.int32), axis=1)  # (batch,)
  n = 1 + tf.cast(draw(_NGRAM_LEN, shape[:1]) * options.ngram_max, tf.int32)
  n = tf.minimum(n, tf.maximum(length, 1))
  start = tf.cast(draw(_NGRAM_START, shape[:1]) * tf.cast(length - n + 1, tf.float32), tf.int32)
  start = tf.minimum(start, tf.maximum(length - n, 0))
  j = tf.range(shape[1])[tf.newaxis, :]  # (1, seq_len)
  source = tf.clip_by_value(start[:, tf.newaxis] + j, 0, shape[1] - 1)
  span = tf.gather(out, source, batch_dims=1)
  n_col = n[:, tf.newaxis]
  ngram = tf.where(
    j == 0,
    tf.cast(special.start, ids.dtype),
    tf.where(
      j <= n_col,
      span,
      tf.where(j == n_col + 1, tf.cast(special.end, ids.dtype), tf.cast(special.pad, ids.dtype)),
    ),
  )
  sampled = rows & (draw(_NGRAM, shape[:1]) < options.ngram_rate) & (length > 0)
  out = tf.where(sampled[:, tf.newaxis], ngram, out)
  return out, rows


def distillation_losses(
  student_logits: tf.Tensor,
  teacher_logits: tf.Tensor,
  labels: tf.Tensor,
  hard_weights: tf.Tensor,
  temperature: float,
  soft_weight: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Sums over a batch of (loss, rows, agreement with the teacher).

  loss per row = soft_weight * T^2 * CE(softmax(teacher / T), student / T)
                 + (1 - soft_weight) * hard_weight * CE(label, student)
  (T^2 keeps the soft gradients' scale independent of T, Hinton et al. 2015).
  """
  student_logits = tf.cast(student_logits, tf.float32)
  teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
  soft_targets = tf.nn.softmax(teacher_logits / temperature, axis=-1)
  soft = tf.nn.softmax_cross_entropy_with_logits(soft_targets, student_logits / temperature)
  hard = tf.nn.sparse_softmax_cross_entropy_with_logits(
    labels=tf.maximum(labels, 0), logits=student_logits
  )
  loss = soft_weight * temperature**2 * soft + (1.0 - soft_weight) * hard_weights * hard
  agree = tf.cast(
    tf.equal(tf.argmax(student_logits, axis=-1), tf.argmax(teacher_logits, axis=-1)), tf.float32
  )
  rows = tf.cast(tf.shape(student_logits)[0], tf.float32)
  return tf.reduce_sum(loss), rows, tf.reduce_sum(agree)


def embedding_projection(teacher_tokens: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """The teacher's token embeddings' mean and top `width` principal directions, (hidden,) and
  (hidden, width): the linear map to a narrower student that keeps the most of their variance."""
  mean = teacher_tokens.mean(axis=0)
  _, _, directions = np.linalg.svd(teacher_tokens - mean, full_matrices=False)
  return mean, directions[:width].T


def init_embeddings_from_teacher(student: keras.Model, teacher: keras.Model) -> float:
  """Sets the student's token, position and segment embeddings to the teacher's, projected onto
  the student's width by one PCA of the teacher's token embeddings (the same map for all three,
  so their sum keeps the teacher's geometry), and scaled to the student's initial spread.

  Returns:
    The fraction of the token embeddings' variance the projection keeps.

  Raises:
    ValueError: if the student is wider than the teacher or has more positions.
  """
  s, t = student.backbone, teacher.backbone
  tokens = np.asarray(t.token_embedding.embeddings)
  width = int(s.token_embedding.embeddings.shape[-1])
  if width > tokens.shape[-1]:
    raise ValueError(
      f'distill.options.init_embeddings: the student is {width} wide, the teacher '
      f'{tokens.shape[-1]}; a narrower student, or init_embeddings: false'
    )
  mean, directions = embedding_projection(tokens, width)
  projected = (tokens - mean) @ directions
  scale = float(np.std(np.asarray(s.token_embedding.embeddings)) / max(np.std(projected), 1e-12))
  s.token_embedding.embeddings.assign(projected * scale)
  positions = s.position_embedding.position_embeddings
  teacher_positions = np.asarray(t.position_embedding.position_embeddings)
  if positions.shape[0] > teacher_positions.shape[0]:
    raise ValueError(
      f'distill.options.init_embeddings: the student reads {positions.shape[0]} positions, '
      f'the teacher {teacher_positions.shape[0]}; a shorter seq_len, or init_embeddings: false'
    )
  positions.assign(teacher_positions[: positions.shape[0]] @ directions * scale)
  if hasattr(s, 'segment_embedding') and hasattr(t, 'segment_embedding'):
    s.segment_embedding.embeddings.assign(
      np.asarray(t.segment_embedding.embeddings) @ directions * scale
    )
  kept = np.square(projected).sum() / np.square(tokens - mean).sum()
  return float(kept)


class TeacherInitLoop(training.Loop):
  """The ordinary training loop on a student whose embeddings start from the teacher's
  (`options.init_embeddings`): the hard-label control of a distilled student, and the base of
  `DistillLoop`."""

  def __init__(self, *args, teacher: keras.Model, options: DistillConfig, special, **kwargs):
    super().__init__(*args, **kwargs)
    self.teacher = teacher
    self.options = options
    self.special = special
    if options.init_embeddings:
      # Before `restore`: a resumed run gets its checkpoint's weights back over these.
      kept = init_embeddings_from_teacher(self.model, teacher)
      logging.info(
        "student embeddings: the teacher's, projected to %d dims (%.0f%% of their variance)",
        self.model.backbone.token_embedding.embeddings.shape[-1],
        100 * kept,
      )


class DistillLoop(TeacherInitLoop):
  """The training loop with the distillation objective (evaluation unchanged)."""

  def train_losses(self, x, y):
    # New copies at every step, and after a resume too (the step is checkpointed).
    seed = tf.stack([tf.constant(self.config.seed, tf.int32), tf.cast(self.step, tf.int32)])
    ids, augmented = augment(x[inputs.TOKEN_IDS], self.special, self.options, seed)
    x = {
      **x,
      inputs.TOKEN_IDS: ids,
      inputs.PADDING_MASK: tf.cast(ids != self.special.pad, tf.int32),
    }
    teacher_logits = self.teacher(x, training=False)
    logits = self.model(x, training=True)
    hard_weights = y[inputs.WEIGHTS] * tf.cast(~augmented, tf.float32)
    return distillation_losses(
      logits,
      teacher_logits,
      y[inputs.LABELS],
      hard_weights,
      self.options.temperature,
      self.options.soft_weight,
    )


def _check_same_vocabularies(folder: str, vocabularies: 'task.Vocabularies') -> None:
  """The teacher's tokens and labels, from its export's assets, must be the student's: the
  same size is not enough (another checkpoint's tokens in another order, labels of other data)."""
  assets = os.path.join(folder, 'assets')
  token_file = os.path.join(assets, contract.VOCAB_FILE)
  label_file = os.path.join(assets, contract.LABEL_VOCAB_NAME)
  if tf.io.gfile.exists(label_file):
    labels = export.read_lines(label_file)
    if labels != list(vocabularies.labels):
      raise ValueError(
        f'distill: the teacher {folder} predicts the labels {_listed(labels)}, the student'
        f"'s data has {_listed(vocabularies.labels)}: distill from a teacher trained on the same"
        ' labels (the same data.label_values and schema)'
      )
  if tf.io.gfile.exists(token_file):
    tokens = export.read_lines(token_file)
    differ = [i for i, (a, b) in enumerate(zip(tokens, vocabularies.tokens)) if a != b]
    if differ:
      first = differ[0]
      raise ValueError(
        f"distill: the teacher {folder} reads another vocabulary than the student's Transform"
        f' ({len(differ)} of {len(tokens)} ids differ; id {first} is {tokens[first]!r} there,'
        f' {vocabularies.tokens[first]!r} here): teacher and student must share the vocabulary'
        ' (the same pipeline, or train.preset of the teacher)'
      )


def _listed(values, most=8) -> str:
  shown = ', '.join(repr(v) for v in values[:most])
  return f'[{shown}{", ..." if len(values) > most else ""}] ({len(values)})'


def load_teacher(base_model: str, vocabularies: 'task.Vocabularies') -> keras.Model:
  """The teacher classifier, rebuilt in Keras from a float export of this pipeline.

  Raises:
    ValueError: if `base_model` is not a float classify export of the same vocabulary.
  """
  beside = os.path.join(os.path.dirname(os.path.normpath(base_model)), FLOAT_COPY_DIR)
  if tf.io.gfile.exists(os.path.join(task.exported_preset(beside), contract.PRESET_CONFIG_FILE)):
    # A quantized train model: its float copy (export.float_copy) is the teacher.
    base_model = beside
  try:
    folder = task.base_model_dir(base_model)
  except ValueError:
    # TFX hands an imported teacher's folder as <folder>/Format-Serving: name the user's.
    if not tf.io.gfile.isdir(base_model):
      base_model = os.path.dirname(os.path.normpath(base_model))
    raise ValueError(
      f'distill: the teacher {base_model} is not a float model this pipeline exported (no '
      f'{contract.EXTRA_DIR}/{contract.PRESET_DIR}); give the train stage a float '
      'export (export.quantize: none) or distill.teacher a pushed float version'
    ) from None
  with tf.io.gfile.GFile(
    os.path.join(folder, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  ) as f:
    teacher_config = TrainerConfig.from_dict(json.load(f), where='teacher')
  if teacher_config.task != contract.CLASSIFY:
    raise ValueError(
      f'distill: the teacher {folder} is a {teacher_config.task} model, not classify'
    )
  preset = task.exported_preset(folder)
  with tf.io.gfile.GFile(os.path.join(preset, contract.PRESET_CONFIG_FILE)) as f:
    teacher_vocab = json.load(f)['config']['vocabulary_size']
  if teacher_vocab != len(vocabularies.tokens):
    raise ValueError(
      f'distill: the teacher {folder} reads a vocabulary of {teacher_vocab} tokens, the '
      f"student's Transform {len(vocabularies.tokens)}: teacher and student must share the "
      'vocabulary (the same pipeline, or train.preset of the teacher)'
    )
  _check_same_vocabularies(folder, vocabularies)
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(contract.FLOAT32)
  try:
    teacher = task.build_task_model(
      TrainerConfig.from_dict({**teacher_config.to_dict(), 'preset': preset}), vocabularies
    )
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  saved = tf.saved_model.load(folder)
  values = [v.numpy() for v in saved.model_variables]
  shapes = [tuple(w.shape) for w in teacher.weights]
  if [tuple(v.shape) for v in values] != shapes:
    raise ValueError(f'distill: the teacher {folder} has weights its config does not describe')
  teacher.set_weights(values)
  teacher.trainable = False
  return teacher


def run_fn(fn_args) -> None:
  """Distills the student `custom_config['trainer']` describes from the teacher
  `fn_args.base_model`, with `custom_config['distill']`'s options, and exports it."""
  config = task.config_from_fn_args(fn_args)
  if config.task != contract.CLASSIFY:
    raise ValueError(f'distill: the student must be a classify model, got task {config.task}')
  options = DistillConfig.from_dict(
    (fn_args.custom_config or {}).get(contract.DISTILL_CONFIG_KEY),
    where=contract.DISTILL_CONFIG_KEY,
  )
  if not fn_args.base_model:
    raise ValueError('distill: no teacher; the distill Trainer takes it as its base_model')
  tft_output = tft.TFTransformOutput(fn_args.transform_output or fn_args.transform_graph_path)
  vocabularies = task.Vocabularies.from_tft_output(tft_output, config.task)
  teacher = load_teacher(fn_args.base_model, vocabularies)
  make_loop = functools.partial(
    DistillLoop, teacher=teacher, options=options, special=vocabularies.special
  )
  task.train_and_export(config, fn_args, make_loop=make_loop, warm_start=False)
