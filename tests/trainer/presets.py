"""Tiny keras-hub presets made on the spot (random weights, small vocabularies), and varied texts.

Nothing is downloaded: every preset is written with keras-hub's own `save_to_preset`, so the
pipeline reads it through the same `from_preset` code as a `kaggle://` or `hf://` handle.
"""

import json
import os
import random
import tempfile

import keras_hub
import sentencepiece as spm
import tokenizers

# Text the tiny vocabularies are learned from.
CORPUS = (
  'The quick brown fox jumps over the lazy dog. A film about a dog and a fox, said the critic. '
  'Café au lait, naïve résumé, the actors were great and the music was fine. '
  'It was a good movie; the story was bad but the ending was nice! Really? Yes: 42 times.'
).split('. ')

_WORDS = (
  'the',
  'fox',
  'dog',
  'film',
  'movie',
  'quick',
  'brown',
  'lazy',
  'great',
  'nice',
  'ending',
  'Story',
  'ACTOR',
  'music',
  'said',
  'really',
)
_ACCENTED = (
  'Café',
  'naïve',
  'résumé',
  'Ångström',
  'ÉCOLE',
  'façade',
  'Straße',
  'Ǆemal',
  'ﬁne',
  'ＡＢＣ',
  'São',
  'Zürich',
)
_CJK = ('日本語', '中文字符', '한국어', 'カタカナ', '漢字かな', '㎏', '①')
_EMOJI = ('😀', '👍🏽', '👨‍👩‍👧', '🇫🇷', '❤️', '🤖🤖')
_PUNCT = (
  '!!!',
  '...',
  '?!',
  '—',
  '«»',
  "'s",
  "don't",
  '(a)',
  '[MASK]',
  '<|endoftext|>',
  '#',
  '$5.00',
  '---',
  '@user',
  'a.b.c',
  '[CLS]',
)
_SPACES = ('  ', '\t', '\n\n', '\u00a0', '\u3000', ' \u2009 ', '   \n ')
_NUMBERS = ('12345', '3.14', '2026', '0', '1,000,000')
POOLS = (_WORDS, _ACCENTED, _CJK, _EMOJI, _PUNCT, _NUMBERS)


def varied_texts(n: int, seed: int = 0) -> list[str]:
  """`n` deterministic texts mixing words, accents, CJK, emoji, punctuation, whitespace runs,
  long words and numbers; every 20th is empty, some are only whitespace."""
  rng = random.Random(seed)
  pools = (_WORDS, _ACCENTED, _CJK, _EMOJI, _PUNCT, _NUMBERS)
  texts = []
  for i in range(n):
    if i % 20 == 0:
      texts.append('')
      continue
    if i % 37 == 0:
      texts.append(rng.choice(_SPACES) * rng.randint(1, 3))
      continue
    parts = []
    for _ in range(rng.randint(1, 12)):
      r = rng.random()
      if r < 0.05:
        parts.append(rng.choice('abcxyz') * rng.randint(30, 130))  # long words
      elif r < 0.1:
        parts.append(''.join(rng.choice(_WORDS) for _ in range(3)))
      else:
        parts.append(rng.choice(rng.choice(pools)))
      parts.append(rng.choice(_SPACES) if rng.random() < 0.2 else ' ' * (rng.random() < 0.85))
    text = ''.join(parts)
    texts.append(text.strip() if rng.random() < 0.5 else text)
  return texts


