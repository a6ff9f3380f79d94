"""One Transform for both training stages when they read the same examples with the same
vocabulary; two when pretraining reads a corpus of its own (label filtering)."""

import csv
import glob
import json
import os

import pytest
import tensorflow as tf
import yaml

from pipeline import config as config_lib
from pipeline import factory, local_runner
from tests.trainer import trainer_data
from tfxlm import contract

IMDB_SAMPLE = os.path.join(config_lib.REPO, 'pipeline', 'configs', 'imdb_sample.yaml')
RT_SCHEMA = os.path.join(config_lib.REPO, 'schemas', 'rotten_tomatoes')
STEPS = {'train_steps': 2, 'eval_steps': 1}


def _components(config, tmp_path):
  pipeline = factory.create_pipeline(config, pipeline_root=str(tmp_path / 'root'))
  return {c.id: c for c in pipeline.components}


def _transform_of(trainer):
  """The component whose outputs a Trainer reads as examples and as its transform graph."""
  sources = {trainer.inputs[key].producer_component_id for key in ('examples', 'transform_graph')}
  assert len(sources) == 1, sources
  return sources.pop()


def _custom_config(component):
  return json.loads(component.exec_properties['custom_config'])


def _rt_config(tmp_path, label_values, pretrain_task, train_task):
  (tmp_path / 'data').mkdir(exist_ok=True)
  (tmp_path / 'data' / 'rt.csv').write_text('category,text\nfresh,good\nplot,a story\n')
  data = {
    'input_base': str(tmp_path / 'data'),
    'label_column': 'category',
    'label_values': label_values,
    # A language model's examples hold no label: its schema is the default corpus one.
    'schema_dir': RT_SCHEMA if train_task == contract.CLASSIFY else '',
  }
  return config_lib.from_dict(
    {
      'data': data,
      'pretrain': {'task': pretrain_task, **STEPS},
      'train': {'task': train_task, **STEPS},
    }
  )


def test_the_offline_sample_tokenizes_once_for_pretraining_and_classification(tmp_path):
  config = config_lib.load_config(IMDB_SAMPLE)
  assert (config.pretrain.task, config.train.task) == (contract.MLM, contract.CLASSIFY)
  components = _components(config, tmp_path)
  transforms = [c for c in components.values() if 'transform_graph' in c.outputs]
  assert [c.id for c in transforms] == [contract.TRANSFORM_ID]
  for trainer in (contract.PRETRAIN_TRAINER_ID, contract.TRAINER_ID):
    assert _transform_of(components[trainer]) == contract.TRANSFORM_ID
  assert _custom_config(components[contract.TRANSFORM_ID]) == {
    contract.TASK_KEY: contract.CLASSIFY,
    contract.SEQ_LEN_KEY: config.train.seq_len,
    contract.LM_FEATURES_KEY: True,
  }
  # Each Trainer still gets its own stage's config, so it picks its features by its task.
  tasks = {
    trainer: _custom_config(components[trainer])[contract.TRAINER_CONFIG_KEY]['task']
    for trainer in contract.TRAINER_IDS
  }
  assert tasks == {
    contract.PRETRAIN_TRAINER_ID: contract.MLM,
    contract.TRAINER_ID: contract.CLASSIFY,
  }
  assert components[contract.TRAINER_ID].inputs['base_model'].producer_component_id == (
    contract.PRETRAIN_TRAINER_ID
  )


def test_share_transform_false_gives_pretraining_its_own_transform(tmp_path):
  """The layout before the stages shared one Transform (what bench/shared_transform_bench.py
  measures against): each stage's Transform carries only its own stage's features."""
  config = config_lib.load_config(IMDB_SAMPLE)
  pipeline = factory.create_pipeline(
    config, pipeline_root=str(tmp_path / 'root'), share_transform=False
  )
  components = {c.id: c for c in pipeline.components}
  assert _transform_of(components[contract.PRETRAIN_TRAINER_ID]) == contract.PRETRAIN_TRANSFORM_ID
  assert _transform_of(components[contract.TRAINER_ID]) == contract.TRANSFORM_ID
  assert _custom_config(components[contract.TRANSFORM_ID])[contract.TASK_KEY] == contract.CLASSIFY
  assert contract.LM_FEATURES_KEY not in _custom_config(components[contract.TRANSFORM_ID])
  pretrain = _custom_config(components[contract.PRETRAIN_TRANSFORM_ID])
  assert pretrain[contract.TASK_KEY] == contract.MLM
  # Both read the same examples.
  for transform_id in (contract.TRANSFORM_ID, contract.PRETRAIN_TRANSFORM_ID):
    examples = components[transform_id].inputs['examples']
    assert examples.producer_component_id == contract.EXAMPLE_GEN_ID


