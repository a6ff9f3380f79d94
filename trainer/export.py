"""The serving SavedModel: Keras model + Transform graph in one `tf.Module`, named signatures.

Signatures (names and keys from tfxlm/contract.py, shared with serving and clients):

| signature            | inputs                                            | outputs                      |
| -------------------- | ------------------------------------------------- | ---------------------------- |
| `serving_default`    | `examples` string [b] (serialized tf.Example)     | per task, below              |
| `predict_text`       | `text` string [b]                                 | same as `serving_default`    |
| `transform_features` | `examples` string [b]                             | transformed features         |
| `classification`     | `inputs` string [b] (serialized tf.Example)       | `classes` string [b, classes]|
| (classify)           |                                                   | `scores` float32 [b, classes]|
| `generate` (clm)     | `prompt` string [b], `max_new_tokens` int32 [b],  | `text` string [b]: the       |
|                      | `temperature` float32 [b], `top_k` int32 [b],     | continuation, prompt omitted |
|                      | `top_p` float32 [b], `seed` int32 [b]             |                              |

Per task:
- classify: `probabilities` float32 [b, classes], `label_ids` int64 [b], `labels` string [b].
- mlm: `mask_predictions` string [b, k], `mask_scores` float32 [b, k] (probabilities) for the
  first [MASK] of each text; rows without a [MASK] get '' and 0. The literal text "[MASK]" is cut
  out before tokenizing, so the tokenizer need not know it. Also `token_logprob_sum` and
  `token_count` (below) over a deterministic sample of the text's tokens, each replaced by
  [MASK] and predicted from the rest: up to ceil(seq_len * mask_rate) tokens spread evenly.
- clm: `token_logprob_sum` float32 [b] (log-probability of the text's tokens, each predicted
  from the ones before it, the first from the end token) and `token_count` float32 [b].
- mlm and clm: perplexity over examples is exp(-sum(token_logprob_sum) / sum(token_count)), in
  nats. Texts are cut to seq_len tokens (seq_len - 2 for mlm).

`classification` is TF Serving's classification signature (method_name
tensorflow/serving/classify), which its Classify API and MultiInference need: `scores` are the
probabilities, `classes` the label vocabulary on every row.

`transform_features` returns Transform's outputs as dense tensors (variable-length `token_ids`
padded with 0 to the longest in the batch). A pretraining model whose Transform the classify
stage shares (trainer/preprocessing.py) reads its pieces from `lm_token_ids`, and this signature
returns the classify features too.

`generate` (trainer/generation.py) prefills a key/value cache with the prompt, then runs one
position per step against it inside one `tf.while_loop`; only TensorFlow (and tensorflow-text
for the tokenizer) is needed to run it. Every input has one value per row, so rows of a batch
differ in prompt and controls: temperature <= 0 is greedy (token for token what keras-hub's
`GPT2CausalLM.generate` gives with the greedy sampler), top_k <= 0 samples from the whole
vocabulary, top_p outside (0, 1) turns the nucleus cut off, and the same seed gives the same
text. A row ends at the vocabulary's end token or after its max_new_tokens; the vocabulary's
other special tokens are never generated. max_new_tokens below 0 or above the limit fixed at
export (`TrainerConfig.max_new_tokens_limit`, at most seq_len - 1) fails with INVALID_ARGUMENT
and a message naming the input, the value and the range (no tensor dumps), and a prompt keeps
its last seq_len - max_new_tokens tokens (with the end token in front) so the new ones fit the
window.

Special tokens are the vocabulary's (vocab.json, trainer/vocabulary.py): [CLS] [SEP] [PAD]
[MASK] at ids 0-4 for a learned vocabulary, a preset's own ids otherwise (GPT-2's
<|endoftext|> starts, ends and pads). The continuation is decoded by the tokenizer's kind:
WordPiece, SentencePiece, or GPT-2's byte-level BPE.
"""

import os

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils

from tfxlm import contract
from tfxlm.contract import EXAMPLES_INPUT as EXAMPLES
from tfxlm.contract import (
  GENERATE,
  LABEL_IDS,
  LABELS,
  MASK_PREDICTIONS,
  MASK_SCORES,
  PREDICT_TEXT,
  PROBABILITIES,
  SERVING_DEFAULT,
  TOKEN_COUNT,
  TOKEN_LOGPROB_SUM,
  TRANSFORM_FEATURES,
)
from tfxlm.contract import TEXT_INPUT as TEXT
from trainer import generation, inputs, vocabulary
from trainer.config import TrainerConfig
from trainer.models import MASK_POSITIONS, PADDING_MASK, TOKEN_IDS
from trainer.vocabulary import SpecialTokens


