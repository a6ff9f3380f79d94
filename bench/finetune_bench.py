"""Full fine-tuning against LoRA against frozen layers, on the demo's data and split, in one run.

    ./dev python bench/finetune_bench.py [--config pipeline/configs/demo.yaml] [--set KEY=VALUE ...]
        [--outputs DIR] [--only full,lora,lora-dropout,lora-top4,lora-top3,lora-all,frozen] [--rounds N]

1. Runs the demo pipeline (`pipeline.local_runner`, the config's data, vocabulary and Transform)
   once into `--outputs`/prep with a 2-step Trainer, only to get the demo's Transform output: the
   same train / eval split and tokens the demo trains on. A second bench run into the same folder
   finds it cached.
2. Runs the Trainer's `run_fn` (trainer/task.py) on that output once per method, each in a fresh
   process so its peak memory is its own: the config's `train` section as it is (full
   fine-tuning), then with the `lora` and `freeze` settings of `METHODS` (the recipes README
   "Efficient fine-tuning" documents; `lora` is the recipe the targets judge). Every run evaluates
   once, at its end, on the whole eval split. With `--rounds N` every method runs N times, the
   methods in a rotated order each round (so none always runs first), round r with the config's
   seed + r (another shuffle, dropout and head initialization: a fair spread of accuracy).
3. Prints, side by side: eval accuracy, Trainer time (the whole `run_fn`: load, train, evaluate,
   export), train-step time, tokens/s, peak resident memory, trainable share (medians over the
   rounds, with their range); then the targets with PASS / FAIL on the medians of the rounds'
   paired figures: LoRA within 0.01 of full fine-tuning's accuracy, in at most 0.6x its Trainer
   time, with at most 2% of the weights trainable. Writes bench/results/finetune.json.

On a shared machine timings are inflated: the load average is printed; compare within one run.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from tfxlm import contract

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TARGETS = {'max_accuracy_gap': 0.01, 'max_time_ratio': 0.6, 'max_trainable_share': 0.02}

# What each method changes in the config's `train` section (full fine-tuning: nothing). The
# measurements that chose them are in README "Efficient fine-tuning".
_LORA = {
  # Keras gives an EinsumDense kernel (hidden, heads, head_dim) an A of (hidden, heads, rank):
  # rank 8 on query and value of all six layers is 1.96% of all-MiniLM-L6-v2's weights.
  'lora': {'rank': 8, 'alpha': 16.0, 'target_layers': ['query', 'value']},
  'learning_rate': 1.5e-3,
  'warmup_ratio': 0.06,
  'weight_decay': 0.01,
}
METHODS = {
  'full': {},
  # The recipe: rank 8 in the top four of six layers (the lowest two frozen, their adapters at
  # zero), so the backward pass stops at layer 2; a larger step, 0.9x the steps; no dropout
  # (its random masks were a tenth of a LoRA step's op time).
  'lora': {
    **_LORA,
    'freeze': {'layers': 2},
    'learning_rate': 2e-3,
    'train_steps': 432,
    'dropout': 0.0,
  },
  # The same with the checkpoint's own dropout.
  'lora-dropout': {**_LORA, 'freeze': {'layers': 2}, 'learning_rate': 2e-3, 'train_steps': 432},
  # The same at the demo's 480 steps and 1.5e-3.
  'lora-top4': {**_LORA, 'freeze': {'layers': 2}},
  # Rank 16 in the top three layers (again 1.96% of the weights): faster, less accurate.
  'lora-top3': {
    **_LORA,
    'lora': {**_LORA['lora'], 'rank': 16, 'alpha': 32.0},
    'freeze': {'layers': 3},
  },
  # Adapters in every layer: the backward pass runs down to the first layer.
  'lora-all': _LORA,
  'frozen': {'freeze': {'embeddings': True, 'layers': 3}, 'learning_rate': 1e-4},
}


def _prepare(args, outputs):
  """Runs the demo pipeline with a 2-step Trainer; returns (transform graph, examples) dirs."""
  prep = os.path.join(outputs, 'prep')
  command = [
    sys.executable,
    '-m',
    'pipeline.local_runner',
    '--config',
    args.config,
    '--set',
    f'outputs_dir={prep}',
    '--no-summary',
  ]
  for override in [*args.overrides, *_CHEAP_TRAINER]:
    command += ['--set', override]
  os.makedirs(outputs, exist_ok=True)
  log = os.path.join(outputs, 'prep.log')
  print(f'demo pipeline up to Transform (log: {log}) ...', flush=True)
  with open(log, 'w') as f:
    code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
  if code:
    raise SystemExit(f'error: the demo pipeline failed with exit code {code}; see {log}')
  root = os.path.join(prep, 'root', contract.TRANSFORM_ID)
  newest = lambda kind: max(
    glob.glob(os.path.join(root, kind, '*')), key=lambda p: int(os.path.basename(p))
  )
  return newest('transform_graph'), newest('transformed_examples')


# The prep run's Trainer: 2 steps, only so that the pipeline completes.
_CHEAP_TRAINER = (
  'train.train_steps=2',
  'train.eval_steps=1',
  'train.eval_every_steps=2',
  'train.checkpoint_every_steps=2',
  'train.warmup_steps=1',
)


def _train_config(args, method, round_index=0):
  from pipeline import config as config_lib
  from trainer.config import TrainerConfig

  train = config_lib.load_config(args.config, args.overrides).train.to_dict()
  train.update(METHODS[method])
  train['seed'] = train['seed'] + round_index
  # One evaluation, at the end, in every run: the same work for each method.
  train['eval_every_steps'] = train['train_steps']
  return TrainerConfig.from_dict(train, where='train').to_dict()


def _child(spec_path):
  """Runs one Trainer (in its own process) and writes its figures next to `spec_path`."""
  from absl import logging
  from tfx.components.trainer import fn_args_utils

  from trainer import task, training

  logging.set_verbosity(logging.INFO)  # the Trainer's progress lines, in the run's log
  with open(spec_path) as f:
    spec = json.load(f)
  run = spec['run_dir']
  examples = spec['examples']
  args = fn_args_utils.FnArgs(
    working_dir=os.path.join(run, 'working'),
    train_files=[os.path.join(examples, 'Split-train', '*')],
    eval_files=[os.path.join(examples, 'Split-eval', '*')],
    transform_graph_path=spec['transform_graph'],
    transform_output=spec['transform_graph'],
    serving_model_dir=os.path.join(run, 'serving'),
    model_run_dir=os.path.join(run, 'model_run'),
    base_model=None,
    custom_config={'trainer': spec['config']},
  )
  started = time.perf_counter()
  history = task.train_and_export(task.config_from_fn_args(args), args)
  seconds = time.perf_counter() - started
  with open(os.path.join(args.model_run_dir, training.TRAIN_SUMMARY_FILE)) as f:
    summary = json.load(f)
  lora_dir = os.path.join(args.serving_model_dir, 'assets.extra', 'lora')
  adapter_bytes = (
    sum(os.path.getsize(p) for p in glob.glob(os.path.join(lora_dir, '*')))
    if os.path.isdir(lora_dir)
    else None
  )
  result = {
    'accuracy': history[-1]['accuracy'],
    'trainer_seconds': round(seconds, 1),
    'adapter_bytes': adapter_bytes,
    **summary,
  }
  with open(os.path.join(run, 'result.json'), 'w') as f:
    json.dump(result, f, indent=2)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml'))
  parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--outputs', default='/tmp/finetune_bench')
  parser.add_argument('--only', default=','.join(METHODS), help='methods to run, comma-separated')
  parser.add_argument(
    '--rounds', type=int, default=1, help='runs of every method, rotated, seed + round index'
  )
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args.child)
    return 0

  methods = args.only.split(',')
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    parser.error(f'--only: unknown method(s) {unknown}; known: {", ".join(METHODS)}')
  if args.rounds < 1:
    parser.error(f'--rounds: {args.rounds}; give 1 or more')
  outputs = os.path.abspath(args.outputs)
  os.makedirs(outputs, exist_ok=True)
  transform_graph, examples = _prepare(args, outputs)
  load_before = os.getloadavg()[0]
  results = {method: [] for method in methods}
  for round_index in range(args.rounds):
    shift = round_index % len(methods)
    for method in methods[shift:] + methods[:shift]:
      name = method if args.rounds == 1 else f'{method}.{round_index}'
      result = _run(args, method, round_index, name, outputs, transform_graph, examples)
      if result is None:
        return 1
      results[method].append(result)
  load_after = os.getloadavg()[0]
  report(results, load_before, load_after)
  return 0


def _run(args, method, round_index, name, outputs, transform_graph, examples):
  """One method's Trainer in its own process; returns its figures, or None if it failed."""
  run = os.path.join(outputs, name)
  subprocess.call(['rm', '-rf', run])
  os.makedirs(run)
  spec = {
    'run_dir': run,
    'examples': examples,
    'transform_graph': transform_graph,
    'config': _train_config(args, method, round_index),
  }
  spec_path = os.path.join(run, 'spec.json')
  with open(spec_path, 'w') as f:
    json.dump(spec, f, indent=2)
  log = os.path.join(run, 'trainer.log')
  print(f'{name}: Trainer (log: {log}) ...', flush=True)
  with open(log, 'w') as f:
    code = subprocess.call(
      [sys.executable, os.path.abspath(__file__), '--child', spec_path],
      stdout=f,
      stderr=subprocess.STDOUT,
      cwd=REPO,
    )
  if code:
    print(f'error: {name} failed with exit code {code}; see {log}', file=sys.stderr)
    return None
  with open(os.path.join(run, 'result.json')) as f:
    result = json.load(f)
  result['seed'] = spec['config']['seed']
  return result


