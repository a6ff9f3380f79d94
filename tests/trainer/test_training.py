"""The custom loop on in-memory batches: gradient accumulation, mlm pooler, XLA, float16, the
fused update."""

import logging
import os
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import inputs, models, optimization, training
from trainer import precision as precision_lib
from trainer.config import TrainerConfig

VOCAB, SEQ_LEN, CLASSES = 40, 8, 3


def _batch(task, rows, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, size=(rows, SEQ_LEN)).astype('int32')
  x = {models.TOKEN_IDS: ids, models.PADDING_MASK: np.ones_like(ids)}
  if task == 'classify':
    labels = rng.integers(0, CLASSES, size=rows).astype('int32')
  elif task == 'clm':
    labels = np.roll(ids, -1, axis=1)
  else:
    x[models.MASK_POSITIONS] = np.tile(np.array([[1, 3]], 'int32'), (rows, 1))
    labels = ids[:, [1, 3]]
  return x, {inputs.LABELS: labels, inputs.WEIGHTS: np.ones(labels.shape, 'float32')}


def _loop(task, tmp_path, precision='float32', sgd=False, **overrides):
  config = TrainerConfig(
    **{
      'task': task,
      'num_layers': 1,
      'hidden_dim': 16,
      'num_heads': 2,
      'intermediate_dim': 32,
      'dropout': 0.0,
      'seq_len': SEQ_LEN,
      'precision': precision,
      **overrides,
    }
  )
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(precision)
  try:
    backbone = models.build_backbone(config, VOCAB)
    model = models.build_model(task, backbone, num_classes=CLASSES, max_predictions=2, dropout=0.0)
    optimizer = optimization.create_optimizer(
      model,
      learning_rate=1e-2,
      total_steps=10,
      warmup_steps=0,
      weight_decay=0.01,
      clip_norm=0.0,
      loss_scaling=precision == 'mixed_float16',
    )
    if sgd:
      # Adam's first step is about lr * sign(gradient): it would magnify float noise.
      optimizer = keras.optimizers.SGD(1.0)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  return training.Loop(
    tf.distribute.get_strategy(),
    model,
    optimizer,
    config,
    str(tmp_path / f'{task}_{precision}_{overrides}'),
  )


def _step(loop, batch):
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  return loop._train_step(iterator).numpy()


def test_the_step_is_traced_once_though_the_caller_left_the_optimizer_unbuilt(tmp_path):
  """The Loop makes the optimizer's variables before its first step (`_loop` leaves them to
  it): made inside the traced step, each would get a conditional and the step a second trace."""
  loop = _loop('classify', tmp_path)
  assert loop.optimizer.built
  assert len(loop.optimizer.variables) > 2 * len(loop.model.trainable_variables)
  for _ in range(2):
    _step(loop, _batch('classify', 4))
  assert loop._train_step.experimental_get_tracing_count() == 1
  assert int(loop.optimizer.iterations) == 2


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
  batch = _batch('classify', 8)
  whole = _loop('classify', tmp_path, sgd=True)
  accumulated = _loop('classify', tmp_path, sgd=True, grad_accum_steps=2)
  for a, b in zip(whole.model.weights, accumulated.model.weights):
    np.testing.assert_array_equal(np.array(a), np.array(b))
  sums_whole = _step(whole, batch)
  sums_accumulated = _step(accumulated, batch)
  np.testing.assert_allclose(sums_whole, sums_accumulated, rtol=1e-5)
  moved = 0
  for a, b, before in zip(
    whole.model.weights, accumulated.model.weights, _loop('classify', tmp_path).model.weights
  ):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)
    moved += not np.allclose(np.array(a), np.array(before))
  assert moved > 10


@pytest.mark.parametrize('accum', [1, 2])
def test_mlm_leaves_the_unused_pooler_alone(tmp_path, accum):
  loop = _loop('mlm', tmp_path, grad_accum_steps=accum)
  pooler = [w for w in loop.model.backbone.weights if w.path.startswith('pooled_dense')]
  before = [np.array(w) for w in pooler]
  _step(loop, _batch('mlm', 4))
  for w, b in zip(pooler, before):
    np.testing.assert_array_equal(np.array(w), b)


