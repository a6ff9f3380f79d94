"""What a fresh process pays before its work: importing the pipeline, and a first Trainer run.

    ./dev python bench/first_run_bench.py [--baseline DIR] [--repeats 5] [--work DIR]

Each measurement is a new Python process, as each `python -m pipeline.local_runner`, `tfx
pipeline create`, Kubeflow pod and Trainer run is; it reports the CPU seconds of the process:
- `import`: importing `pipeline.local_runner` and `pipeline.factory`, what the local runner, the
  `tfx` CLI and the Kubeflow compile import before they build the pipeline;
- `classify`, `clm`: the process of a first Trainer run (`trainer.task.run_fn`) of a tiny model,
  10 steps and its export (classify accumulating 2 micro-batches a step), on Transform outputs
  made once beforehand (tests/trainer/trainer_data.py); also the seconds of `run_fn` alone.
With `--baseline DIR` (another checkout of this repository, e.g. an older commit, whose
environment is the same) each measurement runs there too, the two alternating, and the ratio of
this checkout's median to the baseline's is printed. No target of its own: these costs are part
of issue #28's test-time target (each test that starts such a process pays them) and of every
pipeline run's.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KINDS = ('import', 'classify', 'clm')


def _child(kind: str, data_dir: str) -> None:
  """Runs one measurement in this process (its working directory is the checkout measured)."""
  sys.path[0] = os.getcwd()  # that checkout's modules, not this script's
  if kind == 'import':
    import pipeline.factory  # noqa: F401
    import pipeline.local_runner  # noqa: F401

    print(json.dumps({}))
    return
  from tests.trainer import trainer_data
  from trainer import task

  with open(os.path.join(data_dir, f'{kind}.json')) as f:
    data = json.load(f)
  accum = 2 if kind == 'classify' else 1
  config = trainer_data.tiny_config(
    kind, train_steps=10, eval_every_steps=10, grad_accum_steps=accum
  )
  started = time.process_time()
  task.run_fn(trainer_data.fn_args(data, tempfile.mkdtemp(dir=data_dir), config))
  print(json.dumps({'run_fn_cpu': time.process_time() - started}))


def _prepare(work: str) -> None:
  from tests.trainer import trainer_data

  for kind, texts in (
    ('classify', lambda n, seed: trainer_data.labeled_texts(n, seed)),
    ('clm', lambda n, seed: trainer_data.corpus_texts(n, seed)),
  ):
    done = os.path.join(work, f'{kind}.json')
    if not os.path.exists(done):
      data = trainer_data.transform_data(
        os.path.join(work, kind), kind, texts(300, 1), texts(64, 2), trainer_data.SEQ_LEN
      )
      with open(done, 'w') as f:
        json.dump(data, f)


def _measure(repo: str, kind: str, work: str) -> dict:
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  result = subprocess.run(
    [sys.executable, os.path.abspath(__file__), '--child', kind, '--work', work],
    cwd=repo,
    capture_output=True,
    text=True,
    env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
  )
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if result.returncode:
    raise SystemExit(f'{kind} in {repo} failed:\n{result.stderr[-3000:]}')
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  measured['process_cpu'] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return measured


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--baseline', default='', help='another checkout to compare with')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--work', default='', help='folder for the Transform outputs (default: temp)')
  parser.add_argument('--child', choices=KINDS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  work = args.work or tempfile.mkdtemp(prefix='first-run-')
  if args.child:
    _child(args.child, work)
    return 0
  if args.repeats < 1:
    parser.error(f'--repeats must be at least 1, got {args.repeats}')
  if args.baseline and not os.path.isdir(os.path.join(args.baseline, 'trainer')):
    parser.error(f'--baseline {args.baseline!r} is not a checkout of this repository')
  sys.path.insert(0, REPO)
  _prepare(work)
  repos = {'this': REPO, **({'baseline': os.path.abspath(args.baseline)} if args.baseline else {})}
  runs = {(name, kind): [] for name in repos for kind in KINDS}
  for repeat in range(args.repeats):
    order = list(repos.items()) if repeat % 2 == 0 else list(reversed(repos.items()))
    for kind in KINDS:
      for name, repo in order:
        runs[name, kind].append(_measure(repo, kind, work))
  print(f'CPU seconds of a fresh process, medians of {args.repeats} (range)')
  for kind in KINDS:
    line = []
    for name in repos:
      cpu = [r['process_cpu'] for r in runs[name, kind]]
      text = f'{name} {statistics.median(cpu):6.2f} ({min(cpu):.2f}-{max(cpu):.2f})'
      if kind != 'import':
        run_fn = statistics.median(r['run_fn_cpu'] for r in runs[name, kind])
        text += f', run_fn {run_fn:5.2f}'
      line.append(text)
    if args.baseline:
      this = statistics.median(r['process_cpu'] for r in runs['this', kind])
      base = statistics.median(r['process_cpu'] for r in runs['baseline', kind])
      line.append(f'this / baseline {this / base:.2f}x')
    print(f'{kind:9s} ' + '; '.join(line))
  return 0


if __name__ == '__main__':
  sys.exit(main())
