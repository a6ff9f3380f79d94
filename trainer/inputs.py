"""tf.data input: Transform's TFRecords to model batches (packing for mlm and clm, masking).

Each dataset yields `(x, y)`: `x` the model's named inputs, `y = {'labels', 'weights'}` shaped
like the logits without their last axis, so one loss function serves every task.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfxlm import contract
from trainer import vocabulary
from trainer.config import TrainerConfig
from trainer.models import MASK_POSITIONS, PADDING_MASK, TOKEN_IDS
from trainer.vocabulary import SpecialTokens

LABELS, WEIGHTS = 'labels', 'weights'
# Evaluation only: 1.0 for a row of the split, 0.0 for the filler after its end.
REAL = 'real'
# Records parsed per tf.io.parse_example call: vectorised parsing is much faster than one by one.
_PARSE_BATCH = 256
# classify batches are cut to their longest sequence rounded up to a multiple of this.
LENGTH_MULTIPLE = 8


def max_predictions(seq_len: int, mask_rate: float) -> int:
  """Masked positions per mlm sequence: enough for `mask_rate` of a full window."""
  return max(1, math.ceil(seq_len * mask_rate))


def mask_tokens(
  token_ids: tf.Tensor,
  seed: tf.Tensor,
  *,
  vocab_size: int,
  mask_rate: float,
  mask_token_rate: float,
  random_token_rate: float,
  num_predictions: int,
  special: SpecialTokens = vocabulary.LEARNED_SPECIAL_TOKENS,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """BERT masking of a batch, stateless in `seed`.

  Of the maskable tokens (not `special.reserved`, so never [PAD], [CLS], [SEP], ...) of each
  row, `round(mask_rate * count)` (at least 1, at most `num_predictions`) are chosen uniformly;
  each becomes [MASK] with probability `mask_token_rate`, a random non-reserved token with
  `random_token_rate`, else stays.

  Args:
    token_ids: int32 (batch, seq_len).
    seed: int32 [2], a stateless seed.

  Returns:
    (masked token_ids, positions (batch, num_predictions), original ids at the positions,
    float32 weights: 1 where a position was chosen).
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  maskable = ~is_reserved(token_ids, special)
  num_maskable = tf.reduce_sum(tf.cast(maskable, tf.float32), axis=1)
  num_masked = tf.minimum(
    tf.maximum(tf.round(num_maskable * mask_rate), 1.0), float(num_predictions)
  )
  num_masked = tf.where(num_maskable > 0, num_masked, 0.0)
  scores = tf.random.stateless_uniform(tf.shape(token_ids), seeds[0])
  scores = tf.where(maskable, scores, -1.0)
  top_scores, positions = tf.math.top_k(scores, k=num_predictions)  # (batch, predictions)
  ranks = tf.range(num_predictions, dtype=tf.float32)[tf.newaxis, :]
  chosen = (ranks < num_masked[:, tf.newaxis]) & (top_scores >= 0.0)
  originals = tf.gather(token_ids, positions, batch_dims=1)
  decide = tf.random.stateless_uniform(tf.shape(positions), seeds[1])
  reserved = set(special.reserved)
  candidates = tf.constant([i for i in range(vocab_size) if i not in reserved], tf.int32)
  random_ids = tf.gather(
    candidates,
    tf.random.stateless_uniform(
      tf.shape(positions), seeds[2], maxval=len(candidates), dtype=tf.int32
    ),
  )
  replacement = tf.where(
    decide < mask_token_rate,
    special.mask,
    tf.where(decide < mask_token_rate + random_token_rate, random_ids, originals),
  )
  replacement = tf.where(chosen, replacement, originals)
  batch_index = tf.broadcast_to(
    tf.range(tf.shape(positions)[0])[:, tf.newaxis], tf.shape(positions)
  )
  indices = tf.stack([batch_index, positions], axis=-1)
  masked = tf.tensor_scatter_nd_update(token_ids, indices, replacement)
  return masked, positions, originals, tf.cast(chosen, tf.float32)


