"""TrainerConfig: typed, validated, round-trips through a dict, no TensorFlow needed."""

import dataclasses
import re
import subprocess
import sys

import pytest

from tfxlm import contract
from trainer import finetune_config
from trainer.config import MODEL_SIZES, ModelSize, TrainerConfig


def test_round_trip_and_defaults():
  config = TrainerConfig(task='clm', model_size='small', train_steps=10, learning_rate=1e-3)
  assert TrainerConfig.from_dict(config.to_dict()) == config
  assert TrainerConfig.from_dict(None) == TrainerConfig()


def test_sizes_are_named_presets_with_overrides():
  assert TrainerConfig(model_size='tiny').model_dims() == MODEL_SIZES['tiny']
  assert TrainerConfig(model_size='small').model_dims().hidden_dim == 256
  assert TrainerConfig(model_size='base').model_dims() == ModelSize(
    num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072
  )
  small = TrainerConfig(model_size='base', num_layers=1, hidden_dim=16, num_heads=2)
  assert small.model_dims() == ModelSize(
    num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=64
  )
  for name, size in MODEL_SIZES.items():
    assert size.hidden_dim % size.num_heads == 0, name


def test_ints_are_accepted_for_floats():
  assert TrainerConfig.from_dict({'learning_rate': 1}).learning_rate == 1.0


@pytest.mark.parametrize(
  'bad, message',
  [
    ({'lerning_rate': 0.1}, "unknown key 'lerning_rate'"),
    ({'seq_len': '128'}, "seq_len: expected an integer, got '128'"),
    ({'train_steps': 1.5}, 'train_steps: expected an integer or null, got 1.5'),
    ({'fused_update': 'maybe'}, "fused_update: expected true, false or null, got 'maybe'"),
    ({'dropout': 'x'}, "dropout: expected a number or null, got 'x'"),
    ({'dropout': float('nan')}, 'dropout: expected a finite number, got nan'),
    ({'jit_compile': 1}, 'jit_compile: expected true, false or null, got 1'),
    ({'seq_len': True}, 'seq_len: expected an integer, got True'),
    ({'task': 'translate'}, "task: 'translate' is not one of mlm, clm, classify"),
    ({'strategy': 'horovod'}, "strategy: 'horovod' is not one of"),
    ({'precision': 'float16'}, "precision: 'float16' is not one of"),
    ({'mask_rate': 0.0}, 'mask_rate: must be in (0, 1), got 0.0'),
    ({'per_replica_batch_size': 0}, 'per_replica_batch_size: must be > 0, got 0'),
    ({'mask_token_rate': 0.95, 'random_token_rate': 0.1}, 'must be <= 1'),
    ({'learning_rate': None}, 'learning_rate: expected a number, got None'),
    (
      {'hidden_dim': 10, 'num_heads': 3},
      'num_heads: hidden_dim 10 is not divisible by num_heads 3',
    ),
    ({'task': 'classify', 'seq_len': 2}, 'seq_len: must be >= 3 for classify'),
    ({'task': 'clm', 'seq_len': 1}, 'seq_len: must be >= 2 for clm (its export generates'),
    (
      {'train_steps': 10, 'warmup_steps': 11},
      'warmup_steps: 11 is more than train_steps (10): lower warmup_steps, or raise train_steps',
    ),
  ],
)
def test_rejects_bad_input_with_a_clear_message(bad, message):
  with pytest.raises(ValueError) as error:
    TrainerConfig.from_dict(bad)
  assert message in str(error.value)


def test_warmup_as_long_as_the_run_is_kept_and_a_longer_one_refused_when_train_steps_arrive():
  assert TrainerConfig(train_steps=10, warmup_steps=10).warmup_steps == 10
  # run_fn fills train_steps from TrainArgs this way when the config leaves it unset.
  unset = TrainerConfig(warmup_steps=50)
  with pytest.raises(ValueError, match=r'warmup_steps: 50 is more than train_steps \(10\)'):
    dataclasses.replace(unset, train_steps=10)


# Every float field, with a value outside its range (None: any non-finite value is refused).
OUT_OF_RANGE = {
  'learning_rate': [0.0, -1e-4],
  'dropout': [-0.1, 1.5],
  'end_learning_rate_ratio': [1.01],
  'weight_decay': [-0.01],
  'warmup_ratio': [-0.5, 2.0],
  'clip_norm': [-1.0],
  'mask_rate': [1.0, -0.2],
  'mask_token_rate': [1.1],
  'random_token_rate': [-0.1],
}


@pytest.mark.parametrize('field', sorted(OUT_OF_RANGE))
@pytest.mark.parametrize('value', [float('nan'), float('inf'), float('-inf')])
def test_every_float_field_refuses_non_finite_values(field, value):
  for build in (
    lambda: TrainerConfig.from_dict({field: value}, where='train'),
    lambda: TrainerConfig(**{field: value}),
  ):
    with pytest.raises(ValueError, match=rf'{field}: expected a finite number, got -?(nan|inf)'):
      build()


