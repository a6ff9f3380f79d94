"""The Trainer's training loop against keras-hub's own `compile` + `fit`, side by side.

    ./dev python bench/loop_bench.py [--tasks classify,clm] [--rounds 5] [--steps 8] [--quick]

For each task, both sides train the same architecture on the same batches:
- classify: all-MiniLM-L6-v2 (the demo's checkpoint, `train.preset` of the demo config) on the
  demo's Transform output (its data, split and tokens; the demo pipeline runs once into
  `--outputs`/prep, as bench/finetune_bench.py does). The Trainer's side is its task model
  (`trainer.task.build_task_model`) in `trainer.training.Loop`; the `fit` side is
  `keras_hub.models.BertTextClassifier` on the same checkpoint, compiled with the same AdamW
  and schedule (`trainer.optimization.create_optimizer`) and a from-logits cross-entropy.
- clm: a GPT-2 `small` (4 layers, hidden 256) from random weights on a generated corpus run through
  the project's Transform (tests/trainer/trainer_data.py), in batches of 32 windows of 128 tokens
  (32 is the configs' batch; the bench used 16 until 2026-12-05); `fit` side `keras_hub.models.
  GPT2CausalLM`, labels and weights as sample weights.

Each side is as its users get it: on a CPU the Trainer traces its step with trainer/cpu_kernels.py's
dropout and GELU (its default there), `fit` runs Keras' own kernels.

The batches are the Trainer's real input pipeline (`trainer.inputs.make_dataset`: length-bucketed
and cut to their longest sequence for classify, packed windows for clm), taken once and cached, so
both sides see identical batches and input work is out of the comparison (bench/trainer_bench.py
measures the input path). Each round times `--steps` steps of each of the four runs (Trainer and
`fit`, float32 and mixed_bfloat16) in rotating order, so load from other processes falls on all
alike; the first round is a warm-up (tracing) and is not counted. `fit` is timed from its first
batch's start to its last batch's end (its own set-up is left out).

Prints tokens/second (non-padding tokens) of each side (median of the rounds and their range),
the ratios Trainer / fit per precision and bfloat16 / float32 (each the median of the rounds'
own ratios, which the VM's drift between rounds does not move), and model-FLOPs utilization:
useful FLOPs per second (6 x the weights a token passes through, plus attention) against a
2048^3 matmul measured in the same run (the highest of its measurements before each task and
after the last). Targets
(issue #28): Trainer >= 1.0x fit in both precisions; bfloat16 / float32 >= 1.45x in the Trainer;
utilization >= 50% of the float32 matmul rate. Writes bench/results/loop.json.

On a host that only emulates bfloat16 (trainer/precision.py: a CPU without AVX512_BF16 or AMX)
the bfloat16 runs are left out and their targets print N/A with the reason: there `auto`
trains in float32, and an emulated step says nothing of the loop (`--bfloat16` runs them anyway).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from bench import finetune_bench
from tests.trainer import trainer_data
from tfxlm import contract
from trainer import inputs, models, optimization, task, training
from trainer import precision as precision_lib
from trainer.config import TrainerConfig

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MIXED_BFLOAT16 = contract.MIXED_BFLOAT16
PRECISIONS = (contract.FLOAT32, MIXED_BFLOAT16)
TARGETS = {'min_trainer_over_fit': 1.0, 'min_bf16_over_f32': 1.45, 'min_f32_utilization': 0.5}


def matmul_rate(dtype, size=2048, calls=10):
  """FLOP/s of a `size`^3 matmul in `dtype` (median of `calls`, after a warm-up)."""
  a = tf.random.normal([size, size], dtype=tf.float32)
  a = tf.cast(a, dtype)
  matmul = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x)[:1, :1], tf.float32)))
  matmul(a).numpy()
  times = []
  for _ in range(calls):
    started = time.perf_counter()
    matmul(a).numpy()
    times.append(time.perf_counter() - started)
  return 2 * size**3 / statistics.median(times)


def flops_per_token(backbone, length, task_name):
  """Training FLOPs (forward + backward, 3x forward) per token at sequence length `length`:
  2 per weight a token passes through in each dense layer, the attention's two matmuls, and for
  clm the output projection onto the vocabulary."""
  hidden = backbone.hidden_dim
  per_layer = 4 * hidden * hidden + 2 * hidden * backbone.intermediate_dim
  forward = backbone.num_layers * (2 * per_layer + 4 * length * hidden)
  if task_name == contract.CLM:
    forward += 2 * hidden * backbone.vocabulary_size
  return 3 * forward


class _BatchTimer(keras.callbacks.Callback):
  """Seconds from the first batch's start to the last batch's end of one `fit`."""

  def on_train_batch_begin(self, batch, logs=None):
    if batch == 0:
      self.started = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.ended = time.perf_counter()


def _optimizer(model, config):
  return optimization.create_optimizer(
    model,
    learning_rate=config.learning_rate,
    total_steps=10_000,
    warmup_steps=100,
    weight_decay=config.weight_decay,
    clip_norm=config.clip_norm,
  )


def _fit_model(config, vocabularies):
  """keras-hub's own task model on the same backbone, compiled for `fit`."""
  backbone = models.build_backbone(config, len(vocabularies.tokens))
  if config.task == contract.CLASSIFY:
    model = keras_hub.models.BertTextClassifier(
      backbone=backbone,
      num_classes=len(vocabularies.labels),
      preprocessor=None,
      dropout=config.head_dropout(),
    )
  else:
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
  model.compile(
    optimizer=_optimizer(model, config),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    weighted_metrics=[],
  )
  return model


