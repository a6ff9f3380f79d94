"""Fixed cost of the Beam components of a local run, per component, side by side.

    ./dev python bench/beam_overhead_bench.py pool [--size-mb 40]
    ./dev python bench/beam_overhead_bench.py demo [--rows 50] [--before CHECKOUT]

`pool`: a generated text corpus (bench/corpus.py) through a tiny causal-LM
pipeline on Beam worker processes (one per core), once with a fresh set of worker processes per
component (Beam's multi-processing) and once with the run's warm worker pool
(pipeline/beam_pool.py); prints each Beam component's seconds and the ratio.
`demo`: the demo's config (in-process Beam) on its full input and on its first `--rows` rows;
prints each Beam component's seconds on both. The tiny run's time is the component's fixed
part (the target: <= 5 s each). `--before` names another checkout of this repository (say, an
earlier commit's `git archive`): its demo runs too, interleaved with this one's, and the tables
set each component's seconds before and after side by side, from the same machine at the same time.

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
# The demo from scratch: its Vocabulary learns in Beam (make demo's imports a checkpoint's).
DEMO_CONFIG = os.path.join(REPO, 'pipeline', 'configs', 'demo_scratch.yaml')
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

  from components import tfx_internals
  from pipeline import beam_pool, local_runner, run_metadata
  from pipeline import config as config_lib

  # CPU time per executor: on a shared machine it moves far less with the load than wall time.
  cpu = {}

  def timed(node_id, run):
    started = time.process_time()
    try:
      return run()
    finally:
      cpu[node_id] = time.process_time() - started

  config = config_lib.load_config(config_path, overrides)
  with beam_pool.WorkerPool() as warm, tfx_internals.around_each_executor(timed):
    pipeline = local_runner.build(config, warm if pool else None)
    beam_ids = {
      c.id for c in pipeline.components if isinstance(c, base_beam_component.BaseBeamComponent)
    }
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
  store = run_metadata.open_store(config.metadata_path)
  runs = run_metadata.component_runs(store, config.pipeline_name, int(started * 1000) - 1000)
  return {r.name: [r.seconds, cpu.get(r.name, 0.0)] for r in runs if r.name in beam_ids}


def _child(config_path: str, overrides: list, pool: bool, repo: str = REPO) -> dict:
  """`_one_run` in a fresh process (cold imports, as a user's run), with the code of `repo`."""
  command = [sys.executable, os.path.join(repo, 'bench', os.path.basename(__file__)), '_run']
  command += ['--config', config_path]
  for override in overrides:
    command += ['--set', override]
  if pool:
    command.append('--pool')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '3'))
  # Any process the run starts imports the project from `repo` too.
  paths = env.get('PYTHONPATH', '').split(os.pathsep)
  env['PYTHONPATH'] = os.pathsep.join(repo if p == REPO else p for p in paths if p) or repo
  done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=repo)
  lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
  if done.returncode or not lines:
    raise SystemExit(f'the run failed (exit {done.returncode}): {" ".join(command)}')
  return json.loads(lines[-1][len(_RESULT) :])


def _table(title: str, columns: list, results: list, cpu: bool = False) -> None:
  """Prints wall seconds per component for each result (and CPU seconds when `cpu`)."""
  print(f'\n{title}')
  names = list(results[0])
  heads = [f'{c} wall' for c in columns] + ([f'{c} CPU' for c in columns] if cpu else [])
  ratios = f'{"wall ratio":>12}' + (f'{"CPU ratio":>12}' if cpu else '')
  print(f'  {"component":<22}' + ''.join(f'{h:>18}' for h in heads) + ratios)
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
  ratios = [values[1][i] / values[0][i] if values[0][i] else float('nan') for i in (0, 1)]
  shown = ratios if cpu else ratios[:1]
  print(
    f'  {name:<22}'
    + ''.join(f'{c:>16.1f} s' for c in cells)
    + ''.join(f'{r:>12.2f}' for r in shown)
  )


def bench_pool(size_mb: float, workers: int) -> None:
  from bench.corpus import generate_corpus

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


def bench_demo(rows: int, before: str = '') -> None:
  from pipeline import config as config_lib

  config = config_lib.load_config(DEMO_CONFIG)
  source = config_lib.input_base_dir(config)
  repos = [('before', os.path.abspath(before)), ('after', REPO)] if before else [('', REPO)]
  for _, repo in repos:
    if not os.path.isfile(os.path.join(repo, 'pipeline', 'configs', 'demo.yaml')):
      raise SystemExit(f'--before {repo}: not a checkout of this repository (no demo config)')
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
    results = {}
    # Interleaved (full before, full after, tiny before, tiny after): a change in the machine's
    # load falls on both checkouts alike.
    for label, base in (('full', source), ('tiny', tiny)):
      for name, repo in repos:
        outputs = os.path.join(tmp, f'outputs-{label}-{name}')
        overrides = [f'outputs_dir={outputs}', f'data.input_base={base}', *SHORT_TRAINING]
        config_path = os.path.join(repo, 'pipeline', 'configs', 'demo.yaml')
        results[label, name] = _child(config_path, overrides, pool=True, repo=repo)
  if before:
    for label, title in (('tiny', f'{rows} rows (the fixed part)'), ('full', 'full input')):
      _table(
        f'Demo Beam component seconds, {title} (ratio: after / before)',
        ['before', 'after'],
        [results[label, 'before'], results[label, 'after']],
        cpu=True,
      )
  else:
    _table(
      f'Demo Beam component seconds (ratio: {rows} rows / full input)',
      ['full', f'{rows} rows'],
      [results['full', ''], results['tiny', '']],
      cpu=True,
    )
  last = results['tiny', repos[-1][0]]
  over = {k: v[0] for k, v in last.items() if v[0] > FIXED_TARGET_SECONDS}
  print(f'  fixed part over {FIXED_TARGET_SECONDS:.0f} s: {over or "none"}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  # The metavar and a help-less `_run` keep the internal subcommand out of --help (argparse
  # prints help=SUPPRESS of a subcommand as '==SUPPRESS==').
  sub = parser.add_subparsers(dest='what', required=True, metavar='{pool,demo}')
  pool = sub.add_parser('pool', help='fresh worker processes vs the warm pool')
  pool.add_argument('--size-mb', type=float, default=40.0)
  pool.add_argument('--workers', type=int, default=os.cpu_count() or 1)
  demo = sub.add_parser('demo', help='the demo on its full input vs a few rows')
  demo.add_argument('--rows', type=int, default=50)
  demo.add_argument('--before', default='', help='another checkout to time side by side')
  run = sub.add_parser('_run')  # one timed run in a fresh process, for `pool` and `demo`
  run.add_argument('--config', required=True)
  run.add_argument('--set', dest='overrides', action='append', default=[])
  run.add_argument('--pool', action='store_true')
  args = parser.parse_args()
  if args.what == 'pool':
    bench_pool(args.size_mb, args.workers)
  elif args.what == 'demo':
    bench_demo(args.rows, args.before)
  else:
    result = _one_run(args.config, args.overrides, args.pool)
    print(_RESULT + json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
