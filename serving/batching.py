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
  """The knobs of TF Serving's BatchingParameters that this server honours.

  Attributes:
    max_batch_size: rows per signature call; a request with more rows is refused.
    batch_timeout_micros: how long the first request of a batch waits for others to join.
    num_batch_threads: batches executed at once, per model version and signature.
    max_enqueued_batches: queue capacity, in batches of max_batch_size rows; a request that
      does not fit is refused with UNAVAILABLE.
  """

  max_batch_size: int = 32
  batch_timeout_micros: int = 1000
  num_batch_threads: int = os.cpu_count() or 1
  max_enqueued_batches: int = 100

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < (0 if field.name == 'batch_timeout_micros' else 1):
        raise ValueError(
          f'batching parameter {field.name} must be positive, got {getattr(self, field.name)}'
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
    """Most rows of one merged call."""
    return self._options.max_batch_size

  def run(
    self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None = None
  ) -> dict[str, np.ndarray]:
    """Runs `rows` rows of checked inputs as part of a batch; blocks until they are done.

    Raises:
      ServingError: INVALID_ARGUMENT for more rows than max_batch_size, UNAVAILABLE when the
        queue is full, DEADLINE_EXCEEDED when the deadline passes first, or the
        error of the signature call.
    """
    options = self._options
    if rows > options.max_batch_size:
      raise errors.invalid_argument(
        f'batch of {rows} rows is larger than the maximum batch size {options.max_batch_size}'
      )
    task = _Task(inputs, rows, deadline)
    with self._cond:
      closed = self._closed
      capacity = options.max_enqueued_batches * options.max_batch_size
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
      while self._queued_rows < options.max_batch_size and not self._closed:
        remaining = close_at - time.monotonic()
        if remaining <= 0:
          break
        self._cond.wait(remaining)
      batch, rows = [], 0
      while self._tasks and rows + self._tasks[0].rows <= options.max_batch_size:
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