def _fit_batches(batches, config, segment_ids):
  """The Trainer's (x, {labels, weights}) as keras-hub's (x, labels, sample weights)."""

  def convert(x, y):
    x = dict(x)
    if segment_ids:
      x['segment_ids'] = tf.zeros_like(x[models.TOKEN_IDS])
    return x, y[inputs.LABELS], y[inputs.WEIGHTS]

  return batches.map(convert)


class Side:
  """One of the four runs: its model, optimizer and a `steps`-step timing function."""

  def __init__(self, kind, config, vocabularies, batches, run_dir):
    self.kind, self.config = kind, config
    keras.mixed_precision.set_global_policy(config.precision)
    try:
      if kind == 'trainer':
        model = task.build_task_model(config, vocabularies)
        optimizer = _optimizer(model, config)
        optimizer.build(model.trainable_variables)
        self.loop = training.Loop(tf.distribute.get_strategy(), model, optimizer, config, run_dir)
        self.model = model
      else:
        self.model = _fit_model(config, vocabularies)
        self.fit_batches = _fit_batches(
          batches, config, segment_ids='segment_ids' in self.model.backbone.input
        )
    finally:
      keras.mixed_precision.set_global_policy(contract.FLOAT32)
    self.batches = batches

  def seconds(self, steps):
    """Seconds of `steps` train steps on the first `steps` cached batches."""
    if self.kind == 'trainer':
      iterator = iter(self.batches)
      started = time.perf_counter()
      for _ in range(steps):
        sums = self.loop._train_step(iterator)
      float(sums[0])
      return time.perf_counter() - started
    timer = _BatchTimer()
    self.model.fit(self.fit_batches, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return timer.ended - timer.started


def _classify_setup(args, work_dir):
  from pipeline import config as config_lib

  if args.quick:
    data = trainer_data.transform_data(
      os.path.join(work_dir, 'data'),
      contract.CLASSIFY,
      trainer_data.labeled_texts(400, 1),
      trainer_data.labeled_texts(40, 2),
      32,
    )
    config = TrainerConfig(
      task=contract.CLASSIFY,
      num_layers=2,
      hidden_dim=32,
      num_heads=2,
      intermediate_dim=64,
      seq_len=32,
      per_replica_batch_size=16,
    )
    return config, data['transform_graph'], data['train_files']
  prep = argparse.Namespace(config=args.config, overrides=[])
  transform_graph, examples = finetune_bench._prepare(prep, args.outputs)
  train = config_lib.load_config(args.config, []).train.to_dict()
  return (
    TrainerConfig.from_dict(train, where='train'),
    transform_graph,
    [os.path.join(examples, 'Split-train', '*')],
  )


def _clm_setup(args, work_dir):
  documents = 200 if args.quick else 3000
  data = trainer_data.transform_data(
    os.path.join(work_dir, 'clm'),
    contract.CLM,
    trainer_data.corpus_texts(documents, 1),
    trainer_data.corpus_texts(20, 2),
    32 if args.quick else 128,
  )
  size = (
    {'num_layers': 2, 'hidden_dim': 32, 'num_heads': 2, 'intermediate_dim': 64, 'seq_len': 32}
    if args.quick
    else {'model_size': 'small', 'seq_len': 128}
  )
  # Configured as a pretraining run of 10,000 steps: with `train.fused_update` and
  # `train.jit_compile` unset, the Trainer fuses the update and (on a CPU without AVX-512)
  # compiles the forward and backward pass with XLA, as that run would (the few steps measured
  # here would not).
  config = TrainerConfig(
    task=contract.CLM, per_replica_batch_size=32, dropout=0.1, train_steps=10_000, **size
  )
  return config, data['transform_graph'], data['train_files']


def measure_task(task_name, args, work_dir):
  setup = _classify_setup if task_name == contract.CLASSIFY else _clm_setup
  base_config, transform_graph, train_files = setup(args, work_dir)
  tft_output = tft.TFTransformOutput(transform_graph)
  vocabularies = task.Vocabularies.from_tft_output(tft_output, task_name)
  real = inputs.make_dataset(
    train_files,
    tft_output.transformed_feature_spec(),
    base_config,
    vocab_size=len(vocabularies.tokens),
    special=vocabularies.special,
    batch_size=base_config.per_replica_batch_size,
    training=True,
    seed=base_config.seed,
  )
  batches = real.take(args.steps).cache()
  tokens, lengths = 0.0, []
  for x, _ in batches:  # fills the cache
    tokens += float(tf.reduce_sum(x[models.PADDING_MASK]))
    lengths.append(int(x[models.TOKEN_IDS].shape[1]))
  sides = {}
  for precision in args.precisions:
    config = TrainerConfig.from_dict(
      {**base_config.to_dict(), 'precision': precision}, where='train'
    )
    for kind in ('trainer', 'fit'):
      run_dir = os.path.join(work_dir, task_name, precision, kind)
      sides[kind, precision] = Side(kind, config, vocabularies, batches, run_dir)
  names = list(sides)
  seconds = {name: [] for name in names}
  for round_index in range(args.rounds + 1):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      elapsed = sides[name].seconds(args.steps)
      if round_index:  # round 0 traces and warms up
        seconds[name].append(elapsed)
  trainer = sides['trainer', contract.FLOAT32]
  flops = flops_per_token(trainer.model.backbone, float(np.mean(lengths)), task_name)
  result = {
    'batch': base_config.per_replica_batch_size,
    'mean_length': float(np.mean(lengths)),
    'tokens_per_step': tokens / args.steps,
    'flops_per_token': flops,
    # What the Trainer chose in float32 (`fit` keeps Keras' own `jit_compile='auto'`).
    'trainer_xla': {
      'update': trainer.loop.fused_update,
      'forward_backward': trainer.loop.jit_compile,
      'cpu_kernels': trainer.loop.cpu_kernels,
    },
    'runs': {},
  }
  for (kind, precision), values in seconds.items():
    per_round = [tokens / s for s in values]
    result['runs'][f'{kind} {precision}'] = {
      'tokens_per_second': statistics.median(per_round),
      'spread': [min(per_round), max(per_round)],
      'seconds': values,
    }
  # The ratios, round by round: the four runs of a round follow each other within a minute, so
  # the VM's drift between rounds (a quarter and more here) falls on both sides of a ratio.
  ratios = {}
  for precision in args.precisions:
    ratios[f'trainer / fit {precision}'] = _paired(
      seconds['fit', precision], seconds['trainer', precision]
    )
  if MIXED_BFLOAT16 in args.precisions:
    for kind in ('trainer', 'fit'):
      ratios[f'{kind} bfloat16 / float32'] = _paired(
        seconds[kind, contract.FLOAT32], seconds[kind, MIXED_BFLOAT16]
      )
  result['ratios'] = ratios
  return result


def _paired(slower_seconds, faster_seconds):
  """The speed ratio faster / slower of each round (same tokens: their seconds inverted), its
  median and range."""
  per_round = [s / f for s, f in zip(slower_seconds, faster_seconds)]
  return {'median': statistics.median(per_round), 'spread': [min(per_round), max(per_round)]}


def add_utilization(results, rates):
  """Model-FLOPs utilization of each run against the matmul rate of its precision."""
  for r in results.values():
    for name, run in r['runs'].items():
      run['utilization'] = run['tokens_per_second'] * r['flops_per_token'] / rates[name.split()[1]]


def report(results, rates, load, precisions, hardware):
  print(
    f'\n== Trainer loop vs keras-hub fit, {os.cpu_count()} cores, load average '
    f'{load[0]:.1f} before / {load[1]:.1f} after =='
  )
  print(
    f'{hardware.describe()}; matmul 2048^3 (the highest of its measurements before each task '
    'and after the last): '
    + ', '.join(f'{p} {rate / 1e9:.0f} GFLOP/s' for p, rate in rates.items())
  )
  checks = []
  for task_name, r in results.items():
    print(
      f'\n{task_name}: batch {r["batch"]}, mean length {r["mean_length"]:.1f}, '
      f'{r["tokens_per_step"]:.0f} non-padding tokens a step, '
      f'{r["flops_per_token"] / 1e6:.1f} MFLOP a token'
    )
    xla = r['trainer_xla']
    print(
      'Trainer in float32: update '
      + ('fused by XLA' if xla['update'] else 'plain')
      + ', forward and backward '
      + ('compiled by XLA' if xla['forward_backward'] else "on TensorFlow's kernels")
      + (
        ", dropout and GELU of trainer/cpu_kernels.py (fit: Keras' own)"
        if xla.get('cpu_kernels')
        else ''
      )
      + "; fit: Keras' jit_compile='auto'"
    )
    print(f'{"run":<24} {"tokens/s (median)":>18} {"spread":>17} {"utilization":>12}')
    for name, run in r['runs'].items():
      low, high = run['spread']
      print(
        f'{name:<24} {run["tokens_per_second"]:18,.0f} {low:8,.0f}-{high:<8,.0f} '
        f'{100 * run["utilization"]:11.1f}%'
      )
    ratios = r['ratios']
    shown = lambda q: f'{q["median"]:.3f}x (rounds {q["spread"][0]:.2f}-{q["spread"][1]:.2f})'
    for precision in precisions:
      ratio = ratios[f'trainer / fit {precision}']
      checks.append(
        (
          f'{task_name}: Trainer / fit in {precision} >= {TARGETS["min_trainer_over_fit"]}x: '
          + shown(ratio),
          ratio['median'] >= TARGETS['min_trainer_over_fit'],
        )
      )
    if MIXED_BFLOAT16 in precisions:
      ratio = ratios['trainer bfloat16 / float32']
      checks.append(
        (
          f'{task_name}: Trainer bfloat16 / float32 >= {TARGETS["min_bf16_over_f32"]}x: '
          + shown(ratio)
          + f' (fit: {ratios["fit bfloat16 / float32"]["median"]:.3f}x)',
          ratio['median'] >= TARGETS['min_bf16_over_f32'],
        )
      )
    else:
      checks.append(
        (
          f'{task_name}: Trainer / fit in mixed_bfloat16, Trainer bfloat16 / float32: not '
          f'measured, {hardware.describe()} emulates bfloat16 (--bfloat16 runs it anyway)',
          None,
        )
      )
    utilization = r['runs']['trainer float32']['utilization']
    checks.append(
      (
        f'{task_name}: Trainer float32 utilization >= '
        f'{100 * TARGETS["min_f32_utilization"]:.0f}% of the matmul rate: '
        f'{100 * utilization:.1f}%',
        utilization >= TARGETS['min_f32_utilization'],
      )
    )
  print()
  for text, ok in checks:
    print(f'{"N/A " if ok is None else "PASS" if ok else "FAIL"}  {text}')
  return checks


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--tasks', default=f'{contract.CLASSIFY},{contract.CLM}')
  parser.add_argument('--rounds', type=int, default=5, help='timed rounds (after one warm-up)')
  parser.add_argument('--steps', type=int, default=8, help='train steps of each run per round')
  parser.add_argument('--config', default=os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml'))
  parser.add_argument('--outputs', default='/tmp/finetune_bench', help="the demo's Transform")
  parser.add_argument('--quick', action='store_true', help='tiny models and data: a smoke run')
  parser.add_argument(
    '--bfloat16',
    action='store_true',
    help='run the mixed_bfloat16 sides even where the hardware only emulates bfloat16',
  )
  args = parser.parse_args()
  tasks = args.tasks.split(',')
  unknown = sorted(set(tasks) - {contract.CLASSIFY, contract.CLM})
  if unknown:
    parser.error(f'--tasks: unknown task(s) {unknown}; known: classify, clm')
  if args.quick:
    args.rounds, args.steps = min(args.rounds, 2), min(args.steps, 3)
  args.outputs = os.path.abspath(args.outputs)
  work_dir = tempfile.mkdtemp(prefix='loop_bench_')
  load_before = os.getloadavg()[0]
  hardware = precision_lib.detect(tf.distribute.get_strategy())
  args.precisions = (
    PRECISIONS if args.bfloat16 or hardware.native_bfloat16() else (contract.FLOAT32,)
  )
  dtypes = {contract.FLOAT32: tf.float32, MIXED_BFLOAT16: tf.bfloat16}
  # The matmul rate before each task and after the last, the highest kept: the VM's speed
  # drifts within minutes, and the machine's rate is what it reaches (so the utilization is
  # not flattered by a slow moment).
  measured = {p: [matmul_rate(dtypes[p])] for p in args.precisions}
  results = {}
  for name in tasks:
    results[name] = measure_task(name, args, work_dir)
    for p in args.precisions:
      measured[p].append(matmul_rate(dtypes[p]))
  rates = {p: max(values) for p, values in measured.items()}
  add_utilization(results, rates)
  checks = report(results, rates, (load_before, os.getloadavg()[0]), args.precisions, hardware)
  if args.quick:
    print('(--quick: tiny models, a smoke run; the targets apply to the full run only)')
  if not args.quick:
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    with open(os.path.join(HERE, 'results', 'loop.json'), 'w') as f:
      json.dump(
        {
          'results': results,
          'matmul_flops': rates,
          'targets': TARGETS,
          'checks': {text: ok for text, ok in checks},
          'cpus': os.cpu_count(),
        },
        f,
        indent=2,
      )
  return 0


if __name__ == '__main__':
  sys.exit(main())
