"""Keeps TensorFlow's native start-up lines off the console (TensorFlow-free).

TensorFlow 2.21 logs its C++ start-up lines (`WARNING: All log messages before
absl::InitializeLog()`, the oneDNN notice, `cudart_stub`, the CPU feature guard, a `cuInit`
failure) through absl straight to file descriptor 2, before and regardless of
TF_CPP_MIN_LOG_LEVEL: no environment variable hides them. So an entry point, before it imports
TensorFlow, points descriptor 2 at a log file and keeps Python's `sys.stderr` on the console.
Child processes (Beam's SDK workers) inherit descriptor 2, so their output lands in the log too.
"""

import importlib
import io
import os
import sys
import tempfile
from typing import Sequence, TextIO

_routed: dict = {}
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's own packages: a run's summary lists their warnings (library warnings stay in
# the log).
_PROJECT_PACKAGES = ('components', 'trainer', 'pipeline', 'tfxlm', 'serving')


def is_project_file(path: str) -> bool:
  """Whether `path` (a log record's file) is in one of the project's own packages."""
  inside = os.path.relpath(os.path.abspath(path or os.sep), _PROJECT).split(os.sep)[0]
  return inside in _PROJECT_PACKAGES


def default_log_path(program: str) -> str:
  """Where `program`'s native log goes when it has no log folder of its own."""
  return os.path.join(tempfile.gettempdir(), f'tfxlm-{program}-{os.getuid()}.log')


def route_native_stderr(log_path: str, *, python_stderr: str = 'console') -> TextIO:
  """Points file descriptor 2 at `log_path`; returns a stream on the console.

  Args:
    log_path: the log file, started afresh (every later writer should append to it).
    python_stderr: 'console' keeps `sys.stderr` (Python's warnings, tracebacks, logging to
      stderr) on the console; 'log' sends it to the log file as well.

  Returns:
    A line-buffered text stream on the original standard error. Calling this again (e.g. a
    second run in one process) re-targets descriptor 2 and returns the same stream.
  """
  if python_stderr not in ('console', 'log'):
    raise ValueError(f"python_stderr must be 'console' or 'log', got {python_stderr!r}")
  sys.stdout.flush()
  sys.stderr.flush()
  if 'console' not in _routed:
    console_fd = os.dup(2)
    _routed['console'] = io.TextIOWrapper(
      os.fdopen(console_fd, 'wb', buffering=0),
      encoding='utf-8',
      errors='replace',
      line_buffering=True,
      write_through=True,
    )
    _routed['stderr'] = sys.stderr
  log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
  try:
    os.dup2(log_fd, 2)
  finally:
    os.close(log_fd)
  sys.stderr = _routed['console'] if python_stderr == 'console' else _routed['stderr']
  return _routed['console']


def import_quietly(modules: Sequence[str], log_path: str) -> None:
  """Imports `modules` with descriptor 2 on `log_path`, then points it back at the console.

  For a program whose own code imports TensorFlow before ours can run (the `tfx` CLI): the
  start-up lines come out while TensorFlow loads, so importing it first, with descriptor 2 on a
  log, leaves nothing for the program's import to print. Child processes, started later, get the
  console back as their descriptor 2.

  Args:
    modules: names of the modules to import, in order.
    log_path: the log file, started afresh.

  Raises:
    Whatever importing a module raises, after descriptor 2 is back on the console.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  console_fd = os.dup(2)
  log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
  try:
    os.dup2(log_fd, 2)
    for module in modules:
      importlib.import_module(module)
  finally:
    sys.stderr.flush()
    os.dup2(console_fd, 2)
    os.close(console_fd)
    os.close(log_fd)
