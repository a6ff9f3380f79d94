"""Runs every benchmark in this folder, one after another, and says which ones failed.

    python bench/run_all.py [--quick]

--quick passes each benchmark its small-input flag (a smoke run, not figures to quote) and
leaves out, by name, the ones that have no small form (run those alone).
"""

import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK_ARGS = {
  'transform_bench.py': ['--sizes', '1,5', '--base-mb', '1', '--top-mb', '5', '--sample-mb', '1'],
  'trainer_bench.py': ['--quick'],
  'optimizer_bench.py': ['--quick'],
  'cpu_kernels_bench.py': ['--quick'],
  'serving_bench.py': ['--quick'],
  'demo_bench.py': ['--set', 'train.train_steps=40', '--set', 'train.eval_steps=4'],
  'generate_bench.py': ['--quick'],
  'shared_transform_bench.py': ['--rows', '500', '--train-steps', '0'],
  'beam_overhead_bench.py': ['pool', '--size-mb', '1'],
  'io_bench.py': ['--size-mb', '2'],
  'loop_bench.py': ['--quick'],
  'first_run_bench.py': ['--repeats', '1'],
}
# No small form: what they measure needs their full training runs.
QUICK_SKIPS = {
  'compression_bench.py': 'trains a teacher and four students for thousands of steps',
  'finetune_bench.py': 'fine-tunes all-MiniLM-L6-v2 once per method for hundreds of steps',
}
# Benchmarks that need arguments on a full run too (a subcommand).
FULL_ARGS = {'beam_overhead_bench.py': ['demo']}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args()
  failed = []
  for script in sorted(glob.glob(os.path.join(HERE, '*_bench.py'))):
    name = os.path.basename(script)
    if args.quick and name in QUICK_SKIPS:
      print(f'\n===== {name}: left out of --quick ({QUICK_SKIPS[name]}) =====', flush=True)
      continue
    extra = QUICK_ARGS.get(name, []) if args.quick else FULL_ARGS.get(name, [])
    print(f'\n===== {name} {" ".join(extra)} =====', flush=True)
    started = time.time()
    # TensorFlow's C++ start-up lines from every Beam worker would bury the figures.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '3'))
    code = subprocess.call([sys.executable, script, *extra], env=env)
    print(f'===== {name}: exit {code} after {time.time() - started:.0f} s =====', flush=True)
    if code:
      failed.append(name)
  if failed:
    print(f'\nfailed: {", ".join(failed)}', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
