"""A run interrupted by Ctrl-C or SIGTERM says where it stopped and that a rerun goes on."""

import io
import logging
import os
import signal
import subprocess
import sys

import pytest

from pipeline import local_runner
from pipeline.tfx_api import tfx
from tests.pipeline import tiny_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def config(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  rows = ''.join(f'a {"good" if i % 2 else "dull"} film {i},{i % 2}\n' for i in range(12))
  (data / 'reviews.csv').write_text('review,sentiment\n' + rows)
  return tiny_pipeline.write(
    tmp_path / 'config.yaml',
    tiny_pipeline.classify_config(
      'stopme', tmp_path / 'outputs', data, per_replica_batch_size=4, train_steps=2, eval_steps=1
    ),
  )


@pytest.fixture
def console_handler():
  # The runner's progress filter (which tracks the running component) sits on plain
  # StreamHandlers, as a terminal has; pytest's capture handlers are not.
  handler = logging.StreamHandler(io.StringIO())
  logging.getLogger().addHandler(handler)
  yield handler
  logging.getLogger().removeHandler(handler)


def _interrupting(error):
  def run(self, pipeline):
    del self, pipeline
    logging.getLogger('tfx').info('Component Trainer is running.')
    raise error

  return run


@pytest.mark.parametrize(
  'error, how',
  [(KeyboardInterrupt(), 'Ctrl-C'), (SystemExit(143), 'SIGTERM')],
  ids=['ctrl-c', 'sigterm'],
)
def test_an_interrupted_run_says_where_and_that_a_rerun_goes_on(
  config, console_handler, monkeypatch, capsys, error, how
):
  monkeypatch.setattr(tfx.orchestration.LocalDagRunner, 'run', _interrupting(error))
  with pytest.raises(type(error)) as raised:
    local_runner.main(['--config', str(config)])
  assert raised.value is error  # the exit code stays the one the signal gives
  err = capsys.readouterr().err
  assert f"Pipeline 'stopme' interrupted in Trainer ({how})." in err, err
  assert 'resumes from its last checkpoint' in err and 'full log: ' in err


def test_another_exit_is_not_called_an_interruption(config, console_handler, monkeypatch, capsys):
  monkeypatch.setattr(tfx.orchestration.LocalDagRunner, 'run', _interrupting(SystemExit(3)))
  with pytest.raises(SystemExit):
    local_runner.main(['--config', str(config)])
  assert 'interrupted' not in capsys.readouterr().err


class _Exited(Exception):
  pass


def test_an_interrupted_program_exits_at_once_with_the_signals_code(monkeypatch):
  codes = []

  def exit_now(code):
    codes.append(code)
    raise _Exited  # os._exit would end the test process: stands in for it

  monkeypatch.setattr(local_runner.os, '_exit', exit_now)

  def interrupted():
    raise SystemExit(143)

  with pytest.raises(_Exited):
    local_runner.run_program(interrupted)
  assert codes == [143]


@pytest.mark.parametrize('code', [0, 2])
def test_another_program_end_exits_as_python_does(monkeypatch, code):
  monkeypatch.setattr(local_runner.os, '_exit', lambda code: pytest.fail('os._exit called'))
  with pytest.raises(SystemExit) as raised:
    local_runner.run_program(lambda: code)
  assert raised.value.code == code

  def failed():
    raise SystemExit(3)

  with pytest.raises(SystemExit) as raised:
    local_runner.run_program(failed)
  assert raised.value.code == 3


@pytest.mark.parametrize(
  'raised, returncode', [('KeyboardInterrupt', -signal.SIGINT), ('SystemExit(143)', 143)]
)
def test_an_interrupted_program_ends_as_the_signal_ends_python(raised, returncode):
  program = (
    'from pipeline import local_runner\n'
    'def interrupted():\n'
    f'  raise {raised}\n'
    'local_runner.run_program(interrupted)\n'
  )
  result = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True)
  assert result.returncode == returncode, result.stderr[-2000:]
