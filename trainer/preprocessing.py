"""TF Transform preprocessing: in-graph tokenization with the Vocabulary artifact's tokenizer.

`preprocessing_fn(inputs, custom_config)` reads `custom_config`:
  vocab_uri: the Vocabulary artifact's URI (its files: trainer/vocabulary.py);
  task: 'mlm' | 'clm' | 'classify';
  seq_len: int, the fixed length of classification inputs;
  lm_features: bool (classify only, default false), also output the mlm/clm pieces, so that one
    Transform serves a pretraining stage reading the same examples with the same vocabulary;
  label_domain: list of str (classify only, optional), the schema's labels and
    `data.label_values`: each is in the label vocabulary, with or without training rows, so the
    model has an output for every label the eval split may hold (components/transform.py reads
    the schema's).

Raw input: `text` (string, shape [1] per example) and, for 'classify', `label` (string).

Transformed feature spec:
  classify: token_ids  FixedLenFeature([seq_len], tf.int64)   [CLS] pieces… [SEP] [PAD]…; long
                                                              texts are truncated before [SEP];
            label      FixedLenFeature([], tf.int64)          id in the `label_vocab` asset (a
                                                              plain one-label-per-line file sorted
                                                              by label string: the train split's
                                                              labels and the label_domain's;
                                                              unknown -> -1).
  mlm, clm: token_ids  VarLenFeature(tf.int64)                the pieces only, no [CLS]/[SEP]/pad:
                                                              the trainer packs and masks.
  classify with lm_features: the classify features, plus
            lm_token_ids  VarLenFeature(tf.int64)             the mlm/clm pieces above (one
                                                              tokenization feeds both).

The vocabulary's kind (vocab.json) chooses the tokenizer and its special tokens
(trainer/vocabulary.py): a learned vocabulary normalizes as vocab.json says and tokenizes with
tensorflow-text; a preset's vocabulary runs keras-hub's own tokenizer of that preset. The
tokenizer model is part of the graph. vocab.txt and vocab.json are graph assets too
(`tft_output.vocabulary_file_by_name('token_vocab' | 'tokenizer_spec')`), to map ids back to
strings and to know the special ids; so the transform graph, and any SavedModel built from it,
is self-contained.
"""

import os

import apache_beam as beam
import tensorflow as tf
import tensorflow_text as tf_text  # noqa: F401 (registers the ops in every Beam worker process)
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from tfxlm import contract
from trainer.vocabulary import LEARNED_SPECIAL_TOKENS, SpecialTokens, Vocabulary

# The custom_config key of the labels that each get an id (see the module docstring).
LABEL_DOMAIN_KEY = 'label_domain'


def frame(
  ids: tf.RaggedTensor,
  seq_len: int,
  special: SpecialTokens = LEARNED_SPECIAL_TOKENS,
) -> tf.Tensor:
  """(batch, None) ids -> (batch, seq_len): [CLS] ids… [SEP], truncated, padded with [PAD].

  Dense ops only: a ragged concat of the same ([CLS], ids, [SEP]) is a graph of ~150 ops, traced
  four times per Transform run and again in every export.
  """
  body = ids[:, : seq_len - 2]
  lengths = body.row_lengths()
  body = body.to_tensor(default_value=special.pad, shape=[None, seq_len - 2])
  batch = tf.shape(body, out_type=tf.int64)[0]
  cls = tf.fill(tf.stack([batch, 1]), tf.constant(special.start, tf.int64))
  pad = tf.fill(tf.stack([batch, 1]), tf.constant(special.pad, tf.int64))
  framed = tf.concat([cls, body, pad], axis=1)  # [CLS] ids [PAD]… : [SEP] goes after the ids
  at_sep = tf.equal(tf.range(seq_len, dtype=tf.int64)[tf.newaxis, :], lengths[:, tf.newaxis] + 1)
  return tf.where(at_sep, tf.constant(special.end, tf.int64), framed)


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
  """TF Transform entry point (see the module docstring for inputs, config and outputs)."""
  # The task and seq_len come from the validated TrainerConfig the Trainer gets too
  # (`TrainerConfig.transform_custom_config`); the Transform executor adds the vocabulary's URI.
  vocab_uri = custom_config[contract.VOCAB_URI_KEY]
  task = custom_config[contract.TASK_KEY]
  vocab = Vocabulary.read(vocab_uri)
  special = vocab.special
  text = tf.reshape(_dense(inputs[contract.TEXT_KEY]), [-1])  # (batch,)
  ids = vocab.tokenize(text)  # (batch, None)
  ids = _with_vocab_assets(ids, vocab)
  if task != contract.CLASSIFY:
    return {contract.TOKEN_IDS_KEY: ids.to_sparse()}

  seq_len = int(custom_config[contract.SEQ_LEN_KEY])
  label = tf.reshape(_dense(inputs[contract.LABEL_KEY]), [-1])
  label_vocab = sorted_vocabulary(
    label, contract.LABEL_VOCAB_NAME, also=custom_config.get(LABEL_DOMAIN_KEY) or ()
  )
  outputs = {
    contract.TOKEN_IDS_KEY: frame(ids, seq_len, special),
    contract.TRANSFORMED_LABEL_KEY: tft.apply_vocabulary(label, label_vocab),
  }
  if custom_config.get(contract.LM_FEATURES_KEY):
    outputs[contract.LM_TOKEN_IDS_KEY] = ids.to_sparse()
  return outputs


