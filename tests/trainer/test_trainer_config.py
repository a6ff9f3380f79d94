"""TrainerConfig: typed, validated, round-trips through a dict, no TensorFlow needed."""

import re
import subprocess
import sys

import pytest

from trainer.config import TrainerConfig


def test_round_trip_and_defaults():
  config = TrainerConfig(task='clm', model_size='small', train_steps=10, learning_rate=1e-3)
  assert TrainerConfig.from_dict(config.to_dict()) == config
  assert TrainerConfig.from_dict(None) == TrainerConfig()


def test_sizes_and_overrides():
  assert TrainerConfig(model_size='tiny').model_dims()[:2] == (2, 128)
  assert TrainerConfig(model_size='small').model_dims()[:2] == (4, 256)
  assert TrainerConfig(model_size='base').model_dims() == (12, 768, 12, 3072)
  small = TrainerConfig(model_size='base', num_layers=1, hidden_dim=16, num_heads=2)
  assert small.model_dims() == (1, 16, 2, 64)


def test_ints_are_accepted_for_floats():
  assert TrainerConfig.from_dict({'learning_rate': 1}).learning_rate == 1.0


@pytest.mark.parametrize('bad, message', [
  ({'lerning_rate': 0.1}, "unknown key(s) ['lerning_rate']"),
  ({'seq_len': '128'}, 'seq_len must be int, got str'),
  ({'train_steps': 1.5}, 'train_steps must be int or null, got float'),
  ({'jit_compile': 1}, 'jit_compile must be bool'),
  ({'seq_len': True}, 'seq_len must be int, got bool'),
  ({'task': 'translate'}, "task must be one of ['mlm', 'clm', 'classify']"),
  ({'strategy': 'horovod'}, 'strategy must be one of'),
  ({'precision': 'float16'}, 'precision must be one of'),
  ({'mask_rate': 0.0}, 'mask_rate must be in (0, 1)'),
  ({'per_replica_batch_size': 0}, 'per_replica_batch_size must be > 0'),
  ({'mask_token_rate': 0.95, 'random_token_rate': 0.1}, 'must be <= 1'),
  ({'learning_rate': None}, 'learning_rate must not be null'),
])
def test_rejects_bad_input_with_a_clear_message(bad, message):
  with pytest.raises(ValueError) as error:
    TrainerConfig.from_dict(bad)
  assert message in str(error.value)


def test_importable_without_tensorflow():
  code = ('import sys; import trainer.config; '
          'assert "tensorflow" not in sys.modules, "trainer.config imported tensorflow"')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_every_field_is_documented():
  doc = TrainerConfig.__doc__
  missing = [name for name in TrainerConfig.__dataclass_fields__
             if not re.search(rf'^\s+{name}: \S', doc, re.MULTILINE)]
  assert not missing
