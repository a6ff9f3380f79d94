"""SIGKILL the whole local run (the runner and its Beam workers) mid-component, then rerun it.

The rerun must complete, reuse the components that had completed, resume training from the
last checkpoint, and no component may consume an artifact of an execution that did not finish.
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tests.pipeline import tiny_pipeline
from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEFORE_TRANSFORM = (
  'TextExampleGen',
  'StatisticsGen',
  'ImportSchemaGen',
  'ExampleValidator',
  'Vocabulary',
)
TIMEOUT = 600


def _config(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  rng = random.Random(0)
  words = 'the a good bad film plot great dull music story fine awful'.split()
  with open(data / 'reviews.csv', 'w') as f:
    f.write('review,sentiment\n')
    for _ in range(300):
      f.write(f'"{" ".join(rng.choice(words) for _ in range(8))}",{rng.choice("01")}\n')
  config = tiny_pipeline.classify_config(
    'killed',
    tmp_path / 'outputs',
    data,
    per_replica_batch_size=8,
    train_steps=600,
    eval_steps=1,
    eval_every_steps=300,
    log_every_steps=100,
    checkpoint_every_steps=20,
  )
  config['evaluation'] = tiny_pipeline.BLESS_EVERY_MODEL
  path = tiny_pipeline.write(tmp_path / 'config.yaml', config)
  return path, tmp_path / 'outputs'


def _start(config_path):
  # A session of its own: the kill reaches the runner and every Beam worker it started.
  return subprocess.Popen(
    [sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)],
    cwd=REPO,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )


def _kill_when(process, ready):
  deadline = time.time() + TIMEOUT
  try:
    while time.time() < deadline and process.poll() is None:
      if ready():
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return
      time.sleep(0.1)
    pytest.fail(f'the run ended (or timed out) before the kill: {process.poll()}')
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()


def _rerun(config_path, outputs):
  result = subprocess.run(
    [sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  with open(outputs / contract.SUMMARY_FILE) as f:
    states = {c['name']: c['state'] for c in json.load(f)['components']}
  return states, (outputs / 'run.log').read_text()


def _store(outputs):
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = str(outputs / 'metadata.sqlite')
  return metadata_store.MetadataStore(connection)


def _assert_only_finished_outputs_are_consumed(outputs):
  store = _store(outputs)
  executions = {e.id: e for e in store.get_executions()}
  events = store.get_events_by_execution_ids(list(executions))
  producer = {
    e.artifact_id: e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT
  }
  finished = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
  consumed = {
    e.artifact_id
    for e in events
    if e.type == metadata_store_pb2.Event.INPUT
    and executions[e.execution_id].last_known_state in finished
  }
  assert consumed
  artifacts = {a.id: a for a in store.get_artifacts_by_id(list(consumed))}
  for artifact_id in consumed:
    assert artifacts[artifact_id].state == metadata_store_pb2.Artifact.LIVE, artifact_id
    if artifact_id in producer:  # not an imported one
      state = executions[producer[artifact_id]].last_known_state
      assert state in finished, (artifacts[artifact_id].uri, state)


def _component_running(outputs, name):
  log = outputs / 'run.log'
  return log.exists() and f'Component {name} is running' in log.read_text()


@pytest.mark.slow
def test_a_run_killed_during_transform_reruns_and_reuses_what_completed(tmp_path):
  config_path, outputs = _config(tmp_path)
  started = {}

  def transform_working():
    if _component_running(outputs, 'Transform'):
      started.setdefault('at', time.time())
    return 'at' in started and time.time() - started['at'] > 2.0  # inside its Beam work

  _kill_when(_start(config_path), transform_working)
  log = (outputs / 'run.log').read_text()
  assert 'Component Transform is finished' not in log
  states, _ = _rerun(config_path, outputs)
  assert all(states[name] == 'CACHED' for name in BEFORE_TRANSFORM), states
  assert states['Transform'] == 'COMPLETE' and states['Trainer'] == 'COMPLETE', states
  _assert_only_finished_outputs_are_consumed(outputs)


@pytest.mark.slow
def test_a_run_killed_during_training_resumes_from_its_last_checkpoint(tmp_path):
  config_path, outputs = _config(tmp_path)
  pattern = str(outputs / 'root' / 'Trainer' / '.system' / 'checkpoints' / '*' / 'ckpt-*.index')

  def checkpointed():
    return any(int(p.rsplit('-', 1)[1].split('.')[0]) >= 40 for p in glob.glob(pattern))

  _kill_when(_start(config_path), checkpointed)
  saved = max(int(p.rsplit('-', 1)[1].split('.')[0]) for p in glob.glob(pattern))
  assert saved < 600, 'training finished before the kill'
  states, log = _rerun(config_path, outputs)
  assert states['Transform'] == 'CACHED' and states['Trainer'] == 'COMPLETE', states
  resumed = [
    int(line.rsplit(' ', 1)[1])
    for line in log.splitlines()
    if 'resuming from checkpoint at step' in line
  ]
  assert resumed and 40 <= resumed[0] <= saved, (resumed, saved)
  assert states['Pusher'] == 'COMPLETE'
  _assert_only_finished_outputs_are_consumed(outputs)
