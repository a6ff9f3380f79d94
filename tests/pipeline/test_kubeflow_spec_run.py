"""The compiled KFP v2 spec of the demo, run end to end without a cluster.

`tools/run_kfp_spec.py` (a test harness for the spec, not a runtime) runs every task of the
compiled `pipeline.json` in dependency order through the exact command and arguments of its
`deploymentSpec`, with ExecutorInputs built as KFP's v2 driver builds them, in this environment.
The demo runs with small step counts, a local pipeline root and the repository where the image
has it (`kubeflow.image_repo_dir`); everything else is the compiled spec as a cluster gets it.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import config as config_lib
from pipeline import kubeflow_runner
from tfxlm import contract

# The offline sample (the IMDB reviews inside the tfx package, at the same path in the image).
DEMO = os.path.join(config_lib.REPO, 'pipeline', 'configs', 'imdb_sample.yaml')
_spec = importlib.util.spec_from_file_location(
  'run_kfp_spec', os.path.join(config_lib.REPO, 'tools', 'run_kfp_spec.py')
)
run_kfp_spec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_kfp_spec)

SMALL_STAGE = {
  'seq_len': 32,
  'per_replica_batch_size': 8,
  'train_steps': 6,
  'eval_steps': 1,
  'eval_every_steps': 3,
  'log_every_steps': 3,
  'checkpoint_every_steps': 3,
}


def _overrides(root):
  overrides = [
    f'kubeflow.pipeline_root={root}',
    f'kubeflow.image_repo_dir={config_lib.REPO}',
    'kubeflow.beam_args=["--direct_running_mode=in_memory"]',
    'vocabulary.size=300',
    # The spec is under test, not the model: any accuracy blesses.
    'evaluation.min_accuracy=0.0',
  ]
  for stage in ('pretrain', 'train'):
    overrides += [f'{stage}.{key}={value}' for key, value in SMALL_STAGE.items()]
  return overrides


def test_task_order_puts_producers_first_and_refuses_cycles():
  tasks = {
    'c': {'dependentTasks': ['b']},
    'b': {
      'inputs': {
        'artifacts': {'x': {'taskOutputArtifact': {'producerTask': 'a', 'outputArtifactKey': 'y'}}}
      }
    },
    'a': {},
    'd': {},
  }
  assert run_kfp_spec.task_order(tasks) == ['a', 'd', 'b', 'c']
  with pytest.raises(run_kfp_spec.SpecError, match='cycle'):
    run_kfp_spec.task_order({'a': {'dependentTasks': ['b']}, 'b': {'dependentTasks': ['a']}})
  with pytest.raises(run_kfp_spec.SpecError, match='unknown tasks'):
    run_kfp_spec.task_order({'a': {'dependentTasks': ['z']}})


def test_a_cloud_pipeline_root_is_refused():
  job = {
    'pipelineSpec': {'pipelineInfo': {'name': 'p'}},
    'runtimeConfig': {'gcsOutputDirectory': 'gs://bucket/root'},
  }
  with pytest.raises(run_kfp_spec.SpecError, match='not a local folder'):
    run_kfp_spec.SpecRunner(job, 'run-1')


@pytest.mark.slow
def test_every_task_of_the_compiled_demo_runs_and_the_pushed_model_serves(tmp_path):
  spec_path = str(tmp_path / 'pipeline.json')
  root = str(tmp_path / 'root')
  args = ['compile', '--config', DEMO, '--output', spec_path]
  for item in _overrides(root):
    args += ['--set', item]
  assert kubeflow_runner.main(args) == 0
  with open(spec_path, encoding='utf-8') as f:
    job = json.load(f)
  tasks = job['pipelineSpec']['root']['dag']['tasks']

  lines = []
  runs = run_kfp_spec.run_spec(spec_path, run_id='run-1', log=lines.append)
  print('\n'.join(lines))  # each task's wall time, shown with -s
  assert set(runs) == set(tasks)
  kinds = {name: run.kind for name, run in runs.items()}
  assert sorted(n for n, k in kinds.items() if k == 'resolver') == [
    'LatestBlessedModelResolver-model-blessing-resolver',
    'LatestBlessedModelResolver-model-resolver',
  ]
  order = list(runs)
  for name, task in tasks.items():
    for upstream in task.get('dependentTasks', []):
      assert order.index(upstream) < order.index(name), (upstream, name)

  # Every container wrote its outputs where the ExecutorInput told it to: under the run's root.
  run_root = os.path.join(root, config_lib.load_config(DEMO).pipeline_name, 'run-1')
  for name, run in runs.items():
    if run.kind == 'container':
      for key, artifacts in run.outputs.items():
        [artifact] = artifacts
        assert artifact['uri'] == os.path.join(run_root, name, key), (name, key)
        assert os.path.exists(artifact['uri']), (name, key)
  assert json.loads(runs['TextExampleGen'].outputs['examples'][0]['metadata']['split_names']) == [
    'train',
    'eval',
  ]
  assert runs[contract.EVALUATOR_ID].outputs['blessing'][0]['metadata']['blessed'] == 1
  pushed = runs[contract.PUSHER_ID].outputs['pushed_model'][0]['metadata']
  assert pushed['pushed'] == 1
  destination = pushed['pushed_destination']
  assert destination.startswith(os.path.join(root, 'serving', 'imdb') + os.sep)

  # The pushed model serves: serving_default on serialized tf.Examples, in a fresh process.
  script = textwrap.dedent(f"""
      import json, tensorflow as tf, tensorflow_text  # noqa
      from components import example_encoding
      model = tf.saved_model.load({destination!r})
      serve = model.signatures[{contract.SERVING_DEFAULT!r}]
      examples = [example_encoding.make_example(t, '0') for t in ('a good film', 'a bad film')]
      out = serve(**{{{contract.EXAMPLES_INPUT!r}: tf.constant(examples)}})
      print(json.dumps(out[{contract.PROBABILITIES!r}].numpy().tolist()))
  """)
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, cwd=config_lib.REPO, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  probabilities = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(probabilities) == 2
  for row in probabilities:
    assert len(row) == 2 and abs(sum(row) - 1) < 1e-4