def _median(values):
  values = sorted(values)
  middle = len(values) // 2
  return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _spread(values, form, unit=''):
  """'median (low to high)' of `values`, each formatted with `form` and followed by `unit`;
  just the value for one."""
  text = lambda value: format(value, form) + unit
  if len(values) == 1:
    return text(values[0])
  return f'{text(_median(values))} ({text(min(values))} to {text(max(values))})'


def report(results, load_before, load_after):
  """Prints the table and the targets; `results` maps each method to its rounds' figures."""
  rounds = max(len(runs) for runs in results.values())
  print(
    f'\n== fine-tuning methods on the demo data, {os.cpu_count()} cores, {rounds} round(s), '
    f'load average {load_before:.1f} before / {load_after:.1f} after =='
  )
  print(
    'method: accuracy | Trainer s | train-step s | tokens/s | peak GB | trainable'
    + (' (medians of the rounds, their range in brackets)' if rounds > 1 else '')
  )
  for name, runs in results.items():
    column = lambda key, scale=1.0, runs=runs: [r[key] * scale for r in runs]
    first = runs[0]
    print(
      f'{name:<10} {_spread(column("accuracy"), ".4f")} | {_spread(column("trainer_seconds"), ".1f")}'
      f' | {_spread(column("train_seconds"), ".1f")} | {_spread(column("tokens_per_second"), ".0f")}'
      f' | {_spread(column("peak_rss_bytes", 1e-9), ".2f")}'
      f' | {first["trainable_weights"]:,d} ({100 * first["trainable_share"]:.2f}%)'
    )
  checks = []
  full, lora = results.get('full'), results.get('lora')
  if full and lora:
    pairs = list(zip(full, lora))  # round by round: the same seed and (nearly) the same load
    gaps = [f['accuracy'] - lo['accuracy'] for f, lo in pairs]
    ratios = [lo['trainer_seconds'] / f['trainer_seconds'] for f, lo in pairs]
    step_ratios = [lo['train_seconds'] / f['train_seconds'] for f, lo in pairs]
    gap, ratio = _median(gaps), _median(ratios)
    share = lora[0]['trainable_share']
    checks = [
      (
        f'LoRA accuracy within {TARGETS["max_accuracy_gap"]} of full: gap {_spread(gaps, "+.4f")}',
        gap <= TARGETS['max_accuracy_gap'],
      ),
      (
        f'LoRA Trainer time <= {TARGETS["max_time_ratio"]}x full: {_spread(ratios, ".3f", "x")} '
        f'(train steps only: {_spread(step_ratios, ".3f", "x")})',
        ratio <= TARGETS['max_time_ratio'],
      ),
      (
        f'LoRA trainable share <= {100 * TARGETS["max_trainable_share"]:.0f}%: {100 * share:.2f}%',
        share <= TARGETS['max_trainable_share'],
      ),
    ]
    if lora[0].get('adapter_bytes'):
      print(f'LoRA adapter written beside the export: {lora[0]["adapter_bytes"] / 1e6:.2f} MB')
  for text, ok in checks:
    print(f'{"PASS" if ok else "FAIL"}  {text}')
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  with open(os.path.join(HERE, 'results', 'finetune.json'), 'w') as f:
    json.dump(
      {
        'results': results,
        'targets': TARGETS,
        'checks': {text: ok for text, ok in checks},
        'load_average_1min': [round(load_before, 1), round(load_after, 1)],
        'cpus': os.cpu_count(),
      },
      f,
      indent=2,
    )


if __name__ == '__main__':
  sys.exit(main())
