"""The Vocabulary type: vocab.txt + vocab.json read, written and checked in one place."""

import json
import os

import pytest
import tensorflow as tf

from tfxlm import contract
from trainer import vocabulary
from trainer.vocabulary import LEARNED_SPECIAL_TOKENS, SpecialTokens, Vocabulary

WORDS = ('the', 'fox', 'cafe', ',', '!', '##s')
TOKENS = contract.RESERVED_TOKENS + WORDS
LEARNED = {'kind': 'wordpiece', 'lowercase': True, 'strip_accents': True, 'nfkc': True}


def _write(folder, tokens, spec):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, contract.VOCAB_FILE), 'w') as f:
    f.write(''.join(t + '\n' for t in tokens))
  with open(os.path.join(folder, contract.VOCAB_JSON), 'w') as f:
    f.write(spec if isinstance(spec, str) else json.dumps(spec))
  return str(folder)


def test_write_then_read_gives_the_same_vocabulary(tmp_path):
  vocab = Vocabulary(TOKENS, {**LEARNED, 'size': len(TOKENS), 'documents': 3})
  vocab.write(str(tmp_path))
  with open(tmp_path / contract.VOCAB_JSON) as f:
    lines = f.read().splitlines()
  assert len(lines) == 1  # the transform graph reads it as a one-entry vocabulary
  read = Vocabulary.read(str(tmp_path))
  assert read.tokens == TOKENS and read.spec == vocab.spec and read.uri == str(tmp_path)
  assert read.kind == contract.WORDPIECE and len(read) == len(TOKENS)
  assert read.special == LEARNED_SPECIAL_TOKENS
  assert read.normalization == {'lowercase': True, 'strip_accents': True, 'nfkc': True, 'rule': 1}


def test_a_spec_without_a_kind_is_a_learned_wordpiece_vocabulary(tmp_path):
  spec = {k: v for k, v in LEARNED.items() if k != 'kind'}
  assert Vocabulary.read(_write(tmp_path, TOKENS, spec)).kind == contract.WORDPIECE


def test_imported_special_tokens_are_read_from_the_spec():
  special = SpecialTokens(pad=0, unk=None, start=6, end=6, mask=None, reserved=(0, 6))
  tokens = ('<pad>', 'a', 'b', 'c', 'd', 'e', '<|endoftext|>')
  spec = {
    'kind': contract.PRESET_BPE,
    'preset': 'p',
    'special_tokens': special.to_dict(),
    'lowercase': False,
    'strip_accents': False,
    'nfkc': False,
  }
  vocab = Vocabulary(tokens, spec)
  assert vocab.special == special
  assert SpecialTokens.from_dict(json.loads(vocab.to_json())['special_tokens']) == special


@pytest.mark.parametrize(
  'spec, message',
  [
    ({**LEARNED, 'kind': 'bpe'}, r"vocab.json: kind 'bpe' is not one of"),
    (
      {**LEARNED, 'lowercase': 'yes'},
      r"vocab.json: field 'lowercase' is 'yes', expected a JSON boolean",
    ),
    ({**LEARNED, 'size': True}, r"field 'size' is True, expected a JSON integer"),
    ({**LEARNED, 'colour': 1}, r"vocab.json: unknown field 'colour'"),
    ({'kind': 'wordpiece', 'lowercase': True, 'nfkc': True}, r"field 'strip_accents' is missing"),
    ({**LEARNED, 'kind': contract.PRESET_WORDPIECE, 'preset': 'p'}, r"'special_tokens' is missing"),
    ({**LEARNED, 'size': 3}, r'field size is 3, but the vocabulary has 11 tokens'),
    (
      {**LEARNED, 'special_tokens': {'pad': 0}},
      r"special_tokens has \['pad'\], expected keys",
    ),
    (
      {**LEARNED, 'special_tokens': {**LEARNED_SPECIAL_TOKENS.to_dict(), 'start': None}},
      r'special_tokens.start is None, expected an id$',
    ),
    ('[1, 2]', r'vocab.json: expected a JSON object, found list'),
    ('{"kind": ', r'vocab.json: not JSON'),
  ],
)
def test_a_bad_spec_is_refused_in_one_line_naming_the_file_and_field(tmp_path, spec, message):
  folder = _write(tmp_path, TOKENS, spec)
  with pytest.raises(ValueError, match=message) as raised:
    Vocabulary.read(folder)
  assert '\n' not in str(raised.value)
  assert str(raised.value).startswith(os.path.join(folder, contract.VOCAB_JSON))


