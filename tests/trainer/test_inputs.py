"""Masking and packing on in-memory tensors."""

import numpy as np
import pytest
import tensorflow as tf

from tfxlm import contract
from trainer import inputs

VOCAB = 200
RESERVED = len(contract.RESERVED_TOKENS)


def _batch(rows=256, seq_len=64, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(RESERVED, VOCAB, size=(rows, seq_len))
  lengths = rng.integers(10, seq_len - 1, size=rows)
  for row, length in enumerate(lengths):
    ids[row, 0] = contract.CLS_ID
    ids[row, length] = contract.SEP_ID
    ids[row, length + 1 :] = contract.PAD_ID
  ids[:, 5] = contract.UNK_ID
  return tf.constant(ids, tf.int32)


def _mask(ids, seed, rate=0.15):
  return inputs.mask_tokens(
    ids,
    tf.constant(seed, tf.int64),
    vocab_size=VOCAB,
    mask_rate=rate,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    num_predictions=inputs.max_predictions(ids.shape[1], rate),
  )


def test_masking_chooses_15_percent_of_maskable_tokens_never_special():
  ids = _batch()
  masked, positions, originals, weights = _mask(ids, [1, 2])
  ids, masked = ids.numpy(), masked.numpy()
  positions, originals, weights = positions.numpy(), originals.numpy(), weights.numpy()
  chosen = weights > 0
  rows = np.repeat(np.arange(ids.shape[0])[:, None], positions.shape[1], axis=1)
  chosen_ids = ids[rows[chosen], positions[chosen]]
  assert (chosen_ids >= RESERVED).all()  # never [PAD] [UNK] [CLS] [SEP] [MASK]
  np.testing.assert_array_equal(originals[chosen], chosen_ids)
  maskable = (ids >= RESERVED).sum()
  assert abs(chosen.sum() / maskable - 0.15) < 0.01
  # Unchosen positions keep their token.
  changed = masked != ids
  chosen_grid = np.zeros_like(ids, bool)
  chosen_grid[rows[chosen], positions[chosen]] = True
  assert not (changed & ~chosen_grid).any()


def test_masking_80_10_10():
  ids = _batch(rows=2048)
  masked, positions, originals, weights = _mask(ids, [3, 4])
  chosen = weights.numpy() > 0
  new = tf.gather(masked, positions, batch_dims=1).numpy()[chosen]
  old = originals.numpy()[chosen]
  as_mask = (new == contract.MASK_ID).mean()
  kept = (new == old).mean()
  random = ((new != contract.MASK_ID) & (new != old)).mean()
  assert abs(as_mask - 0.8) < 0.02
  assert abs(kept - 0.1) < 0.02 + 1 / VOCAB
  assert abs(random - 0.1) < 0.02
  assert (new[new != contract.MASK_ID] >= RESERVED).all()


def test_masks_differ_by_seed_and_repeat_for_the_same_seed():
  ids = _batch(rows=8)
  first = _mask(ids, [5, 0])[1].numpy()
  np.testing.assert_array_equal(first, _mask(ids, [5, 0])[1].numpy())
  assert not np.array_equal(first, _mask(ids, [5, 1])[1].numpy())


def test_rows_without_maskable_tokens_get_no_weight():
  ids = tf.constant([[contract.CLS_ID, contract.SEP_ID, 0, 0, 0, 0, 0, 0]], tf.int32)
  masked, _, _, weights = _mask(ids, [0, 0])
  assert float(tf.reduce_sum(weights)) == 0.0
  np.testing.assert_array_equal(masked.numpy(), ids.numpy())


def test_packing_keeps_every_token_in_order_with_sep_between_documents():
  docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33], [40], [50, 51, 52]]
  dataset = tf.data.Dataset.from_tensors(tf.ragged.constant(docs[:2], tf.int32)).concatenate(
    tf.data.Dataset.from_tensors(tf.ragged.constant(docs[2:], tf.int32))
  )
  windows = [w.numpy().tolist() for w in inputs.pack_documents(dataset, window=5)]
  stream = [t for d in docs for t in d + [contract.SEP_ID]]
  assert all(len(w) == 5 for w in windows)
  assert [t for w in windows for t in w] == stream[: len(windows) * 5]
  assert len(stream) - len(windows) * 5 < 5  # only the incomplete tail is dropped
  assert contract.PAD_ID not in [t for w in windows for t in w]


def _write_classify_records(path, rows):
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for ids, label in rows:
      feature = {
        contract.TOKEN_IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
        contract.TRANSFORMED_LABEL_KEY: tf.train.Feature(
          int64_list=tf.train.Int64List(value=[label])
        ),
      }
      writer.write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      )


