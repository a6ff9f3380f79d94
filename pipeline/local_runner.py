"""Runs the pipeline on this machine: TFX's LocalDagRunner, ML Metadata in SQLite
(<outputs>/metadata.sqlite), Beam's FnApiRunner (in this process for small inputs, else a
warm worker process per core; pipeline/beam_policy.py).

    python -m pipeline.local_runner [--config pipeline/configs/demo.yaml] [--set KEY=VALUE ...]

The TFX CLI runs this file too; it cannot pass arguments, so the config then comes from the
TFXLM_CONFIG variable (default: the demo), at `run create` as at `pipeline create`; a config of
another pipeline than `--pipeline_name` is refused (tfxlm/tfx_cli.py):

    TFXLM_CONFIG=cfg.yaml tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
    TFXLM_CONFIG=cfg.yaml tfx run create --engine local --pipeline_name <pipeline_name>
"""

import argparse
import contextlib
import glob
import logging
import os
import re
import signal
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from pipeline import beam_policy
from tfxlm import console, schema_file, tfx_cli

# The policy's names, which tests and benches use to run Beam as a local run does.
FN_API_RUNNER = beam_policy.FN_API_RUNNER
SETUP_FILE = beam_policy.SETUP_FILE
IN_PROCESS_MAX_BYTES = beam_policy.IN_PROCESS_MAX_BYTES
# Compressed input counts as this many times its size (text compresses 3-5x with gzip/bz2).
_COMPRESSED_FACTOR = 5
_COMPRESSED = ('.gz', '.bz2')


def input_bytes(config, input_base: Optional[str] = None) -> Optional[int]:
  """Bytes of text the run reads (compressed files scaled up), None if unknown (remote);
  `input_base`: the folder fetched for the run (default: fetched here)."""
  from components import example_gen as example_gen_lib
  from pipeline import config as config_lib

  data = config.data
  if '://' in data.input_base:
    return None
  base = input_base or config_lib.input_base_dir(config)
  pattern = data.file_pattern or example_gen_lib.get_format(data.format).default_pattern
  folders = [os.path.join(glob.escape(base), split) for split in data.input_splits] or [
    glob.escape(base)
  ]
  total = 0
  for folder in folders:
    for path in glob.glob(os.path.join(folder, pattern)):
      if os.path.isfile(path):
        size = os.path.getsize(path)
        total += size * _COMPRESSED_FACTOR if path.endswith(_COMPRESSED) else size
  return total


def beam_args(
  config, num_cpus: Optional[int] = None, input_base: Optional[str] = None
) -> List[str]:
  """Beam arguments of a local run (`pipeline.beam_policy.local`): by input size unless the
  config decides."""
  args = config.beam.args
  workers = config.beam.direct_num_workers
  decided = workers or any(a.startswith(('--runner', '--direct_running_mode')) for a in args)
  size = None if decided else input_bytes(config, input_base)
  return beam_policy.local(args, workers, size, num_cpus)


def in_process_beam_args() -> List[str]:
  """Beam arguments that run every Beam component of a local pipeline inside its process."""
  return beam_policy.in_process()


def build(config, pool=None):
  """The pipeline for `config` with the local paths and Beam arguments; with `pool` (a
  `pipeline.beam_pool.WorkerPool`), Beam worker processes come from that warm pool."""
  from pipeline import config as config_lib
  from pipeline import config_checks, factory
  from pipeline.tfx_api import tfx

  if schema_file.is_uri(config.schema_file):
    # Checked as a local schema is at config load, which reads no bucket (pipeline/config.py).
    config_checks.check_schema_file(config)
  config_checks.check_preset_names(config)  # imports keras-hub, which config load does not
  input_base = config_lib.input_base_dir(config)  # a named data set is fetched here, once
  args = beam_args(config, input_base=input_base)
  os.makedirs(config.resolved_outputs_dir, exist_ok=True)
  return factory.create_pipeline(
    config,
    input_base=input_base,
    pipeline_root=config.pipeline_root,
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
      config.metadata_path
    ),
    beam_pipeline_args=pool.pipeline_args(args) if pool is not None else args,
  )