def read_lines(path: str) -> list[str]:
  """Lines of a vocabulary file, line number = id."""
  with tf.io.gfile.GFile(path) as f:
    return [line.rstrip('\n') for line in f]


def _dense(ids):
  if isinstance(ids, tf.SparseTensor):
    ids = tf.RaggedTensor.from_sparse(ids)
  if isinstance(ids, tf.RaggedTensor):
    return ids.to_tensor(default_value=contract.PAD_ID)
  return ids


def _dense_text(text):
  if isinstance(text, tf.SparseTensor):
    return tf.sparse.to_dense(text, default_value='')
  return text


def _ragged(ids):
  if isinstance(ids, tf.SparseTensor):
    return tf.RaggedTensor.from_sparse(ids)
  if isinstance(ids, tf.RaggedTensor):
    return ids
  return tf.RaggedTensor.from_tensor(ids, padding=contract.PAD_ID)


class ExportModule(tf.Module):
  """Holds the model, the Transform layer and the vocabularies the signatures need."""

  def __init__(
    self,
    model: keras.Model,
    tft_output: tft.TFTransformOutput,
    config: TrainerConfig,
    token_vocab: list[str],
    label_vocab: list[str] | None = None,
    *,
    kind: str = contract.WORDPIECE,
    special: SpecialTokens = vocabulary.LEARNED_SPECIAL_TOKENS,
    model_call=None,
  ):
    super().__init__()
    self.kind = kind
    self.special = special
    # Saving walks the SavedModel's object graph and traces again every tf.function it finds
    # there or among an object's attributes (each Keras Model has one, its default signature).
    # Kept out of it: the Keras model (its variables are tracked below) and, in a dict, the
    # function behind `serving_default` and `predict_text` (one trace of Transform and the
    # model serves both when their raw features have the same structure, text alone).
    self._setattr_tracking = False
    self.model = model
    self._traced = {'predict_raw': tf.function(self.predict_raw, autograph=False)}
    # A quantized classifier (trainer/quantization.py) runs as `model_call`, a function holding
    # its weights as graph constants: then the model's variables are not saved.
    self._model_call = model_call or self.model
    self._setattr_tracking = True
    if model_call is None:
      self.model_variables = list(model.weights)
    self.tft_layer = tft_output.transform_features_layer()
    # Transform's layer is a tf_keras model, whose calls (here and when saving traces it) AutoGraph
    # would rewrite, seconds per process, though it has no Python control flow on tensors. The
    # layer is cached by its TFTransformOutput: wrapped once.
    if 'call' not in vars(self.tft_layer):
      self.tft_layer.call = tf.autograph.experimental.do_not_convert(self.tft_layer.call)
    self.task = config.task
    # A pretraining model whose Transform the classify stage shares reads the LM pieces.
    self.ids_key = inputs.token_ids_key(self.task, tft_output.transformed_feature_spec())
    self.seq_len = config.seq_len
    self.num_predictions = inputs.max_predictions(config.seq_len, config.mask_rate)
    self.vocab_size = len(token_vocab)
    # More candidates than tokens would fail top_k inside the signature: all of them, at most.
    self.top_k = min(config.mask_top_k, self.vocab_size)
    # (vocab,) True for the special tokens: never an answer, a scored target or a sample.
    self.reserved = tf.constant([i in set(special.reserved) for i in range(len(token_vocab))])
    self.token_strings = tf.constant(token_vocab)
    self.label_strings = tf.constant(label_vocab or [''])
    self.raw_spec = tft_output.raw_feature_spec()
    self.serving_spec = {k: v for k, v in self.raw_spec.items() if k != contract.LABEL_KEY}
    if contract.TEXT_KEY not in self.serving_spec:
      raise ValueError(f'raw feature spec lacks {contract.TEXT_KEY!r}: {sorted(self.raw_spec)}')
    if self.task == contract.CLM:
      # Never generate the vocabulary's special tokens other than its end token, which ends the
      # text ([SEP] for a learned vocabulary, <|endoftext|> for GPT-2).
      self.generator = generation.CachedGenerator(
        model.backbone,
        config.seq_len,
        special.end,
        banned_ids=[i for i in special.reserved if i != special.end],
        max_new_tokens_limit=config.max_new_tokens_limit,
        jit_compile=config.generate_jit_compile,
      )

  # -- Transform -------------------------------------------------------------------------------

  def _transform(self, raw):
    if self.task != contract.MLM:
      return self.tft_layer(raw)
    # The tokenizer would split a literal "[MASK]" into pieces: cut the texts there, transform
    # the pieces and put the vocabulary's mask token between them.
    text = tf.reshape(_dense_text(raw[contract.TEXT_KEY]), [-1])
    pieces = tf.strings.split(text, sep=contract.MASK)  # (batch, pieces)
    ids = _ragged(
      self.tft_layer(self._raw_from_text(pieces.flat_values))[self.ids_key]
    )  # (all pieces, None)
    piece_index = tf.range(tf.size(pieces.flat_values, out_type=tf.int64))
    is_last = tf.equal(piece_index + 1, tf.gather(pieces.row_splits[1:], pieces.value_rowids()))
    mask = tf.RaggedTensor.from_row_lengths(
      tf.fill([tf.reduce_sum(tf.cast(~is_last, tf.int64))], tf.cast(self.special.mask, ids.dtype)),
      tf.cast(~is_last, tf.int64),
    )
    joined = tf.concat([ids, mask], axis=1)
    per_text = tf.RaggedTensor.from_row_splits(joined, pieces.row_splits).merge_dims(1, 2)
    return {self.ids_key: per_text}

  def _raw_from_text(self, text):
    spec = self.serving_spec[contract.TEXT_KEY]
    if isinstance(spec, tf.io.FixedLenFeature):
      return {contract.TEXT_KEY: tf.reshape(text, [-1] + list(spec.shape))}
    return {contract.TEXT_KEY: tf.RaggedTensor.from_tensor(text[:, tf.newaxis]).to_sparse()}

  # -- per-task outputs ------------------------------------------------------------------------

  def _outputs(self, transformed):
    ids = transformed[self.ids_key]
    if self.task == contract.CLASSIFY:
      return self._classify(_dense(ids))
    if self.task == contract.MLM:
      return self._mlm(_ragged(ids))
    return self._clm_score(_ragged(ids))

  def _classify(self, ids):
    ids = tf.cast(ids, tf.int32)
    # Cut the batch to its longest text, rounded up as the Trainer's batches are: the padding
    # mask hides the rest, so the outputs are those of the full length at a fraction of the cost
    # (Transform pads every text to seq_len).
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(ids != self.special.pad, tf.int32), axis=1))
    multiple = inputs.LENGTH_MULTIPLE
    cut = tf.minimum(tf.maximum(-(-longest // multiple) * multiple, 1), tf.shape(ids)[1])
    ids = ids[:, :cut]
    logits = self._model_call(
      {TOKEN_IDS: ids, PADDING_MASK: tf.cast(ids != self.special.pad, tf.int32)}, training=False
    )
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    label_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    return {
      PROBABILITIES: probabilities,
      LABEL_IDS: label_ids,
      LABELS: tf.gather(self.label_strings, label_ids),
    }

  def _mlm(self, ids):
    ids = tf.cast(ids[:, : self.seq_len - 2], tf.int32)
    rows = ids.nrows()
    wrapped = tf.concat(
      [tf.fill([rows, 1], self.special.start), ids, tf.fill([rows, 1], self.special.end)], axis=1
    )
    dense = wrapped.to_tensor(default_value=self.special.pad)
    is_mask = tf.equal(dense, self.special.mask)
    has_mask = tf.reduce_any(is_mask, axis=1)
    position = tf.argmax(tf.cast(is_mask, tf.int32), axis=1, output_type=tf.int32)
    logits = self.model(
      {
        TOKEN_IDS: dense,
        PADDING_MASK: tf.cast(dense != self.special.pad, tf.int32),
        MASK_POSITIONS: position[:, tf.newaxis],
      },
      training=False,
    )[:, 0, :]
    # Reserved tokens are never an answer.
    logits = tf.where(self.reserved[tf.newaxis, :], -1e9, tf.cast(logits, tf.float32))
    scores, top_ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.top_k)
    predictions = tf.gather(self.token_strings, top_ids)
    has_mask = has_mask[:, tf.newaxis]
    return {
      MASK_PREDICTIONS: tf.where(has_mask, predictions, ''),
      MASK_SCORES: tf.where(has_mask, scores, 0.0),
      **self._mlm_score(dense, tf.cast(ids.row_lengths(), tf.int32)),
    }

  def _mlm_score(self, dense, lengths):
    """Masked-LM log-likelihood of up to `num_predictions` evenly spread tokens per text.

    Masking is deterministic (positions 1 + floor(j * length / k)), so a text always gets the
    same score; reserved tokens (an existing [MASK]) are never scored.
    """
    k = self.num_predictions
    j = tf.range(k, dtype=tf.int32)[tf.newaxis, :]
    positions = 1 + (j * lengths[:, tf.newaxis]) // k  # (batch, k)
    distinct = tf.concat(
      [tf.ones_like(positions[:, :1], tf.bool), positions[:, 1:] > positions[:, :-1]], axis=1
    )
    targets = tf.gather(dense, positions, batch_dims=1)
    weights = distinct & (lengths[:, tf.newaxis] > 0) & ~tf.gather(self.reserved, targets)
    batch_index = tf.broadcast_to(tf.range(tf.shape(dense)[0])[:, tf.newaxis], tf.shape(positions))
    masked = tf.tensor_scatter_nd_update(
      dense,
      tf.stack([batch_index, positions], axis=-1),
      tf.where(weights, self.special.mask, targets),
    )
    logits = self.model(
      {
        TOKEN_IDS: masked,
        PADDING_MASK: tf.cast(masked != self.special.pad, tf.int32),
        MASK_POSITIONS: positions,
      },
      training=False,
    )
    logprobs = -tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=targets, logits=tf.cast(logits, tf.float32)
    )
    weights = tf.cast(weights, tf.float32)
    return {
      TOKEN_LOGPROB_SUM: tf.reduce_sum(logprobs * weights, axis=1),
      TOKEN_COUNT: tf.reduce_sum(weights, axis=1),
    }

  def _clm_score(self, ids):
    ids = tf.cast(ids[:, : self.seq_len], tf.int32)
    rows = ids.nrows()
    with_start = tf.concat([tf.fill([rows, 1], self.special.end), ids], axis=1)
    context = with_start.to_tensor(default_value=self.special.pad)[:, :-1]
    targets = ids.to_tensor(default_value=self.special.pad, shape=tf.shape(context))
    # Padding is cut by length, not by id: GPT-2 pads with its <|endoftext|>, a real target.
    target_mask = tf.sequence_mask(ids.row_lengths(), tf.shape(context)[1], tf.float32)
    logits = self.model({TOKEN_IDS: context, PADDING_MASK: tf.ones_like(context)}, training=False)
    logprobs = -tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=targets, logits=tf.cast(logits, tf.float32)
    )
    return {
      TOKEN_LOGPROB_SUM: tf.reduce_sum(logprobs * target_mask, axis=1),
      TOKEN_COUNT: tf.reduce_sum(target_mask, axis=1),
    }

  # -- signatures ------------------------------------------------------------------------------

  def predict_raw(self, raw):
    """The task's outputs for parsed raw features."""
    return self._outputs(self._transform(raw))

  def serve_examples(self, examples):
    return self._traced['predict_raw'](tf.io.parse_example(examples, self.serving_spec))

  def predict_text(self, text):
    return self._traced['predict_raw'](self._raw_from_text(text))

  def classification(self, inputs):
    probabilities = self.serve_examples(inputs)[PROBABILITIES]
    classes = tf.tile(self.label_strings[tf.newaxis], [tf.shape(probabilities)[0], 1])
    return {contract.CLASSES: classes, contract.SCORES: probabilities}

  def transform_features(self, examples):
    raw = tf.io.parse_example(examples, self.raw_spec)
    transformed = self.tft_layer(raw)
    return {name: _dense(value) for name, value in transformed.items()}

  def generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
    transformed = self._transform(self._raw_from_text(prompt))
    ids = tf.cast(_ragged(transformed[self.ids_key]), tf.int32)
    # The end token separates documents in training, so it starts a fresh one here.
    ids = tf.concat([tf.fill([ids.nrows(), 1], self.special.end), ids], axis=1)
    ids, new = self.generator.generate(ids, max_new_tokens, temperature, top_k, top_p, seed)
    return {
      contract.GENERATED_TEXT: vocabulary.decode_tokens(
        tf.gather(self.token_strings, ids), new, self.kind
      )
    }

  def signatures(self):
    """The concrete functions to save, by signature name.

    They are traced here from plain methods: a `tf.function` attribute of the module would be
    traced a second time by `tf.saved_model.save`, which lists every function it can reach.
    Without AutoGraph: nothing here branches or loops in Python on a tensor's value (generation
    uses `tf.while_loop`), and rewriting these methods and all they call cost each exporting
    process seconds (bench/first_run_bench.py).
    """
    examples = tf.TensorSpec([None], tf.string, name=EXAMPLES)
    text = tf.TensorSpec([None], tf.string, name=TEXT)
    traced = lambda method, *specs: tf.function(
      method, input_signature=specs, autograph=False
    ).get_concrete_function()
    signatures = {
      SERVING_DEFAULT: traced(self.serve_examples, examples),
      PREDICT_TEXT: traced(self.predict_text, text),
      TRANSFORM_FEATURES: traced(self.transform_features, examples),
    }
    if self.task == contract.CLASSIFY:
      signatures[contract.CLASSIFICATION] = traced(
        self.classification, tf.TensorSpec([None], tf.string, name=contract.CLASSIFY_INPUTS)
      )
    if self.task == contract.CLM:
      signatures[GENERATE] = traced(
        self.generate,
        tf.TensorSpec([None], tf.string, name=contract.PROMPT_INPUT),
        tf.TensorSpec([None], tf.int32, name=contract.MAX_NEW_TOKENS_INPUT),
        tf.TensorSpec([None], tf.float32, name=contract.TEMPERATURE_INPUT),
        tf.TensorSpec([None], tf.int32, name=contract.TOP_K_INPUT),
        tf.TensorSpec([None], tf.float32, name=contract.TOP_P_INPUT),
        tf.TensorSpec([None], tf.int32, name=contract.SEED_INPUT),
      )
    return signatures