def test_tokens_must_hold_the_special_tokens(tmp_path):
  with pytest.raises(ValueError, match=r"must start with \('\[PAD\]'"):
    Vocabulary(tuple(reversed(TOKENS)), LEARNED)
  special = {**LEARNED_SPECIAL_TOKENS.to_dict(), 'reserved': [0, 1, 2, 3, 4, 99]}
  with pytest.raises(ValueError, match=r'11 tokens, special token ids \[0, 1, 2, 3, 4, 99\]'):
    Vocabulary(TOKENS, {**LEARNED, 'special_tokens': special})


def test_a_token_with_a_line_break_is_not_written(tmp_path):
  vocab = Vocabulary(TOKENS + ('a\nb',), LEARNED)
  with pytest.raises(ValueError, match=r'vocab.txt: token 11 .* holds a line break'):
    vocab.write(str(tmp_path))
  assert not os.path.exists(tmp_path / contract.VOCAB_JSON)


def test_tokens_are_lines_split_at_newlines_only(tmp_path):
  tokens = TOKENS + ('x\u2028y', 'z\x85')  # other line separators stay inside a token
  Vocabulary(tokens, LEARNED).write(str(tmp_path))
  assert Vocabulary.read(str(tmp_path)).tokens == tokens


def test_tokenize_normalizes_as_the_spec_says_and_decode_inverts_it(tmp_path):
  vocab = Vocabulary.read(_write(tmp_path, TOKENS, LEARNED))
  ids = vocab.tokenize(tf.constant(['The FOX, Café!', 'foxs foxes']))
  assert [[vocab.tokens[i] for i in row] for row in ids.to_list()] == [
    ['the', 'fox', ',', 'cafe', '!'],
    ['fox', '##s', '[UNK]'],  # 'foxes' has no pieces ('##es'): one unknown word
  ]
  strings = tf.gather(tf.constant(vocab.tokens), ids.to_tensor())
  keep = tf.sequence_mask(ids.row_lengths())
  assert vocab.decode(strings, keep).numpy().tolist() == [b'the fox, cafe!', b'foxs [UNK]']

  cased = Vocabulary(TOKENS, {**LEARNED, 'lowercase': False})
  ids = cased.tokenize(tf.constant(['The fox']))
  assert [cased.tokens[i] for i in ids[0].numpy()] == ['[UNK]', 'fox']


def test_a_kind_that_tokenizes_from_its_files_needs_its_folder():
  vocab = Vocabulary(TOKENS, {**LEARNED, 'kind': contract.SENTENCEPIECE})
  with pytest.raises(ValueError, match=r'a sentencepiece vocabulary tokenizes from its artifact'):
    vocab.tokenizer()


# Text in several scripts, and what strip_accents (lower-cased, NFKC) makes of it.
SCRIPTS = ['ですね', '한국어', 'हिन्दी', 'ที่นี่', 'שָׁלוֹם', 'Café Straße', 'Ελληνικά', 'tiếng Việt']
# Rule 1 (vocabularies learned before rule 2): BERT's, every non-spacing mark gone, undecomposed.
RULE_1 = ['てすね', '\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165', 'हिनदी', 'ทน', 'שלום']
RULE_1 += ['cafe strasse', 'ελληνικα', 'tieng viet']
# Rule 2: only the Latin, Greek and Cyrillic accents go; the rest stays, composed.
RULE_2 = ['ですね', '한국어', 'हिन्दी', 'ที่นี่', 'שָׁלוֹם', 'cafe strasse', 'ελληνικα', 'tieng viet']


def _tokenized_text(spec):
  """What a vocabulary with this spec tokenizes SCRIPTS as: its normalized text."""
  vocab = Vocabulary(TOKENS, {**LEARNED, **spec})
  normalized = vocabulary.normalize(tf.constant(SCRIPTS), **vocab.normalization)
  return [t.decode() for t in normalized.numpy()]


def test_a_spec_without_a_normalization_rule_strips_accents_as_it_was_learned():
  assert _tokenized_text({}) == RULE_1


def test_rule_2_strips_only_latin_greek_and_cyrillic_accents_and_recomposes():
  assert _tokenized_text({'normalization_rule': 2}) == RULE_2
  assert _tokenized_text({'normalization_rule': 2, 'lowercase': False})[5] == 'Cafe Straße'


def test_an_unknown_normalization_rule_is_refused():
  with pytest.raises(ValueError, match=r'normalization_rule is 3, expected one of \(1, 2\)'):
    Vocabulary(TOKENS, {**LEARNED, 'normalization_rule': 3})


def test_graph_normalization_flags():
  text = tf.constant(['Café ＡＢＣ'])
  assert vocabulary.normalize(text, lowercase=True, strip_accents=True, nfkc=True).numpy() == [
    b'cafe abc'
  ]
  assert vocabulary.normalize(text, lowercase=False, strip_accents=False, nfkc=False).numpy() == [
    'Café ＡＢＣ'.encode()
  ]
