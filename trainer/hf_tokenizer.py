"""A Hugging Face BERT checkpoint's WordPiece tokenizer, read from its files and run in the graph.

What the Hugging Face `tokenizers` library does with a BERT `tokenizer.json` (BertNormalizer,
BertPreTokenizer, WordPiece), in TensorFlow ops, so that Transform and serving give the ids the
checkpoint was trained with:
  1. clean_text: drop NUL, U+FFFD and control/format characters (Unicode category C, except tab,
     newline and carriage return); every whitespace character becomes a space;
  2. handle_chinese_chars: spaces around each CJK ideograph;
  3. strip_accents (default: as lowercase): NFD, then drop non-spacing marks (Mn);
  4. lowercase: each character's own lower case (no NFKC, no case folding: `ß` stays `ß`, `ﬁ`
     stays `ﬁ`, a final `Σ` becomes `σ`);
  5. split on whitespace, each punctuation character (ASCII punctuation and Unicode P*) a word;
  6. WordPiece, greedy longest match with `##` continuations; a word that cannot be pieced, or
     longer than max_input_chars_per_word characters, is the unknown token.
Before all that, the checkpoint's special tokens written literally in the text (`[CLS]`,
`[MASK]`, ...) are cut out and become their own ids, as `tokenizers` matches its added tokens in
the raw text.

keras-hub's `BertTokenizer.from_preset` of the same folder differs on accented text of uncased
checkpoints (its converter leaves accents on, so `café` is [UNK]) and on characters that NFKC
case folding changes (`ß`, `…`, `™`, ligatures, full-width forms); tests/trainer/test_hf_tokenizer.py
compares both.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.core.pybinds import (
  pywrap_fast_wordpiece_tokenizer_model_builder as fast_wordpiece_builder,
)

TOKENIZER_JSON = 'tokenizer.json'
TOKENIZER_CONFIG = 'tokenizer_config.json'
SPECIAL_TOKENS_MAP = 'special_tokens_map.json'
VOCAB_TXT = 'vocab.txt'
# What the Hugging Face `tokenizers` library reads of a BERT checkpoint's tokenizer.
TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP, VOCAB_TXT)
# Roles of SpecialTokens (trainer/vocabulary.py) and the Hugging Face names of their tokens.
_ROLE_KEYS = {
  'pad': 'pad_token',
  'unk': 'unk_token',
  'start': 'cls_token',
  'end': 'sep_token',
  'mask': 'mask_token',
}
_DEFAULT_TOKENS = {
  'pad': '[PAD]',
  'unk': '[UNK]',
  'start': '[CLS]',
  'end': '[SEP]',
  'mask': '[MASK]',
}
_BYTES_PER_CHAR = 4  # UTF-8's longest character: the byte limit never cuts before the char one

# BERT's control characters (removed) and whitespace (a space), as RE2 classes.
_CONTROL = r'[\x{0}\x{fffd}]|[^\P{C}\t\n\r]'
_WHITESPACE = r'[\t\n\r \x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]'
_CJK = (
  r'([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}'
  r'\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])'
)
_PUNCTUATION = r'[!-/:-@\[-`{-~]|\p{P}'


class TokenizerFilesError(ValueError):
  """The checkpoint's tokenizer files are missing, unreadable or of an unsupported kind."""


def _load_json(folder: str, name: str) -> dict[str, Any] | None:
  path = os.path.join(folder, name)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise TokenizerFilesError(f'{path} is not readable JSON: {e}') from None
  if not isinstance(value, dict):
    raise TokenizerFilesError(f'{path} is not a JSON object')
  return value


def _token_name(value) -> str | None:
  if isinstance(value, dict):  # {"content": "[CLS]", ...} in some tokenizer_config.json files
    value = value.get('content')
  return value if isinstance(value, str) else None