# The pairs whose pretrained backbone warm-starts train's (the config refuses the others).
@pytest.mark.parametrize(
  'pretrain_task, train_task',
  [(contract.MLM, contract.MLM), (contract.MLM, contract.CLASSIFY), (contract.CLM, contract.CLM)],
)
def test_stages_reading_the_same_examples_share_one_transform(tmp_path, pretrain_task, train_task):
  components = _components(_rt_config(tmp_path, [], pretrain_task, train_task), tmp_path)
  assert contract.PRETRAIN_TRANSFORM_ID not in components
  for trainer in contract.TRAINER_IDS:
    assert _transform_of(components[trainer]) == contract.TRANSFORM_ID
  # An mlm/clm Transform's ids are the pieces both LM stages read; classify adds them.
  custom = _custom_config(components[contract.TRANSFORM_ID])
  assert custom.get(contract.LM_FEATURES_KEY, False) == (train_task == contract.CLASSIFY)
  assert custom[contract.TASK_KEY] == train_task


def test_pretraining_on_the_unfiltered_corpus_keeps_its_own_transform(tmp_path):
  config = _rt_config(tmp_path, ['fresh', 'rotten'], contract.MLM, contract.CLASSIFY)
  components = _components(config, tmp_path)
  assert _transform_of(components[contract.PRETRAIN_TRAINER_ID]) == contract.PRETRAIN_TRANSFORM_ID
  assert _transform_of(components[contract.TRAINER_ID]) == contract.TRANSFORM_ID
  pretrain = components[contract.PRETRAIN_TRANSFORM_ID]
  assert pretrain.inputs['examples'].producer_component_id == contract.CORPUS_EXAMPLE_GEN_ID
  assert _custom_config(pretrain)[contract.TASK_KEY] == contract.MLM
  assert contract.LM_FEATURES_KEY not in _custom_config(components[contract.TRANSFORM_ID])


def test_without_pretraining_the_transform_outputs_only_its_stage_features(tmp_path):
  config = config_lib.load_config(IMDB_SAMPLE, ['pretrain=null'])
  components = _components(config, tmp_path)
  assert contract.PRETRAIN_TRAINER_ID not in components
  assert contract.LM_FEATURES_KEY not in _custom_config(components[contract.TRANSFORM_ID])


def _stage(task, steps, learning_rate):
  return {
    'task': task,
    'model_size': 'tiny',
    'num_layers': 1,
    'hidden_dim': 32,
    'num_heads': 2,
    'intermediate_dim': 64,
    'seq_len': 16,
    'per_replica_batch_size': 16,
    'train_steps': steps,
    'eval_steps': 2,
    'eval_every_steps': steps,
    'log_every_steps': steps,
    'checkpoint_every_steps': steps,
    'learning_rate': learning_rate,
    'warmup_steps': 5,
  }


@pytest.mark.slow
def test_pretraining_and_classification_run_on_one_transform_and_both_models_serve(tmp_path):
  (tmp_path / 'data').mkdir()
  with open(tmp_path / 'data' / 'reviews.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['label', 'text'])
    # The labeled schema's label domain: '1' positive, '0' negative.
    writer.writerows(
      ('1' if label == 'pos' else '0', text) for text, label in trainer_data.labeled_texts(400, 3)
    )
  config = {
    'pipeline_name': 'shared-transform',
    'outputs_dir': str(tmp_path / 'outputs'),
    'data': {'format': 'csv', 'input_base': str(tmp_path / 'data'), 'train_eval_ratio': [3, 1]},
    'vocabulary': {'size': 120},
    'pretrain': _stage(contract.MLM, 20, 3e-3),
    'train': _stage(contract.CLASSIFY, 80, 3e-3),
    'evaluation': {'min_accuracy': 0.8},
    'serving': {'model_name': 'shared'},
    'beam': {'direct_num_workers': 1},
  }
  path = tmp_path / 'config.yaml'
  path.write_text(yaml.safe_dump(config))
  assert local_runner.main(['--config', str(path)]) == 0
  loaded = config_lib.load_config(str(path))
  with open(os.path.join(loaded.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    run = json.load(f)
  ran = {c['name'] for c in run['components']}
  assert {contract.TRANSFORM_ID, contract.PRETRAIN_TRAINER_ID, contract.TRAINER_ID} <= ran
  assert contract.PRETRAIN_TRANSFORM_ID not in ran
  assert run['blessed'] is True

  # The pushed classifier answers raw text with the right labels.
  classifier = tf.saved_model.load(run['pushed_path'])
  out = classifier.signatures[contract.PREDICT_TEXT](
    text=tf.constant(['a great and happy film', 'an awful and sad movie'])
  )
  assert [label.decode() for label in out[contract.LABELS].numpy()] == ['1', '0']

  # The pretrained mlm model reads the pieces: it predicts the [MASK] of a raw text.
  [pretrained] = glob.glob(
    os.path.join(
      loaded.pipeline_root, contract.PRETRAIN_TRAINER_ID, 'model', '*', contract.SERVING_MODEL_DIR
    )
  )
  mlm = tf.saved_model.load(pretrained)
  out = mlm.signatures[contract.PREDICT_TEXT](text=tf.constant(['the good [MASK] film', 'film']))
  predictions = out[contract.MASK_PREDICTIONS].numpy()
  assert all(p for p in predictions[0]) and not any(p for p in predictions[1])
  # Scored: up to ceil(seq_len * mask_rate) = 3 evenly spread pieces, never the [MASK] itself.
  assert out[contract.TOKEN_COUNT].numpy().tolist() == [2.0, 1.0]
