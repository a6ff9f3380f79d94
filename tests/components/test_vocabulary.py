"""The vocabulary algorithm (plain functions) and its Beam job."""

import collections
import json
import os
import random

import apache_beam as beam
import pytest
import tensorflow as tf

from components import vocabulary
from pipeline import local_runner
from tests.components import text_data
from tfxlm import contract
from trainer import vocabulary as trainer_vocabulary
from trainer import wordpiece_learner

FIVE_SENTENCES = [
  'The quick brown fox jumps over the lazy dog.',
  'A quick brown dog outpaces a quick fox!',
  'Foxes and dogs are friends, said the fox.',
  'Café au lait, s’il vous plaît.',
  'The dog barked; the fox ran.',
]


def _counts(texts, **normalization):
  return collections.Counter(
    w for t in texts for w in vocabulary.split_words(vocabulary.normalize_text(t, **normalization))
  )


def test_normalize_and_split_like_bert():
  assert vocabulary.normalize_text('Café ＡＢＣ Ǆ') == 'cafe abc dz'
  assert vocabulary.normalize_text('Café', lowercase=False, strip_accents=False) == 'Café'
  assert vocabulary.normalize_text('Ａ', nfkc=False, lowercase=False) == 'Ａ'
  assert vocabulary.split_words("don't stop_now, ok?") == [
    'don',
    "'",
    't',
    'stop',
    '_',
    'now',
    ',',
    'ok',
    '?',
  ]


CJK_SENTENCES = [
  '我喜欢中文电影。',
  '这部电影很好看，中文字幕也很好。',
  '素晴らしい映画でした！',
  '東京タワーは高い。',
  '中文很难，但是很有意思。',
  '映画館で素晴らしい時間を過ごした。',
]


def _wordpiece(tokens):
  from trainer.vocabulary import Vocabulary

  flags = {'lowercase': True, 'strip_accents': True, 'nfkc': True}
  rule = trainer_vocabulary.NORMALIZATION_RULE  # as the component writes it
  return Vocabulary(tokens, {'kind': 'wordpiece', **flags, 'normalization_rule': rule})


def _pieces(vocab, texts):
  return [[vocab.tokens[i] for i in row] for row in vocab.tokenize(tf.constant(texts)).to_list()]


def test_split_words_splits_where_the_wordpiece_tokenizer_does():
  """Every character, in a word: a space (word ends), a word of its own, or part of the word,
  as FastBertTokenizer says (a vocabulary of 'a' and '##a': the three cases give different
  ids). Code points unassigned in Python's Unicode data are left out: the tokenizer's ICU may be
  newer."""
  import unicodedata

  vocab = _wordpiece(contract.RESERVED_TOKENS + ('a', '##a'))
  points = [
    c
    for c in [*range(1, 0xD800), *range(0xE000, 0x10000), *range(0x1F300, 0x1F700), 0x20000]
    if unicodedata.category(chr(c)) != 'Cn' and chr(c) != 'a'
  ]
  texts = ['a' + chr(c) + 'a' for c in points]
  ids = vocab.tokenizer().tokenize(tf.constant(texts)).to_list()  # no normalization
  got = [{(5, 5): 'space', (5, 1, 5): 'alone', (1,): 'word'}.get(tuple(i)) for i in ids]
  want = [
    {('a', 'a'): 'space', ('a', t[1], 'a'): 'alone', (t,): 'word'}.get(
      tuple(vocabulary.split_words(t))
    )
    for t in texts
  ]
  assert [(hex(c), g, w) for c, g, w in zip(points, got, want) if g != w][:10] == []


