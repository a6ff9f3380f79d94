"""Fixed cost of the Beam components of a local run, per component, side by side.

    ./dev python bench/beam_overhead_bench.py pool [--size-mb 40]
    ./dev python bench/beam_overhead_bench.py demo [--rows 50]

`pool`: a generated text corpus (bench/transform_bench.py's generator) through a tiny causal-LM
pipeline on Beam worker processes (one per core), once with a fresh set of worker processes per
component (Beam's multi-processing) and once with the run's warm worker pool
(pipeline/beam_pool.py); prints each Beam component's seconds and the ratio.
`demo`: the demo's config (in-process Beam) on its full input and on its first `--rows` rows;
prints each Beam component's seconds on both. The tiny run's time is the component's fixed
part (the target: <= 5 s each).

Both run each pipeline in a fresh process, training only a few steps (the Trainer is not
measured). On a shared machine the seconds are inflated; compare the columns, not the figures.
"""

import argparse
import bz2
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
DEMO_CONFIG = os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml')
FIXED_TARGET_SECONDS = 5.0
# Only the Beam components are timed: training just has to produce a model for the Evaluator.
SHORT_TRAINING = [
  'train.train_steps=4',
  'train.eval_steps=1',
  'train.eval_every_steps=4',
  'train.checkpoint_every_steps=4',
  'train.log_every_steps=2',
  'train.warmup_steps=1',
]
_RESULT = 'RESULT '


def _one_run(config_path: str, overrides: list, pool: bool) -> dict:
  """Runs the pipeline here; returns {component: [wall seconds, CPU seconds of this process]}
  for its Beam components (the CPU figure covers in-process Beam only, not worker processes)."""
  from tfx import v1 as tfx
  from tfx.dsl.components.base import base_beam_component
  from tfx.orchestration.portable import launcher

  from pipeline import beam_pool, local_runner, summary
  from pipeline import config as config_lib

  # CPU time per executor: on a shared machine it moves far less with the load than wall time.
  cpu = {}
  run_executor = launcher.Launcher._run_executor

  def timed(self, *args, **kwargs):
    started = time.process_time()
    try:
      return run_executor(self, *args, **kwargs)
    finally:
      cpu[self._pipeline_node.node_info.id] = time.process_time() - started

  launcher.Launcher._run_executor = timed
  config = config_lib.load_config(config_path, overrides)
  with beam_pool.WorkerPool() as warm:
    pipeline = local_runner.build(config, warm if pool else None)
    beam_ids = {
      c.id for c in pipeline.components if isinstance(c, base_beam_component.BaseBeamComponent)
    }
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
  runs = summary.collect(config, started).components
  return {r.name: [r.seconds, cpu.get(r.name, 0.0)] for r in runs if r.name in beam_ids}


def _child(config_path: str, overrides: list, pool: bool) -> dict:
  """`_one_run` in a fresh process (cold imports, as a user's run)."""
  command = [sys.executable, __file__, '_run', '--config', config_path]
  for override in overrides:
    command += ['--set', override]
  if pool:
    command.append('--pool')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '3'))
  done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
  lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
  if done.returncode or not lines:
    raise SystemExit(f'the run failed (exit {done.returncode}): {" ".join(command)}')
  return json.loads(lines[-1][len(_RESULT) :])


def _table(title: str, columns: list, results: list, cpu: bool = False) -> None:
  """Prints wall seconds per component for each result (and CPU seconds when `cpu`)."""
  print(f'\n{title}')
  names = list(results[0])
  heads = [f'{c} wall' for c in columns] + ([f'{c} CPU' for c in columns] if cpu else [])
  print(f'  {"component":<22}' + ''.join(f'{h:>18}' for h in heads) + f'{"wall ratio":>12}')
  totals = [[0.0, 0.0] for _ in results]
  for name in names:
    values = [r.get(name, [float('nan')] * 2) for r in results]
    for total, value in zip(totals, values):
      total[0], total[1] = total[0] + value[0], total[1] + value[1]
    _row(name, values, cpu)
  _row('all Beam components', totals, cpu)
  print(f'  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')


