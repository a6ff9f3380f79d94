"""One custom training loop for every strategy (Keras 3 `fit` fails under MultiWorkerMirrored).

The loop runs `strategy.run` inside a `tf.function`, sums metrics across replicas with
`strategy.reduce`, accumulates gradients over micro-batches, checkpoints with a
`tf.train.CheckpointManager` (so a killed run resumes) and writes TensorBoard scalars.

Faults: a step whose gradients are not finite has them dropped (zeroed) before the update;
`max_nonfinite_steps` consecutive steps with a non-finite loss stop the run with
`NonFiniteLossError` (between checkpoints, after one more step: a step's loss is read on the
host once the next step is dispatched, so an accelerator is never left waiting); a checkpoint
is saved only while the weights and the loss are finite; restoring falls back to the newest
checkpoint that reads back whole and finite.
"""

import functools
import json
import math
import os
import re
import resource
import threading
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfxlm import contract
from trainer import adapters, cpu_kernels, inputs, optimization, precision
from trainer.config import TrainerConfig

CHECKPOINT_DIR = 'checkpoints'
TRAIN_LOGS, EVAL_LOGS = 'train', 'eval'
# Written by the chief into the run directory: every evaluation, for people and tests. Each
# entry holds the step, `eval_steps` and `eval_rows` (what the evaluation covered), the metrics.
EVAL_HISTORY_FILE = 'eval_history.json'
# Written by the chief into the run directory at the end: speed, peak memory, trainable share.
TRAIN_SUMMARY_FILE = 'train_summary.json'
_CHECKPOINT_INDEX = re.compile(r'^ckpt-(\d+)\.index$')
# The strategy in force outside every scope (one device, no replicas to merge).
_DEFAULT_STRATEGY = type(tf.distribute.get_strategy())
# `train.fused_update: null` fuses the update when trainable weights x train steps reach this.
# With AdamW's one-kernel step (trainer/optimization.py), an update of all-MiniLM-L6-v2's 22.6 M
# weights took 106 ms plain and 86 ms fused, ~0.9 ms a step per million weights, for an XLA
# compile of ~1.4 s on 2 cores (medians of 5, 2026-12-05): it pays back past ~1.5e9.
FUSED_UPDATE_MIN_WEIGHT_STEPS = 1.4e9
# A language model's forward and backward pass compiled by XLA (`train.jit_compile` unset),
# float32 on 2 CPU cores, batches of 32 packed windows of 128 tokens, two runs each
# (2026-12-05): GPT-2 `small` (clm) 1.24 s a step against 1.68-1.76 s on TensorFlow's kernels,
# after a first step 3.5 s longer (the compile); the mlm BERT `small` 1.19-1.28 s against
# 1.61-1.78 s, a first step 0.3-2.1 s longer. It pays back within ten steps. Unset, it compiles
# for runs of at least this many steps; the windows' fixed shape compiles once. Not on a CPU with
# AVX-512, where TensorFlow's oneDNN kernels outrun XLA's code: on a 2-core AMD EPYC with
# AVX-512 (2026-12-06, bench/loop_bench.py's clm side) GPT-2 `small` trained 5,134 tokens/s
# compiled against 5,749 on TensorFlow's kernels, the mlm BERT `small` 4,999 against 5,873, the
# `tiny` GPT 25,890 against 31,184 (medians of 5, 4 and 5 rounds of 8 steps, the spreads apart).
JIT_MIN_STEPS = 50
# trainer/cpu_kernels.py's GELU compiles two XLA programs for each activation shape, ~50 ms more
# than tracing Keras' own, and saves ~1.4 ns a value a layer a step in float32 (2.6 in bfloat16)
# (bench/cpu_kernels_bench.py, 2 cores, 2026-12-07): one layer at one shape pays back past
# ~3.5e7 values x steps. Activations of fewer values than this over the run's steps keep Keras'
# GELU: with classify's batches spread over up to 8 lengths, the demo's 480 steps still compile
# every length (the shortest, 32 x 8 x 1,536 values, make 1.9e8), a test's 60 steps of a tiny
# model (32 x 64 x 512 values, 6e7) do not.
GELU_XLA_MIN_VALUE_STEPS = 1e8
# The tasks whose batches have one shape (packed windows; mlm's masked positions padded).
_FIXED_SHAPE_TASKS = (contract.CLM, contract.MLM)