class _ProgressFilter(logging.Filter):
  """Lets through TFX's component start/finish lines and training progress, so a run shows
  where it is; everything else (errors included: `main` reports those) goes to the log only."""

  _KEEP = ('is running', 'is finished', 'is skipped', 'Cached', 'cached')
  _RUNNING = re.compile(r'^Component (\S+) is running')

  def __init__(self):
    super().__init__()
    self.component = None  # the last component that started: where an error comes from

  def filter(self, record):
    try:
      message = record.getMessage()
    except (TypeError, ValueError):
      return False  # a malformed record: the log file's handler reports it, not the console
    started = self._RUNNING.match(message)
    if started:
      self.component = started.group(1)
    if record.levelno >= logging.ERROR:
      return False
    if f'{os.sep}trainer{os.sep}' in record.pathname and console.is_project_file(record.pathname):
      return True  # training progress (not TFX's own tfx/components/trainer/ lines)
    return message.startswith('Component') and any(k in message for k in self._KEEP)


# A Beam worker's log entry, as Beam's logging service in this process logs it
# (`str(LogEntry)`, after 'Worker: ' in portable runs): its fields name the worker's file.
_BEAM_LOG_ENTRY = 'log_location: "'


def _beam_worker_entry(text: str) -> Tuple[str, str]:
  """(file, message) of a Beam worker's log entry logged as protobuf text; ('', '') if it does
  not read as one."""
  from apache_beam.portability.api import beam_fn_api_pb2
  from google.protobuf import text_format

  entry = beam_fn_api_pb2.LogEntry()
  try:
    text_format.Parse(text.removeprefix('Worker:').strip(), entry, allow_unknown_field=True)
  except text_format.ParseError:
    return '', ''
  return entry.log_location.rpartition(':')[0], entry.message.strip()


class WarningCollector(logging.Handler):
  """Keeps the distinct WARNING (or worse) messages the project's own code logs during a run,
  in order: lost data or a weak setup (skipped documents, a vocabulary far below its size)
  that would otherwise reach only run.log, among thousands of lines of TFX, TensorFlow and Beam.

  A Beam worker process's records (large inputs run on several) reach this process through
  Beam's logging service as one record each, the worker's entry in protobuf text: they are
  kept by the file and message the entry names.

  Attributes:
    messages: the distinct messages, in order.
    by_component: the same by the component that was running (`where()`), None for none.
  """

  def __init__(self, where: Callable[[], Optional[str]] = lambda: None):
    super().__init__(logging.WARNING)
    self.messages: List[str] = []
    self.by_component: Dict[Optional[str], List[str]] = {}
    self._seen = set()  # (component, message): a DoFn may warn once per element
    self._where = where
    self._tfxlm = True  # removed with the run's other handlers

  def emit(self, record):
    path = os.path.abspath(record.pathname or os.sep)
    try:
      message = record.getMessage().strip()
    except (TypeError, ValueError):
      return  # a malformed record: the log file's handler reports it
    if _BEAM_LOG_ENTRY in message and f'{os.sep}apache_beam{os.sep}' in path:
      path, message = _beam_worker_entry(message)
    if not console.is_project_file(path) or not message:
      return
    where = self._where()
    if (None, message) not in self._seen:
      self._seen.add((None, message))
      self.messages.append(message)
    if (where, message) not in self._seen:
      self._seen.add((where, message))
      self.by_component.setdefault(where, []).append(message)


