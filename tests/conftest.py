"""Test-wide settings: quiet TensorFlow's start-up noise, register markers, and when the suite
runs on several workers (`make test`: pytest-xdist with pytest.ini's `--dist loadfile`), start
the longest files first."""

import os

# Before TensorFlow is imported anywhere: keep its C++ INFO/WARNING lines out of test output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
os.environ.setdefault('ABSL_MIN_LOG_LEVEL', '2')

# The longest test files of the default suite, longest first (pytest --durations on main). Each
# file runs whole on one worker (its module fixtures are built once), and the run ends when the
# last long file does: starting these first lets the many short files fill in behind them.
# Order only; a file missing here runs all the same.
LONGEST_FIRST = (
  'tests/pipeline/test_demo.py',
  'tests/trainer/test_task.py',
  'tests/trainer/test_pipeline_trainer.py',
  'tests/trainer/test_faults.py',
  'tests/pipeline/test_pipeline_e2e.py',
  'tests/pipeline/test_multi_worker.py',
  'tests/pipeline/test_pipeline_preset.py',
  'tests/pipeline/test_kubeflow_runner.py',
  'tests/serving/test_real_exports.py',
  'tests/trainer/test_tokenizers.py',
  'tests/trainer/test_generation.py',
  'tests/trainer/test_training.py',
  'tests/trainer/test_pretrained.py',
  'tests/components/test_pipeline_run.py',
  'tests/trainer/test_preprocessing.py',
  'tests/serving/test_server_cli.py',
)

# Files whose tests share no module or session fixture and each take minutes: their tests are
# separate units of work, so they can run on both workers at once.
SPLIT_BY_TEST = ('tests/pipeline/test_demo.py',)


def pytest_configure(config):
  config.addinivalue_line(
    'markers', 'slow: long runs left out of `make test` (run `make test-all`)'
  )


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
