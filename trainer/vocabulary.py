"""The Vocabulary artifact as one type: its tokens (vocab.txt), its spec (vocab.json), its special
tokens, and the in-graph tokenizing and decoding of each kind.

Every stage that meets a vocabulary goes through `Vocabulary`: the Vocabulary component and the
preset import write it (`Vocabulary.write`), Transform's preprocessing_fn reads it
(`Vocabulary.read`) and tokenizes with it, the Trainer and the export read the copy the transform
graph carries (`Vocabulary.from_files`) and decode with it. Nothing else opens vocab.json.

vocab.json is one line of JSON (the transform graph carries it as a one-entry vocabulary, the
asset `tokenizer_spec`). Its fields, checked on every read and write (`SPEC_FIELDS`):
  kind              one of `contract.TOKENIZER_KINDS` (absent: `wordpiece`, as vocabularies
                    written before there were kinds);
  size              number of tokens (= lines of vocab.txt);
  lowercase, strip_accents, nfkc
                    normalization (applied in the graph for learned kinds; recorded for people
                    for imported ones, whose tokenizer normalizes by itself);
  normalization_rule
                    learned kinds: which accent stripping the text went through
                    (`NORMALIZATION_RULES`); absent: rule 1, as vocabularies learned before
                    there were rules, so that a reused artifact tokenizes as it was learned;
  special_tokens    `{pad, unk, start, end, mask: id or null, reserved: [ids]}`; required for
                    imported kinds, absent for learned ones (ids 0-4, `contract.RESERVED_TOKENS`);
  suffix_indicator  wordpiece continuation prefix (`##`);
  preset, tokenizer_class
                    where an imported vocabulary came from;
  clean_text, handle_chinese_chars, unk_token, max_input_chars_per_word, added_tokens
                    `hf_wordpiece` only: the checkpoint's normalizer and WordPiece settings;
  the learner's settings and counts (target_size, reserved_tokens, min_count,
  sentencepiece_model_type, sample_documents, documents, words, unique_words, kept_words).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.core.pybinds import (
  pywrap_fast_wordpiece_tokenizer_model_builder as fast_wordpiece_builder,
)

from tfxlm import contract

SENTENCEPIECE_SPACE = '\u2581'
# What Python's str.split() splits on (str.isspace): the SentencePiece learner joins a text's
# words with one space (trainer/tokenizers.py), so the graph must collapse the same runs.
WHITESPACE_RUN = r'[\t-\r\x{1c}-\x{20}\x{85}\p{Z}]+'
# Words longer than this many bytes become [UNK] (FastBertTokenizer's own default).
MAX_BYTES_PER_WORD = 100
ROLES = ('pad', 'unk', 'start', 'end', 'mask')

# What `strip_accents` strips, by the rule a learned vocabulary's vocab.json names
# (`normalization_rule`; `normalize` and the learner's `tokenizers.normalize_text` apply them):
#   1  NFD, then every non-spacing mark (\p{Mn}) dropped, nothing re-composed: BERT's
#      BasicTokenizer. It also drops marks that are letters of other scripts (the kana voicing
#      mark: 'です' -> 'てす'; Devanagari, Thai, Hebrew and Arabic vowel signs) and leaves Korean
#      as loose conjoining jamo. Vocabularies learned before rule 2 (no field) keep it.
#   2  NFD, then only `ACCENT_RANGES` dropped, then NFC: the Latin, Greek and Cyrillic accents
#      go ('café' -> 'cafe', 'ά' -> 'α', Vietnamese 'tiếng' -> 'tieng', and, as in BERT, 'й' ->
#      'и'), every other script's marks stay and its text comes back composed ('한국어').
LEGACY_NORMALIZATION_RULE = 1
NORMALIZATION_RULE = 2
NORMALIZATION_RULES = (LEGACY_NORMALIZATION_RULE, NORMALIZATION_RULE)
# Rule 2's accents: the Unicode blocks of combining diacritical marks, which are the marks
# written over and under Latin, Greek and Cyrillic letters (Combining Diacritical Marks, its
# Extended and Supplement blocks, Combining Diacritical Marks for Symbols, Combining Half
# Marks). The enclosing marks among them (Me: U+1ABE, U+20DD-20E0, U+20E2-20E4, such as the
# keycap of '1️⃣') are left out: rule 1 kept them too. Whole ranges rather than the code points
# assigned today, so that the set does not move with the Unicode version of Python or ICU.
ACCENT_RANGES = (
  (0x0300, 0x036F),
  (0x1AB0, 0x1ABD),
  (0x1ABF, 0x1AFF),
  (0x1DC0, 0x1DFF),
  (0x20D0, 0x20DC),
  (0x20E1, 0x20E1),
  (0x20E5, 0x20FF),
  (0xFE20, 0xFE2F),
)
# CJK ideographs, each its own word in BERT's pre-tokenizer (tensorflow-text's ranges; the
# learner's `tokenizers.split_words` and the decoder's `_CJK` follow them). Hangul is not among
# them: Korean separates its words with spaces, as its text keeps.
CJK_RANGES = (
  (0x4E00, 0x9FFF),
  (0x3400, 0x4DBF),
  (0x20000, 0x2A6DF),
  (0x2A700, 0x2B73F),
  (0x2B740, 0x2B81F),
  (0x2B820, 0x2CEAF),
  (0xF900, 0xFAFF),
  (0x2F800, 0x2FA1F),
)


def _regex_class(ranges: tuple[tuple[int, int], ...]) -> str:
  """The RE2 character class of these code point ranges."""
  return ''.join(f'\\x{{{a:04X}}}-\\x{{{b:04X}}}' for a, b in ranges)


_ACCENT_CLASS = f'[{_regex_class(ACCENT_RANGES)}]'

_ALL = contract.TOKENIZER_KINDS
_HF = (contract.HF_WORDPIECE,)
# The hf_wordpiece settings its tokenizer takes as they are (trainer/hf_tokenizer.py).
_HF_SETTINGS = (
  'unk_token',
  'max_input_chars_per_word',
  'clean_text',
  'handle_chinese_chars',
  'strip_accents',
  'lowercase',
)
# vocab.json's fields: name -> (JSON type, the kinds that require it). Other fields are refused.
SPEC_FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
  'kind': (str, ()),
  'size': (int, ()),
  'lowercase': (bool, _ALL),
  'strip_accents': (bool, _ALL),
  'nfkc': (bool, _ALL),
  'normalization_rule': (int, ()),
  'special_tokens': (dict, contract.IMPORTED_KINDS),
  'suffix_indicator': (str, _HF),
  'preset': (str, contract.IMPORTED_KINDS),
  'tokenizer_class': (str, ()),
  'clean_text': (bool, _HF),
  'handle_chinese_chars': (bool, _HF),
  'unk_token': (str, _HF),
  'max_input_chars_per_word': (int, _HF),
  'added_tokens': (list, ()),
  'target_size': (int, ()),
  'reserved_tokens': (list, ()),
  'min_count': (int, ()),
  'sentencepiece_model_type': (str, ()),
  'sample_documents': (int, ()),
  'documents': (int, ()),
  'words': (int, ()),
  'unique_words': (int, ()),
  'kept_words': (int, ()),
}


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Ids of a vocabulary's special tokens; None where the vocabulary has no such token.

  Attributes:
    pad: Padding ([PAD]; GPT-2, which has none, pads with <|endoftext|>).
    unk: Unknown token ([UNK]); None for byte-level BPE, which has none.
    start: Starts a sequence ([CLS]; <|endoftext|> for GPT-2).
    end: Ends a sequence and separates documents ([SEP]; <|endoftext|>).
    mask: The masked-LM mask ([MASK]); None for GPT-2.
    reserved: Every id that is never a prediction target, a masking candidate or a sample
      (the roles above plus the preset's other control tokens).
  """

  pad: int
  unk: int | None
  start: int
  end: int
  mask: int | None
  reserved: tuple[int, ...]

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self) | {'reserved': list(self.reserved)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], where: str = 'special_tokens') -> SpecialTokens:
    """Raises ValueError, naming `where` and the field, unless `d` has every role and ints."""
    expected = set(ROLES) | {'reserved'}
    if not isinstance(d, Mapping) or set(d) != expected:
      keys = sorted(d) if isinstance(d, Mapping) else type(d).__name__
      raise ValueError(f'{where}: special_tokens has {keys}, expected keys {sorted(expected)}')
    for role in ROLES:
      value = d[role]
      optional = role in ('unk', 'mask')
      if not (_is_int(value) or (optional and value is None)):
        raise ValueError(
          f'{where}: special_tokens.{role} is {value!r}, expected an id'
          + (' or null' if optional else '')
        )
    if not isinstance(d['reserved'], list) or not all(_is_int(i) for i in d['reserved']):
      raise ValueError(f'{where}: special_tokens.reserved is {d["reserved"]!r}, expected ids')
    return cls(**{**d, 'reserved': tuple(d['reserved'])})


