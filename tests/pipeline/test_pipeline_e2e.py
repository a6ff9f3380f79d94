"""The product, end to end: the whole pipeline under LocalDagRunner with SQLite ML Metadata.

One module-scoped run trains on generated sentiment-like data, is blessed and pushed; the
tests then check what it recorded, rerun it (everything cached), rerun it with an impossible
threshold (not blessed, nothing pushed), and run it once more through the TFX CLI.
"""

import json
import os
import random
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from pipeline import config as config_lib
from pipeline import local_runner, run_metadata
from tfxlm import contract

POSITIVE = ('good', 'great', 'fine', 'nice', 'happy', 'superb')
NEGATIVE = ('bad', 'awful', 'poor', 'sad', 'angry', 'dull')
FILLER = tuple(
  'the a film movie story actor plot scene music ending watch again never always '
  'really quite very director camera light dark night day world people'.split()
)
MODEL_NAME = 'sentiment'


def _write_csv(path, rows, seed=0):
  rng = random.Random(seed)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('review,sentiment\n')
    for _ in range(rows):
      label = rng.choice('01')
      words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
      for _ in range(rng.randint(1, 2)):
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == '1' else NEGATIVE))
      f.write(f'"{" ".join(words)}",{label}\n')


def _config_file(tmp, outputs, train=None, **evaluation):
  config = {
    'pipeline_name': 'e2e',
    'outputs_dir': str(outputs),
    'data': {
      'format': 'csv',
      'input_base': str(tmp / 'data'),
      'text_column': 'review',
      'label_column': 'sentiment',
      'train_eval_ratio': [3, 1],
    },
    'vocabulary': {'size': 120},
    'train': {
      'task': 'classify',
      'model_size': 'tiny',
      'num_layers': 1,
      'hidden_dim': 32,
      'num_heads': 2,
      'intermediate_dim': 64,
      'seq_len': 16,
      'per_replica_batch_size': 16,
      'train_steps': 80,
      'eval_steps': 2,
      'eval_every_steps': 40,
      'log_every_steps': 20,
      'checkpoint_every_steps': 40,
      'learning_rate': 3e-3,
      'warmup_steps': 5,
      **(train or {}),
    },
    'evaluation': {'min_accuracy': 0.8, 'max_accuracy_drop': 0.05, **evaluation},
    'serving': {'model_name': MODEL_NAME},
    # One Beam worker keeps this small run fast; the data tests cover multi_processing.
    'beam': {'direct_num_workers': 1},
  }
  path = tmp / f'config-{len(evaluation) + len(train or {})}.yaml'
  path.write_text(yaml.safe_dump(config))
  return str(path)


