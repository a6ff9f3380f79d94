"""The run summary's training curves across a killed Trainer and its resumed reruns."""

import json
import os

import tensorflow as tf

from pipeline import summary
from tfxlm import contract


def _execution(folder, checkpoint_dir, resumed, train, evals, written):
  """A Trainer execution's model_run dir: its checkpoints record, train and eval events
  ({step: loss}), the record's mtime set to `written`."""
  os.makedirs(folder)
  record = os.path.join(folder, contract.CHECKPOINTS_RECORD_FILE)
  with open(record, 'w') as f:
    json.dump({'checkpoint_dir': checkpoint_dir, 'resumed_from_step': resumed}, f)
  os.utime(record, (written, written))
  for split, points in (('train', train), ('eval', evals)):
    writer = tf.summary.create_file_writer(os.path.join(folder, split))
    with writer.as_default():
      for step, loss in points.items():
        tf.summary.scalar('loss', loss, step=step)
    writer.close()
  return folder


def test_curves_of_a_resumed_run_take_in_the_executions_its_checkpoints_came_from(tmp_path):
  runs = tmp_path / 'Trainer' / 'model_run'
  mine = str(tmp_path / 'Trainer' / '.system' / 'checkpoints' / 'abc')
  # Killed at step 50, its last checkpoint at 40.
  _execution(
    str(runs / '1'), mine, 0, {10: 1.0, 20: 1.0, 30: 1.0, 40: 1.0, 50: 1.0}, {20: 1.5, 40: 1.5}, 100
  )
  # Another configuration's execution (other checkpoints): not this training.
  _execution(str(runs / '2'), mine + 'x', 0, {10: 9.0, 20: 9.0}, {20: 9.0}, 200)
  # Resumed at 40, killed at 70 with its last checkpoint at 60.
  _execution(str(runs / '3'), mine, 40, {50: 2.0, 60: 2.0, 70: 2.0}, {60: 2.5}, 300)
  # Resumed at 60, finished at 80.
  last = _execution(str(runs / '4'), mine, 60, {70: 3.0, 80: 3.0}, {80: 3.5}, 400)
  curves = summary._run_curves(last)
  train = [(step, round(value, 3)) for step, value in curves['train/loss']]
  assert train == [
    (10, 1.0),
    (20, 1.0),
    (30, 1.0),
    (40, 1.0),
    (50, 2.0),
    (60, 2.0),
    (70, 3.0),
    (80, 3.0),
  ]
  evals = [(step, round(value, 3)) for step, value in curves['eval/loss']]
  assert evals == [(20, 1.5), (40, 1.5), (60, 2.5), (80, 3.5)]
  # A run that did not resume is its own curves; so is one from before the record.
  assert [s for s, _ in summary._run_curves(str(runs / '1'))['train/loss']] == [10, 20, 30, 40, 50]
  os.remove(os.path.join(last, contract.CHECKPOINTS_RECORD_FILE))
  assert [s for s, _ in summary._run_curves(last)['train/loss']] == [70, 80]
