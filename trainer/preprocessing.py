"""TF Transform preprocessing: tensorflow-text tokenization with the learned vocabulary.

`preprocessing_fn(inputs, custom_config)` reads `custom_config`:
  vocab_uri: the Vocabulary artifact's URI (vocab.txt, vocab.json, and spm.model for SentencePiece);
  task: 'mlm' | 'clm' | 'classify';
  seq_len: int, the fixed length of classification inputs.

Raw input: `text` (string, shape [1] per example) and, for 'classify', `label` (string).

Transformed feature spec:
  classify: token_ids  FixedLenFeature([seq_len], tf.int64)   [CLS] pieces… [SEP] [PAD]…; long
                                                              texts are truncated before [SEP];
            label      FixedLenFeature([], tf.int64)          id in the `label_vocab` asset (a
                                                              plain one-label-per-line file sorted
                                                              by label string; unknown -> -1).
  mlm, clm: token_ids  VarLenFeature(tf.int64)                the pieces only, no [CLS]/[SEP]/pad:
                                                              the trainer packs and masks.

The text is normalized as vocab.json says (NFKC, case folding, accent stripping, in the order the
Vocabulary component used) and tokenized by `FastBertTokenizer` (`SentencepieceTokenizer` for a
SentencePiece vocabulary), whose model is a constant in the graph. vocab.txt is also a graph asset,
`tft_output.vocabulary_file_by_name('token_vocab')`, to map ids back to strings; so the transform
graph, and any SavedModel built from it, is self-contained.
"""

import functools
import json
import os

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text  # Registers the ops in every Beam worker process that loads this.
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_text.core.pybinds import (
  pywrap_fast_wordpiece_tokenizer_model_builder as fast_wordpiece_builder,
)

from tfxlm import contract

# Words longer than this many bytes become [UNK] (FastBertTokenizer's own default).
MAX_BYTES_PER_WORD = 100


def read_vocabulary(vocab_uri: str) -> tuple[list[str], dict]:
  """Returns (tokens in id order, vocab.json) of a Vocabulary artifact."""
  with tf.io.gfile.GFile(os.path.join(vocab_uri, contract.VOCAB_FILE)) as f:
    tokens = f.read().splitlines()
  with tf.io.gfile.GFile(os.path.join(vocab_uri, contract.VOCAB_JSON)) as f:
    meta = json.load(f)
  if tuple(tokens[:len(contract.RESERVED_TOKENS)]) != contract.RESERVED_TOKENS:
    raise ValueError(f'{vocab_uri}/{contract.VOCAB_FILE} must start with {contract.RESERVED_TOKENS}, '
                     f'starts with {tokens[:len(contract.RESERVED_TOKENS)]}')
  return tokens, meta


def normalize(text: tf.Tensor, meta: dict) -> tf.Tensor:
  """Normalizes a string tensor as the Vocabulary component did (vocab.json flags)."""
  if meta['nfkc']:
    text = tf_text.normalize_utf8(text, 'NFKC')
  if meta['lowercase']:
    text = tf_text.case_fold_utf8(text)
  if meta['strip_accents']:
    text = tf.strings.regex_replace(tf_text.normalize_utf8(text, 'NFD'), r'\p{Mn}', '')
  return text


@functools.lru_cache(maxsize=4)
def _wordpiece_model(tokens: tuple[str, ...], suffix_indicator: str) -> np.ndarray:
  """The FastWordpiece flatbuffer for a vocabulary, built once per process.

  TF Transform traces preprocessing_fn several times; building the model and handing it to
  `FastBertTokenizer` as bytes (which it turns into a constant through a Python list of ints)
  cost about 3 s per trace for an 8k vocabulary. A uint8 array becomes a constant directly.
  """
  buffer = fast_wordpiece_builder.build_fast_wordpiece_model(
    list(tokens), MAX_BYTES_PER_WORD, suffix_indicator, contract.UNK,
    False, False)  # no_pretokenization, support_detokenization
  return np.frombuffer(buffer, dtype=np.uint8)


def make_tokenizer(tokens: list[str], meta: dict, vocab_uri: str) -> tf_text.Tokenizer:
  """The tensorflow-text tokenizer for a vocabulary: `tokenize(strings) -> ragged int64 ids`."""
  if meta['kind'] == contract.SENTENCEPIECE:
    with tf.io.gfile.GFile(os.path.join(vocab_uri, contract.SPM_MODEL_FILE), 'rb') as f:
      return tf_text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
  model = _wordpiece_model(tuple(tokens), meta.get('suffix_indicator', contract.SUFFIX_INDICATOR))
  return tf_text.FastBertTokenizer(
    fast_wordpiece_model_buffer=tf.constant(model), token_out_type=tf.int64)


def tokenize(text: tf.Tensor, tokenizer: tf_text.Tokenizer, meta: dict) -> tf.RaggedTensor:
  """(batch,) strings -> (batch, None) int64 token ids."""
  ids = tokenizer.tokenize(normalize(text, meta))
  if ids.ragged_rank == 2:  # FastBertTokenizer: (batch, words, pieces).
    ids = ids.merge_dims(1, 2)
  return tf.cast(ids, tf.int64)  # SentencepieceTokenizer only gives int32.