class NonFiniteLossError(ValueError):
  """Training produced a non-finite loss for `max_nonfinite_steps` consecutive steps."""


def _all_finite(variables) -> bool:
  for variable in variables:
    values = np.asarray(variable)  # one copy to the host per variable
    if values.dtype.kind == 'f' and not np.isfinite(values).all():
      return False
  return True


def _finite_or_zero(grads, fused: bool = False):
  """`grads` if every one is finite, else zeros: a bad batch must not poison the weights.

  One read of each gradient decides: an inf or NaN anywhere makes its float32 sum inf or NaN
  (finite values whose sum overflows float32, ~1e31 each at a MiniLM's 22.7 M weights, count as
  non-finite too). In the plain update the zeros are made only when taken (`tf.cond`): checking
  `is_finite` element by element and selecting with `tf.where` was three more passes over every
  weight a step: 44 ms of a MiniLM fine-tuning step on 2 cores against 9 ms now
  (bench/optimizer_bench.py). In the fused
  update (`fused`, one XLA program) the select stays a `tf.where`: XLA fuses it into the update
  that reads the gradient, where a conditional would copy every gradient.
  """
  present = [tf.convert_to_tensor(g) for g in grads if g is not None]
  if not present:
    return list(grads)
  finite = tf.reduce_all(
    tf.stack([tf.math.is_finite(tf.reduce_sum(tf.cast(g, tf.float32))) for g in present])
  )
  if fused:
    kept = iter([tf.where(finite, g, tf.zeros_like(g)) for g in present])
  else:
    kept = iter(
      tf.cond(
        finite,
        lambda: [tf.identity(g) for g in present],
        lambda: [tf.zeros_like(g) for g in present],
      )
    )
  return [None if g is None else next(kept) for g in grads]


