"""The warm Beam worker pool of a local run: serves the run's Beam pipelines on its processes,
reports worker errors as the runner does, and leaves no process behind however the run ends."""

import glob
import importlib.util
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline import beam_pool, local_runner
from pipeline import config as config_lib
from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MULTI = [
  f'--runner={local_runner.FN_API_RUNNER}',
  '--direct_running_mode=multi_processing',
  '--direct_num_workers=2',
]


def _alive(pid):
  """Whether `pid` runs (a zombie counts as gone: it has exited)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _children():
  """Process ids of this process's children."""
  found = set()
  for task in os.listdir(f'/proc/{os.getpid()}/task'):
    try:
      with open(f'/proc/{os.getpid()}/task/{task}/children') as f:
        found.update(int(p) for p in f.read().split())
    except FileNotFoundError:
      pass
  return found


def _warns_as(path):
  """A function whose records name `path` as their file, as a module at `path` would log."""
  source = (
    'def warn(name):\n'
    "  logging.getLogger('absl').warning('%s: skipped 1 empty document (line 2)', name)\n"
    '  return name\n'
  )
  scope = {'__name__': 'pool_warning_probe', 'logging': logging}
  exec(compile(source, path, 'exec'), scope)
  return scope['warn']


def test_pool_serves_pipelines_on_its_processes_and_leaves_none():
  before = _children()
  with beam_pool.WorkerPool(imports=()) as pool:
    args = pool.pipeline_args(MULTI)
    assert args[0] == f'--runner={beam_pool.RUNNER}'
    assert f'--environment_config={pool.address}' in args
    assert pool.pipeline_args(MULTI) == args  # one pool per run: later components share it
    pids = pool.pids
    assert len(pids) == 2 and set(pids) <= _children()
    for _ in range(2):  # two components in a row
      with beam.Pipeline(argv=args) as p:
        ran_in_pool = (
          p
          | beam.Create(range(200))
          | beam.Map(lambda _: os.getpid())
          | 'Pids' >> beam.Distinct()
          | beam.Map(lambda pid, pool_pids: pid in pool_pids, pool_pids=pids)
          | 'Answers' >> beam.Distinct()
        )
        # Functions defined here are pickled by reference: the workers run only lambdas.
        assert_that(ran_in_pool, equal_to([True]))
    # Each pipeline's two workers went to different processes.
    assert sorted(pool.dispatcher.started.values()) == [0, 0, 1, 1]
    # A warning the project's code logs in a pool process reaches this one (the run's summary
    # lists it); a library's stays in the pool's log. The function is pickled by value and
    # claims a file of the project's (the real readers import TensorFlow into the pool: 13
    # CPU-seconds; tests/pipeline/test_run_warnings.py follows the records from there).
    collector = local_runner.WarningCollector(lambda: 'TextExampleGen')
    logging.getLogger().addHandler(collector)
    try:
      with beam.Pipeline(argv=args) as p:
        _ = (
          p
          | beam.Create(['docs.txt'])
          | beam.Map(_warns_as(os.path.join(REPO, 'components', 'read_examples.py')))
          | 'Library' >> beam.Map(_warns_as(os.path.join(REPO, 'site-packages', 'beam.py')))
        )
    finally:
      logging.getLogger().removeHandler(collector)
    assert collector.messages == ['docs.txt: skipped 1 empty document (line 2)']
    with pytest.raises(Exception) as raised:
      with beam.Pipeline(argv=args) as p:
        _ = p | beam.Create(['1', '2', 'row 3 is bad']) | beam.Map(int)
    assert local_runner.short_error(raised.value).startswith(
      "ValueError: invalid literal for int() with base 10: 'row 3 is bad'"
    )
  assert not any(_alive(pid) for pid in pids)
  assert _children() <= before


def test_only_local_worker_processes_use_the_pool():
  with beam_pool.WorkerPool(imports=()) as pool:
    for args in (
      [f'--runner={local_runner.FN_API_RUNNER}', '--direct_running_mode=in_memory'],
      ['--direct_running_mode=multi_processing', '--direct_num_workers=2'],  # no runner named
      ['--runner=DataflowRunner', '--direct_running_mode=multi_processing'],
    ):
      assert pool.pipeline_args(args) == args
    assert pool.pids == [] and pool.address is None


def test_a_pool_process_that_cannot_start_is_a_short_clear_error():
  with beam_pool.WorkerPool(imports=('no_such_module_for_the_pool',)) as pool:
    args = pool.pipeline_args(MULTI[:2] + ['--direct_num_workers=1'])
    with pytest.raises(Exception) as raised:
      with beam.Pipeline(argv=args) as p:
        _ = p | beam.Create([1]) | beam.Map(lambda x: x)
    message = local_runner.short_error(raised.value)
    assert 'did not start' in message and 'no_such_module_for_the_pool' in message, message
    pids = pool.pids
  assert not any(_alive(pid) for pid in pids)