def read_checkpoint_tokenizer(folder: str) -> dict[str, Any]:
  """Reads a BERT checkpoint's tokenizer: tokens in id order and the settings of every step.

  tokenizer.json is preferred (it says exactly what `tokenizers` runs); without it, vocab.txt with
  tokenizer_config.json (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`).

  Returns:
    {'tokens': [...], 'lowercase', 'strip_accents', 'clean_text', 'handle_chinese_chars',
     'unk_token', 'suffix_indicator', 'max_input_chars_per_word', 'special_token_names'}.

  Raises:
    TokenizerFilesError: missing files, or a tokenizer.json that is not BERT's WordPiece.
  """
  config = _load_json(folder, TOKENIZER_CONFIG) or {}
  names = {role: _DEFAULT_TOKENS[role] for role in _ROLE_KEYS}
  for source in (_load_json(folder, SPECIAL_TOKENS_MAP) or {}, config):
    for role, key in _ROLE_KEYS.items():
      if _token_name(source.get(key)):
        names[role] = _token_name(source[key])
  full = _load_json(folder, TOKENIZER_JSON)
  if full is not None:
    path = os.path.join(folder, TOKENIZER_JSON)
    model = full.get('model') or {}
    normalizer = full.get('normalizer') or {}
    pre = full.get('pre_tokenizer') or {}
    kinds = (model.get('type'), normalizer.get('type'), pre.get('type'))
    if kinds != ('WordPiece', 'BertNormalizer', 'BertPreTokenizer'):
      raise TokenizerFilesError(
        f'{path}: model, normalizer and pre-tokenizer are {kinds}; BERT checkpoints are read '
        "when they are ('WordPiece', 'BertNormalizer', 'BertPreTokenizer')"
      )
    vocab = model.get('vocab') or {}
    by_id = {int(i): t for t, i in vocab.items()}
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
      raise TokenizerFilesError(f'{path}: the WordPiece vocabulary ids are not 0..n-1')
    lowercase = bool(normalizer.get('lowercase', True))
    strip = normalizer.get('strip_accents')
    added = [
      t['content']
      for t in full.get('added_tokens') or []
      if t.get('special') and isinstance(t.get('content'), str) and t['content'] in vocab
    ]
    return {
      'tokens': [by_id[i] for i in range(len(by_id))],
      'lowercase': lowercase,
      'strip_accents': lowercase if strip is None else bool(strip),
      'clean_text': bool(normalizer.get('clean_text', True)),
      'handle_chinese_chars': bool(normalizer.get('handle_chinese_chars', True)),
      'unk_token': model.get('unk_token', names['unk']),
      'suffix_indicator': model.get('continuing_subword_prefix', '##'),
      'max_input_chars_per_word': int(model.get('max_input_chars_per_word', 100)),
      'special_token_names': names,
      'added_tokens': added,
    }
  path = os.path.join(folder, VOCAB_TXT)
  if not os.path.isfile(path):
    raise TokenizerFilesError(
      f'{folder} has neither {TOKENIZER_JSON} nor {VOCAB_TXT}: a BERT checkpoint needs its '
      'tokenizer files beside config.json'
    )
  with open(path, encoding='utf-8') as f:
    tokens = [line.rstrip('\n').rstrip('\r') for line in f]
  while tokens and not tokens[-1]:
    tokens.pop()
  lowercase = bool(config.get('do_lower_case', True))
  strip = config.get('strip_accents')
  return {
    'tokens': tokens,
    'lowercase': lowercase,
    'strip_accents': lowercase if strip is None else bool(strip),
    'clean_text': True,
    'handle_chinese_chars': bool(config.get('tokenize_chinese_chars', True)),
    'unk_token': names['unk'],
    'suffix_indicator': '##',
    'max_input_chars_per_word': 100,
    'special_token_names': names,
    'added_tokens': [t for t in dict.fromkeys(names.values()) if t in tokens],
  }


# Lower-casing off with a vocabulary where fewer than this fraction of the tokens with cased
# letters have an upper-case one: an uncased vocabulary (bert-base-uncased has none), whose
# words written with a capital are [UNK]. Lower-casing on with more than `_CASED_FRACTION`: a
# cased vocabulary whose upper-case tokens the tokenizer never produces (bert-base-cased: ~40%).
_UNCASED_FRACTION = 0.01
_CASED_FRACTION = 0.1
# Tokens that are not text: special tokens and placeholders such as [unused0] or <s>.
_MARKUP_TOKEN = re.compile(r'^(\[[^\]]*\]|<[^>]*>)$')