def test_cjk_ideographs_are_words_of_their_own_in_the_learner_as_in_the_tokenizer():
  assert vocabulary.split_words('中文 素晴らしい') == ['中', '文', '素', '晴', 'らしい']
  counts = _counts(CJK_SENTENCES * 5)
  vocab = _wordpiece(vocabulary.learn_wordpiece_vocab(counts.items(), 150))
  # Each learned word-initial entry is what the tokenizer gives for it: none is out of reach.
  entries = [t for t in vocab.tokens[5:] if not t.startswith('##')]
  assert _pieces(vocab, entries) == [[t] for t in entries]
  # And CJK text becomes known pieces, word for word as the learner split it.
  for text, pieces in zip(CJK_SENTENCES, _pieces(vocab, CJK_SENTENCES)):
    assert contract.UNK not in pieces
    words = ''.join(p[2:] if p.startswith('##') else ' ' + p for p in pieces).split()
    assert words == vocabulary.split_words(vocabulary.normalize_text(text))


def test_learn_wordpiece_vocab_on_five_sentences():
  vocab = vocabulary.learn_wordpiece_vocab(_counts(FIVE_SENTENCES).items(), 80)
  assert tuple(vocab[:5]) == contract.RESERVED_TOKENS
  assert len(vocab) == len(set(vocab)) and len(vocab) <= 80
  for frequent in ('the', 'fox', 'quick', 'dog'):
    assert frequent in vocab
  # Every character appears, alone and as a suffix, so no normalized word becomes [UNK].
  for char in set(''.join(_counts(FIVE_SENTENCES))):
    assert char in vocab and '##' + char in vocab
  assert 'cafe' in vocab and 'café' not in vocab


def test_learn_wordpiece_vocab_cut_to_size_keeps_alphabet():
  counts = _counts(FIVE_SENTENCES)
  alphabet = set(''.join(counts))
  small = vocabulary.learn_wordpiece_vocab(counts.items(), 72)
  assert len(small) <= 72
  assert all(c in small and '##' + c in small for c in alphabet)
  # Below reserved + alphabet, the alphabet still wins: no word may become [UNK].
  tiny = vocabulary.learn_wordpiece_vocab(counts.items(), 20)
  assert len(tiny) == 5 + 2 * len(alphabet)


def test_learn_wordpiece_vocab_bad_arguments():
  with pytest.raises(ValueError, match='no room'):
    vocabulary.learn_wordpiece_vocab([('a', 1)], 5)
  with pytest.raises(ValueError, match='no words'):
    vocabulary.learn_wordpiece_vocab([], 50)


def _zipf_word_counts(n: int, seed: int) -> list[tuple[str, int]]:
  """n distinct made-up words (shared syllables, so pieces recur across words; some accented,
  some one character) with Zipf-like counts: many thresholds and segmentations to get right."""
  rng = random.Random(seed)
  syllables = ['ka', 'ro', 'mi', 'ten', 'sh', 'u', 'lé', 'ght', 'ing', 'a', 'éd', 'x', 'q', 'zz']
  words = set(rng.sample('abcdefghij', 6))
  while len(words) < n:
    words.add(''.join(rng.choice(syllables) for _ in range(rng.randint(1, 7))))
  return [(w, max(1, int(5000 / (rank + 1) ** 1.1))) for rank, w in enumerate(sorted(words))]


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('size', [40, 120, 300])
def test_array_learner_gives_the_reference_learners_vocabulary(seed, size):
  from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as reference

  counts = _zipf_word_counts(400, seed)
  kwargs = dict(
    vocab_size=size,
    reserved_tokens=list(contract.RESERVED_TOKENS),
    upper_thresh=max(c for _, c in counts) + 1,
    lower_thresh=1,
    max_token_length=12,  # some words are longer: dropped by both
    max_unique_chars=14,  # fewer than the words' alphabet: words with rare characters dropped
  )
  assert wordpiece_learner.learn(counts, **kwargs) == reference.learn(counts, **kwargs)
  # Defaults (thresholds from 10 up, no joiner checks) too.
  assert wordpiece_learner.learn(counts, size, ['[UNK]']) == reference.learn(
    counts, size, ['[UNK]']
  )


def test_array_learner_hands_words_holding_the_joiner_to_the_reference():
  counts = [('ab', 9), ('a##b', 5), ('abab', 4), ('b', 3)]
  from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as reference

  for size in (8, 12):
    assert wordpiece_learner.learn(counts, size, ['[UNK]'], lower_thresh=1) == reference.learn(
      counts, size, ['[UNK]'], lower_thresh=1
    )


