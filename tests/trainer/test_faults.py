"""Training faults: non-finite losses, corrupt checkpoints, history files, checkpoint retention."""

import json
import logging
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import trainer_data
from trainer import inputs, models, optimization, task, training
from trainer.config import TrainerConfig
from trainer.finetune_config import LoraConfig

VOCAB, SEQ_LEN, CLASSES, ROWS = 40, 8, 3, 8


def _batch(seed=0, weight=1.0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, size=(ROWS, SEQ_LEN)).astype('int32')
  x = {models.TOKEN_IDS: ids, models.PADDING_MASK: np.ones_like(ids)}
  labels = rng.integers(0, CLASSES, size=ROWS).astype('int32')
  return x, {inputs.LABELS: labels, inputs.WEIGHTS: np.full(labels.shape, weight, 'float32')}


def _dataset(*batches):
  """The batches in order, then the first one forever."""
  data = tf.data.Dataset.from_tensors(batches[0])
  for batch in batches[1:]:
    data = data.concatenate(tf.data.Dataset.from_tensors(batch))
  return data.concatenate(tf.data.Dataset.from_tensors(batches[0]).repeat())


def _loop(run_dir, learning_rate=1e-2, **overrides):
  settings = dict(
    task='classify',
    num_layers=1,
    hidden_dim=16,
    num_heads=2,
    intermediate_dim=32,
    dropout=0.0,
    seq_len=SEQ_LEN,
    per_replica_batch_size=ROWS,
    checkpoint_every_steps=1,
    eval_every_steps=1000,
    log_every_steps=1000,
  )
  config = TrainerConfig(**{**settings, **overrides})
  keras.utils.set_random_seed(0)
  model = models.build_model(
    'classify',
    models.build_backbone(config, VOCAB),
    num_classes=CLASSES,
    max_predictions=2,
    dropout=0.0,
  )
  optimizer = optimization.create_optimizer(
    model,
    learning_rate=learning_rate,
    total_steps=100,
    warmup_steps=0,
    weight_decay=0.01,
    clip_norm=0.0,
  )
  optimizer.build(model.trainable_variables)
  return training.Loop(tf.distribute.get_strategy(), model, optimizer, config, str(run_dir))


def _train(loop, steps, *batches):
  return loop.run(
    _dataset(*(batches or [_batch()])), _dataset(_batch(1)), train_steps=steps, eval_steps=1
  )


def _saved_steps(loop):
  return sorted(int(p.rsplit('-', 1)[1]) for p in loop._checkpoints_newest_first())


def _checkpoint_is_finite(prefix):
  reader = tf.train.load_checkpoint(prefix)
  names = [n for n, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating]
  return all(np.isfinite(reader.get_tensor(n)).all() for n in names)


def _poison_weights(loop):
  weight = loop.model.trainable_variables[0]
  weight.assign(tf.fill(weight.shape, float('nan')))


def test_nonfinite_weights_stop_the_run_and_no_nonfinite_checkpoint_is_saved(tmp_path):
  loop = _loop(tmp_path, max_nonfinite_steps=3)
  _train(loop, 2)
  assert _saved_steps(loop) == [1, 2]
  _poison_weights(loop)
  with pytest.raises(training.NonFiniteLossError) as raised:
    _train(loop, 40)
  message = str(raised.value)
  assert '3 consecutive steps (3-5)' in message and 'learning_rate' in message
  assert f'step 2, is in {loop.checkpoint_dir}' in message
  assert _saved_steps(loop) == [1, 2]
  assert all(_checkpoint_is_finite(p) for p in loop._checkpoints_newest_first())


@pytest.mark.parametrize('max_steps', [1, 4])
def test_a_huge_learning_rate_stops_the_run_and_saves_no_nonfinite_checkpoint(tmp_path, max_steps):
  loop = _loop(tmp_path, learning_rate=1e36, max_nonfinite_steps=max_steps)
  with pytest.raises(training.NonFiniteLossError, match=f'for {max_steps} consecutive'):
    _train(loop, 40)
  assert int(loop.step.numpy()) < 40  # it stopped early
  assert all(_checkpoint_is_finite(p) for p in loop._checkpoints_newest_first())


