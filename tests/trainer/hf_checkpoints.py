"""Tiny checkpoints in the Hugging Face layout, written by the tests (random weights, small
vocabularies): config.json, model.safetensors under Hugging Face's key names and shapes, and
the tokenizer's files (BERT: vocab.txt, tokenizer_config.json, special_tokens_map.json and a
tokenizer.json built with the `tokenizers` library; GPT-2: vocab.json and merges.txt).

Nothing is downloaded: keras-hub's Transformers converters read these folders exactly as they
read a checkpoint from the Hub.
"""

import json
import os
import tempfile

import numpy as np
import tokenizers
from safetensors.numpy import save_file

from tests.trainer import presets

# BERT's special tokens sit at ids other than 0-4, as in real BERT vocabularies ([CLS] = 101).
BERT_SPECIAL = {'pad': '[PAD]', 'unk': '[UNK]', 'cls': '[CLS]', 'sep': '[SEP]', 'mask': '[MASK]'}


def _write_json(folder, name, value):
  with open(os.path.join(folder, name), 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)


def bert_vocabulary() -> list[str]:
  """A small uncased WordPiece vocabulary of the presets' corpus, special tokens not at 0-4."""
  words = sorted(
    {w.lower() for t in presets.CORPUS for w in t.replace(',', ' ').replace('!', ' ').split()}
  )
  chars = sorted({c for w in words for c in w} | set('abcdefghijklmnopqrstuvwxyz0123456789'))
  tokens = (
    ['[PAD]']
    + [f'[unused{i}]' for i in range(3)]
    + ['[UNK]', '[CLS]', '[SEP]', '[MASK]']
    + chars
    + ['##' + c for c in chars]
    + words
    + list('.,!?;:\'"()-$#@[]')
    + ['##s', '##ing', 'film', 'movie', 'great', 'bad']
  )
  return list(dict.fromkeys(tokens))