@pytest.mark.parametrize('precision, jit', [('mixed_float16', False), ('float32', True)])
def test_float16_loss_scaling_and_xla_train(tmp_path, precision, jit):
  loop = _loop('classify', tmp_path, precision=precision, jit_compile=jit)
  batch = _batch('classify', 8)
  first = _step(loop, batch)
  for _ in range(15):
    last = _step(loop, batch)
  assert np.isfinite(last).all()
  assert last[0] < first[0]  # the loss on a batch it keeps seeing goes down


def test_the_update_is_fused_by_default_where_its_compile_pays_back(tmp_path, caplog):
  """Unset, `fused_update` fuses when trainable weights x steps reach the threshold, decided
  again by `run` from the steps it has left; true and false decide alone."""
  small = _loop('classify', tmp_path)
  weights = sum(int(np.prod(w.shape)) for w in small.model.trainable_weights)
  enough = int(training.FUSED_UPDATE_MIN_WEIGHT_STEPS // weights) + 1
  assert not small.fused_update  # train_steps unset: from the Trainer's TrainArgs at `run`
  assert not _loop('classify', tmp_path, train_steps=enough - 1).fused_update
  assert _loop('classify', tmp_path, train_steps=enough).fused_update
  assert not _loop('classify', tmp_path, train_steps=enough, fused_update=False).fused_update
  assert _loop('classify', tmp_path, train_steps=1, fused_update=True).fused_update
  # float16 loss scaling needs a conditional step: never fused.
  assert not _loop('classify', tmp_path, precision='mixed_float16', fused_update=True).fused_update

  # The steps are the run's: few here, so the plain update despite the configured count.
  data = tf.data.Dataset.from_tensors(_batch('classify', 8)).repeat()
  loop = _loop('classify', tmp_path, train_steps=enough, eval_every_steps=1000)
  assert loop.fused_update
  caplog.set_level(logging.INFO, logger='absl')
  loop.run(data, data, train_steps=2, eval_steps=1)
  assert not loop.fused_update and int(loop.step) == 2
  assert 'optimizer update plain (train.fused_update: unset)' in caplog.text
  assert "dropout and GELU: trainer/cpu_kernels.py's CPU kernels" in caplog.text


def test_a_long_float32_language_model_run_compiles_its_step_by_default(
  tmp_path, caplog, monkeypatch
):
  """Unset, `jit_compile` compiles the forward and backward pass of a clm or mlm run of
  JIT_MIN_STEPS steps or more in float32 under the default strategy on a CPU without AVX-512;
  not classify, not fewer steps, not bfloat16, not a strategy object, not on a CPU with
  AVX-512 (there TensorFlow's kernels are faster); true and false decide alone."""
  enough = training.JIT_MIN_STEPS
  monkeypatch.setattr(precision_lib, '_onednn_enabled', lambda: True)
  monkeypatch.setattr(precision_lib, '_read_cpuinfo', lambda: 'flags\t: avx2 avx512f avx512_bf16\n')
  assert not _loop('clm', tmp_path, train_steps=enough).jit_compile
  assert not _loop('mlm', tmp_path, train_steps=enough).jit_compile
  assert _loop('clm', tmp_path, train_steps=enough, jit_compile=True).jit_compile
  monkeypatch.setattr(precision_lib, '_read_cpuinfo', lambda: 'flags\t: avx avx2 fma\n')
  assert _loop('clm', tmp_path, train_steps=enough).jit_compile
  assert _loop('mlm', tmp_path, train_steps=enough).jit_compile
  assert not _loop('clm', tmp_path).jit_compile  # train_steps unset: decided again at `run`
  assert not _loop('clm', tmp_path, train_steps=enough - 1).jit_compile
  assert not _loop('classify', tmp_path, train_steps=enough).jit_compile
  assert not _loop('clm', tmp_path, precision='mixed_bfloat16', train_steps=enough).jit_compile
  assert not _loop('clm', tmp_path, train_steps=enough, jit_compile=False).jit_compile
  assert _loop('classify', tmp_path, train_steps=1, jit_compile=True).jit_compile
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0'])
  with mirrored.scope():
    under = _loop('clm', tmp_path, train_steps=enough)
  assert not training.Loop(
    mirrored, under.model, under.optimizer, under.config, str(tmp_path / 'mirrored')
  ).jit_compile

  # The run's steps decide: enough here, so the compiled step, and it learns.
  data = tf.data.Dataset.from_tensors(_batch('clm', 8)).repeat()
  loop = _loop('clm', tmp_path, eval_every_steps=1000, log_every_steps=1000)
  caplog.set_level(logging.INFO, logger='absl')
  history = loop.run(data, data, train_steps=enough, eval_steps=1)
  assert loop.jit_compile and int(loop.step) == enough
  assert 'forward and backward pass compiled by XLA (train.jit_compile: unset)' in caplog.text
  library = loop._train_step.get_concrete_function(iter(data)).graph.as_graph_def().library
  compiled = [
    f for f in library.function if '_XlaMustCompile' in f.attr and f.attr['_XlaMustCompile'].b
  ]
  assert compiled, 'no XLA-compiled function in the train step'
  assert history[-1]['loss'] < np.log(VOCAB)  # below a uniform guess over the vocabulary


# Without accumulation the same fused program runs on one micro-batch's gradients: slow.
@pytest.mark.parametrize('accum', [pytest.param(1, marks=pytest.mark.slow), 2])
def test_the_fused_update_trains_like_the_plain_one(tmp_path, accum):
  """One XLA program for the finite check, clipping and AdamW: the same weights as the plain
  update after a few steps and after a batch whose loss is not finite."""
  fused = _loop('classify', tmp_path, grad_accum_steps=accum, clip_norm=0.5, fused_update=True)
  plain = _loop('classify', tmp_path, grad_accum_steps=accum, clip_norm=0.5, fused_update=False)
  assert fused.fused_update and not plain.fused_update
  batch = _batch('classify', 8)
  for _ in range(3):
    np.testing.assert_allclose(_step(fused, batch), _step(plain, batch), rtol=1e-3)
  # XLA may round differently; Adam's first steps (about lr * sign(gradient)) magnify that.
  for a, b in zip(fused.model.weights, plain.model.weights):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=2e-3, atol=2e-5)
  assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 3
  # A batch with a non-finite loss: both drop its gradients (Adam's moments still move the
  # weights, as in the plain update) and stay finite and equal.
  x, y = batch
  poisoned = (x, {**y, inputs.WEIGHTS: np.full_like(y[inputs.WEIGHTS], np.inf)})
  assert not np.isfinite(_step(fused, poisoned)[0])
  assert not np.isfinite(_step(plain, poisoned)[0])
  for a, b in zip(fused.model.weights, plain.model.weights):
    assert np.isfinite(np.array(a)).all()
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=2e-3, atol=2e-5)