LEARNED_SPECIAL_TOKENS = SpecialTokens(
  pad=contract.PAD_ID,
  unk=contract.UNK_ID,
  start=contract.CLS_ID,
  end=contract.SEP_ID,
  mask=contract.MASK_ID,
  reserved=tuple(range(len(contract.RESERVED_TOKENS))),
)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_spec(spec: Any, where: str) -> dict[str, Any]:
  """Returns vocab.json's fields with `kind` filled in, or raises ValueError naming `where` and
  the first field that is unknown, missing for its kind, or of the wrong type."""
  if not isinstance(spec, Mapping):
    raise ValueError(f'{where}: expected a JSON object, found {type(spec).__name__}')
  spec = {'kind': contract.WORDPIECE, **spec}
  kind = spec['kind']
  if kind not in contract.TOKENIZER_KINDS:
    raise ValueError(f'{where}: kind {kind!r} is not one of {contract.TOKENIZER_KINDS}')
  for name, value in spec.items():
    if name not in SPEC_FIELDS:
      raise ValueError(f'{where}: unknown field {name!r} (known: {sorted(SPEC_FIELDS)})')
    expected, _ = SPEC_FIELDS[name]
    ok = _is_int(value) if expected is int else isinstance(value, expected)
    if not ok:
      raise ValueError(
        f'{where}: field {name!r} is {value!r}, expected a JSON {_JSON_TYPES[expected]}'
      )
  for name, (_, kinds) in SPEC_FIELDS.items():
    if kind in kinds and name not in spec:
      raise ValueError(f'{where}: field {name!r} is missing (a {kind} vocabulary needs it)')
  if 'special_tokens' in spec:
    SpecialTokens.from_dict(spec['special_tokens'], where)
  rule = spec.get('normalization_rule', LEGACY_NORMALIZATION_RULE)
  if rule not in NORMALIZATION_RULES:
    raise ValueError(
      f'{where}: field normalization_rule is {rule}, expected one of {NORMALIZATION_RULES} '
      '(a vocabulary written by a newer version of this project?)'
    )
  return spec


