"""The Transform component: its custom_config comes from the Trainer's own config."""

import json

import pytest
from tfx import types
from tfx.types import standard_artifacts

from components import transform
from components.vocabulary import VocabularyArtifact
from tfxlm import contract
from trainer.config import TrainerConfig


def _transform(config):
  return transform.create_transform(
    types.Channel(type=standard_artifacts.Examples),
    types.Channel(type=standard_artifacts.Schema),
    types.Channel(type=VocabularyArtifact),
    trainer_config=config,
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


@pytest.mark.parametrize('compression', contract.TFRECORD_COMPRESSIONS)
def test_output_compression_is_an_exec_property(compression):
  component = transform.create_transform(
    types.Channel(type=standard_artifacts.Examples),
    types.Channel(type=standard_artifacts.Schema),
    types.Channel(type=VocabularyArtifact),
    trainer_config=TrainerConfig(task='mlm'),
    compression=compression,
  )
  assert component.exec_properties[transform.COMPRESSION_KEY] == compression


def test_unknown_compression_is_refused_naming_the_choices():
  with pytest.raises(ValueError, match="'zstd' is not one of none, gzip"):
    transform.create_transform(
      types.Channel(type=standard_artifacts.Examples),
      types.Channel(type=standard_artifacts.Schema),
      types.Channel(type=VocabularyArtifact),
      trainer_config=TrainerConfig(task='mlm'),
      compression='zstd',
    )