def token_losses(
  logits: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Sums of (cross-entropy, weight, correct predictions) over the weighted positions."""
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  correct = tf.cast(
    tf.equal(tf.argmax(logits, axis=-1, output_type=labels.dtype), labels), tf.float32
  )
  return (tf.reduce_sum(losses * weights), tf.reduce_sum(weights), tf.reduce_sum(correct * weights))


class Loop:
  """Trains and evaluates one model under one strategy.

  Args:
    strategy: The `tf.distribute.Strategy` the model and optimizer were built under.
    model: Task model from `trainer.models.build_model`.
    optimizer: From `trainer.optimization.create_optimizer`.
    config: The `TrainerConfig`.
    run_dir: Where checkpoints and TensorBoard logs go (the Trainer's model_run dir).
    chief: Whether this worker writes summaries and the real checkpoints. Every worker restores
      from the chief's checkpoints, so `run_dir` must be shared storage (as GCS is) when the
      workers run on different machines.
    worker_name: Distinguishes the scratch checkpoint dirs of non-chief workers.
    checkpoint_dir: Where checkpoints go; None means `<run_dir>/checkpoints`.
  """

  def __init__(
    self,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    config: TrainerConfig,
    run_dir: str,
    *,
    chief: bool = True,
    worker_name: str = 'chief',
    checkpoint_dir: str | None = None,
  ):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.config = config
    self.run_dir = run_dir
    self.chief = chief
    self.accum = config.grad_accum_steps
    # The run's last step, for the logs: `run` sets it (the Trainer's TrainArgs give it when the
    # config leaves train_steps unset).
    self.train_steps = config.train_steps
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
      if not optimizer.built:
        # Now, as the Trainer and Keras' `fit` do, not in the first traced step: made there,
        # each moment gets an initialize-once conditional and the step is traced twice.
        optimizer.build(model.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=self.step)
    checkpoint_dir = checkpoint_dir or os.path.join(run_dir, CHECKPOINT_DIR)
    self.checkpoint_dir = checkpoint_dir
    self._scratch_dir = None
    if not chief:
      # Every worker must take part in saving; only the chief's copy is kept.
      self._scratch_dir = f'{checkpoint_dir.rstrip("/")}_scratch_{worker_name}'

    self.manager = tf.train.CheckpointManager(self.checkpoint, checkpoint_dir, max_to_keep=3)
    self._save_manager = (
      self.manager
      if chief
      else tf.train.CheckpointManager(self.checkpoint, self._scratch_dir, max_to_keep=1)
    )
    if chief:
      self.train_writer = tf.summary.create_file_writer(os.path.join(run_dir, TRAIN_LOGS))
      self.eval_writer = tf.summary.create_file_writer(os.path.join(run_dir, EVAL_LOGS))
    else:
      self.train_writer = self.eval_writer = tf.summary.create_noop_writer()
    # The update (finite check, clipping, AdamW) is some twenty elementwise passes over every
    # weight and its two moments; one XLA program fuses them into a few: fine-tuning
    # all-MiniLM-L6-v2 on CPU runs 1.10x as many tokens a second (README "Training"). Several replicas
    # or a strategy object need the optimizer's cross-replica merge, which cannot run inside a
    # nested function, and float16 loss scaling a conditional step: those keep the plain update.
    self._can_fuse = isinstance(strategy, _DEFAULT_STRATEGY) and not isinstance(
      optimizer, keras.optimizers.LossScaleOptimizer
    )
    self.fused_update = self._fuses(config.train_steps)
    self.jit_compile = self._jits(config.train_steps)
    self._fused_update = tf.function(
      functools.partial(self._update, fused=True), jit_compile=True, autograph=False
    )
    # On a CPU, the train step is traced with trainer/cpu_kernels.py's dropout and GELU (the
    # model stays Keras' own): dropout 1.4x Keras', GELU 2.6x-4.0x (bench/cpu_kernels_bench.py).
    # With them the loop bench's Trainer / `fit` rose to 1.02x-1.16x and bfloat16 / float32 to
    # 1.49x (classify) and 1.55x (clm) (medians of 3 runs; README "Tests and benchmarks").
    self.cpu_kernels = not (
      tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('TPU')
    )
    self.gelu_min_values = self._gelu_min_values(config.train_steps)
    # Without AutoGraph: the steps have no Python control flow on tensors (the accumulation loop
    # is a `tf.while_loop`), and converting them and what they call cost each process seconds.
    self._train_step = tf.function(self._train_step_fn, autograph=False)
    self._eval_step = tf.function(self._eval_step_fn, autograph=False)
    self._eval_size_logged = False
    self.history = self._read_history() if chief else []

  def _fuses(self, steps: int | None) -> bool:
    """Whether the update runs as one XLA program (`train.fused_update`; None: if it pays back
    its compile over `steps`)."""
    if not self._can_fuse or self.config.fused_update is False:
      return False
    if self.config.fused_update:
      return True
    weights = adapters.count_weights(self.model.trainable_weights)
    return weights * (steps or 0) >= FUSED_UPDATE_MIN_WEIGHT_STEPS

  @staticmethod
  def _gelu_min_values(steps: int | None) -> int:
    """The smallest activation the CPU step's GELU compiles for over `steps` (None: unknown,
    any from `cpu_kernels.GELU_MIN_VALUES`)."""
    if not steps or steps <= 0:
      return cpu_kernels.GELU_MIN_VALUES
    return max(cpu_kernels.GELU_MIN_VALUES, math.ceil(GELU_XLA_MIN_VALUE_STEPS / steps))

  def _jits(self, steps: int | None) -> bool:
    """Whether the forward and backward pass run as an XLA program (`train.jit_compile`; None:
    a language model (clm, mlm) in float32 under the default strategy on a CPU host without
    AVX-512, for `JIT_MIN_STEPS` steps or more). Elsewhere it is not measured to pay back: classify batches
    change shape with their longest text (a compile for each multiple of 8 tokens: fine-tuning
    all-MiniLM-L6-v2 on the demo's data, 2 cores, 2026-12-05, steps ran 1.48 s against 1.55 s
    at the median, but 7 compiles of 6-8 s each made the first 60 steps 156 s against 110 s, so
    the demo's 480 would end later), and this CPU runs a bfloat16 backward pass slower in XLA."""
    if self.config.jit_compile is not None:
      return self.config.jit_compile
    return (
      self.config.task in _FIXED_SHAPE_TASKS
      and self._can_fuse
      and self.model.dtype_policy.compute_dtype == 'float32'
      and not tf.config.list_logical_devices('GPU')
      and not tf.config.list_logical_devices('TPU')
      and (steps or 0) >= JIT_MIN_STEPS
      and not precision.detect(self.strategy).cpu_avx512
    )

  def _checkpoints_newest_first(self) -> list[str]:
    """Checkpoint prefixes: the manager's record and the files themselves (the record may be
    missing or stale after a crash), newest first."""
    found = set(self.manager.checkpoints)
    if tf.io.gfile.isdir(self.checkpoint_dir):
      for name in tf.io.gfile.listdir(self.checkpoint_dir):
        if _CHECKPOINT_INDEX.match(name):
          found.add(os.path.join(self.checkpoint_dir, name[: -len('.index')]))
    number = lambda prefix: int(prefix.rsplit('-', 1)[1])
    return sorted(found, key=number, reverse=True)

  def restore(self) -> int:
    """Restores the newest checkpoint that reads back whole and finite; returns its step.

    A checkpoint that fails to read (a crash while writing, a corrupt file) or holds
    non-finite weights is skipped with a warning, and the next older one is tried.
    """
    initial = [(v, np.array(v)) for v in self.checkpoint_variables()]
    for prefix in self._checkpoints_newest_first():
      try:
        self.checkpoint.restore(prefix).assert_existing_objects_matched()
      except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (IndexError, ...)
        logging.warning(
          'checkpoint %s is unreadable, trying an older one: %s',
          prefix,
          str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        continue
      if _all_finite(self.model.weights):
        return int(self.step.numpy())
      logging.warning('checkpoint %s holds non-finite weights, trying an older one', prefix)
    for variable, value in initial:
      variable.assign(value)  # nothing usable: start afresh, not from a half-restored state
    return int(self.step.numpy())

  def checkpoint_variables(self) -> list:
    """Every variable a checkpoint restores (model, optimizer, step)."""
    return [*self.model.weights, *self.optimizer.variables, self.step]

  def _read_history(self):
    # A resumed run keeps the evaluations of the run it continues.
    # Kept beside the checkpoints too: a rerun gets a new run_dir but the same checkpoints.
    for folder in (self.run_dir, self.checkpoint_dir):
      path = os.path.join(folder, EVAL_HISTORY_FILE)
      if not tf.io.gfile.exists(path):
        continue
      try:
        with tf.io.gfile.GFile(path) as f:
          history = json.load(f)
        if isinstance(history, list) and all(
          isinstance(h, dict) and isinstance(h.get('step'), int) for h in history
        ):
          return history
        logging.warning('%s is not a list of evaluations; ignoring it', path)
      except (ValueError, UnicodeDecodeError, tf.errors.OpError) as e:
        logging.warning('%s is unreadable (%s); ignoring it', path, e)
    return []

  # -- steps -----------------------------------------------------------------------------------

  def _replica_train(self, x, y):
    replicas = self.strategy.num_replicas_in_sync
    variables = self.model.trainable_variables

    def micro_step(mx, my):
      with tf.GradientTape() as tape:
        loss_sum, count, correct = self.train_losses(mx, my)
        # Mean over this replica's positions; the optimizer sums the replicas' gradients.
        loss = loss_sum / tf.maximum(count, 1.0) / (replicas * self.accum)
        scaled = self.optimizer.scale_loss(loss)
      grads = tape.gradient(scaled, variables)
      tokens = tf.reduce_sum(tf.cast(mx[inputs.PADDING_MASK], tf.float32))
      return grads, tf.stack([loss_sum, count, correct, tokens])

    micro = self._compiled(micro_step)
    if self.accum == 1:
      grads, sums = micro(x, y)
    else:
      split = lambda t: tf.reshape(t, tf.concat([[self.accum, -1], tf.shape(t)[1:]], 0))
      mx_all, my_all = tf.nest.map_structure(split, (x, y))
      grads, sums = micro(*tf.nest.map_structure(lambda t: t[0], (mx_all, my_all)))
    # Weights the loss does not reach (the unused pooler of an mlm backbone) have no gradient;
    # they are left alone, not decayed.
    reached = tuple(i for i, g in enumerate(grads) if g is not None)
    # Dense: an embedding's sparse gradient becomes dense in AdamW's update anyway.
    total = [tf.convert_to_tensor(grads[i]) for i in reached]
    if self.accum > 1:

      def accumulate(step, total, sums):
        micro_grads, micro_sums = micro(*tf.nest.map_structure(lambda t: t[step], (mx_all, my_all)))
        total = [t + tf.convert_to_tensor(micro_grads[i]) for t, i in zip(total, reached)]
        return step + 1, total, sums + micro_sums

      # One micro-batch at a time: by default a while loop may run up to ten iterations at
      # once, each keeping its own activations, and accumulation is there to bound them.
      _, total, sums = tf.while_loop(
        lambda step, *_: step < self.accum,
        accumulate,
        (tf.constant(1), total, sums),
        parallel_iterations=1,
      )
    (self._fused_update if self.fused_update else self._update)(total, reached)
    return sums

  def _update(self, grads, reached, fused=False):
    """Drops non-finite gradients, then the optimizer's step (clipping, AdamW) on the
    variables `reached` indexes."""
    variables = self.model.trainable_variables
    self.optimizer.apply_gradients(
      [(g, variables[i]) for g, i in zip(_finite_or_zero(grads, fused), reached)]
    )
    return tf.constant(0)

  def train_losses(self, x, y):
    """Sums of (loss, weight, correct predictions) of one training micro-batch: the objective,
    which a subclass may change (trainer/distillation.py). Evaluation always scores the labels."""
    logits = self.model(x, training=True)
    return token_losses(logits, y[inputs.LABELS], y[inputs.WEIGHTS])

  def _compiled(self, fn):
    # Traced without AutoGraph, as the steps around it (a straight line of tensor ops).
    return tf.function(fn, jit_compile=True, autograph=False) if self.jit_compile else fn

  def _train_step_fn(self, iterator):
    x, y = next(iterator)
    # Runs only while the step is traced: the replacements are in its graph, nowhere else.
    with cpu_kernels.replaced(self.cpu_kernels, self.gelu_min_values):
      # `strategy.run` would convert the replica function unless told not to.
      sums = self.strategy.run(
        tf.autograph.experimental.do_not_convert(self._replica_train), args=(x, y)
      )
    self.step.assign_add(1)
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

  def _replica_eval(self, x, y):
    logits = self.model(x, training=False)
    loss_sum, count, correct = token_losses(logits, y[inputs.LABELS], y[inputs.WEIGHTS])
    # Rows of the split (the evaluation input's filler after its end weighs nothing).
    rows = (
      tf.reduce_sum(y[inputs.REAL])
      if inputs.REAL in y
      else tf.cast(tf.shape(logits)[0], tf.float32)
    )
    return tf.stack([loss_sum, count, correct, rows])

  def _eval_step_fn(self, iterator):
    x, y = next(iterator)
    sums = self.strategy.run(
      tf.autograph.experimental.do_not_convert(self._replica_eval), args=(x, y)
    )
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

  # -- metrics ---------------------------------------------------------------------------------

  def _metrics(self, loss_sum, count, correct):
    loss = loss_sum / max(count, 1.0)
    metrics = {'loss': loss}
    if self.config.task in (contract.MLM, contract.CLASSIFY):
      metrics['accuracy'] = correct / max(count, 1.0)
    if self.config.task in (contract.MLM, contract.CLM):
      metrics['perplexity'] = math.exp(min(loss, 50.0))
    return metrics

  def evaluate(self, eval_dataset: tf.data.Dataset, steps: int) -> dict[str, float]:
    """Runs up to `steps` eval batches (the same ones every call) and returns the metrics.

    The evaluation input reads its split once, then fills batches with rows of weight 0
    (trainer/inputs.py): each example counts at most once, and the evaluation stops at the
    first step in which no replica had a row left. No metrics ({}) when the split gives no row.
    """
    return self._evaluate(eval_dataset, steps)[0]

  def _evaluate(self, eval_dataset: tf.data.Dataset, steps: int) -> tuple[dict[str, float], int]:
    """`evaluate`'s metrics, and the rows (sequences) they cover."""
    iterator = iter(eval_dataset)
    total = tf.zeros([4])
    batches = 0
    for _ in range(steps):
      sums = self._eval_step(iterator)
      # The reduced sums are every replica's and worker's: all of them stop at the same step.
      if float(sums[3]) == 0:
        break
      total += sums
      batches += 1
    loss_sum, count, correct, rows = (float(v) for v in total.numpy())
    if not rows:
      # Nothing to score: a loss of 0 (perplexity 1) would be recorded and drawn as if measured.
      if not self._eval_size_logged and self.chief:
        self._eval_size_logged = True
        logging.warning(
          '%s: the eval split gives the Trainer no row to evaluate%s: its evaluations are '
          'skipped (no eval loss in the log, TensorBoard or %s); the Evaluator still scores '
          'the split. Add eval data%s.',
          self.config.task,
          f' (it holds less than one window of seq_len {self.config.seq_len} tokens)'
          if self.config.task in (contract.MLM, contract.CLM)
          else '',
          EVAL_HISTORY_FILE,
          ' or lower seq_len' if self.config.task in (contract.MLM, contract.CLM) else '',
        )
      return {}, 0
    if not self._eval_size_logged and self.chief:
      self._eval_size_logged = True
      logging.info(
        '%s: an evaluation covers %d rows (sequences) in %d batches (eval_steps %d)%s',
        self.config.task,
        rows,
        batches,
        steps,
        ': the eval split ends there, each row counts once' if batches < steps else '',
      )
    return self._metrics(loss_sum, count, correct), int(rows)

  # -- the loop --------------------------------------------------------------------------------

  def run(
    self,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    *,
    train_steps: int,
    eval_steps: int,
  ) -> list[dict[str, Any]]:
    """Trains from the current step (see `restore`) up to `train_steps`.

    Evaluates every `eval_every_steps` and at the end, checkpoints every
    `checkpoint_every_steps` and at the end.

    Returns:
      The list of evaluations, each a dict with 'step' and the metrics.
    """
    config = self.config
    self.train_steps = train_steps
    start = int(self.step.numpy())
    if start >= train_steps and self.chief:
      logging.info(
        '%s: already trained to step %d (checkpoint in %s): exporting it',
        config.task,
        start,
        self.checkpoint_dir,
      )
    # Evaluations a killed run made after its last checkpoint are made again.
    self.history = [h for h in self.history if h['step'] <= start]
    resumed_history = list(self.history)
    if not self._train_step.experimental_get_tracing_count():  # decided before the first trace
      self.fused_update = self._fuses(train_steps - start)
      self.jit_compile = self._jits(train_steps - start)
      self.gelu_min_values = self._gelu_min_values(train_steps - start)
      if self.chief:
        setting = {None: 'unset', True: 'true', False: 'false'}
        logging.info(
          '%s: optimizer update %s (train.fused_update: %s); forward and backward pass %s '
          '(train.jit_compile: %s)%s',
          config.task,
          'fused into one XLA program' if self.fused_update else 'plain',
          setting[config.fused_update],
          'compiled by XLA' if self.jit_compile else "on TensorFlow's kernels",
          setting[config.jit_compile],
          "; dropout and GELU: trainer/cpu_kernels.py's CPU kernels (GELU compiled by XLA for "
          f'activations of {self.gelu_min_values:,} values or more)'
          if self.cpu_kernels
          else '',
        )
    iterator = iter(train_dataset)
    # Train steps only: evaluation and checkpoints stay out of tokens/second.
    window = _new_window()
    totals = {'tokens': 0.0, 'seconds': 0.0}
    step = start
    nonfinite = []  # the current run of consecutive steps with a non-finite loss
    # A step's sums are read on the host once the next step is dispatched, or at once before a
    # log, an evaluation or a checkpoint: on an accelerator the device runs one step while
    # Python dispatches the next; reading each loss at once would leave the device idle between
    # steps. (`fit` does not read the loss between steps either.)
    unread = None  # (step, its sums)
    while step < train_steps:
      started = time.perf_counter()
      sums = self._train_step(iterator)
      step += 1
      if unread is not None:
        self._read_step(*unread, window, nonfinite)
      unread = (step, sums)
      logs = step % config.log_every_steps == 0 or step == train_steps
      evaluates = step % config.eval_every_steps == 0 or step == train_steps
      saves = step % config.checkpoint_every_steps == 0 or step == train_steps
      if logs or evaluates or saves:
        self._read_step(*unread, window, nonfinite)
        unread = None
      window['seconds'] += time.perf_counter() - started
      if logs:
        totals['tokens'] += float(window['sums'][3])
        totals['seconds'] += window['seconds']
        self._log_train(step, window)
        window = _new_window()
      if evaluates:
        metrics, rows = self._evaluate(eval_dataset, eval_steps)
        if rows and resumed_history:
          self._warn_of_other_eval_sizes(resumed_history, start, eval_steps, rows)
          resumed_history = []
        if rows:
          self._log_eval(step, metrics, eval_steps, rows)
      if saves:
        self._save(step, finite_loss=not nonfinite)
    if self._scratch_dir and tf.io.gfile.exists(self._scratch_dir):
      tf.io.gfile.rmtree(self._scratch_dir)
    if self.chief and step > start:
      self._write_train_summary(step - start, totals)
    holder = [iterator]
    del iterator
    _release_in_background(holder)
    return self.history

  def _read_step(self, step, sums, window, nonfinite):
    """Adds a step's sums to the log window if its loss is finite; otherwise counts it in
    `nonfinite` (its gradients were dropped in the step) and stops the run at
    `max_nonfinite_steps` in a row."""
    loss_sum = float(sums[0].numpy())
    if math.isfinite(loss_sum):
      window['sums'] += sums
      nonfinite.clear()
      return
    nonfinite.append(step)
    window['nonfinite'].append(step)
    logging.warning(
      '%s step %d: the loss is %s; its gradients were dropped (%d/%d before stopping)',
      self.config.task,
      step,
      loss_sum,
      len(nonfinite),
      self.config.max_nonfinite_steps,
    )
    if len(nonfinite) >= self.config.max_nonfinite_steps:
      raise self._nonfinite_error(nonfinite, loss_sum)

  def _write_train_summary(self, steps, totals):
    """Logs and writes `TRAIN_SUMMARY_FILE`: this run's train-step time and tokens/second
    (evaluation and checkpoints left out), the process's peak resident memory so far, and the
    trainable weights against all weights."""
    # LoRA's A and B are extra weights: the share is of the model they adapt.
    trainable, total = adapters.trainable_and_total(self.model)
    summary = {
      'steps': steps,
      'train_seconds': round(totals['seconds'], 2),
      'tokens': totals['tokens'],
      'tokens_per_second': round(totals['tokens'] / max(totals['seconds'], 1e-9), 1),
      # ru_maxrss is in KiB on Linux.
      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      'trainable_weights': trainable,
      'weights': total,
      'trainable_share': trainable / max(total, 1),
    }
    logging.info(
      '%s: %d steps in %.1f s of train steps, %.0f tokens/s, peak RSS %.2f GB, %d of %d weights '
      'trainable (%.2f%%)',
      self.config.task,
      steps,
      summary['train_seconds'],
      summary['tokens_per_second'],
      summary['peak_rss_bytes'] / 1e9,
      trainable,
      total,
      100 * summary['trainable_share'],
    )
    write_json_atomically(os.path.join(self.run_dir, TRAIN_SUMMARY_FILE), summary)

  def _save(self, step, *, finite_loss):
    if finite_loss and _all_finite(self.model.weights):
      self._save_manager.save(checkpoint_number=step)
    else:
      logging.warning(
        '%s step %d: not saving a checkpoint, the loss or the weights are not finite',
        self.config.task,
        step,
      )

  def _nonfinite_error(self, steps, loss_sum):
    last = self._checkpoints_newest_first()
    kept = (
      f'the last checkpoint, step {last[0].rsplit("-", 1)[1]}, is in {self.checkpoint_dir}'
      if last
      else 'no checkpoint was saved'
    )
    lora, scale = self.config.lora, ''
    if lora is not None:
      # A step moves the merged kernels about alpha / rank times as far as at scale 1.
      scale = (
        f' or the LoRA scale train.lora.alpha / rank (now {lora.rank * lora.scale:g} / '
        f'{lora.rank} = {lora.scale:g})'
      )
    return NonFiniteLossError(
      f'{self.config.task}: the loss was not finite ({loss_sum}) for {len(steps)} consecutive '
      f'steps ({steps[0]}-{steps[-1]}); {kept}.\n'
      f'What to do: lower learning_rate (now {self.config.learning_rate}){scale}, set '
      'clip_norm, or check the input for extreme examples; max_nonfinite_steps sets how many '
      'such steps are tolerated.'
    )

  def _step_of(self, step) -> str:
    """'step/total' for the logs, or the step alone while the total is unknown."""
    return f'{step}/{self.train_steps}' if self.train_steps else str(step)

  def _log_train(self, step, window):
    loss_sum, count, correct, tokens = (float(v) for v in window['sums'].numpy())
    dropped = window['nonfinite']
    if dropped and not count:
      # Nothing to average: a loss of 0 here would read as a real one.
      if self.chief:
        logging.warning(
          '%s step %s: no metrics, the loss was not finite at every step since the last log (%s)',
          self.config.task,
          self._step_of(step),
          _steps_text(dropped),
        )
      return
    metrics = self._metrics(loss_sum, count, correct)
    metrics['tokens_per_second'] = tokens / max(window['seconds'], 1e-9)
    lr = optimization.current_learning_rate(self.optimizer)
    metrics['learning_rate'] = float(lr.numpy() if hasattr(lr, 'numpy') else lr)
    if self.chief:
      logging.info(
        '%s step %s: %s%s',
        self.config.task,
        self._step_of(step),
        _format_metrics(metrics),
        f' (over the finite steps; not finite: {_steps_text(dropped)})' if dropped else '',
      )
    with self.train_writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(name, value)
    self.train_writer.flush()

  def _warn_of_other_eval_sizes(self, earlier, start, eval_steps, rows):
    """Warns when the evaluations before the resume at `start` covered other rows than this
    run's (`train.eval_steps` changed in between): the history and the eval curves then join
    scores over different data, and a jump at the resume may be that, not the model."""
    other = [h for h in earlier if h.get('eval_rows', rows) != rows]
    if not other or not self.chief:
      return
    sizes = {(h['eval_rows'], h['eval_steps']): None for h in other}
    logging.warning(
      '%s: this run evaluates %d rows (train.eval_steps %d), the %d evaluation(s) before its '
      'resume at step %d covered %s: %s and the eval curves mix both sizes; set '
      'train.eval_steps back to %s to compare them',
      self.config.task,
      rows,
      eval_steps,
      len(other),
      start,
      ', '.join(f'{r} rows (train.eval_steps {n})' for r, n in sizes),
      EVAL_HISTORY_FILE,
      other[-1]['eval_steps'],
    )

  def _log_eval(self, step, metrics, eval_steps, rows):
    if self.chief:
      logging.info(
        '%s step %s: eval %s',
        self.config.task,
        self._step_of(step),
        _format_metrics(metrics),
      )
    self.history.append({'step': step, 'eval_steps': eval_steps, 'eval_rows': rows, **metrics})
    with self.eval_writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(name, value)
    self.eval_writer.flush()
    if self.chief:
      for folder in (self.run_dir, self.checkpoint_dir):
        write_json_atomically(os.path.join(folder, EVAL_HISTORY_FILE), self.history)


def write_json_atomically(path: str, value) -> None:
  """Writes `value` as JSON to `path` so that a reader sees the old file or the new one whole
  (a crash mid-write leaves a stray temporary file, never a truncated `path`)."""
  tf.io.gfile.makedirs(os.path.dirname(path))
  temporary = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(temporary, 'w') as f:
    json.dump(value, f, indent=1)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def _new_window():
  # A log window: the finite steps' sums (loss, count, correct, tokens), the seconds of all its
  # steps, and the steps whose loss was not finite (left out of the sums).
  return {'sums': tf.zeros([4]), 'seconds': 0.0, 'nonfinite': []}


def _steps_text(steps, shown=5):
  listed = ', '.join(str(s) for s in steps[:shown])
  more = f', ... ({len(steps)} in all)' if len(steps) > shown else ''
  return f'step{"s" if len(steps) > 1 else ""} {listed}{more}'


def _format_metrics(metrics):
  return '  '.join(f'{name} {value:.4g}' for name, value in metrics.items())


def _release_in_background(holder: list) -> None:
  """Drops the train iterator (`holder`'s only item, its last reference) off the caller's
  thread. Deleting a tf.data iterator cancels and joins its background threads (parallel reads,
  maps, the prefetch buffer, autotuning); in demo pipeline runs, the export after training
  sometimes started 13 to 55 s late at this point (logged below when the release is slow).
  Not a daemon thread: the interpreter waits for it at exit. A daemon thread still inside
  TensorFlow when the interpreter finalizes crashes the process (SIGSEGV, or "terminate called
  without an active exception") after its work is done, failing the component or replica."""

  def release():
    started = time.perf_counter()
    holder.clear()
    seconds = time.perf_counter() - started
    if seconds > 1:
      logging.info('released the training input pipeline in %.1f s', seconds)

  threading.Thread(target=release, name='release-train-iterator').start()
