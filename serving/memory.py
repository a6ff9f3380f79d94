"""Per-request memory: how many rows one signature call may take within a byte budget.

The budget is split: half for one call's working memory (activations, tokenizer buffers), a
quarter for the request's answer (its concatenated outputs), the rest for the request itself
(bounded by --max_request_bytes and the decoding limits). One call's working memory per row is
measured when a version loads, from the process's peak resident set (Linux `VmHWM`, reset
through /proc/self/clear_refs) around calls of synthetic rows.
"""

import dataclasses
import logging
import re
import threading

log = logging.getLogger(__name__)

# Rows of the calibration calls. Their difference gives the cost of a row without the fixed
# cost of a call.
SMALL_ROWS = 8
LARGE_ROWS = 32
# Bounds of the derived rows per call.
MIN_CALL_ROWS = 1
MAX_CALL_ROWS = 4096
# A row costs at least this much (keeps noise in a tiny model's measurement from allowing
# huge calls).
MIN_ROW_BYTES = 16 << 10
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
  with _calibrating:  # one calibration at a time, or they would measure each other
    small = peak_bytes_of(make_call(SMALL_ROWS))
    large = peak_bytes_of(make_call(LARGE_ROWS))
  if small is None or large is None:
    return 0, None
  per_row = max(MIN_ROW_BYTES, (large - small) // (LARGE_ROWS - SMALL_ROWS), large // LARGE_ROWS)
  rows = int(min(MAX_CALL_ROWS, max(MIN_CALL_ROWS, (budget_bytes // 2) // per_row)))
  return rows, per_row


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