_JSON_TYPES = {str: 'string', int: 'integer', bool: 'boolean', dict: 'object', list: 'array'}


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """A tokenizer vocabulary: its tokens in id order and its vocab.json, checked when built.

  Attributes:
    tokens: The tokens, id = index (vocab.txt).
    spec: vocab.json's fields (`SPEC_FIELDS`), `kind` filled in.
    uri: The artifact folder, when read from one (sentencepiece and preset kinds tokenize from
      the files beside vocab.txt there).
  """

  tokens: tuple[str, ...]
  spec: Mapping[str, Any]
  uri: str | None = None
  where: dataclasses.InitVar[str | None] = None

  def __post_init__(self, where: str | None) -> None:
    where = where or (os.path.join(self.uri, contract.VOCAB_JSON) if self.uri else 'vocab.json')
    object.__setattr__(self, 'tokens', tuple(self.tokens))
    object.__setattr__(self, 'spec', check_spec(self.spec, where))
    self._check_tokens(where)
    size = self.spec.get('size')
    if size is not None and size != len(self.tokens):
      raise ValueError(
        f'{where}: field size is {size}, but the vocabulary has {len(self.tokens)} tokens'
      )

  # -- reading and writing ----------------------------------------------------------------------

  @classmethod
  def read(cls, uri: str) -> Vocabulary:
    """The Vocabulary artifact in folder `uri` (vocab.txt and vocab.json), checked."""
    return cls.from_files(
      os.path.join(uri, contract.VOCAB_FILE), os.path.join(uri, contract.VOCAB_JSON), uri=uri
    )

  @classmethod
  def from_files(cls, vocab_path: str, spec_path: str, uri: str | None = None) -> Vocabulary:
    """A vocabulary from its two files wherever they are (the transform graph's assets
    `token_vocab` and `tokenizer_spec` have other names than the artifact's files)."""
    with tf.io.gfile.GFile(vocab_path) as f:
      # Lines end at '\n' only, as TF Transform's lookup tables read them.
      tokens = [line.rstrip('\n') for line in f]
    with tf.io.gfile.GFile(spec_path) as f:
      text = f.read()
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'{spec_path}: not JSON ({e.msg} at line {e.lineno})') from None
    return cls(tokens, spec, uri=uri, where=spec_path)

  def to_json(self) -> str:
    """vocab.json's one line (no newline)."""
    return json.dumps(dict(self.spec), sort_keys=True)

  def write(self, uri: str) -> None:
    """Writes vocab.txt and vocab.json (one line: the transform graph reads it as a one-entry
    vocabulary) into folder `uri`; the kind's other files are its writer's."""
    for i, token in enumerate(self.tokens):
      if '\n' in token or '\r' in token:
        raise ValueError(f'{uri}/{contract.VOCAB_FILE}: token {i} ({token!r}) holds a line break')
    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(os.path.join(uri, contract.VOCAB_FILE), 'w') as f:
      f.write(''.join(token + '\n' for token in self.tokens))
    with tf.io.gfile.GFile(os.path.join(uri, contract.VOCAB_JSON), 'w') as f:
      f.write(self.to_json() + '\n')

  def _check_tokens(self, where: str) -> None:
    n = len(contract.RESERVED_TOKENS)
    if self.kind in contract.VOCAB_KINDS and self.tokens[:n] != contract.RESERVED_TOKENS:
      raise ValueError(
        f'{where}: a {self.kind} vocabulary must start with {contract.RESERVED_TOKENS}, '
        f'starts with {list(self.tokens[:n])}'
      )
    reserved = self.special.reserved
    if any(not 0 <= i < len(self.tokens) for i in reserved) or len(self.tokens) <= len(reserved):
      raise ValueError(f'{where}: {len(self.tokens)} tokens, special token ids {list(reserved)}')

  # -- what it says -----------------------------------------------------------------------------

  @property
  def kind(self) -> str:
    return self.spec['kind']

  @property
  def special(self) -> SpecialTokens:
    """The special tokens (learned vocabularies: ids 0-4)."""
    if 'special_tokens' in self.spec:
      return SpecialTokens.from_dict(self.spec['special_tokens'])
    return LEARNED_SPECIAL_TOKENS

  @property
  def suffix_indicator(self) -> str:
    return self.spec.get('suffix_indicator', contract.SUFFIX_INDICATOR)

  @property
  def normalization(self) -> dict[str, Any]:
    """`lowercase`, `strip_accents`, `nfkc` and the accent `rule`: what a learned vocabulary's
    text goes through (`normalize`'s arguments)."""
    flags = {k: self.spec[k] for k in ('lowercase', 'strip_accents', 'nfkc')}
    return {**flags, 'rule': self.spec.get('normalization_rule', LEGACY_NORMALIZATION_RULE)}

  def __len__(self) -> int:
    return len(self.tokens)

  # -- tokenizing and decoding (graph ops) -------------------------------------------------------

  def tokenizer(self):
    """The in-graph tokenizer of this kind: `.tokenize(strings)` gives ragged ids. Call
    `tokenize` with it; build it once per graph (TF Transform traces several times)."""
    if self.kind in contract.PRESET_KINDS:
      return _KerasHubTokenizer(self._folder())
    if self.kind == contract.HF_WORDPIECE:
      from trainer import hf_tokenizer

      spec = self.spec
      return hf_tokenizer.HFWordPieceTokenizer(
        self.tokens,
        suffix_indicator=self.suffix_indicator,
        added_tokens=spec.get('added_tokens', []),
        **{k: spec[k] for k in _HF_SETTINGS},
      )
    if self.kind == contract.SENTENCEPIECE:
      path = os.path.join(self._folder(), contract.SPM_MODEL_FILE)
      with tf.io.gfile.GFile(path, 'rb') as f:
        return tf_text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
    model = _wordpiece_model(self.tokens, self.suffix_indicator)
    return tf_text.FastBertTokenizer(
      fast_wordpiece_model_buffer=tf.constant(model), token_out_type=tf.int64
    )

  def tokenize(self, text: tf.Tensor, tokenizer=None) -> tf.RaggedTensor:
    """(batch,) strings -> (batch, None) int64 token ids, normalized first for learned kinds
    (and, for sentencepiece, whitespace runs made one space, as its learner saw the text)."""
    tokenizer = tokenizer or self.tokenizer()
    if self.kind in contract.VOCAB_KINDS:
      text = normalize(text, **self.normalization)
    if self.kind == contract.SENTENCEPIECE:
      # The model never saw a newline or tab (the learner collapses whitespace): as is, one
      # would be [UNK] and the next word split into characters.
      text = collapse_whitespace(text)
    ids = tokenizer.tokenize(text)
    if ids.ragged_rank == 2:  # FastBertTokenizer: (batch, words, pieces).
      ids = ids.merge_dims(1, 2)
    return tf.cast(ids, tf.int64)

  def decode(self, tokens: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Joins the token strings of each row (string [b, n]) where `keep` into text [b]."""
    return decode_tokens(tokens, keep, self.kind)

  def _folder(self) -> str:
    if not self.uri:
      raise ValueError(
        f'a {self.kind} vocabulary tokenizes from its artifact folder: read it with '
        'Vocabulary.read(uri)'
      )
    return self.uri


def normalize(
  text: tf.Tensor,
  *,
  lowercase: bool,
  strip_accents: bool,
  nfkc: bool,
  rule: int = NORMALIZATION_RULE,
) -> tf.Tensor:
  """Normalizes a string tensor as a learned vocabulary's flags and accent rule say
  (`NORMALIZATION_RULES`; graph ops, the learner's `tokenizers.normalize_text` does the same in
  Python)."""
  if nfkc:
    text = tf_text.normalize_utf8(text, 'NFKC')
  if lowercase:
    text = tf_text.case_fold_utf8(text)
  if strip_accents and rule == LEGACY_NORMALIZATION_RULE:
    text = tf.strings.regex_replace(tf_text.normalize_utf8(text, 'NFD'), r'\p{Mn}', '')
  elif strip_accents:
    text = tf.strings.regex_replace(tf_text.normalize_utf8(text, 'NFD'), _ACCENT_CLASS, '')
    text = tf_text.normalize_utf8(text, 'NFC')
  return text


def collapse_whitespace(text: tf.Tensor) -> tf.Tensor:
  """`' '.join(text.split())` in graph ops: what the SentencePiece learner trains on."""
  text = tf.strings.regex_replace(text, WHITESPACE_RUN, ' ')
  return tf.strings.regex_replace(text, '^ | $', '')


@functools.lru_cache(maxsize=4)
def _wordpiece_model(tokens: tuple[str, ...], suffix_indicator: str) -> np.ndarray:
  """The FastWordpiece flatbuffer for a vocabulary, built once per process.

  TF Transform traces preprocessing_fn several times; building the model and handing it to
  `FastBertTokenizer` as bytes (which it turns into a constant through a Python list of ints)
  cost about 3 s per trace for an 8k vocabulary. A uint8 array becomes a constant directly.
  """
  buffer = fast_wordpiece_builder.build_fast_wordpiece_model(
    list(tokens), MAX_BYTES_PER_WORD, suffix_indicator, contract.UNK, False, False
  )  # no_pretokenization, support_detokenization
  return np.frombuffer(buffer, dtype=np.uint8)


def load_preset_tokenizer(vocab_uri: str):
  """keras-hub's tokenizer of a preset-kind Vocabulary artifact, rebuilt from its files."""
  import tempfile

  import keras
  import keras_hub  # noqa: F401 (registers the tokenizer classes for deserialization)

  with tf.io.gfile.GFile(os.path.join(vocab_uri, contract.PRESET_TOKENIZER_FILE)) as f:
    tokenizer = keras.saving.deserialize_keras_object(json.load(f))
  assets = os.path.join(vocab_uri, contract.PRESET_ASSETS_DIR)
  if tf.io.gfile.exists(assets) and not os.path.exists(assets):
    # keras-hub reads assets with plain `open`: bring remote ones (gs://...) to local disk.
    local = tempfile.mkdtemp(prefix='keras_hub_assets_')
    for name in tf.io.gfile.listdir(assets):
      tf.io.gfile.copy(os.path.join(assets, name), os.path.join(local, name))
    assets = local
  tokenizer.load_assets(assets)
  return tokenizer


class _KerasHubTokenizer:
  """A preset's keras-hub tokenizer, as the transform graph keeps it."""

  def __init__(self, vocab_uri: str):
    if tf.inside_function():
      import tensorflow_transform as tft

      # Its lookup tables are resources: TF Transform must track them so that the transform
      # graph saves them (built in the function they would be untracked, built outside it
      # they would belong to no graph).
      self._tokenizer = tft.make_and_track_object(
        lambda: load_preset_tokenizer(vocab_uri), name='keras_hub_tokenizer'
      )
    else:
      self._tokenizer = load_preset_tokenizer(vocab_uri)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self._tokenizer.tokenize(text)


def _byte_decoder() -> tuple[np.ndarray, list[bytes]]:
  """GPT-2's byte-level alphabet reversed: code point -> byte (-1 if none), and the 256 bytes."""
  printable = (
    list(range(ord('!'), ord('~') + 1))
    + list(range(ord('¡'), ord('¬') + 1))
    + list(range(ord('®'), ord('ÿ') + 1))
  )
  code_points = dict(zip(printable, printable))
  extra = 0
  for b in range(256):
    if b not in code_points:
      code_points[b] = 256 + extra
      extra += 1
  decoder = np.full([max(code_points.values()) + 1], -1, np.int32)
  for b, c in code_points.items():
    decoder[c] = b
  return decoder, [bytes([b]) for b in range(256)]


# A learned WordPiece vocabulary's tokens joined by spaces read 'hello , world .', 'state - of -
# the - art', "don ' t" and '東 京 の 桜': its pre-tokenizer split each punctuation mark and each
# CJK ideograph off as a word of its own. `decode_tokens` takes those spaces out again, where the
# tokens alone tell that the text had none; each rule is (pattern, replacement), in order.
# Characters written without spaces between words: a space beside a CJK ideograph (or a CJK or
# full-width punctuation mark) is the split's when the other side is one too or kana. Two
# kana words were split by a space of the text, which stays.
_CJK = (
  _regex_class(CJK_RANGES)
  + r'\x{3000}-\x{303F}\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF20}\x{FF3B}-\x{FF40}\x{FF5B}-\x{FF65}'
)
_KANA = r'\x{3040}-\x{30FF}\x{31F0}-\x{31FF}\x{FF66}-\x{FF9F}'
_APOSTROPHE = "['\u2019]"
_WORDPIECE_JOINS = (
  # Twice where a match's last character can start the next one ('我 喜 欢').
  (f'([{_CJK}]) ([{_CJK}{_KANA}])', r'\1\2'),
  (f'([{_CJK}]) ([{_CJK}{_KANA}])', r'\1\2'),
  (f'([{_KANA}]) ([{_CJK}])', r'\1\2'),
  # A hyphen between two words joins them ('state-of-the-art'; 'a - b' comes back 'a-b').
  (r'([\pL\pN]) - ([\pL\pN])', r'\1-\2'),
  (r'([\pL\pN]) - ([\pL\pN])', r'\1-\2'),
  # English contractions ("don't", "it's", "we're", and "'s" opening a continuation) and
  # French elisions ("c'est", "qu'il", "s’il") glue to both words.
  (f'(?i)(^|\\pL) ?({_APOSTROPHE}) (s|t|re|ve|ll|d|m)( |$)', r'\1\2\3\4'),
  (f'(?i)(^| )([cdjlmnst]|\\pL*qu) ({_APOSTROPHE}) (\\pL)', r'\1\2\3\4'),
  # Other quote marks pair up, the first opening and the next closing a quotation: each glues
  # to the text inside ("he said 'hello' to me"), not to the words outside.
  (r"(^| )' (.+?) '( |$)", r"\1'\2'\3"),
  (r'(^| )" (.+?) "( |$)', r'\1"\2"\3'),
  # An apostrophe left over, at the end or before punctuation, closes the word before it
  # ("the dogs'.").
  (f'(\\pL) ({_APOSTROPHE})( [.,!?;:]| ?$)', r'\1\2\3'),
  # No space before . , ! ? ; : (Hugging Face's `clean_up_tokenization`), nor inside brackets.
  (r' ([.,!?;:)\]}])', r'\1'),
  (r'([(\[{]) ', r'\1'),
)


def decode_tokens(tokens: tf.Tensor, keep: tf.Tensor, kind: str) -> tf.Tensor:
  """Joins the token strings of each row (string [b, n]) where `keep` into text [b], as a
  vocabulary of `kind` spells text (`Vocabulary.decode`; the export's generate signature,
  which knows the kind from the graph's vocab.json, calls this directly). TensorFlow ops only,
  so a served model spells its text the same without this project's code.

  WordPiece: tokens separated by spaces, '##' pieces glued to the previous one. A learned
  vocabulary's text also loses the spaces its pre-tokenizer put in (`_WORDPIECE_JOINS`): none
  before . , ! ? ; : or inside brackets ('hello, world.', as BERT decoders write it), none
  between CJK ideographs or between one and kana ('東京の桜'), none around a hyphen between two
  words ('state-of-the-art'), contractions and elisions joined ("don't", "c'est"), a quote glued
  to the quoted text only ("said 'hello' to"). The tokens cannot tell where the text had such a
  space itself: 'a - b' comes back 'a-b', '東京 タワー' as '東京タワー'. An imported WordPiece
  vocabulary (a keras-hub preset, a Hugging Face checkpoint) keeps its library's spaced text,
  keras-hub's `detokenize` (those are masked or classifying models, which never generate).
  SentencePiece: pieces concatenated, U+2581 becomes a space: the text as normalized, exactly
  (whitespace runs as one space).
  Byte-level BPE: pieces concatenated, each character mapped back to its byte.
  """
  if kind in (contract.SENTENCEPIECE, contract.PRESET_SENTENCEPIECE):
    joined = tf.strings.reduce_join(tf.where(keep, tokens, ''), axis=1)
    return tf.strings.strip(tf.strings.regex_replace(joined, SENTENCEPIECE_SPACE, ' '))
  if kind == contract.PRESET_BPE:
    joined = tf.strings.reduce_join(tf.where(keep, tokens, ''), axis=1)
    decoder, byte_strings = _byte_decoder()
    code_points = tf.strings.unicode_decode(joined, 'UTF-8')  # (batch, None)
    in_range = code_points.with_flat_values(tf.minimum(code_points.flat_values, len(decoder) - 1))
    byte_ids = tf.gather(tf.constant(decoder), in_range)
    byte_ids = tf.ragged.boolean_mask(byte_ids, byte_ids >= 0)
    text = tf.strings.reduce_join(tf.gather(tf.constant(byte_strings), byte_ids), axis=1)
    # A sampled sequence can end inside a multi-byte character: drop what is not UTF-8.
    return tf.strings.unicode_transcode(text, 'UTF-8', 'UTF-8', errors='ignore')
  joined = tf.strings.reduce_join(tf.where(keep, tokens + ' ', ''), axis=1)
  # A continuation may start inside the prompt's last word: its first piece's ## goes too.
  text = tf.strings.regex_replace(joined, r'(?:^| )##', '')
  if kind == contract.WORDPIECE:
    for pattern, replacement in _WORDPIECE_JOINS:
      text = tf.strings.regex_replace(text, pattern, replacement)
  return tf.strings.strip(text)