def is_reserved(token_ids: tf.Tensor, special: SpecialTokens) -> tf.Tensor:
  """Whether each id is one of `special.reserved` (same shape as `token_ids`)."""
  reserved = tf.constant(special.reserved, token_ids.dtype)
  return tf.reduce_any(token_ids[..., tf.newaxis] == reserved, axis=-1)


def pack_documents(
  dataset_of_docs: tf.data.Dataset, window: int, end_id: int = contract.SEP_ID
) -> tf.data.Dataset:
  """Packs a dataset of ragged document batches into `window`-token rows, [SEP] after each.

  Documents follow each other with no padding; a long one continues in the next row.
  """

  def flatten(docs):
    sep = tf.fill([docs.nrows(), 1], tf.constant(end_id, docs.dtype))
    return tf.concat([docs, sep], axis=1).flat_values

  return dataset_of_docs.map(flatten).unbatch().batch(window, drop_remainder=True)


def token_ids_key(task: str, feature_keys: Collection[str]) -> str:
  """The transformed feature `task` reads its token ids from.

  classify reads the framed `token_ids`. mlm and clm read the pieces: `lm_token_ids` in the graph
  of a classify Transform that serves the pretraining stage too (its `token_ids` are framed),
  else `token_ids`, the only ids of an mlm/clm Transform.
  """
  if task != contract.CLASSIFY and contract.LM_TOKEN_IDS_KEY in feature_keys:
    return contract.LM_TOKEN_IDS_KEY
  return contract.TOKEN_IDS_KEY


def _parse_fn(feature_spec, task):
  """Parses the task's features only, its token ids under `token_ids`."""
  ids_key = token_ids_key(task, feature_spec)
  spec = {ids_key: feature_spec[ids_key]}
  if task == contract.CLASSIFY:
    spec[contract.TRANSFORMED_LABEL_KEY] = feature_spec[contract.TRANSFORMED_LABEL_KEY]

  def parse(records):
    parsed = tf.io.parse_example(records, spec)
    ids = parsed.pop(ids_key)
    if isinstance(ids, tf.SparseTensor):
      ids = tf.RaggedTensor.from_sparse(ids)
    parsed[contract.TOKEN_IDS_KEY] = tf.cast(ids, tf.int32)
    return parsed

  return parse


def classify_lengths(
  file_patterns: Sequence[str], feature_spec, pad: int, limit: int = 4096
) -> np.ndarray:
  """The framed lengths (tokens other than padding) of up to `limit` classify examples of the
  transformed files, in file order."""
  parse = _parse_fn(feature_spec, contract.CLASSIFY)
  records = records_dataset(file_patterns, shuffle=False, seed=0, shuffle_buffer=1, repeat=False)
  lengths = []
  for batch in records.take(limit).batch(512).map(parse):
    ids = batch[contract.TOKEN_IDS_KEY]
    if isinstance(ids, tf.RaggedTensor):
      ids = ids.to_tensor(default_value=pad)
    lengths.append(tf.reduce_sum(tf.cast(ids != pad, tf.int32), axis=1).numpy())
  return np.concatenate(lengths) if lengths else np.zeros([0], np.int32)


def compression_type(files: Sequence[str]) -> str:
  """tf.data's compression_type of TFRecord files, from their names: 'GZIP' for `*.gz`, else ''.

  Raises:
    ValueError: if some files are gzipped and others not.
  """
  gzipped = {f.endswith(contract.GZIP_SUFFIX) for f in files}
  if len(gzipped) > 1:
    raise ValueError(
      f'{len(files)} TFRecord files mix gzip (*{contract.GZIP_SUFFIX}) and uncompressed ones, '
      f'e.g. {sorted(files)[0]}: one input must be one or the other'
    )
  return 'GZIP' if gzipped == {True} else ''


