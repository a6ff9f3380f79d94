"""Server-side batching: concurrent small requests to one signature merge into one call."""

import collections
import dataclasses
import os
import threading
import time
import typing
from collections.abc import Callable, Mapping

import grpc
import numpy as np

from serving import errors

if typing.TYPE_CHECKING:
  from serving.servable import Signature


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """The knobs of TF Serving's BatchingParameters that this server honours, with its meaning.

  Attributes:
    max_batch_size: most rows of one request (a larger one is refused with INVALID_ARGUMENT,
      as TF Serving refuses a task larger than max_batch_size), and, without large batch
      splitting, most rows of one merged call.
    batch_timeout_micros: how long the first request of a batch waits for others to join.
    num_batch_threads: batches executed at once, per model version and signature.
    max_enqueued_batches: queue capacity, in batches of execution_batch_size rows; a request
      that does not fit is refused with UNAVAILABLE.
    enable_large_batch_splitting: a request of more rows than max_execution_batch_size (up to
      max_batch_size) is split into calls of at most max_execution_batch_size rows.
    max_execution_batch_size: most rows of one merged call with large batch splitting (0:
      max_batch_size); ignored without it, as in TF Serving.
  """

  max_batch_size: int = 32
  batch_timeout_micros: int = 1000
  num_batch_threads: int = os.cpu_count() or 1
  max_enqueued_batches: int = 100
  enable_large_batch_splitting: bool = False
  max_execution_batch_size: int = 0

  def __post_init__(self):
    for field in ('max_batch_size', 'num_batch_threads', 'max_enqueued_batches'):
      if getattr(self, field) < 1:
        raise ValueError(f'batching parameter {field} must be positive, got {getattr(self, field)}')
    for field in ('batch_timeout_micros', 'max_execution_batch_size'):
      if getattr(self, field) < 0:
        raise ValueError(f'batching parameter {field} must be >= 0, got {getattr(self, field)}')
    if self.max_execution_batch_size > self.max_batch_size:
      raise ValueError(
        f'batching parameter max_execution_batch_size ({self.max_execution_batch_size}) must'
        f' be at most max_batch_size ({self.max_batch_size})'
      )

  @property
  def execution_batch_size(self) -> int:
    """Most rows of one merged signature call."""
    if self.enable_large_batch_splitting and self.max_execution_batch_size:
      return self.max_execution_batch_size
    return self.max_batch_size


def too_many_rows(rows: int, max_batch_size: int, where: str) -> errors.ServingError:
  """INVALID_ARGUMENT for a request of more rows than the batching's max_batch_size."""
  return errors.invalid_argument(
    f'batch of {rows} rows is larger than max_batch_size {max_batch_size} of the batching'
    f' parameters ({where}); send at most {max_batch_size} rows per request, or raise'
    ' max_batch_size in --batching_parameters_file (with enable_large_batch_splitting { value: true }'
    ' and max_execution_batch_size to keep each call smaller)'
  )


class _Task:
  __slots__ = ('inputs', 'rows', 'deadline', 'done', 'outputs', 'error')

  def __init__(self, inputs, rows, deadline):
    self.inputs = inputs
    self.rows = rows
    self.deadline = deadline
    self.done = threading.Event()
    self.outputs = None
    self.error = None