def test_every_float_field_is_covered_by_the_range_tests():
  floats = {
    f.name
    for f in dataclasses.fields(TrainerConfig)
    if f.type in (float, 'float', float | None, 'float | None')
  }
  assert floats == set(OUT_OF_RANGE)


@pytest.mark.parametrize('field, value', [(f, v) for f, vs in OUT_OF_RANGE.items() for v in vs])
def test_out_of_range_values_are_refused_with_the_dotted_key(field, value):
  with pytest.raises(ValueError, match=rf'^train\.{field}: must be'):
    TrainerConfig.from_dict({field: value}, where='train')


def test_transform_and_trainer_custom_configs_come_from_one_config():
  config = TrainerConfig(task='classify', seq_len=64)
  assert config.transform_custom_config() == {
    contract.TASK_KEY: 'classify',
    contract.SEQ_LEN_KEY: 64,
  }
  trainer = config.trainer_custom_config()[contract.TRAINER_CONFIG_KEY]
  assert TrainerConfig.from_dict(trainer) == config
  # A hyperparameter the Transform does not use leaves its config (and its cache) alone.
  tuned = dataclasses.replace(config, learning_rate=1e-5)
  assert tuned.transform_custom_config() == config.transform_custom_config()


def test_importable_without_tensorflow():
  code = (
    'import sys; import trainer.config; '
    'assert "tensorflow" not in sys.modules, "trainer.config imported tensorflow"'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


def test_every_field_is_documented():
  doc = TrainerConfig.__doc__
  missing = [
    name
    for name in TrainerConfig.__dataclass_fields__
    if not re.search(rf'^\s+{name}: \S', doc, re.MULTILINE)
  ]
  assert not missing


def test_lora_on_the_pooler_is_taken_only_where_the_head_reads_it():
  """BertBackbone's pooled_dense makes the [CLS] pooling: only classify with cls pooling reads
  it, so elsewhere its adapters or weights would never train (refused: see
  tests/pipeline/test_config.py for the messages)."""
  lora = {'target_layers': ['query', 'pooled_dense'], 'train_layers': ['token_embedding']}
  config = TrainerConfig.from_dict({'task': 'classify', 'pooling': 'cls', 'lora': lora})
  assert 'pooled_dense' in config.lora.target_layers
  TrainerConfig.from_dict({'task': 'classify', 'pooling': 'mean', 'lora': {}})
  for train in ({'task': 'classify', 'pooling': 'mean'}, {'task': 'mlm'}):
    with pytest.raises(ValueError, match='^train.lora.target_layers: pooled_dense is unused'):
      TrainerConfig.from_dict({**train, 'lora': lora}, where='train')


def test_lora_with_every_transformer_layer_frozen_is_refused_as_it_trains_no_adapter():
  lora, freeze = finetune_config.LoraConfig(), finetune_config.FreezeConfig(layers=6)
  assert finetune_config.fit_problem('train', lora, freeze, 'BertBackbone', 6) == (
    'train.freeze.layers: 6 freezes every layer LoRA adapts (the 6 transformer layers of '
    'BertBackbone): no adapter would train; give 1 to 5, or remove train.freeze'
  )
  assert finetune_config.fit_problem('train', lora, freeze, 'BertBackbone', 7) is None
  assert finetune_config.fit_problem('train', None, freeze, 'BertBackbone', 6) is None
  # An adapter on the pooler, above the transformer layers, still trains.
  pooler = finetune_config.LoraConfig(target_layers=('query', 'pooled_dense'))
  assert finetune_config.fit_problem('train', pooler, freeze, 'BertBackbone', 6) is None
  one = finetune_config.FreezeConfig(layers=1)
  assert finetune_config.fit_problem('train', lora, one, 'BertBackbone', 1).endswith(
    'no adapter would train; remove train.freeze'
  )


def test_a_lora_scale_past_the_bound_is_refused_as_it_diverges():
  # alpha 1e30 used to reach the Trainer and give a NaN loss from the first steps.
  with pytest.raises(ValueError) as error:
    TrainerConfig.from_dict({'lora': {'rank': 8, 'alpha': 1e30}}, where='train')
  assert str(error.value) == (
    'train.lora.alpha: 1e+30 at rank 8 scales the update by alpha / rank = 1.25e+29; at most 16 '
    'is taken (each step moves the kernels about that many times as far, and a larger scale '
    'diverges to a non-finite loss): give alpha at most 128 (rank to 2 x rank is usual), or '
    'leave it unset (= rank)'
  )
  assert TrainerConfig.from_dict({'lora': {'rank': 8, 'alpha': 128}}).lora.scale == 16
  assert TrainerConfig.from_dict({'lora': {'rank': 1, 'alpha': 16}}).lora.scale == 16