def _quiet_logging(log_path: str) -> _ProgressFilter:
  """TFX logs every step at INFO: the console gets the component start/finish lines and
  training progress; `log_path` gets everything. Returns the console's filter."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.INFO)
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  progress = _ProgressFilter()
  for handler in list(root.handlers):
    if getattr(handler, '_tfxlm', False):
      root.removeHandler(handler)  # ours, from an earlier run in this process
      handler.close()
    elif type(handler) is logging.StreamHandler:  # noqa: E721 - not subclasses (e.g. pytest's)
      handler.addFilter(progress)
  if not any(type(h) is logging.StreamHandler for h in root.handlers):  # noqa: E721
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter('%(message)s'))
    stream.addFilter(progress)
    stream._tfxlm = True
    root.addHandler(stream)
  # Appending: Beam's workers and TensorFlow's C++ code write to the same file (see `main`).
  log_file = logging.FileHandler(log_path, mode='a', encoding='utf-8')
  log_file.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  log_file._tfxlm = True
  root.addHandler(log_file)
  absl_logging.get_absl_handler().addFilter(progress)
  return progress


# The last line of a Python traceback: `package.module.SomeError: message`.
_EXCEPTION_LINE = re.compile(r'^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit)): (.*)$')
_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]")
MAX_MESSAGE_LINES, MAX_LINE_CHARS = 8, 300


def short_error(error: BaseException) -> str:
  """`Type: message` of `error`, without tracebacks, in at most MAX_MESSAGE_LINES lines.

  An error raised in a Beam worker reaches the runner as a RuntimeError whose message is the
  worker's whole traceback (three times over); its last exception line is the real error. An
  error without a message is told by the first error in its chain that has one.
  """
  while not str(error).strip() and (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__  # e.g. TFX's message-less NotFoundError
  name, text = type(error).__name__, str(error).strip()
  if 'Traceback (most recent call last)' in text:
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
      match = _EXCEPTION_LINE.match(lines[i])
      if match:
        name, first = match.groups()
        text = '\n'.join([first, *lines[i + 1 :]])
        break
  lines = [
    line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + '...'
    for line in _BEAM_STEP.sub('', text).strip().splitlines()
    if line.strip()
  ]
  if len(lines) > MAX_MESSAGE_LINES:
    lines = lines[: MAX_MESSAGE_LINES - 1] + [
      f'... ({len(lines) - MAX_MESSAGE_LINES + 1} more lines in the log)'
    ]
  return f'{name}: ' + '\n  '.join(lines or ['(no message)'])


def failure_text(config, error: BaseException, component, log_path: str) -> str:
  """What the console says when a run stops: what, where, what to do, where the details are."""
  where = f' in {component}' if component else ''
  message = short_error(error)
  advice = (  # the error's own advice, when it has some, is the one to follow
    'Fix it and run again'
    if 'what to do' in message.lower()
    else 'What to do: fix the input or setting named above and run again'
  )
  return (
    f'\nPipeline {config.pipeline_name!r} stopped{where}:\n  {message}\n'
    f'{advice}; completed components are reused (cache).\n'
    f'  full log and traceback: {log_path}\n'
    f'  artifacts so far: {config.pipeline_root}'
  )


def _interruption(error: BaseException) -> str:
  """'Ctrl-C' or 'SIGTERM' when `error` is how one ends the run ('' for another exit)."""
  if isinstance(error, KeyboardInterrupt):
    return 'Ctrl-C'
  if isinstance(error, SystemExit) and error.code == 128 + signal.SIGTERM:
    return 'SIGTERM'
  return ''


def interrupted_text(config, how: str, component, log_path: str) -> str:
  """What the console says when the run is interrupted: where, and that a rerun goes on."""
  where = f' in {component}' if component else ''
  return (
    f'\nPipeline {config.pipeline_name!r} interrupted{where} ({how}). Run the same command '
    'again to go on: completed components are reused (cache) and a Trainer resumes from its '
    'last checkpoint.\n'
    f'  full log: {log_path}\n'
    f'  artifacts so far: {config.pipeline_root}'
  )


def _compiling_for_cli() -> bool:
  """True inside `tfx pipeline create` (or update, compile): the CLI runs this file in its own
  process with LocalDagRunner.run patched to read the pipeline's definition; nothing runs."""
  runner = sys.modules.get('tfx.orchestration.local.local_dag_runner')
  return runner is not None and hasattr(runner.LocalDagRunner.run, '__wrapped__')


def main(argv=None, *, route_stderr: bool = False) -> int:
  """Runs the pipeline; returns the exit code.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).
    route_stderr: point file descriptor 2 (TensorFlow's C++ lines, Beam workers' tracebacks)
      at the run's log file; for a process of its own, not when called inside another program.
  """
  # Holds the run's warm Beam worker pool, if it starts one: shut down when the run ends, also
  # on an error, KeyboardInterrupt or SIGTERM.
  with contextlib.ExitStack() as run_scope:
    run_scope.callback(_logging_restorer())
    return _run(argv, route_stderr, run_scope)


RUN_LOCK = '.run.lock'  # in outputs_dir: held by the run writing there