def test_a_few_nonfinite_steps_are_skipped_and_the_run_goes_on(tmp_path):
  loop = _loop(tmp_path, max_nonfinite_steps=3)
  # Steps 2 and 3 see a NaN loss (NaN example weights); two are tolerated.
  _train(loop, 6, _batch(0), _batch(2, weight=float('nan')), _batch(3, weight=float('nan')))
  assert int(loop.step.numpy()) == 6
  assert _saved_steps(loop) == [4, 5, 6]  # max_to_keep 3; the NaN steps saved nothing
  assert all(_checkpoint_is_finite(p) for p in loop._checkpoints_newest_first())
  assert all(np.isfinite(np.asarray(w)).all() for w in loop.model.weights)


def test_a_log_of_steps_whose_loss_was_not_finite_shows_no_loss_of_0(tmp_path, caplog):
  loop = _loop(tmp_path, max_nonfinite_steps=3, log_every_steps=2)
  caplog.set_level(logging.INFO, logger='absl')
  # Steps 2 and 3 see a NaN loss: the log at step 2 averages step 1 alone, step 4's step 4.
  batches = [_batch(0), _batch(2, weight=float('nan')), _batch(3, weight=float('nan'))]
  _train(loop, 4, *batches)
  logs = [r.getMessage() for r in caplog.records]
  train_logs = [m for m in logs if 'accuracy' in m and 'eval' not in m]
  assert train_logs[0].endswith('(over the finite steps; not finite: step 2)')
  assert train_logs[1].endswith('(over the finite steps; not finite: step 3)')
  caplog.clear()
  # Steps 5 and 6 both see a NaN loss: nothing to average, and no loss 0 logged as if real.
  loop = _loop(tmp_path / 'all', max_nonfinite_steps=3, log_every_steps=2)
  _train(loop, 2, _batch(2, weight=float('nan')), _batch(3, weight=float('nan')))
  [log] = [r.getMessage() for r in caplog.records if 'no metrics' in r.getMessage()]
  assert log.endswith(
    ': no metrics, the loss was not finite at every step since the last log (steps 1, 2)'
  )
  assert 'loss 0' not in caplog.text


def test_the_nonfinite_loss_error_names_the_lora_scale_when_lora_is_on(tmp_path):
  lora = LoraConfig(rank=2, alpha=8)
  loop = _loop(tmp_path, learning_rate=1e36, max_nonfinite_steps=1, lora=lora)
  with pytest.raises(training.NonFiniteLossError) as raised:
    _train(loop, 40)
  assert ('or the LoRA scale train.lora.alpha / rank (now 8 / 2 = 4), set clip_norm') in str(
    raised.value
  )


def test_between_checkpoints_each_loss_is_read_after_the_next_step_and_none_is_lost(tmp_path):
  # No log, evaluation or checkpoint until the last step: each step's loss is read on the host
  # once the next step is dispatched. Steps 2 and 3 see a NaN loss; the window counts the rest.
  loop = _loop(tmp_path, max_nonfinite_steps=3, checkpoint_every_steps=1000)
  reads, read = [], loop._read_step

  def recording_read(step, *args):
    reads.append((step, int(loop.step.numpy())))  # the step read, the steps dispatched by then
    return read(step, *args)

  loop._read_step = recording_read
  _train(loop, 6, _batch(0), _batch(2, weight=float('nan')), _batch(3, weight=float('nan')))
  assert reads == [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 6)]
  assert int(loop.step.numpy()) == 6 and _saved_steps(loop) == [6]
  with open(tmp_path / training.TRAIN_SUMMARY_FILE) as f:
    summary = json.load(f)
  assert summary['steps'] == 6
  assert summary['tokens'] == 4 * ROWS * SEQ_LEN  # steps 1, 4, 5 and 6
  assert all(_checkpoint_is_finite(p) for p in loop._checkpoints_newest_first())


def test_between_checkpoints_nonfinite_losses_stop_the_run_one_step_later_at_most(tmp_path):
  loop = _loop(tmp_path, max_nonfinite_steps=3, checkpoint_every_steps=1000)
  _train(loop, 2)
  _poison_weights(loop)
  with pytest.raises(training.NonFiniteLossError) as raised:
    _train(loop, 40)
  assert '3 consecutive steps (3-5)' in str(raised.value)
  assert 5 <= int(loop.step.numpy()) <= 6  # step 6 was dispatched before step 5's loss was read
  assert _saved_steps(loop) == [2]


