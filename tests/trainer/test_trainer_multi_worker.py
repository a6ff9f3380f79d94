"""run_fn in two worker processes (MultiWorkerMirroredStrategy over TF_CONFIG on localhost)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import task, training

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(clm_data, tmp_path):
  config = trainer_data.tiny_config(
    'clm',
    strategy='auto',
    train_steps=30,
    eval_every_steps=15,
    checkpoint_every_steps=15,
    # More than the eval split: each worker's shard ends at another step, both stop together.
    eval_steps=8,
  )
  args = trainer_data.fn_args(clm_data, str(tmp_path), config)
  args_file = tmp_path / 'args.json'
  args_file.write_text(
    json.dumps(
      {
        k: getattr(args, k)
        for k in (
          'train_files',
          'eval_files',
          'transform_graph_path',
          'serving_model_dir',
          'model_run_dir',
          'custom_config',
        )
      }
    )
  )
  cluster = {'worker': [f'localhost:{port}' for port in _free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(
      os.environ,
      TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}}),
    )
    workers.append(
      subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'run_fn_main.py'), str(args_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  logs = []
  for worker in workers:
    try:
      logs.append(worker.communicate(timeout=300)[1])
    finally:
      worker.kill()
  for index, (worker, log) in enumerate(zip(workers, logs)):
    assert worker.returncode == 0, f'worker {index}:\n{log[-3000:]}'
    assert '2 replica(s)' in log  # one CPU replica per worker
  assert 'chief=True' in logs[0] and 'chief=False' in logs[1]
  assert 'eval split ends there, each row counts once' in logs[0]
  assert os.path.exists(os.path.join(args.serving_model_dir, 'saved_model.pb'))
  checkpoints = task.checkpoint_dir(args, task.config_from_fn_args(args))
  assert not os.path.exists(checkpoints)  # the chief removed them after the export
  # The non-chief's scratch checkpoints are gone; nothing else was written beside the chief's.
  assert sorted(os.listdir(args.model_run_dir)) == sorted(
    [
      training.TRAIN_LOGS,
      training.EVAL_LOGS,
      training.EVAL_HISTORY_FILE,
      training.TRAIN_SUMMARY_FILE,
      contract.CHECKPOINTS_RECORD_FILE,
    ]
  )
  assert not [d for d in os.listdir(os.path.dirname(checkpoints)) if '_scratch_' in d]
  with open(os.path.join(args.model_run_dir, training.EVAL_HISTORY_FILE)) as f:
    assert [h['step'] for h in json.load(f)] == [15, 30]