def _cased_counts(tokens: Sequence[str]) -> tuple[int, int]:
  """(tokens with a cased letter, those with an upper-case one), markup tokens left out."""
  cased = upper = 0
  for token in tokens:
    if _MARKUP_TOKEN.match(token):
      continue
    if any(c.lower() != c.upper() for c in token):
      cased += 1
      upper += any(c.isupper() for c in token)
  return cased, upper


def setting_warnings(folder: str, read: dict[str, Any]) -> list[str]:
  """What in a BERT checkpoint's tokenizer files looks wrong but still tokenizes: one line each,
  naming the file and the setting. `read` is `read_checkpoint_tokenizer(folder)`.

  - lower-casing off (`do_lower_case: false`, or tokenizer.json's normalizer `lowercase: false`)
    with a vocabulary without upper-case tokens: every capitalized word becomes [UNK];
  - lower-casing on with a cased vocabulary: its upper-case tokens are never used;
  - tokenizer.json and tokenizer_config.json disagreeing on `lowercase` / `do_lower_case` or
    `strip_accents`: tokenizer.json is the one followed.
  """
  warnings = []
  full = _load_json(folder, TOKENIZER_JSON)
  config = _load_json(folder, TOKENIZER_CONFIG) or {}
  if full is not None:
    source = os.path.join(folder, TOKENIZER_JSON)
    setting = 'normalizer.lowercase'
    vocab_file = source
    normalizer = full.get('normalizer') or {}
    for json_key, config_key in (
      ('lowercase', 'do_lower_case'),
      ('strip_accents', 'strip_accents'),
    ):
      in_json, in_config = normalizer.get(json_key), config.get(config_key)
      if json_key == 'strip_accents' and in_json is None:
        in_json = read['lowercase']  # tokenizers' default, as read_checkpoint_tokenizer reads it
      if in_config is not None and in_json is not None and bool(in_config) != bool(in_json):
        warnings.append(
          f'{source} says {json_key}: {str(bool(in_json)).lower()} but '
          f'{os.path.join(folder, TOKENIZER_CONFIG)} says {config_key}: '
          f'{str(bool(in_config)).lower()}; tokenizer.json is followed ({json_key} '
          f'{str(bool(in_json)).lower()}), as the Hugging Face tokenizers library does: correct '
          'the file that is wrong'
        )
  else:
    source = os.path.join(folder, TOKENIZER_CONFIG)
    setting = 'do_lower_case'
    vocab_file = os.path.join(folder, VOCAB_TXT)
  cased, upper = _cased_counts(read['tokens'])
  if not cased:
    return warnings  # no cased letters at all (e.g. CJK only): lower-casing changes nothing
  if not read['lowercase'] and upper < _UNCASED_FRACTION * cased:
    warnings.append(
      f'{source}: {setting} is false (text keeps its upper case) but the vocabulary '
      f'({vocab_file}) is uncased: {upper} of its {cased} tokens with letters have an upper-case '
      'letter, so capitalized words become [UNK] (Hello -> [UNK]). Set '
      f'{setting}: true unless the vocabulary is wrong'
    )
  elif read['lowercase'] and upper > _CASED_FRACTION * cased:
    warnings.append(
      f'{source}: {setting} is true (text is lower-cased) but the vocabulary ({vocab_file}) is '
      f'cased: {upper} of its {cased} tokens with letters have an upper-case letter, which the '
      f'tokenizer never produces. Set {setting}: false unless the vocabulary is wrong'
    )
  return warnings


def normalize(
  text: tf.Tensor,
  *,
  clean_text: bool,
  handle_chinese_chars: bool,
  strip_accents: bool,
  lowercase: bool,
) -> tf.Tensor:
  """Steps 1-4 of the module docstring on a string tensor."""
  if clean_text:
    text = tf.strings.regex_replace(text, _CONTROL, '')
    text = tf.strings.regex_replace(text, _WHITESPACE, ' ')
  if handle_chinese_chars:
    text = tf.strings.regex_replace(text, _CJK, r' \1 ')
  if strip_accents:
    text = tf.strings.regex_replace(tf_text.normalize_utf8(text, 'NFD'), r'\p{Mn}', '')
  if lowercase:
    # One character at a time: the whole-string lower case of ICU makes a final Σ a ς, which
    # Hugging Face's per-character lower case does not.
    chars = tf.strings.unicode_split(text, 'UTF-8')
    text = tf.strings.reduce_join(
      chars.with_flat_values(tf.strings.lower(chars.flat_values, encoding='utf-8')), axis=-1
    )
  return text


