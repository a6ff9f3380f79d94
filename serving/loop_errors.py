"""The event loop's exception handler: out-of-file-descriptor accept errors, aggregated.

When the process has no file descriptor left, asyncio reports every failed accept() of a
listening socket to the loop's exception handler, with a traceback, and tries up to the listen
backlog (SOMAXCONN) accepts per wake-up: tens of thousands of tracebacks a second, megabytes of
log, and the CPU that writing them costs, while the server cannot accept anyway (asyncio stops
watching the socket for a second after each such error). `AcceptErrorLog` turns them into one
WARNING per interval that says how many there were, the limit and what to do; every other
error goes to the loop's default handler.
"""

import errno
import logging
import os
import resource
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# accept() errors that mean the process or system is out of a resource, not a bad client:
# those asyncio reports (and then retries the socket after a second).
OUT_OF_RESOURCE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Seconds between two warnings while the errors go on.
WARNING_INTERVAL_SECONDS = 10.0


def _open_files() -> int | None:
  """Descriptors this process holds (None when they cannot be listed: none is left for it)."""
  try:
    return len(os.listdir('/proc/self/fd'))
  except OSError:
    return None


class AcceptErrorLog:
  """An asyncio exception handler (loop.set_exception_handler) that logs out-of-resource
  accept() errors as one WARNING per `interval` seconds.

  Args:
    interval: seconds between warnings while the errors go on.
    clock: time source (time.monotonic).
  """

  def __init__(
    self,
    interval: float = WARNING_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.interval = interval
    self._clock = clock
    self._next = None  # when the next warning may be logged
    self._count = 0  # errors since the last warning

  def __call__(self, loop, context: dict) -> None:
    error = context.get('exception')
    if not (
      isinstance(error, OSError)
      and error.errno in OUT_OF_RESOURCE
      and 'accept' in context.get('message', '')
    ):
      loop.default_exception_handler(context)
      return
    self._count += 1
    now = self._clock()
    if self._next is not None and now < self._next:
      return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_files = _open_files()
    log.warning(
      'cannot accept connections: %s (%d failed accepts%s); the process may open %s files'
      ' (ulimit -n)%s: raise the limit, or have clients hold fewer connections (REST: keep'
      ' --rest_max_connections below the limit); accepting resumes by itself',
      os.strerror(error.errno),
      self._count,
      f' in the last {self.interval:g} s' if self._next is not None else '',
      'unlimited' if soft == resource.RLIM_INFINITY else soft,
      '' if open_files is None else f', {open_files} are open',
    )
    self._count = 0
    self._next = now + self.interval