def test_sort_window_divides_the_evaluation_into_whole_windows():
  assert inputs.sort_window(40) == 40
  assert inputs.sort_window(1) == 1
  assert inputs.sort_window(200) == 50  # the largest divisor up to MAX_SORT_BATCHES (64)
  assert inputs.sort_window(97) == 1  # a prime over the cap: unsorted
  for steps in range(1, 300):
    k = inputs.sort_window(steps)
    assert steps % k == 0 and k <= inputs.MAX_SORT_BATCHES


@pytest.mark.parametrize('eval_batches', [12, 7])
def test_sorted_evaluation_reads_the_same_examples_with_less_padding(tmp_path, eval_batches):
  """An evaluation of `eval_batches` batches sees exactly the examples unsorted batches hold
  (the split's records, then filler after its end), each with its own label, in batches of
  similar lengths."""
  from trainer.config import TrainerConfig

  seq_len, batch, rng = 64, 8, np.random.default_rng(1)
  rows = []
  for i in range(70):  # fewer than one evaluation's 96 / 56 examples: filler follows
    length = int(rng.integers(3, seq_len + 1))
    rows.append(([2] + [10 + i] * (length - 2) + [3] + [0] * (seq_len - length), i % 2))
  _write_classify_records(str(tmp_path / 'part.gz'), rows)
  spec = {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  config = TrainerConfig(task='classify', seq_len=seq_len)

  def evaluation(**kwargs):
    dataset = inputs.make_dataset(
      [str(tmp_path / '*.gz')],
      spec,
      config,
      vocab_size=200,
      batch_size=batch,
      training=False,
      seed=0,
      **kwargs,
    )
    examples, padding = [], 0
    for x, y in dataset.take(eval_batches):
      ids, mask = x[inputs.TOKEN_IDS].numpy(), x[inputs.PADDING_MASK].numpy()
      padding += (mask == 0).sum()
      for row, label in zip(ids, y[inputs.LABELS].numpy()):
        examples.append((int(row[1]) if row[1] != 3 else -1, int(row.sum()), int(label)))
    return sorted(examples), padding

  plain, plain_padding = evaluation()
  ordered, ordered_padding = evaluation(eval_batches=eval_batches)
  assert inputs.sort_window(eval_batches) == eval_batches
  assert len(ordered) == eval_batches * batch
  assert ordered == plain  # the same examples (and filler), each with its own label
  assert ordered_padding < plain_padding / 2


def test_classify_batches_ignore_labels_unknown_to_the_vocabulary(tmp_path):
  from trainer.config import TrainerConfig

  seq_len = 6
  rows = [([2, 10, 3, 0, 0, 0], 0), ([2, 11, 12, 3, 0, 0], -1), ([2, 13, 3, 0, 0, 0], 1)]
  _write_classify_records(str(tmp_path / 'part.gz'), rows)
  spec = {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  config = TrainerConfig(task='classify', seq_len=seq_len)
  dataset = inputs.make_dataset(
    [str(tmp_path / '*.gz')], spec, config, vocab_size=20, batch_size=3, training=False, seed=0
  )
  x, y = next(iter(dataset))
  np.testing.assert_array_equal(x[inputs.TOKEN_IDS].numpy(), [r[0] for r in rows])
  np.testing.assert_array_equal(x[inputs.PADDING_MASK].numpy()[1], [1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(y[inputs.LABELS].numpy(), [0, 0, 1])
  np.testing.assert_array_equal(y[inputs.WEIGHTS].numpy(), [1, 0, 1])
  with pytest.raises(ValueError, match='no TFRecord files match'):
    inputs.make_dataset(
      [str(tmp_path / 'absent-*')],
      spec,
      config,
      vocab_size=20,
      batch_size=3,
      training=False,
      seed=0,
    )


def test_compression_is_read_from_the_file_names(tmp_path):
  rows = [('one two', 'a'), ('three', 'b')]
  for name, options in (('plain', None), ('packed.gz', 'GZIP')):
    with tf.io.TFRecordWriter(str(tmp_path / name), options=options) as writer:
      for text, _ in rows:
        writer.write(text.encode())
    files = [str(tmp_path / name)]
    dataset = inputs.records_dataset(files, shuffle=False, seed=0, shuffle_buffer=1)
    assert [r.numpy() for r in dataset.take(2)] == [b'one two', b'three']
  with pytest.raises(ValueError, match=r'mix gzip \(\*\.gz\) and uncompressed'):
    inputs.compression_type([str(tmp_path / 'plain'), str(tmp_path / 'packed.gz')])


@pytest.mark.parametrize('task', [contract.MLM, contract.CLM, contract.CLASSIFY])
def test_each_task_reads_its_own_ids_from_a_transform_shared_by_both_stages(task):
  shared = {contract.TOKEN_IDS_KEY, contract.TRANSFORMED_LABEL_KEY, contract.LM_TOKEN_IDS_KEY}
  lm_key = contract.TOKEN_IDS_KEY if task == contract.CLASSIFY else contract.LM_TOKEN_IDS_KEY
  assert inputs.token_ids_key(task, shared) == lm_key
  # A Transform of one stage has only `token_ids`: framed for classify, pieces for mlm/clm.
  assert inputs.token_ids_key(task, {contract.TOKEN_IDS_KEY}) == contract.TOKEN_IDS_KEY


def test_lm_batches_from_a_shared_transform_pack_the_pieces_not_the_framed_ids(tmp_path):
  from trainer.config import TrainerConfig

  seq_len = 6
  pieces = [[10, 11], [12, 13, 14], [15], [16, 17, 18, 19]]
  with tf.io.TFRecordWriter(str(tmp_path / 'part.gz'), options='GZIP') as writer:
    for ids in pieces:
      framed = [contract.CLS_ID, *ids[: seq_len - 2], contract.SEP_ID]
      framed += [contract.PAD_ID] * (seq_len - len(framed))
      feature = {
        contract.TOKEN_IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=framed)),
        contract.TRANSFORMED_LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
        contract.LM_TOKEN_IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
      }
      writer.write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      )
  spec = {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    contract.LM_TOKEN_IDS_KEY: tf.io.VarLenFeature(tf.int64),
  }
  config = TrainerConfig(task='clm', seq_len=seq_len)
  dataset = inputs.make_dataset(
    [str(tmp_path / '*.gz')], spec, config, vocab_size=20, batch_size=2, training=False, seed=0
  )
  x, y = next(iter(dataset))
  stream = [t for ids in pieces for t in ids + [contract.SEP_ID]]
  windows = [stream[: seq_len + 1], stream[seq_len + 1 : 2 * (seq_len + 1)]]
  np.testing.assert_array_equal(x[inputs.TOKEN_IDS].numpy(), [w[:-1] for w in windows])
  np.testing.assert_array_equal(y[inputs.LABELS].numpy(), [w[1:] for w in windows])


def test_classify_batches_are_length_bucketed_and_cut_to_their_longest_row(tmp_path):
  from trainer.config import TrainerConfig

  seq_len, rng = 64, np.random.default_rng(0)
  rows = []
  for i in range(400):
    length = int(rng.integers(3, seq_len + 1))
    rows.append(([2] + [10 + i % 7] * (length - 2) + [3] + [0] * (seq_len - length), i % 2))
  _write_classify_records(str(tmp_path / 'part.gz'), rows)
  spec = {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  config = TrainerConfig(task='classify', seq_len=seq_len)
  for training in (True, False):
    dataset = inputs.make_dataset(
      [str(tmp_path / '*.gz')], spec, config, vocab_size=20, batch_size=8, training=training, seed=0
    )
    # One static batch size, a dynamic length: the train step is traced once for every length.
    assert dataset.element_spec[0][inputs.TOKEN_IDS].shape.as_list() == [8, None]
    widths, spreads = [], []
    for x, _ in dataset.take(50):
      lengths = x[inputs.PADDING_MASK].numpy().sum(axis=1)
      width = x[inputs.TOKEN_IDS].shape[1]
      assert width == min(seq_len, -(-lengths.max() // 8) * 8), (width, lengths)
      widths.append(width)
      spreads.append(len({(n - 1) // 8 for n in lengths}))
    if training:  # every batch from one bucket of 8 lengths, all buckets in turn
      assert max(spreads) == 1 and len(set(widths)) == seq_len // 8
    else:  # the eval batches keep the records' order, each cut to its own longest row
      assert max(spreads) > 1 and len(set(widths)) > 1
  # Cutting changes nothing the model sees: the padding mask hides the positions cut.
  config = TrainerConfig(task='classify', seq_len=seq_len, length_buckets=False)
  full = inputs.make_dataset(
    [str(tmp_path / '*.gz')], spec, config, vocab_size=20, batch_size=400, training=False, seed=0
  )
  x, _ = next(iter(full))
  np.testing.assert_array_equal(
    x[inputs.TOKEN_IDS].numpy(), np.array([r[0] for r in rows])[:, : x[inputs.TOKEN_IDS].shape[1]]
  )


@pytest.mark.parametrize('task', [contract.CLASSIFY, contract.CLM, contract.MLM])
def test_evaluation_reads_the_split_once_then_rows_of_no_weight(tmp_path, task):
  """More eval batches than the split holds: each example (row) weighs in once, the rest of the
  batches are filler of weight 0, not the split again."""
  from trainer.config import TrainerConfig

  seq_len = 8
  # classify: 5 examples; clm / mlm: 5 documents of 8 pieces + [SEP] = 45 tokens, 5 windows.
  rows = [([2, 10 + i, 3] + [0] * (seq_len - 3), i % 2) for i in range(5)]
  _write_classify_records(str(tmp_path / 'part.gz'), rows)
  pieces = [[10 + i] * 8 for i in range(5)]
  with tf.io.TFRecordWriter(str(tmp_path / 'lm.gz'), options='GZIP') as writer:
    for ids in pieces:
      feature = {contract.TOKEN_IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=ids))}
      writer.write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      )
  if task == contract.CLASSIFY:
    files = [str(tmp_path / 'part.gz')]
    spec = {
      contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
      contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
  else:
    files = [str(tmp_path / 'lm.gz')]
    spec = {contract.TOKEN_IDS_KEY: tf.io.VarLenFeature(tf.int64)}
  window = {contract.CLASSIFY: seq_len, contract.CLM: seq_len + 1, contract.MLM: seq_len - 1}[task]
  expected_rows = 5 if task == contract.CLASSIFY else 45 // window
  config = TrainerConfig(task=task, seq_len=seq_len, mask_rate=0.5)
  dataset = inputs.make_dataset(
    files, spec, config, vocab_size=40, batch_size=4, training=False, seed=0, eval_batches=4
  )
  counted, seen = [], []
  for x, y in dataset.take(4):
    real = y[inputs.REAL].numpy()
    weights = y[inputs.WEIGHTS].numpy().reshape(4, -1)
    assert not weights[real == 0].any()  # filler weighs nothing
    counted.append(int(real.sum()))
    seen += [tuple(row) for row, r in zip(x[inputs.TOKEN_IDS].numpy(), real) if r]
  # The split's rows once, in the first batches; then batches of filler only.
  assert counted == (
    [4, expected_rows - 4, 0, 0] if expected_rows > 4 else [expected_rows, 0, 0, 0]
  )
  assert len(set(seen)) == len(seen)
  if task == contract.CLASSIFY:
    assert sorted(row[1] for row in seen) == [10, 11, 12, 13, 14]
  # Training data still repeats: every batch counts.
  training = inputs.make_dataset(
    files, spec, config, vocab_size=40, batch_size=4, training=True, seed=0
  )
  for _, y in training.take(4):
    assert inputs.REAL not in y and y[inputs.WEIGHTS].numpy().any()


def test_most_classify_texts_filling_seq_len_are_one_warning(tmp_path, caplog):
  """seq_len 4 on texts of 9 tokens cut every one to 2 tokens, and nothing said so."""
  from absl import logging as absl_logging

  from trainer import task
  from trainer.config import TrainerConfig

  seq_len = 6
  spec = {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([seq_len], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  full, short = [2, 10, 11, 12, 13, 3], [2, 10, 3, 0, 0, 0]
  for folder in ('cut', 'fit'):
    (tmp_path / folder).mkdir()
  _write_classify_records(str(tmp_path / 'cut' / 'part.gz'), [(full, 0)] * 3 + [(short, 1)])
  _write_classify_records(str(tmp_path / 'fit' / 'part.gz'), [(full, 0)] + [(short, 1)] * 3)
  lengths = inputs.classify_lengths([str(tmp_path / 'cut' / '*.gz')], spec, pad=0)
  np.testing.assert_array_equal(lengths, [6, 6, 6, 3])
  config = TrainerConfig(task='classify', seq_len=seq_len)
  caplog.set_level(absl_logging.INFO, logger='absl')
  for folder in ('cut', 'fit'):
    task.warn_of_cut_texts([str(tmp_path / folder / '*.gz')], spec, config, pad=0)
  warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert warned == [
    '75% of 4 train texts fill all train.seq_len 6 tokens (the start and end tokens included): '
    'they are cut there (or exactly that long), so the model reads only their first 4 tokens. '
    "What to do: raise train.seq_len (up to the model's positions) if the texts are longer"
  ]