def _lock_outputs(outputs_dir: str, run_scope: contextlib.ExitStack) -> Optional[str]:
  """Takes `outputs_dir` for this run until `run_scope` ends; returns why not if another run
  has it. Two runs into one folder each ran every component, pushed both models, and wrote
  one run.log, summary and report over the other's. The lock is an flock on `RUN_LOCK`: the
  system drops it when its process ends, however it ends."""
  import fcntl

  fd = os.open(os.path.join(outputs_dir, RUN_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.read(fd, 4096).decode('utf-8', errors='replace').strip()
    os.close(fd)
    return (
      f'another run is writing to {outputs_dir} ({holder or "a process of this machine"}): '
      'wait for it to end, or set outputs_dir to another folder'
    )
  run_scope.callback(os.close, fd)
  os.ftruncate(fd, 0)
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())
  os.write(fd, f'pid {os.getpid()}, started {started}\n'.encode())
  return None


def _logging_restorer():
  """A function that puts logging back as it is now: the root logger's level, absl's verbosity,
  no run.log handler and no progress filter. Called in-process (tests, notebooks), a run would
  otherwise leave every later INFO line of TFX and Beam being formatted into its log."""
  from absl import logging as absl_logging

  root = logging.getLogger()
  level, verbosity = root.level, absl_logging.get_verbosity()

  def restore():
    for handler in list(root.handlers):
      if getattr(handler, '_tfxlm', False):
        root.removeHandler(handler)
        handler.close()
      for f in list(handler.filters):
        if isinstance(f, _ProgressFilter):
          handler.removeFilter(f)
    root.setLevel(level)
    absl_logging.set_verbosity(verbosity)

  return restore


def _run(argv, route_stderr: bool, run_scope: contextlib.ExitStack) -> int:
  """`main`, with `run_scope` holding what must end with the run."""
  from pipeline import config as config_lib
  from pipeline import config_checks

  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    epilog='Exit status: 0 the run finished (blessed or not), 1 a component failed, 2 the config '
    'or input was refused before anything ran, 3 see --require-blessed; an interrupted run '
    'exits as Ctrl-C or SIGTERM asks, and running the same command again goes on from there.',
  )
  parser.add_argument('--config', default=None, help=config_lib.CONFIG_HELP)
  parser.add_argument(
    '--set',
    dest='overrides',
    action='append',
    default=[],
    metavar='KEY=VALUE',
    help='override a config value with a YAML value, e.g. train.train_steps=100 or '
    "'data.label_values=[pos, neg]' (repeatable; a relative path is read from the working "
    'folder)',
  )
  parser.add_argument(
    '--no-summary', action='store_true', help='do not print the run summary or write the report'
  )
  parser.add_argument(
    '--require-blessed',
    action='store_true',
    help='exit 3 when the run ends without a blessed model (for CI jobs; a run that is not '
    'blessed is otherwise a success: the pipeline did its job)',
  )
  args = parser.parse_args(argv)
  path = config_lib.config_path(args.config)
  try:
    config = config_lib.load_config(path, args.overrides)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  compiling = _compiling_for_cli()
  # Before anything is written: the run.log of the pipeline the config names is kept.
  mismatch = None if compiling else tfx_cli.mismatch(config.pipeline_name, path)
  if mismatch:
    print(f'error: {mismatch}', file=sys.stderr)
    return 2

  log_path = os.path.join(config.resolved_outputs_dir, 'run.log')
  errors = sys.stderr
  try:
    os.makedirs(config.resolved_outputs_dir, exist_ok=True)
    busy = _lock_outputs(config.resolved_outputs_dir, run_scope)
    if busy:
      print(f'error: {path}: outputs_dir: {busy}', file=sys.stderr)
      return 2
    open(log_path, 'w').close()  # a new log per run; every writer appends
  except OSError as e:
    print(
      f'error: {path}: outputs_dir: cannot write {e.filename or log_path}: {e.strerror or e}; '
      'set outputs_dir to a folder you can write',
      file=sys.stderr,
    )
    return 2
  problem = config_checks.serving_root_problem(config.serving_root)
  if problem:  # found now, not by the Pusher after the whole run
    print(f'error: {path}: {problem}', file=sys.stderr)
    return 2
  if route_stderr:
    # Before TensorFlow is imported: its C++ start-up lines go straight to descriptor 2. In the
    # CLI's process Python's stderr stays on the console: the CLI reports its own errors there.
    errors = console.route_native_stderr(log_path, python_stderr='console' if compiling else 'log')
  progress = _quiet_logging(log_path)
  warnings = WarningCollector(lambda: progress.component)
  logging.getLogger().addHandler(warnings)
  from pipeline import beam_pool, demo_data, report, summary
  from pipeline.tfx_api import tfx

  try:
    pool = run_scope.enter_context(beam_pool.WorkerPool())  # starts only if Beam wants workers
    pipeline = build(config, pool)  # fetches a named data set (pypi:...) on first use
  except config_lib.ConfigError as e:
    message = config_lib.sourced(e, path, args.overrides)
    where = '' if message.startswith(path) else f'{path}: '
    print(f'error: building the pipeline from {where}{message}', file=errors)
    return 2
  except (demo_data.DemoDataError, ValueError, OSError) as e:
    print(f'error: building the pipeline from {path}: {e}', file=errors)
    return 2
  runner = tfx.orchestration.LocalDagRunner()
  if compiling:
    runner.run(pipeline)
    return 0
  print(
    f'Running pipeline {config.pipeline_name!r} from {path}\n'
    f'  data: {config_lib.input_base_dir(config)} ({config.data.format})\n'
    f'  outputs: {config.resolved_outputs_dir}\n  full log: {log_path}',
    flush=True,
  )
  started = time.time()
  try:
    runner.run(pipeline)
  except Exception as e:  # noqa: BLE001 - reported with where to look instead of a traceback
    logging.getLogger(__name__).exception('the run stopped')
    print(failure_text(config, e, progress.component, log_path), file=errors, flush=True)
    return 1
  except (KeyboardInterrupt, SystemExit) as e:
    how = _interruption(e)
    if how:  # Ctrl-C, or SIGTERM (beam_pool makes it unwind): say so, then end as it asked
      logging.getLogger(__name__).warning('the run was interrupted (%s)', how)
      print(interrupted_text(config, how, progress.component, log_path), file=errors, flush=True)
    raise
  run = None
  if not args.no_summary or args.require_blessed:
    try:
      run = summary.collect(config, started, warnings.by_component)
      run.log_path = log_path
      if not args.no_summary:
        report.write_report(config, run)
    except Exception as e:  # noqa: BLE001 - the run succeeded; only its report failed
      logging.getLogger(__name__).exception('the summary failed')
      print(
        f'warning: the run finished, but its summary could not be written: '
        f'{short_error(e)} (details: {log_path})',
        file=errors,
      )
      return 3 if args.require_blessed else 0
  if run is not None and not args.no_summary:
    print(report.text(config, run), flush=True)
  if args.require_blessed and not run.blessed:
    verdict = 'not evaluated' if run.blessed is None else 'not blessed'
    print(
      f'error: --require-blessed: the model was {verdict}'
      + (f' ({"; ".join(run.why)})' if run.why else '')
      + '; nothing was pushed',
      file=errors,
      flush=True,
    )
    return 3
  return 0


def run_program(main_fn: Callable[[], int]) -> None:
  """Runs `main_fn` as this process's program and exits with its code. An interrupted run
  (Ctrl-C, SIGTERM) ends as soon as `main_fn` has unwound, its log flushed: the Trainer's last
  checkpoint and ML Metadata's records are on disk by then, the Beam worker pool is stopped and
  the outputs lock released, and what is left, the interpreter's finalization (in C, then
  garbage-collecting TensorFlow's and Keras's objects), took 20 s after a 4-layer model's
  Trainer and 40-55 s after the demo's on a loaded machine."""
  try:
    code = main_fn()
  except (KeyboardInterrupt, SystemExit) as e:
    how = _interruption(e)
    if not how:
      raise
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(OSError, ValueError):
        stream.flush()
    if how == 'Ctrl-C':
      # Killed by SIGINT, as an unhandled KeyboardInterrupt ends Python: the shell sees it.
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT if how == 'Ctrl-C' else e.code)
  sys.exit(code)


if __name__ == '__main__':
  run_program(lambda: main(route_stderr=True))
