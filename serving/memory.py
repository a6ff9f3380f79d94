"""Per-request memory: how many rows one signature call may take within a byte budget.

The budget is split: half for one call's working memory (activations, tokenizer buffers), a
quarter for the request's answer (its concatenated outputs), the rest for the request itself
(bounded by --max_request_bytes and the decoding limits). One call's working memory per row is
measured when a version loads, from the process's peak resident set (Linux `VmHWM`, reset
through /proc/self/clear_refs) around calls of synthetic rows, doubled from 16 rows until the
rise is well above what the allocator's free lists could hide.

Long strings are costed apart: the calibration's rows are short, but a tokenizer works on the
whole text whatever the model's window, so a call's working memory also grows with the bytes
of its strings (STRING_BYTE_FACTOR times). Calls are sized so that this stays within their half
of the budget too, and the string work of all calls running at once, over every request, is
held within one budget by a StringGate.
"""

import dataclasses
import logging
import re
import threading
import time

log = logging.getLogger(__name__)

# The calibration calls start at this many rows and double until their peak rises by at least
# MEASURABLE_BYTES above the resident set before the call (smaller calls reuse memory the
# allocator already holds, and would look free), or until MAX_CALL_ROWS.
FIRST_ROWS = 16
MEASURABLE_BYTES = 48 << 20
# Calls are also sized to take about this long (extrapolated from the last calibration call;
# never below FIRST_ROWS rows), so that a large request checks its deadline and its client
# often; a calibration call that takes half of it ends the doubling.
CALL_SECONDS = 1.0
# Bounds of the derived rows per call.
MIN_CALL_ROWS = 1
MAX_CALL_ROWS = 1024
# A row costs at least this much (keeps noise in a tiny model's measurement from allowing
# huge calls).
MIN_ROW_BYTES = 16 << 10
# Peak working memory of a signature call per byte of its string inputs, beyond the short rows
# of the calibration: 20x measured in-process on the trainer's classify and causal LM exports
# (predict_text, serving_default's tf.Example, generate's prompt; 4-16 MiB texts), about 23x
# at the server's RSS (a 30 MiB REST text raised it by 693 MB), with the request's decoded copies.
STRING_BYTE_FACTOR = 24
# String work estimated below this passes the StringGate without waiting: short texts never
# queue behind long ones.
UNGATED_BYTES = 16 << 20
# How often a call waiting at the StringGate checks its deadline and its client.
GATE_POLL_SECONDS = 0.1
_calibrating = threading.Lock()


def _status_kib(field: str) -> int | None:
  try:
    with open('/proc/self/status') as f:
      match = re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.MULTILINE)
  except OSError:
    return None
  return int(match[1]) if match else None


def rss_bytes() -> int | None:
  """This process's resident set size, or None where /proc is missing."""
  kib = _status_kib('VmRSS')
  return None if kib is None else kib << 10


def peak_bytes_of(fn) -> int | None:
  """Runs fn(); returns how far the process's peak resident set rose above the resident set
  before the call (None where the peak cannot be reset or read)."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')  # resets VmHWM to the current RSS
  except OSError:
    return None
  before = _status_kib('VmRSS')
  fn()
  peak = _status_kib('VmHWM')
  if before is None or peak is None:
    return None
  return max(0, peak - before) << 10


def call_rows(budget_bytes: int, make_call) -> tuple[int, int | None]:
  """Rows one call may take so that its working memory stays within half of `budget_bytes`.

  Args:
    budget_bytes: the memory one request may use.
    make_call: rows -> a no-argument function that runs one call of that many rows.

  Returns:
    (rows, bytes_per_row): bytes_per_row is None when memory cannot be measured here (then
    rows is the default).
  """
  rows, peak, cap = FIRST_ROWS, 0, MAX_CALL_ROWS
  with _calibrating:  # one calibration at a time, or they would measure each other
    while True:
      started = time.perf_counter()
      peak = peak_bytes_of(make_call(rows))
      seconds = time.perf_counter() - started
      if peak is None:
        return 0, None
      # Stop once measurable, at the largest size, or when doubling could pass half the
      # budget even at the cost measured so far plus what the allocator may have hidden.
      if (
        peak >= MEASURABLE_BYTES
        or rows >= MAX_CALL_ROWS
        or 2 * (peak + MEASURABLE_BYTES) > budget_bytes // 2
      ):
        break
      if seconds > CALL_SECONDS / 2:
        cap = rows  # a size that ran within the budget; larger ones were not measured
        break
      rows *= 2
  per_row = max(MIN_ROW_BYTES, peak // rows)
  by_time = max(FIRST_ROWS, int(rows * CALL_SECONDS / max(seconds, 1e-6)))
  by_memory = max(MIN_CALL_ROWS, (budget_bytes // 2) // per_row)
  return int(min(cap, by_time, by_memory)), per_row


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
  """How much work one request may do.

  Attributes:
    memory_budget_bytes: memory one request may take above the idle server (its calls'
      working memory, its answer and itself); rows per call are derived from it.
    max_execution_batch_size: rows per signature call; 0 derives them from the budget.
    split_large_batches: a request of more rows than one call takes is run in chunks whose
      outputs are concatenated (True), or refused with INVALID_ARGUMENT (False).
  """

  memory_budget_bytes: int = 1 << 30
  max_execution_batch_size: int = 0
  split_large_batches: bool = True

  def __post_init__(self):
    if self.memory_budget_bytes < (16 << 20):
      raise ValueError(
        f'the request memory budget must be at least 16 MiB, got {self.memory_budget_bytes}'
      )
    if self.max_execution_batch_size < 0:
      raise ValueError(
        f'max_execution_batch_size must be >= 0, got {self.max_execution_batch_size}'
      )


DEFAULT_EXECUTION = ExecutionOptions()


class StringGate:
  """Holds the estimated string work of the calls running at once, over all requests and
  models, within `capacity_bytes`: a call whose long strings do not fit waits for others to end.

  Args:
    capacity_bytes: the estimated working memory (STRING_BYTE_FACTOR per string byte) that
      calls may take together.
  """

  def __init__(self, capacity_bytes: int):
    self.capacity_bytes = capacity_bytes
    self.held = 0
    self._changed = threading.Condition()

  def acquire(self, nbytes: int, alive) -> bool:
    """Waits until `nbytes` fit (at once below UNGATED_BYTES); True once held.

    Args:
      nbytes: the call's estimated string work, at most capacity_bytes.
      alive: a function called while waiting, which raises to stop (deadline, client gone).

    Returns:
      False when `nbytes` is small enough to pass without holding anything.
    """
    if nbytes < UNGATED_BYTES:
      return False
    with self._changed:
      while self.held and self.held + nbytes > self.capacity_bytes:
        self._changed.wait(GATE_POLL_SECONDS)
        alive()
      self.held += nbytes
    return True

  def release(self, nbytes: int) -> None:
    """Gives back what acquire() held."""
    with self._changed:
      self.held -= nbytes
      self._changed.notify_all()
