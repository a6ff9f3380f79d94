"""The StringGate: the string work of concurrent calls, over all requests, within one budget."""

import threading
import time

import pytest

from serving import memory

MIB = 1 << 20


def test_long_string_work_waits_for_room_and_short_work_never_does():
  gate = memory.StringGate(100 * MIB)
  assert gate.acquire(60 * MIB, lambda: None)
  entered = threading.Event()

  def second():
    gate.acquire(60 * MIB, lambda: None)
    entered.set()

  thread = threading.Thread(target=second)
  thread.start()
  assert not entered.wait(0.3)  # 120 MiB would not fit
  assert gate.acquire(MIB, lambda: None) is False  # short texts pass at once, holding nothing
  gate.release(60 * MIB)
  assert entered.wait(5)
  thread.join()
  assert gate.held == 60 * MIB


def test_a_waiting_call_stops_when_its_client_goes():
  gate = memory.StringGate(100 * MIB)
  gate.acquire(90 * MIB, lambda: None)
  gone = threading.Event()

  def alive():
    if gone.is_set():
      raise RuntimeError('the client went away')

  threading.Timer(0.2, gone.set).start()
  started = time.monotonic()
  with pytest.raises(RuntimeError, match='went away'):
    gate.acquire(50 * MIB, alive)
  assert time.monotonic() - started < 2
  assert gate.held == 90 * MIB
