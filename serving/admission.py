"""Admission: request work runs on a bounded pool of threads, behind a bounded queue.

Both front ends are event-driven (one asyncio loop holds every connection, idle or slow, at no
thread's cost); only the model work of a request (decoding its tensors, the signature calls,
encoding the answer) needs a thread. `Admission.run` gives it one of `workers` threads, or a
place in a first-come first-served queue of `max_queued` requests; only a full queue refuses
(RESOURCE_EXHAUSTED, REST 503). A request whose deadline passes while it waits leaves the
queue (DEADLINE_EXCEEDED); one whose deadline passes, or whose client goes away, while it runs
has its `stop` event set, which the signature's chunk loop checks between chunks; its thread
is given back only when the work has returned. When a stopping server's drain time is up,
`abort` ends the rest the same way: running work stops at its next chunk, queued requests
leave the queue, and both are answered UNAVAILABLE.
"""

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from serving import errors


class Admission:
  """A bounded executor fed by a bounded FIFO queue, for one asyncio loop.

  Args:
    workers: requests whose work runs at once (threads).
    max_queued: requests that may wait for a thread; beyond, refused.
  """

  def __init__(self, workers: int, max_queued: int):
    if workers < 1 or max_queued < 0:
      raise ValueError(
        f'admission needs workers >= 1 and max_queued >= 0, got {workers} and {max_queued}'
      )
    self.workers = workers
    self.max_queued = max_queued
    self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix='request')
    self._running = 0
    self._waiting = collections.deque()
    self._stops = set()  # the stop events of the work that holds a thread
    self._aborted = False

  @property
  def running(self) -> int:
    """Requests holding a thread (their work may still run after their client left)."""
    return self._running

  @property
  def queued(self) -> int:
    """Requests waiting for a thread."""
    return sum(1 for w in self._waiting if not w.done())

  async def run(self, work: Callable[[threading.Event], object], deadline: float | None):
    """Runs work(stop) on a worker thread once one is free; returns its result.

    Args:
      work: the blocking work; it should return soon after `stop` is set.
      deadline: time.monotonic() by which the answer is due, or None.

    Raises:
      ServingError: RESOURCE_EXHAUSTED (HTTP 503) when the queue is full, DEADLINE_EXCEEDED
        when the deadline passes first, UNAVAILABLE once the server is stopping (`abort`), or
        whatever `work` raises.
    """
    if self._aborted:
      raise _shutting_down()
    await self._acquire(deadline)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    try:
      call = self._pool.submit(work, stop)
    except RuntimeError:  # the pool was shut down: the server is stopping
      self._release()
      raise _shutting_down() from None
    call.add_done_callback(lambda _: _call_soon(loop, self._release))
    self._stops.add(stop)
    try:
      async with asyncio.timeout(_remaining(deadline)):
        return await asyncio.wrap_future(call)
    except TimeoutError:
      stop.set()
      raise errors.ServingError(
        grpc.StatusCode.DEADLINE_EXCEEDED, 'deadline exceeded while the request ran'
      ) from None
    except asyncio.CancelledError:  # the client went away
      stop.set()
      raise
    except errors.ServingError as e:
      if self._aborted and e.code == grpc.StatusCode.CANCELLED:  # stopped by `abort`
        raise _shutting_down('ran') from None
      raise
    finally:
      self._stops.discard(stop)
      # An error raised by `work` holds this frame in its traceback, and the frame holds `call`,
      # which holds the error: a cycle that would keep the request (its decoded body, in the
      # work's frames) alive until Python's next full collection.
      del call

  async def _acquire(self, deadline):
    if self._running < self.workers and not self._waiting:
      self._running += 1
      return
    if len(self._waiting) >= self.max_queued:
      raise errors.ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'the server is busy: {self._running} requests running and {len(self._waiting)}'
        f' waiting, the most it queues (--max_queued_requests); retry later',
        http_status=503,
      )
    waiter = asyncio.get_running_loop().create_future()
    self._waiting.append(waiter)
    try:
      async with asyncio.timeout(_remaining(deadline)):
        admitted = await waiter
    except BaseException as e:
      if waiter.done() and not waiter.cancelled() and waiter.result():
        self._release()  # a thread was handed to us as we gave up: pass it on
      else:
        waiter.cancel()
        try:
          self._waiting.remove(waiter)
        except ValueError:
          pass
      if isinstance(e, TimeoutError):
        raise errors.ServingError(
          grpc.StatusCode.DEADLINE_EXCEEDED,
          'deadline exceeded while the request waited in the queue',
        ) from None
      raise
    if not admitted:
      raise _shutting_down('waited in the queue')

  def _release(self):
    """A thread is free: hands it to the first live waiter, or counts it free."""
    while self._waiting:
      waiter = self._waiting.popleft()
      if not waiter.done():
        waiter.set_result(True)
        return
    self._running -= 1

  def abort(self) -> None:
    """Ends every request now: the running ones at their work's next check of `stop` (the
    chunk loop's), the queued ones at once; both raise UNAVAILABLE, as do later run() calls.
    Call on the loop, when a stopping server's drain time is up."""
    self._aborted = True
    for stop in self._stops:
      stop.set()
    while self._waiting:
      waiter = self._waiting.popleft()
      if not waiter.done():
        waiter.set_result(False)

  def shutdown(self, wait: bool = False) -> None:
    """Lets running work finish (in the background, or before returning when `wait`); later
    run() calls are refused."""
    self._pool.shutdown(wait=wait, cancel_futures=False)


def _shutting_down(request_state: str | None = None) -> errors.ServingError:
  cut = (
    f': its drain time (--drain_seconds) ran out while this request {request_state}'
    if request_state
    else ''
  )
  return errors.ServingError(
    grpc.StatusCode.UNAVAILABLE, f'the server is shutting down{cut}; retry on another replica'
  )


def _remaining(deadline):
  return None if deadline is None else max(0.0, deadline - time.monotonic())


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
  """Runs fn on loop from a worker thread; nothing once the loop has closed: a request that
  outlived a stopping server has no one left to hand its thread to."""
  try:
    loop.call_soon_threadsafe(fn)
  except RuntimeError:  # the event loop is closed
    pass