def test_beam_job_matches_plain_counting_and_the_reference_learner(tmp_path, monkeypatch):
  """The job's vocab.txt and vocab.json counts are those of counting every word of every
  document one by one and learning with tensorflow-text's own learner."""
  from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as reference

  texts = text_data.sentences(300, seed=3) + FIVE_SENTENCES * 3
  # Two files: two reads, so more than one bundle's partial counts to merge.
  _write_examples(str(tmp_path / 'a.gz'), texts[:150])
  _write_examples(str(tmp_path / 'b.gz'), texts[150:])
  out = tmp_path / 'vocab'
  os.makedirs(out)
  config = _config(vocab_size=70, max_words=40)
  with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
    vocabulary.build_vocabulary_pipeline(pipeline, str(tmp_path / '*.gz'), str(out), config)
  meta = json.loads((out / 'vocab.json').read_text())

  counts = _counts(texts)
  kept = sorted(((w, c) for w, c in counts.items() if c >= 2), key=lambda wc: (wc[1], wc[0]))
  kept = kept[::-1][: config['max_words']]
  assert (meta['documents'], meta['words']) == (len(texts), sum(counts.values()))
  assert (meta['unique_words'], meta['kept_words']) == (len(counts), len(kept))
  # Transform tokenizes with the accent rule the learner normalized with.
  assert meta['normalization_rule'] == trainer_vocabulary.NORMALIZATION_RULE
  monkeypatch.setattr(wordpiece_learner, 'learn', reference.learn)
  expected = vocabulary.learn_wordpiece_vocab(kept, 70)
  assert (out / 'vocab.txt').read_text().splitlines() == expected


def test_train_sentencepiece_keeps_reserved_ids(tmp_path):
  texts = [vocabulary.normalize_text(t) for t in FIVE_SENTENCES] * 20
  pieces = vocabulary.train_sentencepiece(texts, 60, 'bpe', str(tmp_path / 'spm.model'))
  assert tuple(pieces[:5]) == contract.RESERVED_TOKENS
  assert os.path.getsize(tmp_path / 'spm.model') > 0


def test_train_sentencepiece_below_the_alphabet_says_the_size_that_would_do(tmp_path):
  texts = [vocabulary.normalize_text(t) for t in FIVE_SENTENCES] * 20
  characters = len(set(''.join(texts)))  # the space included: it is a piece too
  with pytest.raises(vocabulary.tokenizers.VocabSizeError) as raised:
    vocabulary.train_sentencepiece(texts, 6, 'unigram', str(tmp_path / 'spm.model'))
  assert (raised.value.characters, raised.value.minimum) == (characters, characters + 5)
  pieces = vocabulary.train_sentencepiece(texts, characters + 5, 'bpe', str(tmp_path / 'spm.model'))
  assert len(pieces) == characters + 5


def test_beam_job_names_the_sentencepiece_size_setting(tmp_path):
  _write_examples(str(tmp_path / 'data.gz'), FIVE_SENTENCES)
  out = tmp_path / 'vocab'
  os.makedirs(out)
  config = _config(kind='sentencepiece', vocab_size=6, train_split='train')
  characters = len(set(''.join(vocabulary.normalize_text(t) for t in FIVE_SENTENCES)))
  with pytest.raises(vocabulary.validation.DataError) as raised:
    with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
      vocabulary.build_vocabulary_pipeline(pipeline, str(tmp_path / 'data.gz'), str(out), config)
  assert str(raised.value).startswith(
    f'vocabulary.size: 6 is below the {characters} distinct characters of the train split '
    f'(SentencePiece needs every character); use at least {characters + 5} '
  )