def frame(ids: tf.RaggedTensor, seq_len: int) -> tf.Tensor:
  """(batch, None) ids -> (batch, seq_len): [CLS] ids… [SEP], truncated, padded with [PAD]."""
  batch = ids.nrows()
  ids = ids[:, :seq_len - 2]
  cls = tf.fill([batch, 1], tf.constant(contract.CLS_ID, tf.int64))
  sep = tf.fill([batch, 1], tf.constant(contract.SEP_ID, tf.int64))
  framed = tf.concat([cls, ids, sep], axis=1)
  return framed.to_tensor(default_value=contract.PAD_ID, shape=[None, seq_len])


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
  """TF Transform entry point (see the module docstring for inputs, config and outputs)."""
  # The task and seq_len come from the validated TrainerConfig the Trainer gets too
  # (`TrainerConfig.transform_custom_config`); the Transform executor adds the vocabulary's URI.
  vocab_uri = custom_config[contract.VOCAB_URI_KEY]
  task = custom_config[contract.TASK_KEY]
  tokens, meta = read_vocabulary(vocab_uri)
  text = tf.reshape(_dense(inputs[contract.TEXT_KEY]), [-1])  # (batch,)
  ids = tokenize(text, make_tokenizer(tokens, meta, vocab_uri), meta)  # (batch, None)
  ids = _with_vocab_asset(ids, os.path.join(vocab_uri, contract.VOCAB_FILE))
  if task != contract.CLASSIFY:
    return {contract.TOKEN_IDS_KEY: ids.to_sparse()}

  seq_len = int(custom_config[contract.SEQ_LEN_KEY])
  label = tf.reshape(_dense(inputs[contract.LABEL_KEY]), [-1])
  label_vocab = sorted_vocabulary(label, contract.LABEL_VOCAB_NAME)
  return {
    contract.TOKEN_IDS_KEY: frame(ids, seq_len),
    contract.TRANSFORMED_LABEL_KEY: tft.apply_vocabulary(label, label_vocab),
  }


class _WriteSortedDistinct(tft_beam.experimental.PTransformAnalyzer):
  """Beam analyzer: the distinct values of a string tensor, sorted, one per line in a file."""

  def __init__(self, filename: str):
    super().__init__()
    self._filename = filename

  def expand(self, batches: beam.PCollection) -> beam.PCollection:
    path = os.path.join(self.base_temp_dir, self._filename)

    def write(values):
      for value in values:
        if b'\n' in value or b'\r' in value:
          raise ValueError(f'{self._filename}: value {value!r} has a line break')
      tf.io.gfile.makedirs(os.path.dirname(path))
      with tf.io.gfile.GFile(path, 'wb') as f:
        f.write(b''.join(value + b'\n' for value in sorted(values)))
      return path.encode()

    return (
      batches
      | 'Values' >> beam.FlatMap(lambda batch: batch[0].ravel().tolist())
      | 'Distinct' >> beam.Distinct()
      | 'List' >> beam.combiners.ToList()
      | 'Write' >> beam.Map(write)
    )


def sorted_vocabulary(x: tf.Tensor, name: str) -> tf.Tensor:
  """Like `tft.vocabulary`, but sorted by value, so the ids of labels do not depend on counts.

  Returns:
    The path of the vocabulary file, an asset of the graph named `name` (for
    `tft_output.vocabulary_file_by_name(name)`): a plain file, one value per line.
  """
  (path,) = tft.experimental.ptransform_analyzer(
    inputs=[x], ptransform=_WriteSortedDistinct(name), output_dtypes=[tf.string],
    output_shapes=[[]], output_asset_default_values=[b'__unset__'], name=name)
  tft.annotate_asset(name, name)
  return path


def _dense(x):
  if isinstance(x, tf.SparseTensor):
    return tf.sparse.to_dense(x, default_value='')
  if isinstance(x, tf.RaggedTensor):
    return x.to_tensor(default_value='')
  return x


def _with_vocab_asset(ids: tf.RaggedTensor, vocab_path: str) -> tf.RaggedTensor:
  """Makes vocab.txt an asset of the transform graph, named `token_vocab`.

  A vocabulary lookup table is what makes TF Transform copy the file into the graph's assets
  (`tft.apply_vocabulary` also initializes it once, not per batch). The table checks that the
  shipped file has the reserved tokens at ids 0..4, and the ids depend on that check, so the
  table stays in the graph.
  """
  reserved = tf.constant(contract.RESERVED_TOKENS)
  reserved_ids = tft.apply_vocabulary(reserved, deferred_vocab_filename_tensor=vocab_path)
  tft.annotate_asset(contract.TOKEN_VOCAB_NAME, os.path.basename(vocab_path))
  check = tf.debugging.assert_equal(
    reserved_ids, tf.range(len(contract.RESERVED_TOKENS), dtype=tf.int64),
    message=f'{vocab_path} must start with {contract.RESERVED_TOKENS}')
  with tf.control_dependencies([check]):
    return ids.with_flat_values(tf.identity(ids.flat_values))
