"""The event loop's handler for out-of-file-descriptor accept errors: one WARNING per window; a
request that ends as the server's drain time runs out is no unhandled exception."""

import asyncio
import errno
import logging
import os
import subprocess
import sys

import pytest
from aiohttp import web_protocol

from serving import loop_errors, rest


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


def _handle_request_as_shutdown_gives_up(monkeypatch, waiter_state):
  """Runs the REST protocol's request handling where aiohttp's own, finishing, sets the result of
  the waiter the server's shutdown made (`RequestHandler.shutdown`); `waiter_state` is what the
  shutdown left of it."""

  async def aiohttp_finishing(self, request, start_time, request_handler):
    self._handler_waiter.set_result(None)  # the last line of aiohttp's _handle_request
    return 'answer', False

  monkeypatch.setattr(web_protocol.RequestHandler, '_handle_request', aiohttp_finishing)

  async def scenario():
    waiter = asyncio.get_running_loop().create_future()
    waiter_state(waiter)
    protocol = object.__new__(rest._Protocol)
    protocol._handler_waiter = waiter
    return await rest._Protocol._handle_request(protocol, None, None, None)

  return asyncio.run(scenario())


def test_a_request_done_as_the_drain_time_runs_out_ends_its_connection_quietly(monkeypatch):
  # The drain's timeout cancelled the waiter; the shutdown had not yet dropped it.
  assert _handle_request_as_shutdown_gives_up(monkeypatch, asyncio.Future.cancel) == (None, True)


def test_any_other_invalid_state_still_raises(monkeypatch):
  def answered_already(waiter):
    waiter.set_result(None)

  with pytest.raises(asyncio.InvalidStateError):
    _handle_request_as_shutdown_gives_up(monkeypatch, answered_already)