def test_the_train_iterator_is_released_off_the_main_thread(caplog):
  """A slow teardown (a tf.data iterator joining its threads) no longer holds up the export."""
  caplog.set_level(logging.INFO, logger='absl')
  released = {}

  class SlowToDelete:
    def __del__(self):
      time.sleep(1.2)
      released['thread'] = threading.current_thread().name

  holder = [SlowToDelete()]
  started = time.perf_counter()
  training._release_in_background(holder)
  assert time.perf_counter() - started < 0.5
  for thread in threading.enumerate():
    if thread.name == 'release-train-iterator':
      # The interpreter waits for it at exit (test below), not only this test.
      assert not thread.daemon
      thread.join(timeout=10)
  assert released['thread'] == 'release-train-iterator'
  assert not holder
  assert any('released the training input pipeline in' in r.getMessage() for r in caplog.records)


_EXIT_DURING_RELEASE = """
import tensorflow as tf
from trainer import training

def slow(_):  # one matmul: a kernel that cancelling the iterator cannot interrupt
  m = tf.random.normal([6000, 6000])
  return tf.matmul(m, m)[0, 0]

iterator = iter(tf.data.Dataset.range(10).map(slow))
next(iterator)
next(iterator)  # the next element is in flight when the iterator goes
holder = [iterator]
del iterator
training._release_in_background(holder)
print('training over', flush=True)
"""


