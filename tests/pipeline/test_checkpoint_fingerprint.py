"""A local checkpoint regenerated in place re-runs the stages that read it (TFX's cache key),
and an unchanged one leaves the built pipeline as it was."""

import json
import os
import types

import pytest

from pipeline import config as config_lib
from pipeline import factory
from tests.pipeline import tiny_pipeline
from tests.trainer import hf_checkpoints
from tfxlm import checkpoint_fingerprint, contract


def _nodes(config_path, tmp_path):
  config = config_lib.load_config(str(config_path))
  pipeline = factory.create_pipeline(
    config, pipeline_root=str(tmp_path / 'root'), input_base=str(tmp_path / 'data')
  )
  return {node.id: node for node in pipeline.components}


def _keys(nodes):
  """What TFX's cache key holds of the checkpoint: the Vocabulary's and Trainer's exec properties."""
  trainer = json.loads(nodes[contract.TRAINER_ID].exec_properties['custom_config'])
  vocabulary = nodes[contract.VOCABULARY_ID].exec_properties
  return vocabulary[contract.PRESET_FINGERPRINT_KEY], trainer[contract.PRESET_FINGERPRINT_KEY]


@pytest.fixture
def config_path(tmp_path):
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'a.csv').write_text('review,sentiment\n"good film",1\n"bad film",0\n')
  checkpoint = hf_checkpoints.hf_bert(str(tmp_path / 'bert'), seed=0)
  config = tiny_pipeline.classify_config(
    'fingerprint',
    tmp_path / 'outputs',
    tmp_path / 'data',
    preset=checkpoint,
    train_steps=2,
    eval_steps=1,
  )
  for key in ('num_layers', 'hidden_dim', 'num_heads', 'intermediate_dim'):
    del config['train'][key]  # the checkpoint's own
  return tiny_pipeline.write(tmp_path / 'config.yaml', config)


def test_new_weights_in_place_change_the_trainers_key_not_the_vocabularys(config_path, tmp_path):
  before = _keys(_nodes(config_path, tmp_path))
  assert _keys(_nodes(config_path, tmp_path)) == before  # unchanged files: the same spec
  weights = tmp_path / 'bert' / 'model.safetensors'
  stat = os.stat(weights)
  hf_checkpoints.hf_bert(str(tmp_path / 'bert'), seed=1)  # same shapes, other values
  os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # however coarse the clock
  vocabulary, trainer = _keys(_nodes(config_path, tmp_path))
  assert trainer != before[1]
  assert vocabulary == before[0]  # the tokenizer did not change: no new Transform


def test_an_edited_tokenizer_changes_the_vocabularys_key(config_path, tmp_path):
  before = _keys(_nodes(config_path, tmp_path))
  vocab = tmp_path / 'bert' / 'vocab.txt'
  vocab.write_text(vocab.read_text().replace('film', 'films'))
  vocabulary, trainer = _keys(_nodes(config_path, tmp_path))
  assert vocabulary != before[0] and trainer != before[1]


def test_remote_handles_and_missing_folders_have_no_fingerprint(tmp_path):
  for handle in ('hf://owner/repo', 'pypi:x==1.0/bert', 'gs://b/ckpt', 'bert_tiny_en_uncased'):
    assert checkpoint_fingerprint.fingerprint(handle) == ''
    assert checkpoint_fingerprint.with_fingerprint({'a': 1}, handle) == {'a': 1}
  assert checkpoint_fingerprint.fingerprint(str(tmp_path / 'absent')) == ''
  assert checkpoint_fingerprint.fingerprint(None) == ''


def test_the_trainer_reads_its_custom_config_with_the_fingerprint(config_path, tmp_path):
  from trainer import task

  custom = json.loads(
    _nodes(config_path, tmp_path)[contract.TRAINER_ID].exec_properties['custom_config']
  )
  fn_args = types.SimpleNamespace(custom_config=custom, train_steps=2, eval_steps=1)
  assert task.config_from_fn_args(fn_args).preset == str(tmp_path / 'bert')


def _export(folder):
  """An exported model folder as far as the fingerprint reads it (a SavedModel and its extras)."""
  os.makedirs(folder / 'variables')
  os.makedirs(folder / contract.EXTRA_DIR)
  (folder / 'saved_model.pb').write_bytes(b'graph')
  (folder / 'variables' / 'variables.index').write_bytes(b'index')
  (folder / 'variables' / 'variables.data-00000-of-00001').write_bytes(b'\0' * 64)
  os.makedirs(folder / contract.EXTRA_DIR / contract.PRESET_DIR)
  (folder / contract.EXTRA_DIR / contract.PRESET_DIR / 'model.weights.h5').write_bytes(b'\0' * 64)
  return folder


def _rewrite(path, seed):
  """New bytes of the same size, and a newer mtime however coarse the clock."""
  stat = os.stat(path)
  path.write_bytes(bytes([seed]) * stat.st_size)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))


@pytest.mark.parametrize(
  'section, trainer_id',
  [('base_model', contract.TRAINER_ID), ('distill', contract.DISTILL_TRAINER_ID)],
)
def test_a_base_model_or_teacher_rewritten_in_place_changes_its_trainers_key(
  tmp_path, section, trainer_id
):
  # Both are imported with reimport=False: the same artifact while the path is the same, so
  # their Trainer used to be `cached` and kept the old weights.
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'a.csv').write_text('review,sentiment\n"good film",1\n"bad film",0\n')
  model = _export(tmp_path / 'model')
  config = tiny_pipeline.classify_config(
    'fingerprint', tmp_path / 'outputs', tmp_path / 'data', train_steps=2, eval_steps=1
  )
  if section == 'base_model':
    config['base_model'] = str(model)
  else:
    student = {**tiny_pipeline.TINY_CLASSIFIER, 'train_steps': 2, 'eval_steps': 1}
    config['distill'] = {'teacher': str(model), 'student': student}
  path = tiny_pipeline.write(tmp_path / 'config.yaml', config)
  key = lambda: json.loads(_nodes(path, tmp_path)[trainer_id].exec_properties['custom_config'])[
    contract.BASE_MODEL_FINGERPRINT_KEY
  ]
  before = key()
  assert before.startswith('sha256:') and key() == before  # unchanged files: the same spec
  for weights in (
    model / 'variables' / 'variables.data-00000-of-00001',
    model / contract.EXTRA_DIR / contract.PRESET_DIR / 'model.weights.h5',
  ):
    _rewrite(weights, seed=1)
    assert key() != before, weights
    before = key()


def test_a_rewritten_base_model_is_another_checkpoint_identity(tmp_path):
  # A killed run's checkpoints, trained from the old files, are not resumed from.
  from trainer import task
  from trainer.config import TrainerConfig

  config = TrainerConfig(task=contract.CLASSIFY, train_steps=2, eval_steps=1)
  fn_args = lambda fingerprint: types.SimpleNamespace(
    custom_config={
      contract.TRAINER_CONFIG_KEY: config.to_dict(),
      contract.BASE_MODEL_FINGERPRINT_KEY: fingerprint,
    },
    train_files=[],
    transform_graph_path='graph',
    base_model=str(tmp_path),
  )
  assert task.config_from_fn_args(fn_args('sha256:a')) == config  # a key the Trainer accepts
  identity = lambda fingerprint: task.checkpoint_identity(fn_args(fingerprint), config)
  assert identity('sha256:a') == identity('sha256:a') != identity('sha256:b')
