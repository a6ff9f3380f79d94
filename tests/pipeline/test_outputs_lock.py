"""One run at a time writes to an outputs folder: two runs into one folder each ran every
component, both pushed, and each wrote run.log, the summary and the report over the other's."""

import contextlib
import subprocess
import sys
import textwrap

from pipeline import local_runner
from tests.pipeline import tiny_pipeline

HOLDER = textwrap.dedent(
  """
  import contextlib, sys
  from pipeline import local_runner
  with contextlib.ExitStack() as scope:
    assert local_runner._lock_outputs(sys.argv[1], scope) is None
    print('holding', flush=True)
    sys.stdin.readline()
  """
)


def test_a_second_run_into_the_same_outputs_is_refused_and_the_first_ones_log_kept(
  tmp_path, capsys
):
  outputs = tmp_path / 'outputs'
  outputs.mkdir()
  (outputs / 'run.log').write_text('the first run is writing this\n')
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'reviews.csv').write_text('review,sentiment\n"a good film",1\n')
  config = tiny_pipeline.write(
    tmp_path / 'config.yaml',
    tiny_pipeline.classify_config(
      'locked', outputs, tmp_path / 'data', train_steps=2, eval_steps=1
    ),
  )
  holder = subprocess.Popen(
    [sys.executable, '-c', HOLDER, str(outputs)],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline() == 'holding\n'
    assert local_runner.main(['--config', str(config)]) == 2
    error = capsys.readouterr().err
    assert f'another run is writing to {outputs} (pid {holder.pid}, started ' in error
    assert 'set outputs_dir to another folder' in error
    assert (outputs / 'run.log').read_text() == 'the first run is writing this\n'
  finally:
    holder.communicate('\n', timeout=60)
  # The lock ends with its process: the next run takes it.
  with contextlib.ExitStack() as scope:
    assert local_runner._lock_outputs(str(outputs), scope) is None