def records_dataset(
  file_patterns: Sequence[str],
  *,
  shuffle: bool,
  seed: int,
  shuffle_buffer: int,
  num_shards: int = 1,
  shard: int = 0,
  repeat: bool = True,
) -> tf.data.Dataset:
  """Serialized records from TFRecord files (gzipped if named *.gz), sharded, optionally
  shuffled, repeated (else one pass)."""
  files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f'no TFRecord files match {list(file_patterns)}')
  dataset = tf.data.TFRecordDataset(
    files, compression_type=compression_type(files), num_parallel_reads=tf.data.AUTOTUNE
  )
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  return dataset.repeat() if repeat else dataset


# At most this many evaluation batches are sorted by length together (their examples are held
# in memory at full length).
MAX_SORT_BATCHES = 64


def sort_window(eval_batches: int) -> int:
  """How many evaluation batches `make_dataset` sorts by length together: the largest divisor
  of `eval_batches` up to `MAX_SORT_BATCHES`, so every evaluation ends on a window's end and
  reads the same examples as unsorted batches would."""
  return max(k for k in range(1, min(eval_batches, MAX_SORT_BATCHES) + 1) if eval_batches % k == 0)


def make_dataset(
  file_patterns: Sequence[str],
  feature_spec: Mapping[str, Any],
  config: TrainerConfig,
  *,
  vocab_size: int,
  batch_size: int,
  training: bool,
  seed: int,
  num_shards: int = 1,
  shard: int = 0,
  special: SpecialTokens = vocabulary.LEARNED_SPECIAL_TOKENS,
  eval_batches: int | None = None,
) -> tf.data.Dataset:
  """The batches of one input pipeline.

  Args:
    file_patterns: Transform's TFRecord file patterns (gzipped files named *.gz).
    feature_spec: `tft_output.transformed_feature_spec()`.
    config: The `TrainerConfig`; its Transform was built from the same config (or, for a
      pretraining stage, shared with the classify stage's), so the transformed features match
      its task and seq_len; `token_ids_key` says which ids it reads.
    vocab_size: Size of the token vocabulary (random replacement ids for mlm).
    batch_size: Examples per batch of this pipeline (per replica, micro-batches included).
    training: Shuffle the data; masks differ on every pass. Evaluation data is identical on
      every iteration.
    seed: Seed of shuffling and masking.
    num_shards: Input pipelines to split the records between.
    shard: This pipeline's index.
    special: The vocabulary's special tokens (`Vocabulary.special`).
    eval_batches: Evaluation only: the batches one evaluation reads. Classify then orders the
      examples of every run of `sort_window(eval_batches)` batches by length, so batches hold
      little padding, while an evaluation still reads exactly the first
      `eval_batches * batch_size` examples of the split, as without it.

  Returns:
    An infinite `tf.data.Dataset` of `(x, y)` with static batch size. Training data repeats;
    evaluation data reads the split once, then goes on with filler rows of weight 0 (no loss,
    no count), so an evaluation of more batches than the split holds counts each example once
    and every replica still gets a full batch each step.
  """
  _check_feature_spec(feature_spec, config.task)
  records = records_dataset(
    file_patterns,
    shuffle=training,
    seed=seed,
    shuffle_buffer=config.shuffle_buffer,
    num_shards=num_shards,
    shard=shard,
    repeat=training,
  )
  parsed = records.batch(_PARSE_BATCH).map(
    _parse_fn(feature_spec, config.task), num_parallel_calls=tf.data.AUTOTUNE
  )
  if config.task == contract.CLASSIFY:
    return _classify_batches(
      parsed,
      config.seq_len,
      batch_size,
      special,
      buckets=training and config.length_buckets,
      sort_batches=1 if training or not eval_batches else sort_window(eval_batches),
      fill=not training,
    )
  docs = parsed.map(lambda batch: _as_ragged(batch[contract.TOKEN_IDS_KEY], special.pad))
  if config.task == contract.CLM:
    return _clm_batches(docs, config.seq_len, batch_size, special, fill=not training)
  return _mlm_batches(
    docs,
    config,
    vocab_size=vocab_size,
    batch_size=batch_size,
    training=training,
    seed=seed,
    special=special,
  )


