"""Multi-worker training as Vertex AI Training runs it for `kubeflow.trainer_replicas: 2`.

The Trainer task of the compiled spec runs TFX's Vertex AI Training executor, which submits a
CustomJob: a chief pool and a worker pool, each replica running the container command TFX builds
(`python -m tfx.scripts.run_executor` with the stock Trainer executor and the Trainer's inputs,
outputs and exec properties). Here that executor runs with the Vertex API call replaced by a
recorder; the recorded command then runs as two local replicas, with TF_CONFIG as Vertex sets it
(`cluster` of `chief` and `worker`, `task`, `environment: cloud`, `job`), sharing one folder for
outputs and checkpoints as they would share gs://. The worker is killed mid-run, the job fails,
and the same job started again resumes from the shared checkpoints to the configured step count
and exports.
"""

import copy
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from pipeline import config as config_lib
from pipeline import kubeflow_runner
from tfxlm import contract

# The offline sample (the IMDB reviews inside the tfx package, at the same path in the image).
DEMO = os.path.join(config_lib.REPO, 'pipeline', 'configs', 'imdb_sample.yaml')
TRAIN_STEPS = 300
CHECKPOINT_EVERY = 20
TIMEOUT_S = 600


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  """A tiny real Transform output (the trainer tests' generator, reused by import)."""
  from tests.trainer import trainer_data

  root = str(tmp_path_factory.mktemp('classify'))
  data = trainer_data.transform_data(
    root, 'classify', trainer_data.labeled_texts(160, 1), trainer_data.labeled_texts(32, 2), 16
  )
  config = trainer_data.tiny_config(
    'classify',
    strategy='auto',
    per_replica_batch_size=8,
    train_steps=TRAIN_STEPS,
    eval_steps=1,
    eval_every_steps=TRAIN_STEPS // 2,
    log_every_steps=20,
    checkpoint_every_steps=CHECKPOINT_EVERY,
    shuffle_buffer=64,
  )
  return root, data, config


def _vertex_job(tmp_path, monkeypatch, root, data, trainer_config):
  """The CustomJob that TFX's Vertex AI Training executor submits for the compiled Trainer."""
  from tfx import types
  from tfx.extensions.google_cloud_ai_platform import runner, training_clients
  from tfx.types import standard_artifacts
  from tfx.utils import import_utils

  spec_path = str(tmp_path / 'pipeline.json')
  assert (
    kubeflow_runner.main(
      [
        'compile',
        '--config',
        DEMO,
        '--output',
        spec_path,
        '--set',
        'kubeflow.pipeline_root=gs://bucket/root',
        '--set',
        'kubeflow.trainer_replicas=2',
        '--set',
        'kubeflow.vertex_project=proj-1',
        '--set',
        'kubeflow.image=registry.example.com/tfx-lm:1',
      ]
    )
    == 0
  )
  with open(spec_path, encoding='utf-8') as f:
    pipeline_spec = json.load(f)['pipelineSpec']
  task = pipeline_spec['root']['dag']['tasks'][contract.TRAINER_ID]
  executor_label = pipeline_spec['components'][task['componentRef']['name']]['executorLabel']
  args = pipeline_spec['deploymentSpec']['executors'][executor_label]['container']['args']
  executor_class = import_utils.import_class_by_path(args[args.index('--executor_class_path') + 1])
  exec_properties = {
    name: source['runtimeValue']['constant']
    for name, source in task['inputs']['parameters'].items()
  }
  custom = json.loads(exec_properties['custom_config'])
  custom[contract.TRAINER_CONFIG_KEY] = trainer_config  # the tiny model of this test
  exec_properties['custom_config'] = json.dumps(custom)

  def artifact(kind, uri, **properties):
    a = kind()
    a.uri = uri
    for key, value in properties.items():
      setattr(a, key, value)
    return [a]

  shared = tmp_path / 'shared'  # what gs://bucket/root is to the replicas
  inputs = {
    'examples': artifact(
      standard_artifacts.Examples,
      os.path.join(root, 'transformed'),
      split_names=types.artifact_utils.encode_split_names(['train', 'eval']),
    ),
    'transform_graph': artifact(standard_artifacts.TransformGraph, data['transform_graph']),
  }
  outputs = {
    'model': artifact(standard_artifacts.Model, str(shared / contract.TRAINER_ID / 'model' / '7')),
    'model_run': artifact(
      standard_artifacts.ModelRun, str(shared / contract.TRAINER_ID / 'model_run' / '7')
    ),
  }
  submitted = {}
  monkeypatch.setattr(training_clients.VertexJobClient, 'create_client', lambda self: None)
  monkeypatch.setattr(runner, '_launch_cloud_training', lambda **kwargs: submitted.update(kwargs))
  executor_class().Do(inputs, outputs, exec_properties)
  assert submitted['project'] == 'proj-1' and submitted['enable_vertex'] is True
  # The compiled worker pools, each with TFX's container command added.
  pools = copy.deepcopy(submitted['training_job']['job_spec']['worker_pool_specs'])
  for pool in pools:
    assert pool['container_spec'].pop('command')
  assert pools == custom['ai_platform_training_args']['job_spec']['worker_pool_specs']
  return submitted['training_job'], outputs


