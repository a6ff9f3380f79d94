"""tfxlm.collector: the garbage collector walks only what a step creates, and a caller's own
freeze stays in force."""

import gc
import weakref

import keras
import pytest

from tfxlm import collector
from trainer import keras_internals


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
    left_unfrozen = [_Cycle() for _ in range(100)]
    dropped = _Cycle()
    gone = weakref.ref(dropped)
    made_inside = []

    def step():
      with collector.new_objects_only(collect_after=True):
        assert gc.get_freeze_count() > callers  # what existed on entry is frozen too
        made_inside.extend(_Cycle() for _ in range(100))
        _Cycle()  # the step's own garbage

    del dropped
    walked = _full_collections(step)
    # One collection on entry, of what the caller left unfrozen, one on exit of what the step
    # made: neither walks the caller's frozen objects (no collection with them unfrozen).
    assert len(walked) == 2 and walked[0] == callers and walked[1] > callers, walked
    assert gone() is None  # it freed what was dropped before the step
    unfrozen = {id(o) for o in gc.get_objects()}  # gc.get_objects() leaves out frozen objects
    assert id(kept_alive[0]) not in unfrozen  # the caller's objects stay frozen,
    assert id(left_unfrozen[0]) not in unfrozen  # and so does what existed on entry;
    assert id(made_inside[0]) in unfrozen  # what the step made is left to the collector
  finally:
    gc.enable()
    gc.unfreeze()


def test_with_a_callers_freeze_a_dropped_quantized_kernel_is_freed(unfrozen_gc):
  inputs = keras.Input([8])
  model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
  dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
  kernels = [weakref.ref(keras_internals.base_kernel(layer)) for layer in dense]
  assert len(kernels) == 2
  gc.freeze()  # the caller's, the model included
  try:
    with collector.new_objects_only(collect_after=True):
      for layer in dense:
        layer.quantize('int8')
      # Frozen, the kernels are beyond any collection here: reference counting freed them.
      assert [k() for k in kernels] == [None, None]
  finally:
    gc.unfreeze()