class _WriteSortedDistinct(tft_beam.experimental.PTransformAnalyzer):
  """Beam analyzer: the distinct values of a string tensor and `also`, sorted, one per line in a
  file."""

  def __init__(self, filename: str, also: tuple = ()):
    super().__init__()
    self._filename = filename
    self._also = tuple(value.encode() for value in also)

  def expand(self, batches: beam.PCollection) -> beam.PCollection:
    path = os.path.join(self.base_temp_dir, self._filename)

    def write(values):
      values = set(values) | set(self._also)
      for value in values:
        if b'\n' in value or b'\r' in value:
          raise ValueError(
            f'{self._filename}: {value.decode(errors="replace")!r} has a line break: the file '
            'holds one value per line; relabel the rows with one-line labels'
          )
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


def sorted_vocabulary(x: tf.Tensor, name: str, also=()) -> tf.Tensor:
  """Like `tft.vocabulary`, but sorted by value, so the ids of labels do not depend on counts.

  `also`: strings in the vocabulary whether `x` holds them or not (the schema's labels and
  `data.label_values`).

  Returns:
    The path of the vocabulary file, an asset of the graph named `name` (for
    `tft_output.vocabulary_file_by_name(name)`): a plain file, one value per line.
  """
  (path,) = tft.experimental.ptransform_analyzer(
    inputs=[x],
    ptransform=_WriteSortedDistinct(name, tuple(also)),
    output_dtypes=[tf.string],
    output_shapes=[[]],
    output_asset_default_values=[b'__unset__'],
    name=name,
  )
  tft.annotate_asset(name, name)
  return path


def _dense(x):
  if isinstance(x, tf.SparseTensor):
    return tf.sparse.to_dense(x, default_value='')
  if isinstance(x, tf.RaggedTensor):
    return x.to_tensor(default_value='')
  return x


def _with_vocab_assets(ids: tf.RaggedTensor, vocab: Vocabulary) -> tf.RaggedTensor:
  """Makes vocab.txt and vocab.json assets of the transform graph (`token_vocab`,
  `tokenizer_spec`), so the trainer and the export read the tokens and the special ids there.

  A lookup table is what makes TF Transform copy a file into the graph's assets
  (`tft.apply_vocabulary` also initializes it once, not per batch). The vocab.txt table checks
  that the shipped file has the special tokens at their ids, and the ids depend on that check
  (and on the vocab.json table), so both tables stay in the graph.
  """
  vocab_path = os.path.join(vocab.uri, contract.VOCAB_FILE)
  special_ids = list(vocab.special.reserved)
  expected = tf.constant([vocab.tokens[i] for i in special_ids])
  found = tft.apply_vocabulary(expected, deferred_vocab_filename_tensor=vocab_path)
  tft.annotate_asset(contract.TOKEN_VOCAB_NAME, contract.VOCAB_FILE)
  # vocab.json (one line, see Vocabulary.write) read as a one-entry vocabulary.
  spec_path = os.path.join(vocab.uri, contract.VOCAB_JSON)
  spec_lines = tft.apply_vocabulary(tf.constant(['{']), deferred_vocab_filename_tensor=spec_path)
  tft.annotate_asset(contract.TOKENIZER_SPEC_NAME, contract.VOCAB_JSON)
  check = tf.debugging.assert_equal(
    found,
    tf.constant(special_ids, tf.int64),
    message=f'{vocab_path} must hold the special tokens at ids {special_ids}',
  )
  with tf.control_dependencies([check, spec_lines]):
    return ids.with_flat_values(tf.identity(ids.flat_values))
