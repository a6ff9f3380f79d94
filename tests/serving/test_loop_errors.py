"""The event loop's handler for out-of-file-descriptor accept errors: one WARNING per window."""

import errno
import logging
import os
import subprocess
import sys

from serving import loop_errors


class _Loop:
  def __init__(self):
    self.passed_on = []

  def default_exception_handler(self, context):
    self.passed_on.append(context)


def _accept_error(code=errno.EMFILE):
  return {
    'message': 'socket.accept() out of system resource',
    'exception': OSError(code, 'Too many open files'),
  }


def test_accept_errors_are_one_warning_per_window(caplog):
  now = [100.0]
  handler = loop_errors.AcceptErrorLog(interval=10.0, clock=lambda: now[0])
  loop = _Loop()
  with caplog.at_level(logging.WARNING, logger=loop_errors.__name__):
    for _ in range(5000):  # asyncio reports up to the backlog's worth per wake-up
      handler(loop, _accept_error())
    now[0] += 9.9
    for _ in range(5000):
      handler(loop, _accept_error(errno.ENFILE))
    now[0] += 0.2  # the window has passed
    handler(loop, _accept_error())
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 2, warnings
  assert '(1 failed accepts)' in warnings[0]
  assert 'ulimit -n' in warnings[0] and '--rest_max_connections' in warnings[0]
  assert '(10000 failed accepts in the last 10 s)' in warnings[1]
  assert loop.passed_on == []


def test_other_errors_go_to_the_default_handler(caplog):
  handler = loop_errors.AcceptErrorLog()
  loop = _Loop()
  other = [
    {'message': 'Task exception was never retrieved', 'exception': ValueError('x')},
    {'message': 'socket.accept() failed', 'exception': OSError(errno.EBADF, 'bad fd')},
    {'message': 'Exception in callback', 'exception': OSError(errno.EMFILE, 'Too many')},
  ]
  with caplog.at_level(logging.WARNING, logger=loop_errors.__name__):
    for context in other:
      handler(loop, context)
  assert loop.passed_on == other
  assert caplog.records == []


_OUT_OF_FILES = """
import asyncio, logging, resource, socket, sys
from serving import loop_errors

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(levelname)s %(message)s')

async def main():
  loop = asyncio.get_running_loop()
  loop.set_exception_handler(loop_errors.AcceptErrorLog())
  server = await loop.create_server(asyncio.Protocol, '127.0.0.1', 0, backlog=socket.SOMAXCONN)
  port = server.sockets[0].getsockname()[1]
  clients = [socket.create_connection(('127.0.0.1', port)) for _ in range(40)]
  await asyncio.sleep(0.2)  # all accepted: the server holds 40 more descriptors
  late = socket.socket()  # its descriptor taken now; it connects once none is left
  held = []
  try:
    while True:
      held.append(socket.socket())
  except OSError:
    pass
  late.connect(('127.0.0.1', port))  # queued by the kernel; the server cannot accept it
  await asyncio.sleep(2.5)  # asyncio retries the socket every second
  print('done')

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
asyncio.run(main())
"""


def test_the_handler_turns_asyncios_accept_storm_into_one_warning():
  # Out of descriptors, asyncio reports a failed accept() up to `backlog` times per wake-up
  # (4,096 tracebacks a time with SOMAXCONN); a process of its own, for its own file limit.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run(
    [sys.executable, '-c', _OUT_OF_FILES],
    capture_output=True,
    text=True,
    timeout=30,
    cwd=root,
    env={**os.environ, 'PYTHONPATH': root},
  )
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.splitlines()
  assert lines[-1] == 'done'
  warnings = [line for line in lines if line.startswith('WARNING')]
  assert len(warnings) == 1, lines[:5]
  assert 'Too many open files' in warnings[0] and 'may open 256 files (ulimit -n)' in warnings[0]
  assert 'Traceback' not in done.stderr + done.stdout