def _rng_weights(shapes: dict, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in shapes.items():
    if name.endswith(('LayerNorm.weight', 'ln_1.weight', 'ln_2.weight', 'ln_f.weight')):
      weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    else:
      weights[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
  return weights


def hf_bert(
  folder: str,
  *,
  hidden: int = 16,
  layers: int = 2,
  heads: int = 2,
  positions: int = 32,
  prefix: str = '',
  seed: int = 0,
) -> str:
  """Writes a BertModel checkpoint (Hugging Face layout) to `folder`; returns the folder.

  `prefix='bert.'` names the weights as a BertForSequenceClassification checkpoint does.
  """
  os.makedirs(folder, exist_ok=True)
  tokens = bert_vocabulary()
  inter = 2 * hidden
  shapes = {
    'embeddings.word_embeddings.weight': (len(tokens), hidden),
    'embeddings.position_embeddings.weight': (positions, hidden),
    'embeddings.token_type_embeddings.weight': (2, hidden),
    'embeddings.LayerNorm.weight': (hidden,),
    'embeddings.LayerNorm.bias': (hidden,),
    'pooler.dense.weight': (hidden, hidden),
    'pooler.dense.bias': (hidden,),
  }
  for i in range(layers):
    layer = f'encoder.layer.{i}.'
    for name in ('query', 'key', 'value'):
      shapes[f'{layer}attention.self.{name}.weight'] = (hidden, hidden)
      shapes[f'{layer}attention.self.{name}.bias'] = (hidden,)
    shapes[f'{layer}attention.output.dense.weight'] = (hidden, hidden)
    shapes[f'{layer}attention.output.dense.bias'] = (hidden,)
    shapes[f'{layer}attention.output.LayerNorm.weight'] = (hidden,)
    shapes[f'{layer}attention.output.LayerNorm.bias'] = (hidden,)
    shapes[f'{layer}intermediate.dense.weight'] = (inter, hidden)
    shapes[f'{layer}intermediate.dense.bias'] = (inter,)
    shapes[f'{layer}output.dense.weight'] = (hidden, inter)
    shapes[f'{layer}output.dense.bias'] = (hidden,)
    shapes[f'{layer}output.LayerNorm.weight'] = (hidden,)
    shapes[f'{layer}output.LayerNorm.bias'] = (hidden,)
  weights = _rng_weights(shapes, seed)
  save_file({prefix + k: v for k, v in weights.items()}, os.path.join(folder, 'model.safetensors'))
  _write_json(
    folder,
    'config.json',
    {
      'architectures': ['BertModel'],
      'model_type': 'bert',
      'vocab_size': len(tokens),
      'hidden_size': hidden,
      'num_hidden_layers': layers,
      'num_attention_heads': heads,
      'intermediate_size': inter,
      'max_position_embeddings': positions,
      'type_vocab_size': 2,
      'hidden_act': 'gelu',
      'layer_norm_eps': 1e-12,
      'pad_token_id': tokens.index('[PAD]'),
    },
  )
  with open(os.path.join(folder, 'vocab.txt'), 'w', encoding='utf-8') as f:
    f.write(''.join(t + '\n' for t in tokens))
  names = {f'{role}_token': token for role, token in BERT_SPECIAL.items()}
  _write_json(folder, 'special_tokens_map.json', names)
  _write_json(
    folder,
    'tokenizer_config.json',
    {'do_lower_case': True, 'strip_accents': None, 'tokenize_chinese_chars': True, **names},
  )
  tokenizer = tokenizers.Tokenizer(
    tokenizers.models.WordPiece(
      {t: i for i, t in enumerate(tokens)}, unk_token='[UNK]', max_input_chars_per_word=100
    )
  )
  tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(
    clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
  )
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tokenizer.add_special_tokens(list(BERT_SPECIAL.values()))
  tokenizer.save(os.path.join(folder, 'tokenizer.json'))
  return folder


def hf_gpt2(
  folder: str,
  *,
  hidden: int = 16,
  layers: int = 2,
  heads: int = 2,
  positions: int = 32,
  seed: int = 0,
) -> str:
  """Writes a GPT2Model checkpoint (Hugging Face layout) to `folder`; returns the folder."""
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    import keras_hub

    presets.gpt2_preset(tmp, hidden=hidden, seq_len=positions)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(tmp)
    vocabulary = dict(tokenizer.vocabulary)
    merges = list(tokenizer.merges)
  _write_json(folder, 'vocab.json', vocabulary)
  with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + ''.join(m + '\n' for m in merges))
  vocab_size = len(vocabulary)
  shapes = {
    'wte.weight': (vocab_size, hidden),
    'wpe.weight': (positions, hidden),
    'ln_f.weight': (hidden,),
    'ln_f.bias': (hidden,),
  }
  for i in range(layers):
    block = f'h.{i}.'
    shapes.update(
      {
        f'{block}ln_1.weight': (hidden,),
        f'{block}ln_1.bias': (hidden,),
        f'{block}ln_2.weight': (hidden,),
        f'{block}ln_2.bias': (hidden,),
        f'{block}attn.c_attn.weight': (hidden, 3 * hidden),
        f'{block}attn.c_attn.bias': (3 * hidden,),
        f'{block}attn.c_proj.weight': (hidden, hidden),
        f'{block}attn.c_proj.bias': (hidden,),
        f'{block}mlp.c_fc.weight': (hidden, 4 * hidden),
        f'{block}mlp.c_fc.bias': (4 * hidden,),
        f'{block}mlp.c_proj.weight': (4 * hidden, hidden),
        f'{block}mlp.c_proj.bias': (hidden,),
      }
    )
  save_file(_rng_weights(shapes, seed), os.path.join(folder, 'model.safetensors'))
  _write_json(
    folder,
    'config.json',
    {
      'architectures': ['GPT2LMHeadModel'],
      'model_type': 'gpt2',
      'vocab_size': vocab_size,
      'n_embd': hidden,
      'n_layer': layers,
      'n_head': heads,
      'n_positions': positions,
      'resid_pdrop': 0.0,
      'bos_token_id': vocabulary['<|endoftext|>'],
      'eos_token_id': vocabulary['<|endoftext|>'],
    },
  )
  return folder
