"""tfxlm.collector: the garbage collector walks only what a step creates, and a caller's own
freeze is left as it was."""

import gc

import pytest

from tfxlm import collector


@pytest.fixture
def unfrozen():
  suite_frozen = gc.get_freeze_count()  # tests/conftest.py freezes what the suite keeps alive
  gc.unfreeze()
  try:
    yield
  finally:
    if suite_frozen:
      gc.freeze()


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


def test_objects_from_before_are_frozen_inside_only(unfrozen):
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


def test_collect_after_runs_one_full_collection_unfrozen(unfrozen):
  assert _full_collections(_step(collect_after=True)) == [0]
  assert _full_collections(_step(collect_after=False)) == []


def test_a_callers_freeze_is_kept(unfrozen):
  gc.freeze()
  try:
    kept = gc.get_freeze_count()
    with collector.new_objects_only(collect_after=True):
      assert gc.get_freeze_count() == kept
    assert gc.get_freeze_count() == kept
  finally:
    gc.unfreeze()