def bert_preset(
  directory: str,
  *,
  lowercase: bool = True,
  strip_accents: bool = False,
  hidden: int = 16,
  seq_len: int = 32,
) -> str:
  """A BERT preset whose special tokens sit at ids other than 0-4 (as in real BERT vocabularies)."""
  words = sorted({w for t in CORPUS for w in t.replace(',', ' ').replace('!', ' ').split()})
  pieces = sorted({c for w in words for c in w.lower() + w})
  tokens = (
    ['[PAD]']
    + [f'[unused{i}]' for i in range(3)]
    + ['[UNK]', '[CLS]', '[SEP]', '[MASK]']
    + pieces
    + ['##' + c for c in pieces]
    + [w.lower() for w in words]
    + ['.', ',', '!', '?', ';', ':', "'", '##s', '##ing']
  )
  tokens = list(dict.fromkeys(tokens))
  tokenizer = keras_hub.models.BertTokenizer(
    vocabulary=tokens, lowercase=lowercase, strip_accents=strip_accents
  )
  backbone = keras_hub.models.BertBackbone(
    vocabulary_size=len(tokens),
    num_layers=2,
    num_heads=2,
    hidden_dim=hidden,
    intermediate_dim=2 * hidden,
    max_sequence_length=seq_len,
  )
  backbone.save_to_preset(directory)
  tokenizer.save_to_preset(directory)
  return directory


def gpt2_preset(
  directory: str, *, vocab_size: int = 400, hidden: int = 16, seq_len: int = 32
) -> str:
  """A GPT-2 preset with a byte-level BPE learned on `CORPUS` (256 bytes + merges)."""
  learner = tokenizers.Tokenizer(tokenizers.models.BPE())
  learner.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=['<|endoftext|>'],
    show_progress=False,
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  learner.train_from_iterator(CORPUS * 3, trainer)
  model = learner.model
  with tempfile.TemporaryDirectory() as tmp:
    vocab_file, merges_file = model.save(tmp)
    with open(vocab_file, encoding='utf-8') as f:
      vocabulary = json.load(f)
    with open(merges_file, encoding='utf-8') as f:
      merges = [line.rstrip('\n') for line in f if line.strip() and not line.startswith('#')]
  # As in GPT-2's own vocabulary, <|endoftext|> comes last (the learner puts it first).
  end = vocabulary.pop('<|endoftext|>')
  vocabulary = {t: i - (i > end) for t, i in vocabulary.items()}
  vocabulary['<|endoftext|>'] = len(vocabulary)
  tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
  backbone = keras_hub.models.GPT2Backbone(
    vocabulary_size=len(vocabulary),
    num_layers=2,
    num_heads=2,
    hidden_dim=hidden,
    intermediate_dim=2 * hidden,
    max_sequence_length=seq_len,
  )
  backbone.save_to_preset(directory)
  tokenizer.save_to_preset(directory)
  return directory


def albert_preset(
  directory: str, *, vocab_size: int = 120, hidden: int = 16, seq_len: int = 32
) -> str:
  """An ALBERT preset: a SentencePiece unigram model trained here, ALBERT's special pieces."""
  with tempfile.TemporaryDirectory() as tmp:
    sample = os.path.join(tmp, 'sample.txt')
    with open(sample, 'w', encoding='utf-8') as f:
      f.write('\n'.join(CORPUS * 3) + '\n')
    spm.SentencePieceTrainer.train(
      input=sample,
      model_prefix=os.path.join(tmp, 'spm'),
      vocab_size=vocab_size,
      model_type='unigram',
      pad_id=0,
      pad_piece='<pad>',
      unk_id=1,
      unk_piece='<unk>',
      bos_id=-1,
      eos_id=-1,
      user_defined_symbols=['[CLS]', '[SEP]', '[MASK]'],
      hard_vocab_limit=False,
      minloglevel=2,
    )
    with open(os.path.join(tmp, 'spm.model'), 'rb') as f:
      proto = f.read()
  tokenizer = keras_hub.models.AlbertTokenizer(proto=proto)
  backbone = keras_hub.models.AlbertBackbone(
    vocabulary_size=tokenizer.vocabulary_size(),
    num_layers=2,
    num_heads=2,
    embedding_dim=8,
    hidden_dim=hidden,
    intermediate_dim=2 * hidden,
    num_groups=1,
    num_inner_repetition=1,
    max_sequence_length=seq_len,
  )
  backbone.save_to_preset(directory)
  tokenizer.save_to_preset(directory)
  return directory