def _start_replicas(job, work):
  """Starts every replica of the CustomJob's worker pools as Vertex AI Training does."""
  pools = job['job_spec']['worker_pool_specs']
  roles = [
    ('chief' if i == 0 else 'worker', j, pool['container_spec']['command'])
    for i, pool in enumerate(pools)
    for j in range(pool['replica_count'])
  ]
  hosts = [f'localhost:{port}' for port in _free_ports(len(roles))]
  cluster = {}
  for (role, _, _), host in zip(roles, hosts):
    cluster.setdefault(role, []).append(host)
  replicas = {}
  for role, index, command in roles:
    tf_config = {
      'cluster': cluster,
      'task': {'type': role, 'index': index},
      'environment': 'cloud',
      'job': json.dumps(job['job_spec']),
    }
    env = dict(
      os.environ,
      TF_CONFIG=json.dumps(tf_config),
      CUDA_VISIBLE_DEVICES='',
      PYTHONPATH=config_lib.REPO,
    )
    log = open(work / f'{role}-{index}.log', 'w')
    replicas[f'{role}-{index}'] = (
      subprocess.Popen(command, cwd=config_lib.REPO, env=env, stdout=log, stderr=subprocess.STDOUT),
      log,
    )
  return replicas


def _wait(replicas, timeout_s):
  deadline = time.monotonic() + timeout_s
  try:
    for process, _ in replicas.values():
      process.wait(timeout=max(1, deadline - time.monotonic()))
  finally:
    for process, log in replicas.values():
      if process.poll() is None:
        process.kill()
        process.wait()
      log.close()
  return {name: process.returncode for name, (process, _) in replicas.items()}


def _checkpoint_steps(folder):
  if not os.path.isdir(folder):
    return []
  return sorted(
    int(f.split('-')[1].split('.')[0])
    for f in os.listdir(folder)
    if f.startswith('ckpt-') and f.endswith('.index')
  )


@pytest.mark.slow
def test_killed_worker_and_restarted_job_finish_the_run(transformed, tmp_path, monkeypatch):
  root, data, trainer_config = transformed
  job, outputs = _vertex_job(tmp_path, monkeypatch, root, data, trainer_config)
  pools = job['job_spec']['worker_pool_specs']
  assert [pool['replica_count'] for pool in pools] == [1, 1]
  command = pools[0]['container_spec']['command']
  assert command[:3] == ['python', '-m', 'tfx.scripts.run_executor']
  assert all(pool['container_spec']['command'] == command for pool in pools)

  from trainer import task

  # The run's checkpoints: one folder under the Trainer's folder on the shared storage.
  model_run = outputs['model_run'][0].uri
  checkpoint_root = os.path.join(
    os.path.dirname(os.path.dirname(model_run)), task.CHECKPOINTS_FOLDER
  )

  def checkpoint_steps():
    # The chief's folder; a non-chief keeps scratch checkpoints beside it while it runs.
    folders = (
      [f for f in os.listdir(checkpoint_root) if '_scratch_' not in f]
      if (os.path.isdir(checkpoint_root))
      else []
    )
    assert len(folders) <= 1, folders
    return _checkpoint_steps(os.path.join(checkpoint_root, folders[0])) if folders else []

  # First attempt: kill the worker once the chief has checkpointed, before the end.
  first = tmp_path / 'first'
  first.mkdir()
  replicas = _start_replicas(job, first)
  deadline = time.monotonic() + TIMEOUT_S
  while not checkpoint_steps() and time.monotonic() < deadline:
    assert all(p.poll() is None for p, _ in replicas.values()), 'a replica ended early'
    time.sleep(0.1)
  steps = checkpoint_steps()
  assert steps and steps[-1] < TRAIN_STEPS, steps
  replicas['worker-0'][0].send_signal(signal.SIGKILL)
  # The chief cannot go on without its peer; Vertex fails the job when a replica fails.
  codes = _wait(replicas, 120)
  assert codes['worker-0'] == -signal.SIGKILL
  killed_at = checkpoint_steps()[-1]
  assert killed_at < TRAIN_STEPS

  # The job started again: same command, same shared folder; it resumes from the checkpoints.
  second = tmp_path / 'second'
  second.mkdir()
  codes = _wait(_start_replicas(job, second), TIMEOUT_S)
  logs = {name: (second / f'{name}.log').read_text() for name in codes}
  for name, code in codes.items():
    assert code == 0, f'{name} failed:\n{logs[name][-5000:]}'
  for name, log in logs.items():
    assert 'strategy CollectiveAllReduceStrategy, 2 replica(s)' in log, name  # MultiWorker
    assert f'resuming from checkpoint at step {killed_at}' in log, name
  # Exported at the step count; then the chief removed the checkpoints (keep_checkpoints off)
  # and the worker its scratch ones.
  assert f'step {TRAIN_STEPS}/{TRAIN_STEPS}' in logs['chief-0']
  assert checkpoint_steps() == []
  assert not [f for f in os.listdir(checkpoint_root) if '_scratch_' in f]
  with open(os.path.join(model_run, 'eval_history.json'), encoding='utf-8') as f:
    assert json.load(f)[-1]['step'] == TRAIN_STEPS
  serving = os.path.join(outputs['model'][0].uri, contract.SERVING_MODEL_DIR)
  assert os.path.isfile(os.path.join(serving, 'saved_model.pb'))