def _write_examples(path, texts):
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for text in texts:
      writer.write(
        tf.train.Example(
          features=tf.train.Features(
            feature={'text': tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
          )
        ).SerializeToString()
      )


def _config(**overrides):
  config = dict(
    kind='wordpiece',
    vocab_size=80,
    lowercase=True,
    strip_accents=True,
    nfkc=True,
    min_count=2,
    max_words=1000,
    sentencepiece_model_type='unigram',
    sample_documents=1000,
  )
  config.update(overrides)
  return config


def test_beam_job_counts_prunes_and_writes(tmp_path):
  _write_examples(str(tmp_path / 'data.gz'), FIVE_SENTENCES)
  out = tmp_path / 'vocab'
  os.makedirs(out)
  with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
    vocabulary.build_vocabulary_pipeline(pipeline, str(tmp_path / 'data.gz'), str(out), _config())
  meta = json.loads((out / 'vocab.json').read_text())
  counts = _counts(FIVE_SENTENCES)
  assert meta['documents'] == 5
  assert meta['words'] == sum(counts.values())
  assert meta['unique_words'] == len(counts)
  assert meta['kept_words'] == sum(1 for c in counts.values() if c >= 2)
  assert meta['size'] == len((out / 'vocab.txt').read_text().splitlines())
  assert (meta['kind'], meta['lowercase'], meta['nfkc']) == ('wordpiece', True, True)


def _run_executor(tmp_path, texts, **config):
  """The executor's Do on a train split of `texts`; returns the vocabulary's folder."""
  from tfx.types import artifact_utils, standard_artifacts

  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'examples')
  examples.split_names = artifact_utils.encode_split_names(['train'])
  os.makedirs(tmp_path / 'examples' / 'Split-train')
  _write_examples(str(tmp_path / 'examples' / 'Split-train' / 'data.gz'), texts)
  output = vocabulary.VocabularyArtifact()
  output.uri = str(tmp_path / 'vocab')
  context = vocabulary.Executor.Context(beam_pipeline_args=local_runner.in_process_beam_args())
  vocabulary.Executor(context).Do(
    {'examples': [examples]}, {'vocabulary': [output]}, _config(train_split='train', **config)
  )
  return tmp_path / 'vocab'


@pytest.mark.parametrize('kind', ['wordpiece', 'sentencepiece'])
def test_a_vocabulary_far_below_its_size_is_warned_of_naming_both_sizes(tmp_path, caplog, kind):
  with caplog.at_level('WARNING', logger='absl'):
    out = _run_executor(tmp_path, FIVE_SENTENCES * 4, kind=kind, vocab_size=8000)
  size = json.loads((out / 'vocab.json').read_text())['size']
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any(
    w.startswith(
      f'Vocabulary: learned {size} tokens, far below vocabulary.size 8,000: the train '
      'split has too little text for more (20 documents, '
    )
    and w.endswith(f'distinct words); add text, or set vocabulary.size to about {size}')
    for w in warnings
  ), warnings


def test_a_wordpiece_vocabulary_above_its_size_is_warned_of_saying_why(tmp_path, caplog):
  with caplog.at_level('WARNING', logger='absl'):
    out = _run_executor(tmp_path, FIVE_SENTENCES, kind='wordpiece', vocab_size=10)
  size = json.loads((out / 'vocab.json').read_text())['size']
  assert size > 10
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert f'Vocabulary: learned {size} tokens, more than vocabulary.size 10: ' in warnings[-1]
  assert 'every character of the train split' in warnings[-1]
  assert warnings[-1].endswith(f'set vocabulary.size to {size} or more')


def test_a_vocabulary_near_its_size_is_not_warned_of():
  spec = {'size': 80, 'target_size': 100, 'documents': 10, 'unique_words': 500}
  assert vocabulary.shortfall(spec, 'train') is None
  assert 'vocabulary.size 100' in vocabulary.shortfall({**spec, 'size': 70}, 'train')


def test_component_rejects_bad_options():
  from tfx import types
  from tfx.types import standard_artifacts

  examples = types.Channel(type=standard_artifacts.Examples)
  with pytest.raises(ValueError, match='kind'):
    vocabulary.Vocabulary(examples=examples, kind='bpe')
  with pytest.raises(ValueError, match='vocab_size'):
    vocabulary.Vocabulary(examples=examples, vocab_size=5)
  assert vocabulary.VocabularyArtifact.TYPE_NAME == 'tfxlm.Vocabulary'
