"""Reference points measured on exactly the examples a run used, read from its artifacts.

- Classification: a TF-IDF (word 1-2 grams, sublinear tf) + logistic-regression baseline
  (scikit-learn) trained on ExampleGen's `train` split and scored on its `eval` split, the split
  the Evaluator scores the pipeline's model on; and the eval accuracy of always answering the
  train split's majority label (what a model that learned nothing but the label shares scores:
  below the eval split's own majority share when the splits' shares differ).
- Language models: the unigram perplexity of the eval split under the token counts of the train
  split, over the same tokens the exported model scores (Transform's `token_ids`, each text cut
  to `seq_len` tokens), so it sits next to the model's eval perplexity.

No TensorFlow at import time; scikit-learn is a dev dependency (`pip install -e .[dev]`).
"""

import collections
import dataclasses
import glob
import math
import os
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tfxlm import contract

TRAIN, EVAL = 'train', 'eval'
# Inverse regularization strength of the logistic regression. On the Rotten Tomatoes snippets
# C in 3..10 gave 0.777-0.787 on a random 90/10 split; 10 is the stronger of the two.
LOGISTIC_C = 10.0


@dataclasses.dataclass(frozen=True)
class ClassifierBaseline:
  """TF-IDF + logistic regression on a run's train/eval examples.

  Attributes:
    accuracy: eval accuracy of the baseline.
    majority_label: the train split's most frequent label.
    majority_accuracy: eval accuracy of always answering `majority_label` (not the eval split's
      own majority share, which a model cannot know from the train split).
    train_examples: labeled train examples it learned from.
    eval_examples: labeled eval examples it was scored on.
  """

  accuracy: float
  majority_label: str
  majority_accuracy: float
  train_examples: int
  eval_examples: int


@dataclasses.dataclass(frozen=True)
class UnigramBaseline:
  """Unigram perplexity of the eval tokens under add-one smoothed train token counts.

  Attributes:
    perplexity: exp of the mean negative log-probability per eval token.
    eval_tokens: eval tokens scored.
  """

  perplexity: float
  eval_tokens: int


def split_files(artifact_uri: str, split: str) -> List[str]:
  """The TFRecord files (gzipped if named *.gz) of one split of an Examples artifact.

  Raises:
    ValueError: if the split has no files.
  """
  files = sorted(glob.glob(os.path.join(artifact_uri, f'Split-{split}', '*')))
  if not files:
    raise ValueError(f'no files in split {split!r} of {artifact_uri}')
  return files


def iter_examples(files: Sequence[str]) -> Iterator[Dict[str, list]]:
  """The rows of TFRecord files of tf.Examples, as {feature: list of values}."""
  import tensorflow as tf

  from trainer import inputs

  records = tf.data.TFRecordDataset(list(files), compression_type=inputs.compression_type(files))
  for batch in records.batch(1024):  # one eager call per batch, not per record
    for record in batch.numpy():
      example = tf.train.Example.FromString(record)
      row = {}
      for key, feature in example.features.feature.items():
        kind = feature.WhichOneof('kind')
        row[key] = list(getattr(feature, kind).value) if kind else []
      yield row


def read_labeled(examples_uri: str, split: str) -> Tuple[List[str], List[str]]:
  """(texts, labels) of the rows of a split of ExampleGen's output that carry a label."""
  texts, labels = [], []
  for row in iter_examples(split_files(examples_uri, split)):
    text, label = row.get(contract.TEXT_KEY), row.get(contract.LABEL_KEY)
    if text and label:
      texts.append(text[0].decode('utf-8'))
      labels.append(label[0].decode('utf-8') if isinstance(label[0], bytes) else str(label[0]))
  return texts, labels


def classifier_baseline(examples_uri: str, c: float = LOGISTIC_C) -> ClassifierBaseline:
  """Trains and scores TF-IDF + logistic regression on an ExampleGen artifact's splits.

  Raises:
    ImportError: if scikit-learn is not installed.
    ValueError: if a split is empty or the train split has fewer than two labels.
  """
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression

  train_texts, train_labels = read_labeled(examples_uri, TRAIN)
  eval_texts, eval_labels = read_labeled(examples_uri, EVAL)
  if not eval_texts:
    raise ValueError(f'no labeled eval examples in {examples_uri}')
  if len(set(train_labels)) < 2:
    raise ValueError(
      f'the train split of {examples_uri} has {len(set(train_labels))} label(s); '
      'a classifier needs two or more'
    )
  vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
  # Newton-CG minimizes the same objective as scikit-learn's default L-BFGS (L2 penalty, free
  # intercept) in ~10x less CPU on the demo's 11.5k x 132k sparse matrix (0.9 s against 10 s,
  # same eval predictions): the default spends its time in SciPy's L-BFGS-B update at this width.
  model = LogisticRegression(C=c, max_iter=2000, solver='newton-cg')
  with warnings.catch_warnings():
    # scikit-learn 1.5 passes an option newer SciPy no longer knows; the fit is unaffected.
    warnings.filterwarnings('ignore', message='Unknown solver options')
    model.fit(vectorizer.fit_transform(train_texts), train_labels)
  predicted = model.predict(vectorizer.transform(eval_texts))
  correct = sum(p == y for p, y in zip(predicted, eval_labels, strict=True))
  majority = collections.Counter(train_labels).most_common(1)[0][0]
  return ClassifierBaseline(
    accuracy=correct / len(eval_labels),
    majority_label=majority,
    majority_accuracy=sum(y == majority for y in eval_labels) / len(eval_labels),
    train_examples=len(train_labels),
    eval_examples=len(eval_labels),
  )


def _token_rows(transformed_uri: str, split: str) -> Iterator[List[int]]:
  for row in iter_examples(split_files(transformed_uri, split)):
    yield [int(i) for i in row.get(contract.TOKEN_IDS_KEY, [])]


def unigram_perplexity(
  transformed_uri: str, vocab_size: int, seq_len: Optional[int] = None
) -> UnigramBaseline:
  """Unigram perplexity of the eval split of Transform's output, counts from its train split.

  Args:
    transformed_uri: Transform's `transformed_examples` artifact (mlm/clm: `token_ids` lists).
    vocab_size: size of the token vocabulary (add-one smoothing spreads over it).
    seq_len: each eval text is cut to this many tokens, as the exported model's score cuts it.

  Raises:
    ValueError: if a split is missing or the eval split has no tokens.
  """
  counts = collections.Counter()
  for ids in _token_rows(transformed_uri, TRAIN):
    counts.update(ids)
  total = sum(counts.values()) + vocab_size
  log_sum, tokens = 0.0, 0
  for ids in _token_rows(transformed_uri, EVAL):
    for token in ids[:seq_len]:
      log_sum += math.log((counts[token] + 1) / total)
      tokens += 1
  if not tokens:
    raise ValueError(f'no eval tokens in {transformed_uri}')
  return UnigramBaseline(perplexity=math.exp(-log_sum / tokens), eval_tokens=tokens)