_RUN = textwrap.dedent(
  """
  import sys, time
  from pipeline import beam_pool
  with beam_pool.WorkerPool(imports=()) as pool:
    pool.start(2)
    for process in pool._processes:
      process.address()  # started and serving
    print(*pool.pids, flush=True)
    time.sleep(120)
  """
)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL], ids=['sigterm', 'sigkill'])
def test_a_run_that_is_killed_leaves_no_pool_process(sig):
  run = subprocess.Popen([sys.executable, '-c', _RUN], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    pids = [int(p) for p in run.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    run.send_signal(sig)
    # SIGTERM unwinds the run (the pool shuts down); SIGKILL cannot, so the processes see
    # their stdin close and exit by themselves.
    assert run.wait(30) == (128 + sig if sig == signal.SIGTERM else -sig)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
  finally:
    run.kill()
    run.wait()
    run.stdout.close()


def _records(folder):
  """The tf.Examples in the TFRecord files under `folder`, serialized with their features in
  key order and sorted (map order within a record, file sharding and record order vary between
  runs; the content must not)."""
  import tensorflow as tf

  files = sorted(
    p for p in glob.glob(os.path.join(folder, '**'), recursive=True) if os.path.isfile(p)
  )
  assert files, folder
  return sorted(
    tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
    for path in files
    for r in tf.data.TFRecordDataset(path, compression_type='GZIP' if path.endswith('.gz') else '')
  )


def _data_outputs(tmp_path, name, pool):
  """Runs the pipeline's data components (ExampleGen to Transform) on two worker processes,
  from `pool` or fresh ones; returns what they wrote."""
  from tfx.orchestration import pipeline as pipeline_lib

  from pipeline.tfx_api import tfx

  data = tmp_path / 'data'
  if not data.exists():
    data.mkdir()
    rng = random.Random(0)
    words = 'the a good bad film plot actor never always quite dark light music ending'.split()
    with open(data / 'reviews.csv', 'w') as f:
      f.write('review,sentiment\n')
      for i in range(300):
        f.write(f'"{" ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))}",{i % 2}\n')
  config = config_lib.from_dict(
    {
      'pipeline_name': name,
      'outputs_dir': str(tmp_path / name),
      'data': {
        'format': 'csv',
        'input_base': str(data),
        'text_column': 'review',
        'label_column': 'sentiment',
      },
      'vocabulary': {'size': 60},
      'train': {
        'task': 'classify',
        'model_size': 'tiny',
        'seq_len': 16,
        'train_steps': 2,
        'eval_steps': 1,
      },
      'beam': {'direct_num_workers': 2},
    }
  )
  full = local_runner.build(config, pool)
  beam_args = full.beam_pipeline_args
  assert (f'--runner={beam_pool.RUNNER}' in beam_args) == (pool is not None)
  # The components up to Transform: a partial run of the pipeline.
  tfx.orchestration.LocalDagRunner().run(
    full, run_options=pipeline_lib.RunOptions(to_nodes=[contract.TRANSFORM_ID])
  )
  root = config.pipeline_root
  (vocab,) = glob.glob(os.path.join(root, contract.VOCABULARY_ID, '*', '*', contract.VOCAB_FILE))
  (stats,) = glob.glob(os.path.join(root, contract.STATISTICS_GEN_ID, '*', '*', 'Split-train', '*'))
  return {
    'examples': _records(glob.glob(os.path.join(root, '*ExampleGen', 'examples'))[0]),
    'vocabulary': open(vocab).read(),
    'transformed': _records(os.path.join(root, contract.TRANSFORM_ID, 'transformed_examples')),
    'statistics_written': os.path.getsize(stats) > 0,
  }


@pytest.mark.slow
def test_the_pool_gives_the_same_outputs_as_fresh_worker_processes(tmp_path):
  fresh = _data_outputs(tmp_path, 'fresh', None)
  with beam_pool.WorkerPool() as pool:
    pooled = _data_outputs(tmp_path, 'pooled', pool)
    assert len(pool.dispatcher.started) >= 8  # two workers for each of four Beam components
  assert pooled == fresh
  assert len(fresh['examples']) == 300 and len(fresh['transformed']) > 0


def test_every_module_the_pool_preloads_exists():
  # A renamed module would make every pool process fail to start (a run on worker processes
  # would stop at its first Beam component).
  missing = [name for name in beam_pool.WORKER_IMPORTS if importlib.util.find_spec(name) is None]
  assert not missing
