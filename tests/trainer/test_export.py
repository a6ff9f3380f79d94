"""Export helpers that need no model (the signatures themselves are tested in test_task.py)."""

import tensorflow as tf

from trainer import export


def test_decode_wordpiece_glues_suffix_pieces():
  tokens = tf.constant([['the', 'play', '##ing', 'dog', '[SEP]'], ['a', '##b', 'c', 'd', 'e']])
  keep = tf.constant([[True, True, True, True, False], [True, True, False, False, False]])
  assert export.decode_tokens(tokens, keep).numpy().tolist() == [b'the playing dog', b'ab']


def test_decode_sentencepiece_turns_word_marks_into_spaces():
  tokens = tf.constant([['\u2581the', '\u2581play', 'ing', '\u2581dog']])
  keep = tf.constant([[True, True, True, True]])
  assert export.is_sentencepiece(['[PAD]', '\u2581the', 'ing'])
  assert not export.is_sentencepiece(['[PAD]', 'the', '##ing'])
  assert export.decode_tokens(tokens, keep, sentencepiece=True).numpy().tolist() == [
    b'the playing dog']
