"""What a user sees: short errors with the log's path, no TensorFlow C++ start-up lines."""

import os
import re
import signal
import subprocess
import sys
import types

import pytest
import yaml

from pipeline import local_runner
from tests.pipeline import tiny_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_CONSOLE_LINES = 15
# TensorFlow's native start-up lines (absl format: `I0000 00:00:1795.. 123 port.cc:153] ...`).
NATIVE_LINE = re.compile(
  r'absl::InitializeLog|oneDNN|cudart_stub|cuInit|cpu_feature_guard|'
  r'^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]',
  re.MULTILINE,
)


def _run(argv, tmp_path, **kwargs):
  # No TF_CPP_MIN_LOG_LEVEL from the test session: the programs must be quiet on their own.
  env = {k: v for k, v in os.environ.items() if k not in ('TF_CPP_MIN_LOG_LEVEL',)}
  env['TMPDIR'] = str(tmp_path)
  return subprocess.run(
    [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, **kwargs
  )


def _pipeline_config(tmp_path, data_dir):
  config = tiny_pipeline.classify_config(
    'badinput',
    tmp_path / 'outputs',
    data_dir,
    per_replica_batch_size=4,
    train_steps=2,
    eval_steps=1,
  )
  return tiny_pipeline.write(tmp_path / 'config.yaml', config)


def test_a_data_error_in_a_beam_worker_is_short_names_the_file_and_the_log(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  bad = data / 'reviews.csv'
  bad.write_text('review,sentiment\n"a good film",1\n"a dull film",0\n"unterminated,1\n')
  config = _pipeline_config(tmp_path, data)
  result = _run(['-m', 'pipeline.local_runner', '--config', str(config)], tmp_path)
  console = result.stdout + result.stderr
  log_path = tmp_path / 'outputs' / 'run.log'
  assert result.returncode == 1, console
  assert len(console.strip().splitlines()) <= MAX_CONSOLE_LINES, console
  assert str(bad) in console and 'line 4' in console
  assert 'TextExampleGen' in console  # where: the component that failed
  assert str(log_path) in console
  assert 'Traceback' not in console
  assert not NATIVE_LINE.search(console), console
  log = log_path.read_text()
  assert 'Traceback (most recent call last)' in log and str(bad) in log
  assert NATIVE_LINE.search(log), 'the native start-up lines should be kept in the log'


def test_a_config_error_is_one_short_message(tmp_path):
  path = tmp_path / 'config.yaml'
  path.write_text(yaml.safe_dump({'pipeline_name': 'x', 'train': {'learning_rat': 0.1}}))
  result = _run(['-m', 'pipeline.local_runner', '--config', str(path)], tmp_path)
  console = result.stdout + result.stderr
  assert result.returncode == 2
  assert 0 < len(console.strip().splitlines()) <= MAX_CONSOLE_LINES, console
  assert 'learning_rat' in console and 'Traceback' not in console


def _tfx(args, tmp_path, config):
  """Runs the `tfx` CLI as the README says, with its home folder and TMPDIR in `tmp_path`."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(TMPDIR=str(tmp_path), HOME=str(tmp_path / 'home'), TFXLM_CONFIG=str(config))
  tfx = os.path.join(os.path.dirname(sys.executable), 'tfx')
  return subprocess.run(
    [tfx, *args, '--engine', 'local'], cwd=REPO, env=env, capture_output=True, text=True
  )


def _bad_csv_config(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  bad = data / 'reviews.csv'
  bad.write_text('review,sentiment\n"a good film",1\n"a dull film",0\n"unterminated,1\n')
  return bad, _pipeline_config(tmp_path, data)


CREATE = ['pipeline', 'create', '--pipeline_path', 'pipeline/local_runner.py']


def _create(tmp_path, config):
  """`tfx pipeline create` as the README says: no native lines on the console, all in a log."""
  create = _tfx(CREATE, tmp_path, config)
  console = create.stdout + create.stderr
  assert create.returncode == 0, console
  assert 'Pipeline "badinput" created successfully' in create.stdout
  assert not NATIVE_LINE.search(console), console
  cli_log = tmp_path / f'tfxlm-tfx-{os.getuid()}.log'
  assert NATIVE_LINE.search(cli_log.read_text()), 'the CLI should keep the native lines in a log'
  return cli_log


def test_tfx_pipeline_create_keeps_the_native_lines_in_a_log(tmp_path):
  _, config = _bad_csv_config(tmp_path)
  _create(tmp_path, config)


# Two `tfx` CLI processes (23 CPU-seconds): slow; tests/pipeline/test_bad_input.py checks the
# refusal in process.
@pytest.mark.slow
def test_tfx_run_create_refuses_a_config_of_another_pipeline_than_the_one_named(tmp_path):
  # Without TFXLM_CONFIG (or with another one), `run create` ran the config's pipeline, not the
  # one named: it printed 'Creating a run for pipeline: badinput', then ran the demo.
  _, config = _bad_csv_config(tmp_path)
  _create(tmp_path, config)
  other = tmp_path / 'other.yaml'
  other.write_text(config.read_text().replace('pipeline_name: badinput', 'pipeline_name: other'))
  run = _tfx(['run', 'create', '--pipeline_name', 'badinput'], tmp_path, other)
  console = run.stdout + run.stderr
  assert run.returncode != 0, console
  assert (
    f"error: tfx asked for pipeline 'badinput', but the config {other} is pipeline 'other'"
    in console
  )
  assert not (tmp_path / 'outputs' / 'root').exists() and 'Traceback' not in console


@pytest.mark.slow
def test_tfx_cli_errors_and_a_failing_runs_short_error_reach_the_console_without_native_lines(
  tmp_path,
):
  bad, config = _bad_csv_config(tmp_path)
  cli_log = _create(tmp_path, config)
  again = _tfx(CREATE, tmp_path, config)  # the CLI refuses, after running the pipeline file
  assert again.returncode != 0
  assert 'Pipeline "badinput" already exists' in again.stderr, again.stdout + again.stderr
  assert not NATIVE_LINE.search(again.stdout + again.stderr), again.stderr

  run = _tfx(['run', 'create', '--pipeline_name', 'badinput'], tmp_path, config)
  console = run.stdout + run.stderr
  run_log = tmp_path / 'outputs' / 'run.log'
  assert run.returncode != 0, console
  assert not NATIVE_LINE.search(console), console
  assert len(console.strip().splitlines()) <= MAX_CONSOLE_LINES + 3, console  # + the CLI's own
  assert str(bad) in console and 'line 4' in console and str(run_log) in console
  assert 'Traceback' not in console
  assert NATIVE_LINE.search(run_log.read_text())
  assert NATIVE_LINE.search(cli_log.read_text())


def test_the_client_help_and_usage_errors_answer_before_importing_tensorflow(tmp_path):
  def imported(result, module):
    # -X importtime lists each module imported on file descriptor 2, which the client points at
    # its log (in TMPDIR) once it gets that far.
    written = result.stderr + ''.join(p.read_text() for p in tmp_path.glob('*.log'))
    return re.search(rf'\| +{module}$', written, re.M) is not None

  result = _run(['-X', 'importtime', '-m', 'serving.client', '--help'], tmp_path)
  assert result.returncode == 0, result.stderr
  assert 'usage:' in result.stdout and '--model_name' in result.stdout
  assert not NATIVE_LINE.search(result.stdout + result.stderr), result.stderr
  assert imported(result, 'argparse') and not imported(result, 'tensorflow')
  wrong = _run(
    ['-X', 'importtime', '-m', 'serving.client', '--grpc', 'h:1', '--text', 'x'], tmp_path
  )
  assert wrong.returncode == 2
  assert 'the following arguments are required: --model_name' in wrong.stderr
  assert imported(wrong, 'argparse') and not imported(wrong, 'tensorflow')


def test_the_server_prints_no_native_start_up_lines(tmp_path):
  (tmp_path / 'models').mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['TMPDIR'] = str(tmp_path)
  server = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'serving',
      '--port=0',
      '--rest_api_port=0',
      '--model_name=m',
      f'--model_base_path={tmp_path / "models"}',
      '--file_system_poll_wait_seconds=0',
    ],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    first = server.stdout.readline()  # after TensorFlow's import and the servers' start
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=60)
  finally:
    server.kill()
    server.wait()
  console = first + out + err
  assert first.startswith('SERVING'), console
  assert not NATIVE_LINE.search(console), console
  native_log = tmp_path / f'tfxlm-serve-{os.getuid()}.log'
  assert str(native_log) in console and NATIVE_LINE.search(native_log.read_text())


def test_the_client_keeps_the_native_lines_in_its_log(tmp_path):
  result = _run(
    [
      '-m',
      'serving.client',
      '--grpc',
      '127.0.0.1:1',
      '--model_name',
      'm',
      '--text',
      'x',
      '--timeout',
      '0.5',
    ],
    tmp_path,
  )
  assert result.returncode != 0
  assert not NATIVE_LINE.search(result.stdout + result.stderr), result.stderr
  assert len((result.stdout + result.stderr).strip().splitlines()) <= MAX_CONSOLE_LINES
  logs = [p for p in tmp_path.iterdir() if p.name.startswith('tfxlm-client-')]
  assert logs and NATIVE_LINE.search(logs[0].read_text())


BEAM_TEXT = """Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in process
  File "/repo/components/example_gen.py", line 165, in _read_csv
    raise DataError(
components.validation.DataError: /data/x.csv, line 4: ragged row

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "sdk_worker.py", line 310, in _execute
components.validation.DataError: /data/x.csv, line 4: ragged row [while running 'Read']
"""


@pytest.mark.parametrize(
  'error, expected',
  [
    (RuntimeError(BEAM_TEXT), 'DataError: /data/x.csv, line 4: ragged row'),
    (ValueError('split eval: no examples'), 'ValueError: split eval: no examples'),
    (KeyError('text'), "KeyError: 'text'"),
    (RuntimeError(''), 'RuntimeError: (no message)'),
  ],
)
def test_short_error_keeps_only_the_cause(error, expected):
  assert local_runner.short_error(error) == expected


def test_short_error_of_an_error_without_a_message_tells_its_cause():
  try:
    try:
      raise OSError('/data/gone.csv; No such file or directory')
    except OSError as e:
      raise KeyError() from e
  except KeyError as e:
    error = e
  assert local_runner.short_error(error) == 'OSError: /data/gone.csv; No such file or directory'


def test_short_error_caps_long_messages():
  message = '\n'.join(f'line {i} ' + 'x' * 1000 for i in range(50))
  text = local_runner.short_error(ValueError(message))
  lines = text.splitlines()
  assert len(lines) == local_runner.MAX_MESSAGE_LINES
  assert all(len(line) <= len('ValueError: ') + local_runner.MAX_LINE_CHARS for line in lines)
  assert lines[-1].strip().startswith('... (43 more lines')


@pytest.mark.parametrize(
  'message, advice',
  [
    ("label 'x' is not in the domain. What to do: normalize the data to NFC", 'Fix it and run'),
    ('split eval: no examples', 'What to do: fix the input or setting named above'),
  ],
)
def test_the_failure_says_what_to_do_once(message, advice):
  config = types.SimpleNamespace(pipeline_name='p', pipeline_root='/out/root')
  text = local_runner.failure_text(config, ValueError(message), 'Transform', '/out/run.log')
  assert text.lower().count('what to do') == 1, text
  assert f'{advice}' in text and 'completed components are reused (cache)' in text


def test_the_console_keeps_the_project_trainers_lines_not_tfxs_trainer_info():
  import logging

  progress = local_runner._ProgressFilter()

  def shown(pathname):
    record = logging.LogRecord('x', logging.INFO, pathname, 1, 'step 10 loss 0.5', None, None)
    return progress.filter(record)

  assert shown(os.path.join(REPO, 'trainer', 'training.py'))
  # TFX's own trainer package logs INFO lines such as "Train on the 'train' split ...".
  tfx_trainer = os.path.join(
    os.path.dirname(REPO), 'site-packages', 'tfx', 'components', 'trainer', 'fn_args_utils.py'
  )
  assert not shown(tfx_trainer)