class BatchQueue:
  """Queues requests for one signature of one model version and runs them in merged batches.

  Args:
    signature: the servable.Signature to call; it must be batchable.
    options: BatchingOptions.
    on_batch: called with the number of rows of every executed batch (for metrics), or None.
  """

  def __init__(
    self,
    signature: 'Signature',
    options: BatchingOptions,
    on_batch: Callable[[int], None] | None = None,
  ):
    self._signature = signature
    self._options = options
    self._on_batch = on_batch
    self._cond = threading.Condition()
    self._forming = threading.Lock()
    self._tasks = collections.deque()
    self._queued_rows = 0
    self._closed = False
    self._threads = [
      threading.Thread(target=self._work, daemon=True, name=f'batch-{signature.name}-{i}')
      for i in range(options.num_batch_threads)
    ]
    for thread in self._threads:
      thread.start()

  @property
  def max_batch_size(self) -> int:
    """Most rows of one request."""
    return self._options.max_batch_size

  @property
  def execution_batch_size(self) -> int:
    """Most rows of one merged call: what one run() may take."""
    return self._options.execution_batch_size

  def run(
    self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None = None
  ) -> dict[str, np.ndarray]:
    """Runs `rows` rows of checked inputs as part of a batch; blocks until they are done.

    Raises:
      ServingError: INVALID_ARGUMENT for more rows than max_batch_size, or than
        execution_batch_size (the caller splits a request into runs of at most that),
        UNAVAILABLE when the queue is full, DEADLINE_EXCEEDED when the deadline passes
        first, or the error of the signature call.
    """
    options = self._options
    if rows > options.max_batch_size:
      raise too_many_rows(rows, options.max_batch_size, f'signature "{self._signature.name}"')
    if rows > options.execution_batch_size:
      raise errors.invalid_argument(
        f'a run of {rows} rows is larger than max_execution_batch_size'
        f' {options.execution_batch_size}: split it first'
      )
    task = _Task(inputs, rows, deadline)
    with self._cond:
      closed = self._closed
      capacity = options.max_enqueued_batches * options.execution_batch_size
      if not closed and self._queued_rows + rows > capacity:
        raise errors.ServingError(
          grpc.StatusCode.UNAVAILABLE, 'the batch scheduling queue is full; retry later'
        )
      if not closed:
        self._tasks.append(task)
        self._queued_rows += rows
        self._cond.notify_all()
    if closed:
      # The version was swapped out after this request picked it: serve it anyway, alone,
      # rather than fail a request that arrived while the version was still current.
      return self._signature(inputs)
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not task.done.wait(timeout):
      with self._cond:
        if task in self._tasks:
          self._tasks.remove(task)
          self._queued_rows -= rows
      raise errors.ServingError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        'deadline exceeded while the request waited for its batch',
      )
    if task.error is not None:
      raise task.error
    return task.outputs

  def close(self) -> None:
    """Stops batching: queued requests still run, then the threads exit; later ones run alone."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for thread in self._threads:
      thread.join()

  def _next_batch(self):
    """Waits for a first task, then for others until the batch is full or the timeout passes."""
    with self._forming, self._cond:
      while not self._tasks and not self._closed:
        self._cond.wait()
      if not self._tasks:
        return None
      options = self._options
      close_at = time.monotonic() + options.batch_timeout_micros / 1e6
      limit = options.execution_batch_size
      while self._queued_rows < limit and not self._closed:
        remaining = close_at - time.monotonic()
        if remaining <= 0:
          break
        self._cond.wait(remaining)
      batch, rows = [], 0
      while self._tasks and rows + self._tasks[0].rows <= limit:
        task = self._tasks.popleft()
        batch.append(task)
        rows += task.rows
      self._queued_rows -= rows
      return batch

  def _work(self):
    while True:
      batch = self._next_batch()
      if batch is None:
        return
      now = time.monotonic()
      live = []
      for task in batch:
        if task.deadline is not None and task.deadline <= now:
          task.error = errors.ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED, 'deadline exceeded before the batch ran'
          )
          task.done.set()
        else:
          live.append(task)
      if live:
        try:
          self._execute(live)
        except Exception as e:  # noqa: BLE001 - a batch thread must survive any failure.
          error = errors.ServingError(grpc.StatusCode.INTERNAL, f'batch failed: {e!r}')
          for task in live:
            if not task.done.is_set():
              task.error = error
              task.done.set()

  def _execute(self, tasks):
    if self._on_batch is not None:
      self._on_batch(sum(t.rows for t in tasks))
    if len(tasks) == 1:
      self._run_alone(tasks[0])
      return
    inputs = {key: np.concatenate([t.inputs[key] for t in tasks]) for key in self._signature.inputs}
    try:
      outputs = self._signature(inputs)
    except errors.ServingError:
      # One bad request (say, text the tokenizer rejects) must not fail its batch mates:
      # run each alone so only the culprit gets the error.
      for task in tasks:
        self._run_alone(task)
      return
    total = sum(t.rows for t in tasks)
    bad = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != total]
    if bad:
      error = errors.ServingError(
        grpc.StatusCode.INTERNAL,
        f'signature "{self._signature.name}" outputs {bad} do not have the batch dimension;'
        ' serve it without batching',
      )
      for task in tasks:
        task.error = error
        task.done.set()
      return
    start = 0
    for task in tasks:
      task.outputs = {k: v[start : start + task.rows] for k, v in outputs.items()}
      start += task.rows
      task.done.set()

  def _run_alone(self, task):
    try:
      task.outputs = self._signature(task.inputs)
    except errors.ServingError as e:
      task.error = e
    task.done.set()
