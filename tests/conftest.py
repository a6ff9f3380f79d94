"""Test-wide settings: quiet TensorFlow's start-up noise, register markers, and when the suite
runs on several workers (`make test`: pytest-xdist with pytest.ini's `--dist loadfile`), start
the longest files first."""

import gc
import os
import time

import pytest

# Before TensorFlow is imported anywhere: keep its C++ INFO/WARNING lines out of test output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
os.environ.setdefault('ABSL_MIN_LOG_LEVEL', '2')

# The test files of the default suite that take a second or more, longest first (the sums of
# their tests' wall seconds in one idle `make test` with --cpu-times, 2026-12-05; files added
# since, from a run on 2026-12-06 scaled to it). Each file runs whole on one worker (its module
# fixtures are built once) and a worker takes the next file from the front of this list when it
# is nearly out of work: longest first leaves only short files for the end, so both workers
# finish at about the same time. Order only; a file missing here runs all the same, after these.
LONGEST_FIRST = (
  'tests/pipeline/test_demo.py',
  'tests/trainer/test_task.py',
  'tests/trainer/test_training.py',
  'tests/trainer/test_generation.py',
  'tests/components/test_pipeline_run.py',
  'tests/trainer/test_pipeline_trainer.py',
  'tests/trainer/test_tokenizers.py',
  'tests/trainer/test_faults.py',
  'tests/pipeline/test_pipeline_e2e.py',
  'tests/pipeline/test_pipeline_preset.py',
  'tests/serving/test_load_and_hot_swap.py',
  'tests/trainer/test_adapters.py',
  'tests/pipeline/test_console.py',
  'tests/trainer/test_distillation.py',
  'tests/trainer/test_preprocessing.py',
  'tests/pipeline/test_kubeflow_runner.py',
  'tests/pipeline/test_multi_worker.py',
  'tests/components/test_example_gen.py',
  'tests/serving/test_rest_answers.py',
  'tests/pipeline/test_beam_pool.py',
  'tests/trainer/test_quantization.py',
  'tests/trainer/test_pretrained.py',
  'tests/serving/test_admission.py',
  'tests/serving/test_real_exports.py',
  'tests/serving/test_server_cli.py',
  'tests/serving/test_hostile.py',
  'tests/trainer/test_hf_tokenizer.py',
  'tests/components/test_vocabulary.py',
  'tests/trainer/test_export.py',
  'tests/components/test_evaluator.py',
  'tests/serving/test_manager.py',
  'tests/serving/test_fuzz.py',
  'tests/trainer/test_optimization.py',
  'tests/trainer/test_hf_checkpoints.py',
  'tests/serving/test_batching.py',
  'tests/pipeline/test_tfx_api.py',
  'tests/trainer/test_models.py',
  'tests/pipeline/test_demo_data.py',
  'tests/test_collector.py',
  'tests/serving/test_grpc_service.py',
  'tests/serving/test_model_config.py',
  'tests/trainer/test_inputs.py',
  'tests/test_packaging.py',
  'tests/components/test_transform.py',
  'tests/serving/test_rest_api.py',
  'tests/serving/test_bad_requests.py',
  'tests/serving/test_tls.py',
)

# Files whose tests share no module or session fixture and each take minutes: their tests are
# separate units of work, so they can run on both workers at once.
SPLIT_BY_TEST = ('tests/pipeline/test_demo.py',)


def pytest_addoption(parser):
  parser.addoption(
    '--cpu-times',
    metavar='FILE',
    help="append each test phase's CPU seconds (the worker's threads and the children it "
    'reaped), wall seconds and garbage-collection seconds to FILE, tab-separated',
  )


def pytest_configure(config):
  config.addinivalue_line(
    'markers', 'slow: long runs left out of `make test` (run `make test-all`)'
  )
  path = config.getoption('cpu_times', None)
  if path:
    config.pluginmanager.register(_CpuTimes(path), 'cpu_times')


class _CpuTimes:
  """`--cpu-times FILE`: what each setup, call and teardown costs in CPU seconds, which another
  job on the machine inflates far less than the wall seconds of `--durations`. Lines:
  node id, phase, CPU s, wall s, GC s (CPU in Python's garbage collector), the xdist worker,
  the Unix time the phase ended (to see each worker's schedule)."""

  def __init__(self, path):
    self.path = path
    self.gc_seconds = 0.0
    self._gc_start = 0.0
    gc.callbacks.append(self._on_gc)

  def _on_gc(self, phase, info):
    if phase == 'start':
      self._gc_start = time.process_time()
    else:
      self.gc_seconds += time.process_time() - self._gc_start

  @staticmethod
  def _cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system

  def _timed(self, item, phase):
    cpu, wall, in_gc = self._cpu(), time.monotonic(), self.gc_seconds
    try:
      return (yield)
    finally:
      with open(self.path, 'a') as f:
        f.write(
          f'{item.nodeid}\t{phase}\t{self._cpu() - cpu:.2f}\t{time.monotonic() - wall:.2f}'
          f'\t{self.gc_seconds - in_gc:.2f}\t{os.environ.get("PYTEST_XDIST_WORKER", "-")}'
          f'\t{time.time():.1f}\n'
        )

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_setup(self, item):
    return (yield from self._timed(item, 'setup'))

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_call(self, item):
    return (yield from self._timed(item, 'call'))

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_teardown(self, item):
    return (yield from self._timed(item, 'teardown'))


def _rank(item):
  path = item.nodeid.split('::', 1)[0]
  return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
  if hasattr(config, 'workerinput'):  # a pytest-xdist worker: its order is the schedule's
    items.sort(key=_rank)  # stable: each file keeps its own order


def pytest_xdist_make_scheduler(config, log):
  """--dist loadfile, with each test of the SPLIT_BY_TEST files a unit of its own. (Files that
  share session data need not share a worker: `trainer_data.shared_transform_data` builds it
  once for all workers.)"""
  if config.getvalue('dist') != 'loadfile':
    return None
  from xdist.scheduler import LoadFileScheduling

  class Scheduling(LoadFileScheduling):
    def _split_scope(self, nodeid):
      path = super()._split_scope(nodeid)
      return nodeid if path in SPLIT_BY_TEST else path

  return Scheduling(config, log)


@pytest.fixture
def unfrozen_gc():
  """Nothing frozen in the garbage collector, as in a pipeline's or a Trainer's process (this
  suite freezes what collection imported: `pytest_collection_finish`); the suite's freeze is put
  back afterwards."""
  suite_frozen = gc.get_freeze_count()
  gc.unfreeze()
  try:
    yield
  finally:
    if suite_frozen:
      gc.freeze()


def pytest_collection_finish(session):
  """Collection imported TensorFlow, Keras, TFX and Beam: a million-odd objects that live as long
  as the process. Frozen, the garbage collector's full passes (Keras forces one for each
  attribute a layer deletes) no longer walk them."""
  gc.freeze()


def pytest_sessionfinish(session):
  """When the session ends, pytest's unraisable-exception plugin runs five full collections, each
  walking everything the tests left alive (their models, graphs and traces: 0.5 s and more a
  pass per worker). One collection finds every unreachable cycle (a finalizer that raises is
  reported as before); frozen afterwards, the survivors are not walked five times more."""
  gc.collect()
  gc.freeze()
