"""tfxlm.collector: the garbage collector walks only what a step creates, and a caller's own
freeze stays in force."""

import gc
import weakref

import pytest

from tfxlm import collector


class _Cycle:
  def __init__(self):
    self.me = self


def _full_collections(step):
  started = []

  def seen(phase, info):
    if phase == 'start' and info['generation'] == 2:
      started.append(gc.get_freeze_count())

  gc.callbacks.append(seen)
  try:
    step()
  finally:
    gc.callbacks.remove(seen)
  return started


def test_objects_from_before_are_frozen_inside_only(unfrozen_gc):
  earlier = [_Cycle() for _ in range(100)]
  with collector.new_objects_only():
    inside = gc.get_freeze_count()
    during = _full_collections(gc.collect)
    assert gc.is_tracked(earlier[0])
  assert inside >= len(earlier) and during == [inside]
  assert gc.get_freeze_count() == 0
  with pytest.raises(RuntimeError):
    with collector.new_objects_only():
      raise RuntimeError('the step failed')
  assert gc.get_freeze_count() == 0


def _step(collect_after):
  def run():
    gc.disable()  # only the collection the helper runs itself counts
    try:
      with collector.new_objects_only(collect_after=collect_after):
        _Cycle()
    finally:
      gc.enable()

  return run


def test_collect_after_runs_one_full_collection_unfrozen(unfrozen_gc):
  assert _full_collections(_step(collect_after=True)) == [0]
  assert _full_collections(_step(collect_after=False)) == []


def test_a_callers_freeze_stays_in_force(unfrozen_gc):
  kept_alive = [_Cycle() for _ in range(100)]
  gc.freeze()  # the caller's
  gc.disable()  # no automatic collection may free `dropped` before the step
  try:
    callers = gc.get_freeze_count()
    dropped = _Cycle()
    gone = weakref.ref(dropped)
    made_inside = []

    def step():
      with collector.new_objects_only():
        assert gc.get_freeze_count() > callers  # what existed on entry is frozen too
        made_inside.extend(_Cycle() for _ in range(100))

    del dropped
    assert _full_collections(step) == [0]  # one full collection on exit, with nothing frozen
    assert gone() is None  # it freed what was dropped before the step
    unfrozen = {id(o) for o in gc.get_objects()}  # gc.get_objects() leaves out frozen objects
    assert id(kept_alive[0]) not in unfrozen  # the caller's objects are frozen again,
    assert id(made_inside[0]) not in unfrozen  # and so is what survived the step
  finally:
    gc.enable()
    gc.unfreeze()