@functools.lru_cache(maxsize=4)
def _model_buffer(tokens: tuple[str, ...], suffix: str, unk: str, max_bytes: int) -> np.ndarray:
  """The FastWordpiece model of the vocabulary (words already split), built once per process:
  TF Transform traces preprocessing_fn several times."""
  buffer = fast_wordpiece_builder.build_fast_wordpiece_model(
    list(tokens), max_bytes, suffix, unk, True, False
  )  # no_pretokenization, support_detokenization
  return np.frombuffer(buffer, dtype=np.uint8)


class HFWordPieceTokenizer:
  """`.tokenize(strings)` -> int64 ragged ids (batch, None), as the checkpoint's tokenizer.json."""

  def __init__(
    self,
    tokens: Sequence[str],
    *,
    unk_token: str,
    suffix_indicator: str,
    max_input_chars_per_word: int,
    added_tokens: Sequence[str],
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
  ):
    """Args: the vocabulary's tokens in id order and its vocab.json settings (the fields of
    `read_checkpoint_tokenizer`, checked by `trainer.vocabulary.Vocabulary`)."""
    tokens = tuple(tokens)
    self._unk = unk_token
    self._clean_text = clean_text
    self._normalization = {
      'clean_text': clean_text,
      'handle_chinese_chars': handle_chinese_chars,
      'strip_accents': strip_accents,
      'lowercase': lowercase,
    }
    self._max_chars = max_input_chars_per_word
    buffer = _model_buffer(tokens, suffix_indicator, self._unk, self._max_chars * _BYTES_PER_CHAR)
    self._wordpiece = tf_text.FastWordpieceTokenizer(
      model_buffer=tf.constant(buffer), token_out_type=tf.int64, no_pretokenization=True
    )
    # Longest first, so that a token that starts another is not matched inside it.
    added = sorted(added_tokens, key=len, reverse=True)
    self._added = added
    self._added_ids = [tokens.index(t) for t in added]
    self._added_pattern = '|'.join(re.escape(t) for t in added)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    if self._clean_text:
      # Removed by normalization anyway; tensorflow-text's regex_split would end the text there.
      text = tf.strings.regex_replace(text, r'\x00', '')
    if not self._added:
      return self._tokenize_plain(text)
    segments = tf_text.regex_split(text, self._added_pattern, self._added_pattern)
    flat = segments.flat_values  # (segments,)
    matches = tf.equal(flat[:, tf.newaxis], tf.constant(self._added)[tf.newaxis, :])
    is_added = tf.reduce_any(matches, axis=1)
    added_ids = tf.gather(tf.constant(self._added_ids, tf.int64), tf.argmax(matches, axis=1))
    plain = self._tokenize_plain(tf.where(is_added, '', flat))  # (segments, None)
    added = tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(added_ids, is_added), tf.cast(is_added, tf.int64)
    )
    per_segment = tf.concat([plain, added], axis=1)  # one of the two is empty on every row
    return segments.with_flat_values(per_segment).merge_dims(1, 2)

  def _tokenize_plain(self, text: tf.Tensor) -> tf.RaggedTensor:
    text = normalize(text, **self._normalization)
    words = tf_text.regex_split(
      text, f'{_WHITESPACE}|{_PUNCTUATION}', _PUNCTUATION
    )  # (batch, words)
    flat = words.flat_values
    # A word longer than the limit is the unknown token, which is a word of the vocabulary.
    too_long = tf.strings.length(flat, unit='UTF8_CHAR') > self._max_chars
    flat = tf.where(too_long, self._unk, flat)
    pieces = self._wordpiece.tokenize(flat)  # (words, pieces)
    return words.with_flat_values(pieces).merge_dims(1, 2)
