"""preprocessing_fn: normalization parity with the Vocabulary, framing, tokenization in TFT."""

import collections
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components import vocabulary
from tfxlm import contract
from trainer import preprocessing
from trainer.config import TrainerConfig
from trainer.vocabulary import SpecialTokens, Vocabulary, collapse_whitespace, normalize

TEXTS = [
  'The quick brown fox jumps over the lazy dog.',
  'A quick brown dog outpaces a quick fox!',
  'Foxes and dogs are friends, said the fox.',
  'Café au lait, s’il vous plaît.',
  'The dog barked; the fox ran.',
]


def _custom_config(vocab_uri, task, seq_len):
  """What the Transform executor hands preprocessing_fn for a stage with this task."""
  return {
    contract.VOCAB_URI_KEY: vocab_uri,
    **TrainerConfig(task=task, seq_len=seq_len).transform_custom_config(),
  }


def _vocab_dir(path, **normalization):
  normalization = {'lowercase': True, 'strip_accents': True, 'nfkc': True, **normalization}
  counts = collections.Counter(
    w for t in TEXTS for w in vocabulary.split_words(vocabulary.normalize_text(t, **normalization))
  )
  tokens = vocabulary.learn_wordpiece_vocab(counts.items(), 80)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'vocab.txt'), 'w') as f:
    f.write(''.join(t + '\n' for t in tokens))
  with open(os.path.join(path, 'vocab.json'), 'w') as f:
    json.dump({'kind': 'wordpiece', 'suffix_indicator': '##', **normalization}, f)
  return str(path), tokens


@pytest.mark.parametrize(
  'flags',
  [
    (True, True, True),
    (False, False, False),
    (True, False, True),
    (False, True, False),
    (True, True, False),
    (True, False, False),
  ],
)
@pytest.mark.parametrize('rule', [1, 2])
def test_tf_normalization_matches_the_vocabulary_component(flags, rule):
  meta = {**dict(zip(('lowercase', 'strip_accents', 'nfkc'), flags)), 'rule': rule}
  samples = ['Straße Café', 'ＡＢＣ ﬁne', 'Ǆemal naïve RÉSUMÉ', 'plain text', '', 'Ⅻ ㎏ ①']
  # Scripts whose marks are letters, Hangul (NFD splits it), Greek, Vietnamese, Cyrillic; an
  # emoji keycap and variation selector, soft hyphen and zero-width joiner (NFKC case folding
  # drops default-ignorable code points).
  samples += ['ですね ガ', '한국어 조금', 'हिन्दी क़', 'ที่นี่ ภาษาไทย', 'שָׁלוֹם مَرْحَبًا', 'Ἀθῆναι ά']
  samples += ['tiếng Việt', 'Йод ёж', '1\ufe0f\u20e3 x\u20dd', 'soft\xadhy zw\u200dj \U000e0041']
  got = normalize(tf.constant(samples), **meta).numpy()
  assert [g.decode() for g in got] == [vocabulary.normalize_text(s, **meta) for s in samples]


def test_frame_adds_cls_sep_pads_and_truncates():
  ids = tf.ragged.constant([[7, 8, 9, 10, 11], [], [7]], dtype=tf.int64)
  framed = preprocessing.frame(ids, 5).numpy()
  cls, sep, pad = contract.CLS_ID, contract.SEP_ID, contract.PAD_ID
  np.testing.assert_array_equal(
    framed, [[cls, 7, 8, 9, sep], [cls, sep, pad, pad, pad], [cls, 7, sep, pad, pad]]
  )


def _framed_by_hand(rows, seq_len, special):
  out = []
  for row in rows:
    framed = [special.start, *row[: seq_len - 2], special.end]
    out.append(framed + [special.pad] * (seq_len - len(framed)))
  return out


def _framer(seq_len, special):
  return lambda ids: preprocessing.frame(ids, seq_len, special)


@pytest.mark.parametrize('seq_len', [2, 3, 6, 16])
def test_frame_equals_framing_by_hand_for_any_lengths_and_special_ids(seq_len):
  rng = np.random.default_rng(seq_len)
  rows = [list(rng.integers(5, 1000, size=n)) for n in (0, 1, seq_len - 2, seq_len, 3 * seq_len)]
  # BERT-style ids as Hugging Face numbers them, and GPT-2's one token for all three roles.
  for special in (
    SpecialTokens(pad=0, unk=100, start=101, end=102, mask=103, reserved=(0, 100, 101, 102, 103)),
    SpecialTokens(pad=50256, unk=None, start=50256, end=50256, mask=None, reserved=(50256,)),
  ):
    traced = tf.function(
      _framer(seq_len, special), input_signature=[tf.RaggedTensorSpec([None, None], tf.int64)]
    ).get_concrete_function()
    assert traced.structured_outputs.shape.as_list() == [None, seq_len]
    framed = traced(tf.ragged.constant(rows, dtype=tf.int64, ragged_rank=1)).numpy()
    np.testing.assert_array_equal(framed, _framed_by_hand(rows, seq_len, special))
  empty = preprocessing.frame(tf.ragged.constant([], dtype=tf.int64, ragged_rank=1), seq_len)
  assert empty.shape == (0, seq_len)