def _check_feature_spec(feature_spec: Mapping[str, Any], task: str) -> None:
  if contract.TOKEN_IDS_KEY not in feature_spec:
    raise ValueError(
      f'transformed feature spec lacks {contract.TOKEN_IDS_KEY!r}: {sorted(feature_spec)}'
    )
  if task == contract.CLASSIFY and contract.TRANSFORMED_LABEL_KEY not in feature_spec:
    raise ValueError(
      'classify needs a transformed '
      f'{contract.TRANSFORMED_LABEL_KEY!r} feature; got {sorted(feature_spec)}'
    )


def _classify_batches(
  parsed: tf.data.Dataset,
  seq_len: int,
  batch_size: int,
  special: SpecialTokens,
  *,
  buckets: bool,
  sort_batches: int = 1,
  fill: bool = False,
) -> tf.data.Dataset:
  """Framed sequences and their label ids, one example per row, each batch cut to its longest
  sequence rounded up to a multiple of `LENGTH_MULTIPLE` (the padding mask hides the rest, so
  the model's outputs are the same as at full length).

  With `buckets`, examples of similar length are batched together first (one bucket per
  `LENGTH_MULTIPLE` tokens), so batches hold little padding: the demo's snippets are 27 tokens
  on average in windows of 64. Batches have a static size and a dynamic length, so the train
  step is traced once for every length.

  With `sort_batches` > 1 (evaluation), the examples are taken `sort_batches * batch_size` at a
  time, in order, and sorted by length before batching: the same examples as without, in the
  same groups of `sort_batches` batches, with less padding.

  With `fill` (evaluation), the examples go on after the data's end with filler examples
  ([CLS] [SEP], label -1: weight 0, `REAL` 0), sorted after the real ones.
  """

  def to_examples(batch):
    ids = batch[contract.TOKEN_IDS_KEY]
    if isinstance(ids, tf.RaggedTensor):
      ids = ids.to_tensor(default_value=special.pad, shape=[None, seq_len])
    label = tf.reshape(tf.cast(batch[contract.TRANSFORMED_LABEL_KEY], tf.int32), [-1])
    return ids, label, tf.ones_like(label, tf.float32)

  def length(ids, label, real):
    return tf.reduce_sum(tf.cast(ids != special.pad, tf.int32))

  def to_batch(ids, label, real):
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(ids != special.pad, tf.int32), axis=1))
    cut = tf.minimum(-(-longest // LENGTH_MULTIPLE) * LENGTH_MULTIPLE, seq_len)
    ids = ids[:, :cut]
    # Transform maps a label missing from the training split's vocabulary to -1: no loss there.
    weights = tf.cast(label >= 0, tf.float32)
    x = {TOKEN_IDS: ids, PADDING_MASK: tf.cast(ids != special.pad, tf.int32)}
    y = {LABELS: tf.maximum(label, 0), WEIGHTS: weights}
    return x, {**y, REAL: real} if fill else y

  examples = parsed.map(to_examples, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  if fill:
    ids_dtype = examples.element_spec[0].dtype
    framed = tf.constant([special.start, special.end] + [special.pad] * (seq_len - 2), ids_dtype)
    filler = tf.data.Dataset.from_tensors((framed, tf.constant(-1, tf.int32), tf.constant(0.0)))
    examples = examples.concatenate(filler.repeat())
  if buckets:
    batches = examples.group_by_window(
      key_func=lambda *example: tf.cast((length(*example) - 1) // LENGTH_MULTIPLE, tf.int64),
      reduce_func=lambda _, window: window.batch(batch_size, drop_remainder=True),
      window_size=batch_size,
    )
  elif sort_batches > 1:

    def by_length(ids, label, real):
      # Filler last: an evaluation's batches of real rows come before any without one.
      lengths = tf.reduce_sum(tf.cast(ids != special.pad, tf.int32), axis=1)
      order = tf.argsort(lengths + tf.cast(real == 0, tf.int32) * (seq_len + 1), stable=True)
      shape = [sort_batches, batch_size]
      return (
        tf.reshape(tf.gather(ids, order), shape + [seq_len]),
        tf.reshape(tf.gather(label, order), shape),
        tf.reshape(tf.gather(real, order), shape),
      )

    batches = (
      examples.batch(sort_batches * batch_size, drop_remainder=True)
      .map(by_length, num_parallel_calls=tf.data.AUTOTUNE)
      .unbatch()
    )
  else:
    batches = examples.batch(batch_size, drop_remainder=True)
  return batches.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _with_filler(rows: tf.data.Dataset, fill: bool, end_id: int) -> tf.data.Dataset:
  """(row, 1.0) for each row; with `fill`, then (row of end tokens, 0.0) for ever: evaluation
  reads the data once and its later batches count nothing."""
  real = rows.map(lambda row: (row, tf.constant(1.0)))
  if not fill:
    return real
  spec = rows.element_spec
  filler = tf.fill(spec.shape, tf.constant(end_id, spec.dtype))
  return real.concatenate(tf.data.Dataset.from_tensors((filler, tf.constant(0.0))).repeat())


def _clm_batches(
  docs: tf.data.Dataset, seq_len: int, batch_size: int, special: SpecialTokens, fill: bool = False
) -> tf.data.Dataset:
  """Packed windows; each position's label is the next token. With `fill`, see `_with_filler`."""

  def to_window(window, real):
    x = {TOKEN_IDS: window[:, :-1], PADDING_MASK: tf.ones_like(window[:, :-1])}
    weights = tf.ones_like(window[:, 1:], tf.float32) * real[:, None]
    y = {LABELS: window[:, 1:], WEIGHTS: weights}
    return x, {**y, REAL: real} if fill else y

  windows = pack_documents(docs, seq_len + 1, special.end)  # inputs and their next tokens
  windows = _with_filler(windows, fill, special.end)
  return (
    windows.batch(batch_size, drop_remainder=True)
    .map(to_window, num_parallel_calls=tf.data.AUTOTUNE)
    .prefetch(tf.data.AUTOTUNE)
  )


def _mlm_batches(
  docs: tf.data.Dataset,
  config: TrainerConfig,
  *,
  vocab_size: int,
  batch_size: int,
  training: bool,
  seed: int,
  special: SpecialTokens,
) -> tf.data.Dataset:
  """Packed rows after one [CLS], masked BERT-style; labels are the masked tokens."""
  num_predictions = max_predictions(config.seq_len, config.mask_rate)
  # Packed like clm, after one [CLS]: [CLS] doc [SEP] doc [SEP] doc...; no padding.
  rows = pack_documents(docs, config.seq_len - 1, special.end)
  if training:
    rows = rows.shuffle(min(config.shuffle_buffer, 4096), seed=seed + 1)
  rows = _with_filler(rows, not training, special.end)
  cls = tf.fill([batch_size, 1], special.start)
  batches = (
    rows.batch(batch_size, drop_remainder=True)
    .map(lambda body, real: (tf.concat([cls, body], axis=1), real))
    .enumerate()
  )

  def to_masked(index, batch):
    ids, real = batch
    # The batch index makes the seed: every pass over the data draws new masks, and the
    # evaluation stream (same index sequence each time) draws the same ones.
    masked, positions, originals, weights = mask_tokens(
      ids,
      tf.stack([tf.constant(seed, tf.int64), index]),
      vocab_size=vocab_size,
      mask_rate=config.mask_rate,
      mask_token_rate=config.mask_token_rate,
      random_token_rate=config.random_token_rate,
      num_predictions=num_predictions,
      special=special,
    )
    x = {
      TOKEN_IDS: masked,
      PADDING_MASK: tf.cast(ids != special.pad, tf.int32),
      MASK_POSITIONS: positions,
    }
    y = {LABELS: originals, WEIGHTS: weights * real[:, None]}
    return x, y if training else {**y, REAL: real}

  return batches.map(to_masked, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _as_ragged(ids: tf.Tensor | tf.RaggedTensor, pad: int) -> tf.RaggedTensor:
  if isinstance(ids, tf.RaggedTensor):
    return ids
  return tf.RaggedTensor.from_tensor(ids, padding=pad)
