"""The reference figures of the run summary, on small artifacts written here."""

import math
import os

import pytest
import tensorflow as tf

from pipeline import baseline
from tfxlm import contract


def _write_split(uri, split, rows):
  folder = os.path.join(uri, f'Split-{split}')
  os.makedirs(folder)
  path = os.path.join(folder, 'data_tfrecord-00000-of-00001.gz')
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for row in rows:
      feature = {}
      for key, value in row.items():
        if isinstance(value, str):
          feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        else:
          feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
      writer.write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      )


def _reviews(count, seed):
  import random

  rng = random.Random(seed)
  good, bad = ('great', 'moving', 'superb', 'funny'), ('dull', 'awful', 'boring', 'tired')
  filler = 'the a film movie plot story cast we it was is and but'.split()
  rows = []
  for _ in range(count):
    label = rng.choice(('fresh', 'rotten'))
    words = [rng.choice(filler) for _ in range(6)] + [rng.choice(good if label == 'fresh' else bad)]
    rng.shuffle(words)
    rows.append({contract.TEXT_KEY: ' '.join(words), contract.LABEL_KEY: label})
  return rows


def test_classifier_baseline_learns_the_signal_and_reports_counts(tmp_path):
  uri = str(tmp_path)
  _write_split(uri, 'train', _reviews(300, 0))
  eval_rows = _reviews(80, 1) + [{contract.TEXT_KEY: 'no label here'}]
  _write_split(uri, 'eval', eval_rows)

  result = baseline.classifier_baseline(uri)

  assert result.train_examples == 300
  assert result.eval_examples == 80  # the unlabeled row is not scored
  assert result.accuracy >= 0.95
  assert 0.3 < result.majority_accuracy < 0.7
  assert result.accuracy > result.majority_accuracy + 0.25


def test_the_majority_figure_is_the_train_splits_majority_label_scored_on_eval(tmp_path):
  # Train mostly 'fresh', eval mostly 'rotten': the eval split's own majority share (0.75) is
  # not what always answering the train split's majority label scores there.
  row = {contract.TEXT_KEY: 'a film'}
  _write_split(
    str(tmp_path),
    'train',
    [{**row, contract.LABEL_KEY: 'fresh'}] * 3 + [{**row, contract.LABEL_KEY: 'rotten'}],
  )
  _write_split(
    str(tmp_path),
    'eval',
    [{**row, contract.LABEL_KEY: 'rotten'}] * 3 + [{**row, contract.LABEL_KEY: 'fresh'}],
  )
  result = baseline.classifier_baseline(str(tmp_path))
  assert (result.majority_label, result.majority_accuracy) == ('fresh', 0.25)


def test_classifier_baseline_needs_two_labels_and_eval_examples(tmp_path):
  one_label = tmp_path / 'one'
  _write_split(str(one_label), 'train', [{contract.TEXT_KEY: 'x', contract.LABEL_KEY: 'a'}] * 3)
  _write_split(str(one_label), 'eval', [{contract.TEXT_KEY: 'x', contract.LABEL_KEY: 'a'}])
  with pytest.raises(ValueError, match='1 label'):
    baseline.classifier_baseline(str(one_label))
  with pytest.raises(ValueError, match="no files in split 'train'"):
    baseline.classifier_baseline(str(tmp_path / 'missing'))


def test_unigram_perplexity_matches_add_one_counts_and_cuts_to_seq_len(tmp_path):
  uri = str(tmp_path)
  # Train counts: token 5 three times, token 6 once; vocabulary of 10 (add-one smoothing).
  _write_split(uri, 'train', [{contract.TOKEN_IDS_KEY: [5, 5, 6]}, {contract.TOKEN_IDS_KEY: [5]}])
  _write_split(uri, 'eval', [{contract.TOKEN_IDS_KEY: [5, 6, 9, 9, 9]}])

  result = baseline.unigram_perplexity(uri, vocab_size=10, seq_len=3)

  total = 4 + 10
  expected = math.exp(-(math.log(4 / total) + math.log(2 / total) + math.log(1 / total)) / 3)
  assert result.eval_tokens == 3
  assert result.perplexity == pytest.approx(expected)