def test_dropped_gradients_leave_the_weights_alone():
  grads = [tf.constant([1.0, float('nan')]), None, tf.constant([[2.0]])]
  dropped = training._finite_or_zero(grads)
  assert dropped[1] is None
  assert all(not np.asarray(g).any() for g in (dropped[0], dropped[2]))
  kept = training._finite_or_zero([tf.constant([1.0, 2.0])])
  np.testing.assert_array_equal(kept[0], [1.0, 2.0])


@pytest.mark.parametrize('mode', ['eager', 'traced', 'xla', 'fused'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_any_nonfinite_value_in_any_gradient_drops_them_all(mode, bad):
  rng = np.random.default_rng(0)
  shapes = [(7, 5), (3,), (4, 4, 2)]
  check = {
    'eager': training._finite_or_zero,
    'traced': tf.function(training._finite_or_zero),
    'xla': tf.function(training._finite_or_zero, jit_compile=True),
    # The fused update's form (a select XLA fuses into the update), in one XLA program.
    'fused': tf.function(lambda g: training._finite_or_zero(g, fused=True), jit_compile=True),
  }[mode]
  for which in range(len(shapes)):
    for _ in range(3):
      grads = [rng.normal(size=s).astype(np.float32) for s in shapes]
      grads[which].flat[rng.integers(grads[which].size)] = bad
      dropped = check([tf.constant(g) for g in grads])
      assert all(g.shape == s and not np.asarray(g).any() for g, s in zip(dropped, shapes))
  finite = [rng.normal(size=s).astype(np.float32) for s in shapes]
  for got, want in zip(check([tf.constant(g) for g in finite]), finite):
    np.testing.assert_array_equal(got, want)


def test_large_finite_half_precision_gradients_are_kept():
  # Their float16 sum would overflow (65504 is float16's largest): the check sums in float32.
  grads = [tf.fill([1000], tf.constant(60000.0, tf.float16)), None]
  kept = training._finite_or_zero(grads)
  assert kept[1] is None and kept[0].dtype == tf.float16
  np.testing.assert_array_equal(kept[0], np.full(1000, 60000.0, np.float16))
  assert training._finite_or_zero([None]) == [None]


def _corrupt_data(prefix):
  path = tf.io.gfile.glob(prefix + '.data-*')[0]
  with open(path, 'r+b') as f:
    f.truncate(max(os.path.getsize(path) // 2, 1))


def _corrupt_index(prefix):
  with open(prefix + '.index', 'wb') as f:
    f.write(b'not a checkpoint index')


def _remove_state_file(prefix):
  os.remove(os.path.join(os.path.dirname(prefix), 'checkpoint'))


@pytest.mark.parametrize('corrupt', [_corrupt_data, _corrupt_index])
def test_restore_falls_back_to_the_newest_readable_checkpoint(tmp_path, corrupt):
  loop = _loop(tmp_path)
  _train(loop, 3)
  newest, older = loop._checkpoints_newest_first()[:2]
  reference = _loop(tmp_path / 'reference')
  reference.checkpoint.restore(older).assert_existing_objects_matched()
  corrupt(newest)
  resumed = _loop(tmp_path)
  assert resumed.restore() == 2
  for a, b in zip(resumed.model.weights, reference.model.weights):
    np.testing.assert_array_equal(np.array(a), np.array(b))


def test_restore_finds_checkpoints_without_the_state_file_and_skips_nonfinite_ones(tmp_path):
  loop = _loop(tmp_path)
  _train(loop, 2)
  _poison_weights(loop)
  loop.step.assign(3)
  loop.manager.save(checkpoint_number=3)  # as an older version of this code would have
  _remove_state_file(loop._checkpoints_newest_first()[0])
  assert _loop(tmp_path).restore() == 2


def test_restore_with_nothing_readable_starts_afresh(tmp_path):
  loop = _loop(tmp_path)
  _train(loop, 1)
  _corrupt_index(loop._checkpoints_newest_first()[0])
  fresh = _loop(tmp_path / 'fresh')
  resumed = _loop(tmp_path)
  assert resumed.restore() == 0
  for a, b in zip(resumed.model.weights, fresh.model.weights):
    np.testing.assert_array_equal(np.array(a), np.array(b))


def test_history_is_written_atomically_and_a_corrupt_one_is_ignored(tmp_path):
  loop = _loop(tmp_path, eval_every_steps=1)
  _train(loop, 2)
  path = os.path.join(loop.checkpoint_dir, training.EVAL_HISTORY_FILE)
  with open(path) as f:
    assert [h['step'] for h in json.load(f)] == [1, 2]
  assert sorted(os.listdir(tmp_path)) == [
    'checkpoints',
    'eval',
    training.EVAL_HISTORY_FILE,
    'train',
    training.TRAIN_SUMMARY_FILE,
  ]  # no temporary file left behind
  for bad in ('[{"step": 1, "loss": 0.5}, {"st', '{"step": 1}', '[{"loss": 1}]', '\x00\xff'):
    for folder in (loop.run_dir, loop.checkpoint_dir):
      with open(os.path.join(folder, training.EVAL_HISTORY_FILE), 'w') as f:
        f.write(bad)
    assert _loop(tmp_path).history == [], bad


@pytest.mark.parametrize('eval_steps', [1, 2])
def test_a_resumed_run_evaluating_other_rows_says_so_and_records_each_size(
  tmp_path, caplog, eval_steps
):
  first = _loop(tmp_path, eval_every_steps=1)
  _train(first, 2)  # eval_steps 1: one batch of ROWS rows
  resumed = _loop(tmp_path, eval_every_steps=1)
  assert resumed.restore() == 2
  caplog.set_level(logging.INFO, logger='absl')
  history = resumed.run(
    _dataset(_batch()), _dataset(_batch(1)), train_steps=4, eval_steps=eval_steps
  )

  sizes = [(h['step'], h['eval_steps'], h['eval_rows']) for h in history]
  rows = eval_steps * ROWS
  assert sizes == [(1, 1, ROWS), (2, 1, ROWS), (3, eval_steps, rows), (4, eval_steps, rows)]
  warnings = [
    r.getMessage() for r in caplog.records if r.name == 'absl' and r.levelno == logging.WARNING
  ]
  if eval_steps == 1:
    assert warnings == []
  else:
    assert warnings == [
      f'classify: this run evaluates {rows} rows (train.eval_steps 2), the 2 evaluation(s) '
      f'before its resume at step 2 covered {ROWS} rows (train.eval_steps 1): '
      'eval_history.json and the eval curves mix both sizes; set train.eval_steps back to 1 '
      'to compare them'
    ]


def test_write_json_atomically_replaces_the_whole_file(tmp_path):
  path = str(tmp_path / 'sub' / 'h.json')
  training.write_json_atomically(path, [{'step': 1}] * 100)
  training.write_json_atomically(path, [{'step': 2}])
  with open(path) as f:
    assert json.load(f) == [{'step': 2}]
  assert os.listdir(tmp_path / 'sub') == ['h.json']


@pytest.mark.parametrize('keep', [False, True])
def test_checkpoints_are_removed_after_a_successful_export_unless_kept(clm_data, tmp_path, keep):
  config = trainer_data.tiny_config(
    'clm',
    num_layers=1,
    train_steps=4,
    eval_every_steps=4,
    checkpoint_every_steps=2,
    keep_checkpoints=keep,
  )
  args = trainer_data.fn_args(clm_data, str(tmp_path), config)
  task.run_fn(args)
  assert os.path.exists(os.path.join(args.serving_model_dir, 'saved_model.pb'))
  checkpoints = task.checkpoint_dir(args, task.config_from_fn_args(args))
  assert os.path.isdir(checkpoints) == keep
  if keep:
    assert tf.train.latest_checkpoint(checkpoints).endswith('-4')
  assert os.path.exists(os.path.join(args.model_run_dir, training.EVAL_HISTORY_FILE))


def _crashing_run(data, run_dir, config, monkeypatch):
  """A run killed after its last checkpoint, before the export: the checkpoints stay behind."""

  def crash(*args, **kwargs):
    raise RuntimeError('killed')

  args = trainer_data.fn_args(data, run_dir, config)
  with monkeypatch.context() as patch:
    patch.setattr(task, '_export', crash)
    with pytest.raises(RuntimeError, match='killed'):
      task.run_fn(args)
  return args


# Checkpoints at steps 2 and 4, then the crash before the export.
_CRASHED_CONFIG = trainer_data.tiny_config(
  'clm', num_layers=1, train_steps=4, eval_every_steps=4, checkpoint_every_steps=2
)


def _rerun(args, run_dir, config):
  """The same component's next execution: a new model_run dir beside the first."""
  rerun = trainer_data.fn_args(
    {
      'train_files': args.train_files,
      'eval_files': args.eval_files,
      'transform_graph': args.transform_graph_path,
    },
    run_dir,
    config,
  )
  rerun.model_run_dir = os.path.join(os.path.dirname(args.model_run_dir), 'rerun')
  task.run_fn(rerun)
  return rerun


def test_logging_and_evaluation_settings_do_not_change_the_checkpoints_a_rerun_resumes(
  clm_data, tmp_path, monkeypatch, caplog
):
  config = _CRASHED_CONFIG
  args = _crashing_run(clm_data, str(tmp_path), config, monkeypatch)
  checkpoints = task.checkpoint_dir(args, task.config_from_fn_args(args))
  assert tf.train.latest_checkpoint(checkpoints).endswith('-4')
  cadence = dict(
    config,
    log_every_steps=1,
    eval_every_steps=2,
    eval_steps=1,
    checkpoint_every_steps=1,
    max_nonfinite_steps=5,
    mask_top_k=2,
    max_new_tokens_limit=4,
    generate_jit_compile=True,
  )
  caplog.set_level(logging.INFO, logger='absl')
  rerun = _rerun(args, str(tmp_path), cadence)
  assert task.checkpoint_dir(rerun, task.config_from_fn_args(rerun)) == checkpoints
  assert 'resuming from checkpoint at step 4' in caplog.text
  assert 'already trained to step 4' in caplog.text
  assert os.path.exists(os.path.join(rerun.serving_model_dir, 'saved_model.pb'))
  assert not os.path.exists(checkpoints)


def test_checkpoints_of_other_weight_settings_are_named_kept_then_removed_once_stale(
  clm_data, tmp_path, monkeypatch, caplog
):
  config = _CRASHED_CONFIG
  args = _crashing_run(clm_data, str(tmp_path), config, monkeypatch)
  abandoned = task.checkpoint_dir(args, task.config_from_fn_args(args))
  # More steps is another run: the learning-rate schedule spans train_steps.
  other = dict(config, learning_rate=1e-3, train_steps=6)
  caplog.set_level(logging.INFO, logger='absl')
  rerun = _rerun(args, str(tmp_path), other)
  assert 'resuming from checkpoint' not in caplog.text
  warning = next(r.getMessage() for r in caplog.records if 'not resumed' in r.getMessage())
  assert warning.startswith(f'checkpoints {abandoned} (step 4) are of other weight settings')
  assert 'train.learning_rate: 0.003 there, 0.001 here' in warning
  assert 'train.train_steps: 4 there, 6 here' in warning
  # A run of other settings between a killed run and its rerun leaves the killed run's
  # progress for the rerun to resume from.
  assert 'kept for a rerun of those settings to resume from (' in warning
  assert f'removed once untouched for {task.ABANDONED_AFTER_DAYS} days' in warning
  assert os.path.exists(os.path.join(rerun.serving_model_dir, 'saved_model.pb'))
  # The run's own checkpoints are removed after its export; the abandoned ones are kept.
  assert os.listdir(os.path.dirname(abandoned)) == [os.path.basename(abandoned)]
  assert tf.train.latest_checkpoint(abandoned).endswith('-4')
  # Untouched for longer, the next export removes them (and logs so).
  own = task.checkpoint_dir(rerun, task.config_from_fn_args(rerun))
  identity = task.checkpoint_identity(rerun, task.config_from_fn_args(rerun))
  caplog.clear()
  later = time.time() + task.ABANDONED_AFTER_DAYS * 86400
  stale = task.other_checkpoints(own, identity, remove=True, now=later)
  assert stale == [abandoned]
  assert 'removed after the export (untouched for 7 days)' in caplog.text
  assert task.other_checkpoints(own, identity, remove=False, now=later) == []
  task.remove_abandoned(stale, since=later)
  assert not os.listdir(os.path.dirname(abandoned))