def _run(config_path, capsys, *flags, code=0):
  ended = local_runner.main(['--config', config_path, *flags])
  out, err = capsys.readouterr()
  assert ended == code, out + err
  config = config_lib.load_config(config_path)
  with open(os.path.join(config.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    return config, json.load(f), out, err


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('e2e')
  (tmp / 'data').mkdir()
  _write_csv(tmp / 'data' / 'reviews.csv', rows=400)
  with open(tmp / 'data' / 'reviews.csv', 'a') as f:
    f.write('" ",1\n')  # line 402: a document of whitespace, skipped with a warning
  return tmp


@pytest.fixture(scope='module')
def first_run(workspace):
  config_path = _config_file(workspace, workspace / 'outputs')
  code = local_runner.main(['--config', config_path])
  assert code == 0
  config = config_lib.load_config(config_path)
  with open(os.path.join(config.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    return config_path, config, json.load(f)


def test_every_component_ran_and_is_recorded_in_ml_metadata(first_run):
  _, config, run = first_run
  names = {c['name'] for c in run['components']}
  assert {
    'TextExampleGen',
    contract.STATISTICS_GEN_ID,
    contract.SCHEMA_GEN_ID,
    contract.EXAMPLE_VALIDATOR_ID,
    contract.VOCABULARY_ID,
    contract.TRANSFORM_ID,
    contract.TRAINER_ID,
    contract.EVALUATOR_ID,
    contract.PUSHER_ID,
  } <= names
  assert all(c['state'] in ('COMPLETE', 'CACHED') for c in run['components'])
  store = run_metadata.open_store(config.metadata_path)
  for type_name in (
    'Examples',
    'ExampleStatistics',
    'Schema',
    'ExampleAnomalies',
    'tfxlm.Vocabulary',
    'TransformGraph',
    'Model',
    'ModelRun',
    'ModelEvaluation',
    'ModelBlessing',
    'PushedModel',
  ):
    assert store.get_artifacts_by_type(type_name), f'no {type_name} artifact in MLMD'


def test_tfma_metrics_were_written_and_the_model_was_blessed_and_pushed(first_run):
  _, config, run = first_run
  assert run['metrics']['sparse_categorical_accuracy'] >= 0.8
  assert run['metrics']['example_count'] > 50
  assert run['per_label'], 'no per-label slices'
  assert run['blessed'] is True
  pushed = run['pushed_path']
  assert pushed.startswith(os.path.join(config.serving_root, MODEL_NAME) + os.sep)
  assert os.path.isfile(os.path.join(pushed, 'saved_model.pb'))
  assert os.path.basename(pushed).isdigit()  # the TF Serving version folder
  assert os.path.isfile(os.path.join(pushed, contract.EXTRA_DIR, contract.REPORT_FILE))
  report = open(os.path.join(config.resolved_outputs_dir, 'report.html')).read()
  for section in (
    'Confusion matrix',
    'sparse_categorical_accuracy',
    'Training curves',
    'Data (StatisticsGen)',
    '<polyline',
  ):
    assert section in report, f'the report has no {section!r}'
  assert run['statistics']['train']['examples'] > run['statistics']['eval']['examples'] > 0


def test_pushed_model_answers_raw_text_in_a_fresh_process(first_run):
  pushed = first_run[2]['pushed_path']
  script = textwrap.dedent(f"""
      import json, tensorflow as tf, tensorflow_text  # noqa
      model = tf.saved_model.load({pushed!r})
      out = model.signatures['predict_text'](text=tf.constant(
          ['a great and happy film', 'an awful and sad movie']))
      print(json.dumps([l.decode() for l in out['labels'].numpy()]))
  """)
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, check=True
  )
  assert json.loads(result.stdout.strip().splitlines()[-1]) == ['1', '0']


def test_second_run_hits_the_cache_for_every_component(first_run, capsys):
  config_path, _, _ = first_run
  _, run, out, _ = _run(config_path, capsys)
  states = {
    c['name']: c['state'] for c in run['components'] if c['name'] != contract.BASELINE_RESOLVER_ID
  }  # a resolver is not an execution
  assert states and set(states.values()) == {'CACHED'}, states
  assert 'run summary' in out and 'Pushed to:' in out
  # The cached ExampleGen logged nothing this time: its first execution's warning comes back.
  block = out[out.index('Warnings (') :]
  assert 'full log: ' in block.splitlines()[0]
  assert (
    'skipped 1 empty or whitespace-only documents (lines 402) (reused: TextExampleGen was cached)'
    in block
  )


def test_a_skipped_document_is_a_warning_in_the_summary_and_the_report(first_run):
  _, config, run = first_run
  log = os.path.join(config.resolved_outputs_dir, 'run.log')
  assert run['log_path'] == log
  assert any(
    'skipped 1 empty or whitespace-only documents (lines 402)' in w for w in run['warnings']
  )
  with open(os.path.join(config.resolved_outputs_dir, contract.REPORT_FILE)) as f:
    assert 'skipped 1 empty' in f.read()


def test_unmet_threshold_is_not_blessed_and_nothing_is_pushed(first_run, workspace, capsys):
  _, config, first = first_run
  versions = sorted(os.listdir(os.path.join(config.serving_root, MODEL_NAME)))
  # Perfect accuracy (the highest threshold the config accepts) from an untrained model.
  # An untrained model (a learning rate of 1e-9; a few steps are as untrained as 80).
  untrained = {
    'learning_rate': 1e-9,
    'train_steps': 10,
    'eval_every_steps': 10,
    'log_every_steps': 10,
    'checkpoint_every_steps': 10,
  }
  strict = _config_file(workspace, workspace / 'outputs', train=untrained, min_accuracy=1.0)
  # A CI job asks for a blessed model: the run's exit status says there is none, after the
  # summary and report are written as for any run.
  _, run, out, err = _run(strict, capsys, '--require-blessed', code=3)
  assert err.startswith('error: --require-blessed: the model was not blessed (accuracy '), err
  assert err.rstrip().endswith('; nothing was pushed')
  assert run['blessed'] is False
  assert any(
    re.fullmatch(
      r'accuracy \d\.\d{4} is below the lower bound 1 by \d\.\d{4} \(evaluation.min_accuracy\)', why
    )
    for why in run['why']
  ), run['why']
  # Compared with the first run's blessed model, the run still reads its own matrix and labels.
  assert run['confusion'] and sorted(run['confusion'][0]) == ['0', '1']
  assert 'precision (label 1)' in run['metrics']
  assert not [key for key in run['metrics'] if 'classId' in key or '_diff' in key]
  assert (
    run['last_blessed']['model']
    and 'sparse_categorical_accuracy' in (run['last_blessed']['metrics'])
  )
  assert run['pushed_path'] in (None, first['pushed_path'])
  assert sorted(os.listdir(os.path.join(config.serving_root, MODEL_NAME))) == versions
  assert 'NOT blessed' in out


@pytest.mark.slow
def test_tfx_cli_creates_and_runs_the_same_pipeline(first_run, workspace, tmp_path):
  config_path, config, _ = first_run
  env = dict(os.environ, TFXLM_CONFIG=config_path, HOME=str(tmp_path))
  runner = os.path.join(config_lib.REPO, 'pipeline', 'local_runner.py')
  create = subprocess.run(
    ['tfx', 'pipeline', 'create', '--engine', 'local', '--pipeline_path', runner],
    env=env,
    capture_output=True,
    text=True,
  )
  assert create.returncode == 0, create.stdout + create.stderr
  assert 'Pipeline "e2e" created successfully' in create.stdout
  run = subprocess.run(
    ['tfx', 'run', 'create', '--engine', 'local', '--pipeline_name', 'e2e'],
    env=env,
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  with open(os.path.join(config.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    states = {c['name']: c['state'] for c in json.load(f)['components']}
  assert states.get(contract.TRAINER_ID) == 'CACHED'  # the same pipeline, so the same cache