def _row(name: str, values: list, cpu: bool) -> None:
  cells = [v[0] for v in values] + ([v[1] for v in values] if cpu else [])
  ratio = values[1][0] / values[0][0] if values[0][0] else float('nan')
  print(f'  {name:<22}' + ''.join(f'{c:>16.1f} s' for c in cells) + f'{ratio:>12.2f}')


def bench_pool(size_mb: float, workers: int) -> None:
  from transform_bench import generate_corpus

  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'data')
    size = generate_corpus(data, size_mb)
    config = {
      'pipeline_name': 'beam-pool-bench',
      'outputs_dir': os.path.join(tmp, 'outputs'),
      'data': {'format': 'text', 'input_base': data, 'text_mode': 'line', 'label_column': None},
      'vocabulary': {'size': 2000},
      'train': {'task': 'clm', 'model_size': 'tiny', 'seq_len': 32, 'per_replica_batch_size': 8},
      'evaluation': {'max_perplexity': 1e9, 'max_perplexity_rise': 1e9},
      'serving': {'model_name': 'bench'},
      'beam': {'direct_num_workers': workers},
    }
    path = os.path.join(tmp, 'config.yaml')
    with open(path, 'w') as f:
      json.dump(config, f)  # JSON is YAML
    print(f'{size / 1e6:.1f} MB of text, {workers} Beam worker processes')
    results = []
    for pool in (False, True):
      outputs = os.path.join(tmp, f'outputs-{int(pool)}')
      results.append(_child(path, [f'outputs_dir={outputs}', *SHORT_TRAINING], pool))
  _table(
    'Beam component seconds (ratio: pool / fresh processes)',
    ['fresh', 'pool'],
    results,
  )


def bench_demo(rows: int) -> None:
  from pipeline import config as config_lib

  config = config_lib.load_config(DEMO_CONFIG)
  source = config_lib.input_base_dir(config)
  with tempfile.TemporaryDirectory() as tmp:
    tiny = os.path.join(tmp, 'tiny')
    os.makedirs(tiny)
    for name in sorted(os.listdir(source)):
      # Same file name and compression as the demo's, so the same file pattern reads it.
      opener = bz2.open if name.endswith('.bz2') else open
      with opener(os.path.join(source, name), 'rt', newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        header = next(reader)
        label = header.index(config.data.label_column)
        kept = [r for r in reader if r[label] in config.data.label_values]
      with opener(os.path.join(tiny, name), 'wt', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(kept[:rows])
    results = []
    for label, base in (('full', source), ('tiny', tiny)):
      outputs = os.path.join(tmp, f'outputs-{label}')
      overrides = [f'outputs_dir={outputs}', f'data.input_base={base}', *SHORT_TRAINING]
      results.append(_child(DEMO_CONFIG, overrides, pool=True))
  _table(
    f'Demo Beam component seconds (ratio: {rows} rows / full input)',
    ['full', f'{rows} rows'],
    results,
    cpu=True,
  )
  over = {k: v[0] for k, v in results[1].items() if v[0] > FIXED_TARGET_SECONDS}
  print(f'  fixed part over {FIXED_TARGET_SECONDS:.0f} s: {over or "none"}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='what', required=True)
  pool = sub.add_parser('pool', help='fresh worker processes vs the warm pool')
  pool.add_argument('--size-mb', type=float, default=40.0)
  pool.add_argument('--workers', type=int, default=os.cpu_count() or 1)
  demo = sub.add_parser('demo', help='the demo on its full input vs a few rows')
  demo.add_argument('--rows', type=int, default=50)
  run = sub.add_parser('_run', help=argparse.SUPPRESS)
  run.add_argument('--config', required=True)
  run.add_argument('--set', dest='overrides', action='append', default=[])
  run.add_argument('--pool', action='store_true')
  args = parser.parse_args()
  if args.what == 'pool':
    bench_pool(args.size_mb, args.workers)
  elif args.what == 'demo':
    bench_demo(args.rows)
  else:
    result = _one_run(args.config, args.overrides, args.pool)
    print(_RESULT + json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
