"""trainer/tokenizers.py: a preset's tokenizer inside the transform graph gives keras-hub's ids.

Each family's preset is made here (tests/trainer/presets.py); its tokenizer is imported as a
Vocabulary artifact, TF Transform runs the project's preprocessing_fn over 1,000 varied texts,
and the ids of the transformed data (training) and of the saved transform graph (serving) must
equal keras-hub's own tokenizer of that preset, text for text.
"""

import os

import apache_beam as beam
import keras_hub
import numpy as np
import presets
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from pipeline import local_runner
from tfxlm import contract
from trainer import preprocessing, tokenizers, vocabulary
from trainer.vocabulary import Vocabulary

NUM_TEXTS = 1000
FAMILIES = {
  'bert_uncased': (
    lambda d: presets.bert_preset(d, lowercase=True, strip_accents=True),
    contract.PRESET_WORDPIECE,
  ),
  'bert_cased': (lambda d: presets.bert_preset(d, lowercase=False), contract.PRESET_WORDPIECE),
  'gpt2': (presets.gpt2_preset, contract.PRESET_BPE),
  'albert': (presets.albert_preset, contract.PRESET_SENTENCEPIECE),
}


def _transform(vocab_uri, texts, root):
  """Runs preprocessing_fn (task clm: bare ids) in TF Transform; returns (ids, graph dir)."""
  spec = {contract.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}
  metadata = tft.DatasetMetadata.from_feature_spec(spec)
  config = {
    contract.VOCAB_URI_KEY: vocab_uri,
    contract.TASK_KEY: contract.CLM,
    contract.SEQ_LEN_KEY: 16,
  }
  graph_dir = os.path.join(root, 'graph')
  with (
    beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline,
    tft_beam.Context(temp_dir=os.path.join(root, 'tmp')),
  ):
    raw = pipeline | beam.Create([{contract.TEXT_KEY: [t.encode()]} for t in texts])
    (data, _), transform_fn = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(
      lambda inputs: preprocessing.preprocessing_fn(inputs, config)
    )
    _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
    out_path = os.path.join(root, 'ids.npy')
    _ = (
      data
      | beam.Map(lambda row: tuple(int(i) for i in row[contract.TOKEN_IDS_KEY]))
      | beam.combiners.ToList()
      | beam.Map(lambda rows: np.save(out_path, np.array(rows, dtype=object)))
    )
  return [tuple(r) for r in np.load(out_path, allow_pickle=True)], graph_dir


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_transform_ids_equal_keras_hub_ids_in_training_and_serving(family, tmp_path):
  make_preset, kind = FAMILIES[family]
  preset = make_preset(str(tmp_path / 'preset'))
  vocab_uri = str(tmp_path / 'vocab')
  assert tokenizers.import_preset(preset, vocab_uri).kind == kind
  texts = presets.varied_texts(NUM_TEXTS)
  assert sum(t == '' for t in texts) >= 10 and any(len(w) > 100 for t in texts for w in t.split())

  reference = keras_hub.tokenizers.Tokenizer.from_preset(preset)
  want = [tuple(int(i) for i in ids) for ids in reference(texts)]

  trained, graph_dir = _transform(vocab_uri, texts, str(tmp_path / 'tft'))
  assert sorted(trained) == sorted(want)  # Beam does not keep the order.

  layer = tft.TFTransformOutput(graph_dir).transform_features_layer()
  served = layer({contract.TEXT_KEY: tf.constant([[t] for t in texts])})[contract.TOKEN_IDS_KEY]
  served = tf.RaggedTensor.from_sparse(served).to_list()
  mismatches = [(t, s, w) for t, s, w in zip(texts, served, want) if tuple(s) != w]
  assert not mismatches, mismatches[:3]


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_special_tokens_come_from_the_preset(family, tmp_path):
  preset = FAMILIES[family][0](str(tmp_path / 'preset'))
  tokenizers.import_preset(preset, str(tmp_path / 'v'))
  vocab = Vocabulary.read(str(tmp_path / 'v'))
  tokens, special = vocab.tokens, vocab.special
  reference = keras_hub.tokenizers.Tokenizer.from_preset(preset)
  assert len(tokens) == reference.vocabulary_size()
  assert special.end == reference.end_token_id
  names = {
    role: tokens[getattr(special, role)]
    for role in vocabulary.ROLES
    if getattr(special, role) is not None
  }
  if family.startswith('bert'):
    assert names == {
      'pad': '[PAD]',
      'unk': '[UNK]',
      'start': '[CLS]',
      'end': '[SEP]',
      'mask': '[MASK]',
    }
    assert special.start != contract.CLS_ID  # The preset's ids, not the learned 0-4.
    assert {1, 2, 3} <= set(special.reserved)  # [unused*] are never predicted.
  elif family == 'gpt2':
    assert names == {'pad': '<|endoftext|>', 'start': '<|endoftext|>', 'end': '<|endoftext|>'}
    assert special.end == len(tokens) - 1
  else:
    assert names == {
      'pad': '<pad>',
      'unk': '<unk>',
      'start': '[CLS]',
      'end': '[SEP]',
      'mask': '[MASK]',
    }


@pytest.mark.parametrize('family', ['bert_uncased', 'gpt2', 'albert'])
def test_decode_tokens_inverts_keras_hub_tokenization(family, tmp_path):
  preset = FAMILIES[family][0](str(tmp_path / 'preset'))
  tokenizers.import_preset(preset, str(tmp_path / 'v'))
  vocab = Vocabulary.read(str(tmp_path / 'v'))
  reference = keras_hub.tokenizers.Tokenizer.from_preset(preset)
  texts = ['the quick brown fox', 'a film, said the dog!']
  if family == 'gpt2':  # Byte-level: every text round-trips; the others have unknown tokens.
    texts.append('Café 日本語 😀 !!!  \t x')
  ids = tf.ragged.constant([list(map(int, x)) for x in reference(texts)])
  strings = tf.gather(tf.constant(vocab.tokens), ids.to_tensor())
  keep = tf.sequence_mask(ids.row_lengths())
  got = [t.decode() for t in vocab.decode(strings, keep).numpy()]
  want = [
    t if isinstance(t, str) else t.decode()
    for t in (reference.detokenize(x) for x in reference(texts))
  ]
  assert got == [w.strip() for w in want]


def test_vocabulary_without_its_special_tokens_is_refused(tmp_path):
  preset = presets.bert_preset(str(tmp_path / 'preset'))
  uri = str(tmp_path / 'v')
  tokenizers.import_preset(preset, uri)
  with open(os.path.join(uri, contract.VOCAB_FILE)) as f:
    tokens = f.read().splitlines()
  with open(os.path.join(uri, contract.VOCAB_FILE), 'w') as f:
    f.write('\n'.join(tokens[:3]) + '\n')
  with pytest.raises(ValueError, match='special token ids'):
    Vocabulary.read(uri)
