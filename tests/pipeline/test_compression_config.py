"""The `export:` and `distill:` sections: typed, checked against the rest of the config, and
wired into the pipeline as their own components."""

import json
import os
import re

import pytest

from pipeline import config as config_lib
from pipeline import factory
from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml')
STUDENT = 'distill.student={task: classify, seq_len: 64, train_steps: 10, eval_steps: 2}'


def test_export_quantize_is_one_of_the_modes():
  assert config_lib.load_config(DEMO).export.quantize == 'none'
  assert config_lib.load_config(DEMO, ['export.quantize=int8_weights']).export.quantize == (
    'int8_weights'
  )
  with pytest.raises(config_lib.ConfigError, match='export.quantize: .int8w. is not one of'):
    config_lib.load_config(DEMO, ['export.quantize=int8w'])


def test_quantize_applies_to_classifiers_only():
  lm = os.path.join(REPO, 'pipeline', 'configs', 'demo_lm.yaml')
  with pytest.raises(config_lib.ConfigError, match='export.quantize: int4 applies to classify'):
    config_lib.load_config(lm, ['export.quantize=int4'])


@pytest.mark.parametrize(
  'overrides, message',
  [
    (['distill.student={task: classify, seq_len: 32}'], 'distill.student.seq_len: must equal'),
    (['distill.student={task: mlm, seq_len: 64}'], 'distill.student: task must be classify'),
    ([STUDENT, 'distill.model_name=sentiment'], 'distill.model_name: .sentiment. is serving'),
    ([STUDENT, 'distill.teacher=/no/such/folder'], 'distill.teacher: folder'),
    ([STUDENT, 'distill.options.temperature=0'], 'distill.options.temperature: must be > 0'),
  ],
)
def test_bad_distill_stages_are_refused_with_the_key(overrides, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config(DEMO, overrides)


def test_the_distill_stage_is_its_own_trainer_evaluator_and_pusher(tmp_path):
  config = config_lib.load_config(DEMO, [STUDENT, 'export.quantize=none'])
  pipeline = factory.create_pipeline(
    config, pipeline_root=str(tmp_path), input_base=config_lib.input_base_dir(config)
  )
  nodes = {node.id: node for node in pipeline.components}
  for node_id in (
    contract.DISTILL_TRAINER_ID,
    contract.DISTILL_RESOLVER_ID,
    contract.DISTILL_EVALUATOR_ID,
    contract.DISTILL_PUSHER_ID,
  ):
    assert node_id in nodes
  trainer = nodes[contract.DISTILL_TRAINER_ID]
  assert trainer.exec_properties['run_fn'] == contract.DISTILL_RUN_FN
  # The teacher is the train stage's model.
  assert trainer.inputs['base_model'].producer_component_id == contract.TRAINER_ID
  pusher = nodes[contract.DISTILL_PUSHER_ID]
  assert re.search(r'/student"?', str(pusher.exec_properties['push_destination']))


def test_export_options_reach_the_trainer_only_when_set(tmp_path):
  demo = config_lib.load_config(DEMO)
  input_base = config_lib.input_base_dir(demo)  # the runner's fetch, before the factory
  plain = factory.create_pipeline(demo, pipeline_root=str(tmp_path), input_base=input_base)
  quantized = factory.create_pipeline(
    config_lib.load_config(DEMO, ['export.quantize=int8_weights']),
    pipeline_root=str(tmp_path),
    input_base=input_base,
  )
  custom = lambda p: next(c for c in p.components if c.id == contract.TRAINER_ID).exec_properties[
    'custom_config'
  ]
  assert contract.EXPORT_CONFIG_KEY not in str(custom(plain))
  assert 'int8_weights' in str(custom(quantized))


def test_a_quantized_teacher_keeps_a_float_copy_for_the_distill_stage(tmp_path):
  custom = lambda p: next(c for c in p.components if c.id == contract.TRAINER_ID).exec_properties[
    'custom_config'
  ]
  both = config_lib.load_config(DEMO, [STUDENT, 'export.quantize=int8_weights'])
  build = lambda config: factory.create_pipeline(
    config, pipeline_root=str(tmp_path), input_base=config_lib.input_base_dir(config)
  )
  exported = json.loads(custom(build(both)))
  assert exported[contract.EXPORT_CONFIG_KEY] == {'quantize': 'int8_weights', 'float_copy': True}
  # Without a distill stage, or with a teacher of its own, no float copy is written.
  alone = config_lib.load_config(DEMO, ['export.quantize=int8_weights'])
  exported = json.loads(custom(build(alone)))
  assert exported[contract.EXPORT_CONFIG_KEY]['float_copy'] is False


def test_the_compression_demo_quantizes_the_demo_model_and_distills_a_tiny_student(tmp_path):
  demo = config_lib.load_config(DEMO)
  config = config_lib.load_config(os.path.join(REPO, 'pipeline', 'configs', 'demo_compress.yaml'))
  assert config.data == demo.data and config.train == demo.train  # make demo's teacher
  assert config.export.quantize == 'int8_weights'
  student = config.distill.student
  assert student.model_dims().hidden_dim <= 384 and student.model_dims().num_layers <= 2
  assert config.distill.options.init_embeddings and not config.distill.teacher
  pipeline = factory.create_pipeline(
    config, pipeline_root=str(tmp_path), input_base=config_lib.input_base_dir(config)
  )
  nodes = {node.id: node for node in pipeline.components}
  train = json.loads(nodes[contract.TRAINER_ID].exec_properties['custom_config'])
  assert train[contract.EXPORT_CONFIG_KEY]['float_copy'] is True
  assert nodes[contract.DISTILL_TRAINER_ID].inputs['base_model'].producer_component_id == (
    contract.TRAINER_ID
  )


SCRATCH = os.path.join(REPO, 'pipeline', 'configs', 'demo_scratch.yaml')  # train: tiny, hidden 128


def _teacher_folder(tmp_path, hidden, layers=2, positions=64):
  """A Trainer's model artifact folder as far as the config load reads it: the exported preset's
  config.json."""
  preset = tmp_path / 'teacher' / contract.SERVING_MODEL_DIR / contract.EXTRA_DIR
  preset = preset / contract.PRESET_DIR
  os.makedirs(preset)
  backbone = {'hidden_dim': hidden, 'num_layers': layers, 'max_sequence_length': positions}
  (preset / contract.PRESET_CONFIG_FILE).write_text(
    json.dumps({'class_name': 'keras_hub>BertBackbone', 'config': backbone})
  )
  return str(tmp_path / 'teacher')


def test_a_student_wider_than_the_train_stage_is_refused_when_the_config_loads():
  with pytest.raises(
    config_lib.ConfigError, match='hidden size 256 is wider than the teacher.s 128'
  ):
    config_lib.load_config(SCRATCH, [STUDENT, 'distill.student.hidden_dim=256'])
  config_lib.load_config(SCRATCH, [STUDENT, 'distill.student.hidden_dim=64'])


def test_a_student_wider_than_a_teacher_folder_is_refused_or_warned_of(tmp_path, caplog):
  teacher = _teacher_folder(tmp_path, hidden=64)
  config_file = os.path.join(teacher, contract.SERVING_MODEL_DIR, contract.EXTRA_DIR)
  with pytest.raises(config_lib.ConfigError, match=f'wider than the teacher.s 64 \\({config_file}'):
    config_lib.load_config(SCRATCH, [STUDENT, f'distill.teacher={teacher}'])
  # Without init_embeddings it can be trained, but compresses nothing: a warning.
  with caplog.at_level('WARNING'):
    config_lib.load_config(
      SCRATCH, [STUDENT, f'distill.teacher={teacher}', 'distill.options.init_embeddings=false']
    )
  warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any('larger than its teacher (hidden size 128 > 64' in m for m in warned), warned
  caplog.clear()
  with caplog.at_level('WARNING'):
    config_lib.load_config(
      SCRATCH, [STUDENT, f'distill.teacher={teacher}', 'distill.student.hidden_dim=32']
    )
  assert not [r for r in caplog.records if 'larger than its teacher' in r.getMessage()]


def test_a_teacher_folder_with_fewer_positions_than_the_student_is_refused(tmp_path):
  teacher = _teacher_folder(tmp_path, hidden=256, positions=32)
  with pytest.raises(config_lib.ConfigError, match=r'seq_len: 64 is more than the teacher reads'):
    config_lib.load_config(SCRATCH, [STUDENT, f'distill.teacher={teacher}'])
