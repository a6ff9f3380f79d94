"""A run interrupted by Ctrl-C or SIGTERM says where it stopped and that a rerun goes on."""

import io
import logging

import pytest

from pipeline import local_runner
from pipeline.tfx_api import tfx
from tests.pipeline import tiny_pipeline


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