def export_saved_model(
  model: keras.Model,
  tft_output: tft.TFTransformOutput,
  config: TrainerConfig,
  token_vocab: list[str],
  label_vocab: list[str] | None,
  export_dir: str,
  *,
  kind: str = contract.WORDPIECE,
  special: SpecialTokens = vocabulary.LEARNED_SPECIAL_TOKENS,
  model_call=None,
) -> str:
  """Saves model + Transform graph with the signatures above to `export_dir`.

  `kind` and `special` are the tokenizer's (vocab.json): they decide decoding and which ids
  start, end, pad, mask and are never predicted or generated. `model_call` (classify only)
  replaces the model's own call (trainer/quantization.py).
  """
  module = ExportModule(
    model,
    tft_output,
    config,
    token_vocab,
    label_vocab,
    kind=kind,
    special=special,
    model_call=model_call,
  )
  # A quantized model's call carries Keras' custom gradients, whose gradient functions read the
  # variables it no longer has; serving never asks for a gradient.
  options = tf.saved_model.SaveOptions(experimental_custom_gradients=model_call is None)
  tf.saved_model.save(module, export_dir, signatures=module.signatures(), options=options)
  if config.task == contract.CLASSIFY:
    _mark_classification(export_dir)
  return export_dir


def _mark_classification(export_dir: str) -> None:
  """Makes the `classification` signature one TF Serving's Classify runs.

  `tf.saved_model.save` gives every signature the predict method_name; TF Serving's Classify and
  MultiInference's classify tasks run only a signature whose method_name is
  tensorflow/serving/classify (its Predict runs any). Set here in saved_model.pb, whose
  fingerprint (fingerprint.pb, a checksum of it) is then written again.
  """
  path = os.path.join(export_dir, tf.saved_model.SAVED_MODEL_FILENAME_PB)
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(path, 'rb') as f:
    saved_model.ParseFromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    meta_graph.signature_def[contract.CLASSIFICATION].method_name = contract.CLASSIFY_METHOD
  partial = path + '.partial'
  with tf.io.gfile.GFile(partial, 'wb') as f:
    f.write(saved_model.SerializeToString(deterministic=True))
  tf.io.gfile.rename(partial, path, overwrite=True)
  fingerprinting_utils.write_fingerprint(export_dir)
