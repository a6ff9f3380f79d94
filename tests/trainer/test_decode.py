"""Decoding token strings back to text, by the tokenizer kind vocab.json records (the signatures
themselves are tested in test_task.py; decoding of presets in test_tokenizers.py)."""

import tensorflow as tf

from tfxlm import contract
from trainer import vocabulary


def test_decode_wordpiece_glues_suffix_pieces():
  tokens = tf.constant(
    [
      ['the', 'play', '##ing', 'dog', '[SEP]'],
      ['a', '##b', 'c', 'd', 'e'],
      ['##ly', 'good', '##s', '#', '##'],  # a continuation that starts inside a word
    ]
  )
  keep = tf.constant(
    [
      [True, True, True, True, False],
      [True, True, False, False, False],
      [True, True, True, True, False],
    ]
  )
  for kind in (contract.WORDPIECE, contract.PRESET_WORDPIECE):
    assert vocabulary.decode_tokens(tokens, keep, kind).numpy().tolist() == [
      b'the playing dog',
      b'ab',
      b'ly goods #',
    ]


def test_decode_learned_wordpiece_writes_punctuation_as_bert_decoders_do():
  # Each punctuation mark is a token of a learned vocabulary: joined by spaces, the generated
  # text read 'hello , world .'.
  tokens = tf.constant(
    [
      ['hello', ',', 'world', '.', '[SEP]', '[PAD]'],
      ['it', "'", 's', 'good', '!', '!'],
      ['wait', ';', 'then', ':', 'why', '?'],
      [',', 'and', 'the', 'dogs', "'", '.'],  # a continuation may start with a mark
      ["'", 's', 'play', '##ing', '3', '.'],
    ]
  )
  keep = tf.constant([[True] * 4 + [False] * 2] + [[True] * 6] * 4)
  texts = vocabulary.decode_tokens(tokens, keep, contract.WORDPIECE).numpy().tolist()
  assert [t.decode() for t in texts] == [
    'hello, world.',
    "it's good!!",
    'wait; then: why?',
    ", and the dogs'.",
    "'s playing 3.",
  ]
  # A preset's text stays keras-hub's detokenize (test_tokenizers.py compares the two).
  assert vocabulary.decode_tokens(tokens[:1], keep[:1], contract.PRESET_WORDPIECE).numpy()[0] == (
    b'hello , world .'
  )


def test_decode_sentencepiece_turns_word_marks_into_spaces():
  tokens = tf.constant([['\u2581the', '\u2581play', 'ing', '\u2581dog']])
  keep = tf.constant([[True, True, True, True]])
  for kind in (contract.SENTENCEPIECE, contract.PRESET_SENTENCEPIECE):
    assert vocabulary.decode_tokens(tokens, keep, kind).numpy().tolist() == [b'the playing dog']


def test_decode_byte_level_bpe_maps_characters_back_to_bytes_and_drops_cut_characters():
  # 'Ġ' is the byte-level form of ' ', 'Ã©' of 'é' (0xC3 0xA9); a lone 'Ã' is half of it.
  tokens = tf.constant([['Caf', 'Ã©', 'Ġdog', 'Ċ'], ['a', 'Ã', 'x', 'x']])
  keep = tf.constant([[True, True, True, True], [True, True, False, False]])
  assert vocabulary.decode_tokens(tokens, keep, contract.PRESET_BPE).numpy().tolist() == [
    'Café dog\n'.encode(),
    b'a',
  ]


def _decode_learned(rows):
  """Decodes rows of space-separated tokens as a learned WordPiece vocabulary's text."""
  tokens = tf.ragged.constant([row.split() for row in rows]).to_tensor('')
  texts = vocabulary.decode_tokens(tokens, tokens != '', contract.WORDPIECE).numpy()
  return [t.decode() for t in texts]


def test_decode_learned_wordpiece_writes_cjk_without_the_pretokenizers_spaces():
  # Each CJK ideograph is a word of its own; kana and Hangul words are not split that way, so
  # a space between two of them is the text's own.
  assert _decode_learned(
    [
      '我 喜 欢 学 习',
      '東 京 の 桜',
      '素 晴 らしい 映 画 でした ！',
      'ですね 、 そう です 。',
      '한국어 를 조 ##금 배웠 습니다 .',
    ]
  ) == [
    '我喜欢学习',
    '東京の桜',
    '素晴らしい映画でした！',
    'ですね、そう です。',
    '한국어 를 조금 배웠 습니다.',
  ]


def test_decode_learned_wordpiece_joins_hyphenated_words():
  assert _decode_learned(['state - of - the - art', 'a - b - c', 'well - , ok', '- 3']) == [
    'state-of-the-art',
    'a-b-c',  # 'a - b' typed with spaces comes back joined too
    'well -, ok',
    '- 3',
  ]


def test_decode_learned_wordpiece_tells_contractions_from_quotes():
  assert _decode_learned(
    [
      "he said ' hello ' to me",
      "don ' t stop , it ' s fine",
      "i ' m sure they ' re ok ' cause",
      "c ' est l ' homme qu ' il voit , s ’ il vous plaît",
      'say " hi there " now',
      '( see above ) and [ x ]',
      "' unclosed quote",
    ]
  ) == [
    "he said 'hello' to me",
    "don't stop, it's fine",
    "i'm sure they're ok ' cause",
    "c'est l'homme qu'il voit, s’il vous plaît",
    'say "hi there" now',
    '(see above) and [x]',
    "' unclosed quote",
  ]