def test_tokenize_matches_python_pipeline(tmp_path):
  uri, tokens = _vocab_dir(tmp_path / 'v')
  ids = Vocabulary.read(uri).tokenize(tf.constant(['The fox, Café!']))
  assert [tokens[i] for i in ids[0].numpy()] == ['the', 'fox', ',', 'cafe', '!']


def test_collapse_whitespace_is_the_sentencepiece_learners_split_and_join():
  spaces = ''.join(chr(c) for c in range(0x3001) if chr(c).isspace())
  samples = [' the film\nwas\t\tgreat\r\n', f'a{spaces}b', spaces, '', 'x\u3000y\u2028z']
  got = collapse_whitespace(tf.constant(samples)).numpy()
  assert [g.decode() for g in got] == [' '.join(s.split()) for s in samples]


def _sentencepiece_dir(path):
  texts = [vocabulary.normalize_text(t) for t in TEXTS] * 20
  os.makedirs(path, exist_ok=True)
  tokens = vocabulary.train_sentencepiece(texts, 60, 'unigram', os.path.join(path, 'spm.model'))
  spec = {'kind': 'sentencepiece', 'size': len(tokens), 'lowercase': True}
  Vocabulary(tokens, {**spec, 'strip_accents': True, 'nfkc': True}).write(str(path))
  return str(path), tokens


def test_sentencepiece_reads_line_breaks_and_tabs_as_spaces_in_training_and_serving(tmp_path):
  """The learner trains on whitespace collapsed to one space: so does the graph, or a newline
  is [UNK] and the next word falls apart into characters."""
  uri, tokens = _sentencepiece_dir(tmp_path / 'v')
  texts = ['the quick fox', 'the quick\nfox', 'the\tquick \r\n fox\n', 'the\u00a0quick\u3000fox']
  out, tft_output = _analyze_and_transform(
    tmp_path, [{'text': t} for t in texts], _custom_config(uri, 'clm', 8)
  )
  trained = [list(o['token_ids']) for o in out]
  assert contract.UNK_ID not in trained[0]
  assert trained == [trained[0]] * len(texts)
  served = tft_output.transform_features_layer()({'text': tf.constant([[t] for t in texts])})
  served = tf.sparse.to_dense(served[contract.TOKEN_IDS_KEY]).numpy()
  assert [list(row[: len(t)]) for row, t in zip(served, trained)] == trained


def test_read_vocabulary_requires_reserved_tokens_first(tmp_path):
  uri, tokens = _vocab_dir(tmp_path / 'v')
  with open(os.path.join(uri, 'vocab.txt'), 'w') as f:
    f.write('\n'.join(reversed(tokens)) + '\n')
  with pytest.raises(ValueError, match=r'must start with \(\'\[PAD\]\''):
    Vocabulary.read(uri)


def _analyze_and_transform(tmp_path, rows, config):
  spec = {'text': tf.io.FixedLenFeature([1], tf.string)}
  if 'label' in rows[0]:
    spec['label'] = tf.io.FixedLenFeature([1], tf.string)
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
  data = [{k: [v.encode()] for k, v in row.items()} for row in rows]
  with tft_beam.Context(temp_dir=str(tmp_path / 'tft-tmp'), force_tf_compat_v1=False):
    (out, _), transform_fn = (data, metadata) | tft_beam.AnalyzeAndTransformDataset(
      lambda inputs: preprocessing.preprocessing_fn(inputs, config)
    )
    _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / 'transform'))
  return out, tft.TFTransformOutput(str(tmp_path / 'transform'))


