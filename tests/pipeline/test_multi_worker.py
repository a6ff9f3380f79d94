"""Multi-worker training for real: two processes on localhost run `trainer.task.run_fn`.

What Vertex AI Training does with `kubeflow.trainer_replicas: 2` (pipeline/kubeflow_runner.py):
a chief and a worker, each with TF_CONFIG naming both, each calling the same `run_fn` with the
same FnArgs. The TrainerConfig asks for strategy `auto`, which must pick
MultiWorkerMirroredStrategy from TF_CONFIG. Both workers must take the same steps and end with
the same weights, and only the chief may leave an export behind.

Each worker runs this file as a script (`python test_multi_worker.py WORK_DIR ROLE`) and calls
`run_fn` with every attribute of the FnArgs the test built (as an attribute namespace: importing
TFX's FnArgs class would import all of tfx.components, ~10 s per worker); it records,
when `Loop.run` returns, the step counter and the model's weights as that worker holds them.
"""

import json
import os
import socket
import subprocess
import sys
import time
import types

import attr
import numpy as np
import pytest

from tfxlm import contract

HERE = os.path.dirname(os.path.abspath(__file__))

ROLES = ('chief', 'worker')
TRAIN_STEPS = 12
STATE_FILE = 'final_state.npz'
TIMEOUT_S = 240


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _tf_config(ports, role):
  cluster = {'chief': [f'localhost:{ports[0]}'], 'worker': [f'localhost:{ports[1]}']}
  return json.dumps({'cluster': cluster, 'task': {'type': role, 'index': 0}})


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  """The trainer tests' real classify Transform output (built once per session)."""
  from tests.trainer import trainer_data

  data = trainer_data.classify_data(tmp_path_factory)
  config = trainer_data.tiny_config(
    'classify',
    strategy='auto',
    per_replica_batch_size=8,
    train_steps=TRAIN_STEPS,
    eval_steps=1,
    eval_every_steps=TRAIN_STEPS,
    log_every_steps=4,
    checkpoint_every_steps=TRAIN_STEPS,
    shuffle_buffer=64,
  )
  return data, config


def test_two_workers_train_in_lockstep_and_only_the_chief_exports(transformed, tmp_path):
  from tfx.components.trainer import fn_args_utils

  data, config = transformed
  ports = _free_ports(2)
  processes = {}
  for role in ROLES:
    work = tmp_path / role
    work.mkdir()
    fn_args = {
      'train_files': data['train_files'],
      'eval_files': data['eval_files'],
      'transform_graph_path': data['transform_graph'],
      'transform_output': data['transform_graph'],
      'serving_model_dir': str(work / 'serving'),
      'model_run_dir': str(work / 'model_run'),
      'custom_config': {contract.TRAINER_CONFIG_KEY: config},
    }
    # Every attribute TFX's FnArgs has, its defaults included: the workers rebuild it without
    # importing tfx.components (whose package imports every component, TFMA too: ~10 s each).
    (work / 'fn_args.json').write_text(json.dumps(attr.asdict(fn_args_utils.FnArgs(**fn_args))))
    env = dict(os.environ, TF_CONFIG=_tf_config(ports, role), CUDA_VISIBLE_DEVICES='')
    with open(work / 'log.txt', 'w') as log:
      processes[role] = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(work), role],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
      )
  deadline = time.time() + TIMEOUT_S
  try:
    for process in processes.values():
      process.wait(timeout=max(1, deadline - time.time()))
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.wait()
  for role, process in processes.items():
    log = (tmp_path / role / 'log.txt').read_text()
    assert process.returncode == 0, f'{role} failed:\n{log[-5000:]}'

  states = {role: np.load(tmp_path / role / STATE_FILE) for role in ROLES}
  for role, state in states.items():
    assert str(state['strategy']) == 'CollectiveAllReduceStrategy', role  # MultiWorkerMirrored
    assert int(state['replicas']) == 2, role
    assert int(state['step']) == TRAIN_STEPS, role
  chief, worker = states['chief'], states['worker']
  weights = sorted(k for k in chief.files if k.startswith('w'))
  assert weights and weights == sorted(k for k in worker.files if k.startswith('w'))
  for key in weights:
    np.testing.assert_array_equal(chief[key], worker[key], err_msg=key)
  # Each worker read its own shard of the data, so identical weights mean the gradients were
  # all-reduced; and training moved them, so they are not identical because untouched.
  assert any(not np.array_equal(chief[k], chief[k.replace('w', 'i', 1)]) for k in weights)

  chief_dir, worker_dir = tmp_path / 'chief', tmp_path / 'worker'
  assert (chief_dir / 'serving' / 'saved_model.pb').is_file()
  assert not (worker_dir / 'serving' / 'saved_model.pb').exists()
  history = json.loads((chief_dir / 'model_run' / 'eval_history.json').read_text())
  assert history[-1]['step'] == TRAIN_STEPS
  assert not (worker_dir / 'model_run' / 'eval_history.json').exists()
  # The worker's checkpoints were scratch copies, removed when training ended.
  leftovers = [
    f
    for _, _, files in os.walk(worker_dir / 'model_run')
    for f in files
    if '.ckpt' in f or f.startswith('ckpt')
  ]
  assert not leftovers


def _worker_main(work_dir, role):
  """Runs run_fn as one worker; records the step counter and weights when training ends."""
  from absl import logging

  from trainer import task, training

  logging.set_verbosity(logging.INFO)

  original_init, original_run = training.Loop.__init__, training.Loop.run

  def init_and_keep_initial(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    self.initial_weights = [w.numpy() for w in self.model.weights]

  def run_and_record(self, *args, **kwargs):
    history = original_run(self, *args, **kwargs)
    arrays = {f'w{i:04d}': w.numpy() for i, w in enumerate(self.model.weights)}
    arrays.update({f'i{i:04d}': w for i, w in enumerate(self.initial_weights)})
    np.savez(
      os.path.join(work_dir, STATE_FILE),
      step=int(self.step.numpy()),
      replicas=self.strategy.num_replicas_in_sync,
      strategy=type(self.strategy).__name__,
      **arrays,
    )
    return history

  training.Loop.__init__, training.Loop.run = init_and_keep_initial, run_and_record
  with open(os.path.join(work_dir, 'fn_args.json'), encoding='utf-8') as f:
    task.run_fn(types.SimpleNamespace(**json.load(f)))
  logging.info('%s done', role)


if __name__ == '__main__':
  _worker_main(sys.argv[1], sys.argv[2])