@pytest.mark.slow
def test_a_process_that_ends_while_the_train_iterator_is_released_exits_cleanly():
  """A Trainer process (a multi-worker replica, a Kubeflow component) ends soon after training:
  the iterator's release must not be cut off by the interpreter's exit. It used to run on a
  daemon thread, and a release still inside TensorFlow when the interpreter finalized crashed
  the process (SIGSEGV or "terminate called without an active exception") after its work was
  done: a multi-worker test failed that way, and the job would have failed on Vertex AI."""
  done = subprocess.run(
    [sys.executable, '-c', _EXIT_DURING_RELEASE],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'training over' in done.stdout


def test_evaluation_stops_at_the_end_of_the_split_and_counts_each_row_once(tmp_path, caplog):
  """Batches past the split's end (filler, `inputs.REAL` 0) are neither counted nor run on:
  the evaluation stops at the first one and logs what it covered, once."""
  loop = _loop('classify', tmp_path)
  x, y = _batch('classify', 8)
  real = np.array([1] * 8 + [1, 1, 1, 0, 0, 0, 0, 0] + [0] * 8, 'float32')
  tiled = {k: np.concatenate([v, v, v]) for k, v in x.items()}
  labels = np.concatenate([y[inputs.LABELS]] * 3)
  batches = tf.data.Dataset.from_tensor_slices(
    (tiled, {inputs.LABELS: labels, inputs.WEIGHTS: real, inputs.REAL: real})
  ).batch(8)
  # The same 11 rows as one batch with no filler.
  alone = tf.data.Dataset.from_tensors(
    (
      {k: v[:11] for k, v in tiled.items()},
      {inputs.LABELS: labels[:11], inputs.WEIGHTS: np.ones(11, 'float32')},
    )
  )
  # absl's logger: another test's TFX run may have set its level (as the others here do).
  with caplog.at_level(logging.INFO, logger='absl'):
    metrics = loop.evaluate(batches.repeat(), 10)
    again = loop.evaluate(batches.repeat(), 10)
  expected = loop.evaluate(alone, 1)
  for name in expected:
    assert metrics[name] == pytest.approx(expected[name]) == again[name]
  covered = [r.getMessage() for r in caplog.records if 'an evaluation covers' in r.getMessage()]
  assert covered == [
    'classify: an evaluation covers 11 rows (sequences) in 2 batches (eval_steps 10): the eval '
    'split ends there, each row counts once'
  ]


def test_an_eval_split_with_no_row_records_no_metrics(tmp_path, caplog):
  """An eval split shorter than one window gives only filler batches: nothing was measured, so
  nothing is recorded (it was: loss 0, perplexity 1, drawn in the report as eval points)."""
  loop = _loop('clm', tmp_path, eval_every_steps=1)
  x, y = _batch('clm', 8)
  filler = {
    **y,
    inputs.WEIGHTS: np.zeros_like(y[inputs.WEIGHTS]),
    inputs.REAL: np.zeros(8, 'float32'),
  }
  train = tf.data.Dataset.from_tensors((x, y)).repeat()
  caplog.set_level(logging.INFO, logger='absl')
  history = loop.run(
    train, tf.data.Dataset.from_tensors((x, filler)).repeat(), train_steps=2, eval_steps=3
  )
  assert history == [] and int(loop.step.numpy()) == 2
  assert loop.evaluate(tf.data.Dataset.from_tensors((x, filler)).repeat(), 3) == {}
  warned = [r.getMessage() for r in caplog.records if 'no row to evaluate' in r.getMessage()]
  assert warned == [
    'clm: the eval split gives the Trainer no row to evaluate (it holds less than one window of '
    'seq_len 8 tokens): its evaluations are skipped (no eval loss in the log, TensorBoard or '
    'eval_history.json); the Evaluator still scores the split. Add eval data or lower seq_len.'
  ]
  assert not any(': eval loss' in r.getMessage() for r in caplog.records)
  assert not os.path.exists(os.path.join(loop.run_dir, training.EVAL_HISTORY_FILE))


def test_the_log_gives_the_runs_total_steps_when_the_config_leaves_them_to_train_args(
  tmp_path, caplog
):
  # train_steps unset in the config (the Trainer's TrainArgs give it to `run`): the log printed
  # "step 1/None".
  loop = _loop('classify', tmp_path, log_every_steps=1, eval_every_steps=2)
  data = tf.data.Dataset.from_tensors(_batch('classify', 8)).repeat()
  caplog.set_level(logging.INFO, logger='absl')
  loop.run(data, data, train_steps=2, eval_steps=1)
  assert 'classify step 1/2: loss' in caplog.text
  assert 'classify step 2/2: eval' in caplog.text
  assert '/None' not in caplog.text