def test_classify_outputs_and_sorted_label_vocab(tmp_path):
  uri, tokens = _vocab_dir(tmp_path / 'v')
  big = 'the quick fox. ' * (5 * 1024 * 1024 // 15)  # A 5 MB single-line document.
  rows = [
    {'text': t, 'label': lab}
    for t, lab in zip(TEXTS + [big, '  '], ['pos', 'neg', 'pos', 'mixed', 'neg', 'pos', 'neg'])
  ]
  out, tft_output = _analyze_and_transform(tmp_path, rows, _custom_config(uri, 'classify', 8))
  with open(tft_output.vocabulary_file_by_name(contract.LABEL_VOCAB_NAME)) as f:
    labels = f.read().splitlines()
  assert labels == ['mixed', 'neg', 'pos']
  assert [labels[o['label']] for o in out] == [r['label'] for r in rows]
  ids = [list(o['token_ids']) for o in out]
  assert all(len(i) == 8 for i in ids)
  assert [tokens[i] for i in ids[5]] == [
    '[CLS]',
    'the',
    'quick',
    'fox',
    '.',
    'the',
    'quick',
    '[SEP]',
  ]
  assert ids[6] == [contract.CLS_ID, contract.SEP_ID] + [contract.PAD_ID] * 6


def test_the_label_vocab_holds_every_label_of_the_domain_trained_on_or_not(tmp_path):
  uri, _ = _vocab_dir(tmp_path / 'v')
  rows = [{'text': t, 'label': lab} for t, lab in zip(TEXTS, ['pos', 'neg', 'pos', 'neg', 'pos'])]
  config = {**_custom_config(uri, 'classify', 8), preprocessing.LABEL_DOMAIN_KEY: ['zz', 'café']}
  out, tft_output = _analyze_and_transform(tmp_path, rows, config)
  with open(tft_output.vocabulary_file_by_name(contract.LABEL_VOCAB_NAME), encoding='utf-8') as f:
    labels = f.read().splitlines()
  assert labels == ['café', 'neg', 'pos', 'zz']
  assert [labels[o['label']] for o in out] == [r['label'] for r in rows]


def test_a_label_with_a_line_break_is_named_with_what_to_do(tmp_path):
  uri, _ = _vocab_dir(tmp_path / 'v')
  rows = [{'text': t, 'label': lab} for t, lab in zip(TEXTS[:2], ['pos', 'two\nlines'])]
  with pytest.raises(Exception, match=r"'two\\nlines' has a line break: .*one-line labels"):
    _analyze_and_transform(tmp_path, rows, _custom_config(uri, 'classify', 8))


def test_corpus_outputs_variable_length_ids(tmp_path):
  uri, tokens = _vocab_dir(tmp_path / 'v')
  out, tft_output = _analyze_and_transform(
    tmp_path, [{'text': t} for t in TEXTS], _custom_config(uri, 'mlm', 8)
  )
  assert tft_output.transformed_feature_spec() == {
    contract.TOKEN_IDS_KEY: tf.io.VarLenFeature(tf.int64)
  }
  for text, row in zip(TEXTS, out):
    pieces = [tokens[i] for i in row['token_ids']]
    rebuilt = ''.join(p[2:] if p.startswith('##') else ' ' + p for p in pieces).strip()
    assert rebuilt == ' '.join(vocabulary.split_words(vocabulary.normalize_text(text)))
  with open(tft_output.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME)) as f:
    assert f.read().splitlines() == tokens


def test_transform_graph_is_self_contained(tmp_path):
  """Moved elsewhere, with the vocabulary artifact gone, the graph still tokenizes the same."""
  uri, _ = _vocab_dir(tmp_path / 'v')
  rows = [{'text': t, 'label': 'pos'} for t in TEXTS]
  out, _ = _analyze_and_transform(tmp_path, rows, _custom_config(uri, 'classify', 12))
  shutil.copytree(tmp_path / 'transform', tmp_path / 'moved')
  shutil.rmtree(tmp_path / 'transform')
  shutil.rmtree(uri)
  moved = tft.TFTransformOutput(str(tmp_path / 'moved'))
  served = moved.transform_features_layer()({'text': tf.constant([[t] for t in TEXTS])})
  np.testing.assert_array_equal(
    served[contract.TOKEN_IDS_KEY].numpy(), [o['token_ids'] for o in out]
  )
  with open(moved.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME)) as f:
    assert f.readline().strip() == contract.PAD


def test_a_classify_transform_serving_pretraining_adds_the_lm_pieces_unchanged(tmp_path):
  """lm_features: the classify features as without it, plus the mlm/clm Transform's pieces."""
  uri, _ = _vocab_dir(tmp_path / 'v')
  rows = [{'text': t, 'label': lab} for t, lab in zip(TEXTS, ['pos', 'neg', 'pos', 'neg', 'pos'])]
  shared_config = {**_custom_config(uri, 'classify', 8), contract.LM_FEATURES_KEY: True}
  shared, shared_output = _analyze_and_transform(tmp_path / 'shared', rows, shared_config)
  classify, _ = _analyze_and_transform(
    tmp_path / 'classify', rows, _custom_config(uri, 'classify', 8)
  )
  lm, _ = _analyze_and_transform(
    tmp_path / 'lm', [{'text': r['text']} for r in rows], _custom_config(uri, 'mlm', 8)
  )
  assert shared_output.transformed_feature_spec() == {
    contract.TOKEN_IDS_KEY: tf.io.FixedLenFeature([8], tf.int64),
    contract.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    contract.LM_TOKEN_IDS_KEY: tf.io.VarLenFeature(tf.int64),
  }
  for got, alone, pieces in zip(shared, classify, lm):
    assert list(got[contract.TOKEN_IDS_KEY]) == list(alone[contract.TOKEN_IDS_KEY])
    assert got[contract.TRANSFORMED_LABEL_KEY] == alone[contract.TRANSFORMED_LABEL_KEY]
    assert list(got[contract.LM_TOKEN_IDS_KEY]) == list(pieces[contract.TOKEN_IDS_KEY])
  # Served from text alone (no label), as the exported models call it.
  served = shared_output.transform_features_layer()({'text': tf.constant([[t] for t in TEXTS])})
  assert contract.TRANSFORMED_LABEL_KEY not in served
  assert tf.RaggedTensor.from_sparse(served[contract.LM_TOKEN_IDS_KEY]).to_list() == [
    list(p[contract.TOKEN_IDS_KEY]) for p in lm
  ]
