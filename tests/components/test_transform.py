"""The Transform component: its custom_config comes from the Trainer's own config."""

import json

import pytest
from tfx import types
from tfx.types import standard_artifacts

from components import transform
from components.vocabulary import VocabularyArtifact
from tfxlm import contract
from trainer.config import TrainerConfig


def _transform(config, pretrain_config=None):
  return transform.create_transform(
    types.Channel(type=standard_artifacts.Examples),
    types.Channel(type=standard_artifacts.Schema),
    types.Channel(type=VocabularyArtifact),
    trainer_config=config,
    pretrain_config=pretrain_config,
  )


@pytest.mark.parametrize('task', contract.TASKS)
def test_task_and_seq_len_are_the_trainer_configs(task):
  config = TrainerConfig(task=task, seq_len=24, learning_rate=1e-3)
  component = _transform(config)
  assert json.loads(component.exec_properties['custom_config']) == {
    contract.TASK_KEY: task,
    contract.SEQ_LEN_KEY: 24,
  }
  assert component.exec_properties['preprocessing_fn'] == contract.PREPROCESSING_FN


def test_training_hyperparameters_do_not_change_the_transform():
  base = TrainerConfig(task='classify', seq_len=32)
  tuned = TrainerConfig(task='classify', seq_len=32, learning_rate=1e-5, train_steps=7)
  assert (
    _transform(base).exec_properties['custom_config']
    == _transform(tuned).exec_properties['custom_config']
  )


@pytest.mark.parametrize('pretrain_task', [contract.MLM, contract.CLM])
@pytest.mark.parametrize('task', contract.TASKS)
def test_a_transform_serving_pretraining_too_adds_the_lm_features_to_classify_only(
  task, pretrain_task
):
  config = TrainerConfig(task=task, seq_len=24)
  pretrain = TrainerConfig(task=pretrain_task, seq_len=64, learning_rate=1e-2)
  custom = json.loads(_transform(config, pretrain).exec_properties['custom_config'])
  # The pretraining stage's own hyperparameters (its seq_len included) do not reach Transform:
  # its Trainer packs the pieces into its own windows.
  expected = {contract.TASK_KEY: task, contract.SEQ_LEN_KEY: 24}
  if task == contract.CLASSIFY:
    expected[contract.LM_FEATURES_KEY] = True
  assert custom == expected


def test_a_classify_pretraining_stage_is_refused():
  config = TrainerConfig(task=contract.CLASSIFY, seq_len=24)
  with pytest.raises(ValueError, match='pretrain_config: task must be mlm or clm'):
    _transform(config, TrainerConfig(task=contract.CLASSIFY, seq_len=24))
