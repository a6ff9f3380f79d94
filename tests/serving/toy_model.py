"""Small transformer-ish classifiers that follow the signature contract (docs/design.md).

Used by the serving tests (tiny sizes) and by bench/serving_bench.py (a larger size, so the
per-call cost has a realistic fixed part). Text is hashed into an embedding table, run through
single-head self-attention blocks and mean-pooled into a softmax head; `serving_default` parses
serialized tf.Examples with a `text` feature and `predict_text` takes raw strings.
"""

import os

import numpy as np
import tensorflow as tf

CLASS_NAMES = ('negative', 'neutral', 'positive')


class ToyClassifier(tf.Module):
  """Hashing tokenizer + self-attention blocks + softmax head.

  Args:
    seed: initialises the weights; different seeds give observably different outputs.
    vocab_size: hash buckets for tokens.
    hidden: width of every layer.
    num_layers: attention + feed-forward blocks.
    seq_len: tokens kept per text (padded / truncated).
  """

  def __init__(self, seed, vocab_size=64, hidden=16, num_layers=1, seq_len=16):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.seq_len = seq_len
    self.hidden = hidden

    def weight(*shape):
      return tf.Variable(rng.normal(0, 1 / np.sqrt(shape[0]), shape).astype(np.float32))

    self.embedding = weight(vocab_size, hidden)
    self.blocks = [
      dict(
        q=weight(hidden, hidden),
        k=weight(hidden, hidden),
        v=weight(hidden, hidden),
        o=weight(hidden, hidden),
        up=weight(hidden, 4 * hidden),
        down=weight(4 * hidden, hidden),
      )
      for _ in range(num_layers)
    ]
    self.head = weight(hidden, len(CLASS_NAMES))
    self.class_names = tf.constant(CLASS_NAMES)
    self.vocab_size = vocab_size

  def _classify(self, text):
    # Fails with InvalidArgument on text that is not UTF-8, as a real tokenizer would.
    text = tf.strings.unicode_transcode(text, 'UTF-8', 'UTF-8', errors='strict')
    words = tf.strings.split(tf.strings.lower(text))
    ids = tf.strings.to_hash_bucket_fast(words, self.vocab_size)
    ids = ids.to_tensor(default_value=-1, shape=[None, self.seq_len])  # (batch, seq_len)
    mask = tf.cast(ids >= 0, tf.float32)
    x = tf.gather(self.embedding, tf.maximum(ids, 0)) * mask[:, :, None]  # (batch, seq, hidden)
    for block in self.blocks:
      q, k, v = (tf.einsum('bsh,hd->bsd', x, block[n]) for n in 'qkv')
      scores = tf.einsum('bqd,bkd->bqk', q, k) / np.sqrt(self.hidden)
      scores += (1.0 - mask[:, None, :]) * -1e9
      x = x + tf.einsum(
        'bsh,hd->bsd', tf.einsum('bqk,bkd->bqd', tf.nn.softmax(scores), v), block['o']
      )
      x = x + tf.einsum(
        'bsf,fh->bsh', tf.nn.relu(tf.einsum('bsh,hf->bsf', x, block['up'])), block['down']
      )
    pooled = tf.reduce_sum(x * mask[:, :, None], 1) / tf.maximum(tf.reduce_sum(mask, 1, True), 1.0)
    probabilities = tf.nn.softmax(tf.matmul(pooled, self.head))
    label_ids = tf.argmax(probabilities, axis=-1)
    return {
      'probabilities': probabilities,
      'label_ids': label_ids,
      'labels': tf.gather(self.class_names, label_ids),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serving_default(self, examples):
    features = tf.io.parse_example(examples, {'text': tf.io.FixedLenFeature([], tf.string)})
    return self._classify(features['text'])

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='text')])
  def predict_text(self, text):
    return self._classify(text)


def export(base_path, model_name, version, seed, **sizes):
  """Writes a ToyClassifier SavedModel to <base_path>/<model_name>/<version>/ (Pusher layout).

  Returns:
    The version directory.
  """
  path = os.path.join(base_path, model_name, str(version))
  module = ToyClassifier(seed, **sizes)
  tf.saved_model.save(
    module,
    path,
    signatures={'serving_default': module.serving_default, 'predict_text': module.predict_text},
  )
  return path


def serialized_examples(texts):
  """Serializes tf.Examples with one `text` bytes feature per text."""
  return [
    tf.train.Example(
      features=tf.train.Features(
        feature={'text': tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))}
      )
    ).SerializeToString()
    for t in texts
  ]
