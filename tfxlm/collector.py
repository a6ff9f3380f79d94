"""Python's cyclic garbage collector around a step that allocates a lot in a process that
already holds a lot.

A full collection walks every tracked object of the process; by the time a pipeline's Evaluator
or a quantized export runs, that is a million or more (TensorFlow, Keras, the trained model).
`new_objects_only()` freezes (`gc.freeze`) what exists on entry, so the collections inside walk
only what the step creates, and unfreezes it on exit.
"""

import contextlib
import gc


@contextlib.contextmanager
def new_objects_only(collect_after: bool = False):
  """Inside, the collector walks only the objects created inside.

  Args:
    collect_after: run one collection on exit (e.g. to free what the step dropped while its own
      collections could not reach it): a full one, or with a caller's freeze (below) one of what
      the step created.

  A caller's own freeze (`gc.get_freeze_count()` > 0 on entry: a server or a test harness that
  froze its long-lived objects) stays in force: `gc.unfreeze` cannot tell the caller's objects
  from the others, and a full collection after it would walk them all (0.4-0.5 s in a test
  worker holding 700,000 of them). So one collection on entry frees what the caller left
  unfrozen and dropped (it walks only that), and what exists then stays frozen after the step,
  as the caller's own objects do. What the step creates is left unfrozen. An object from before
  that the step drops is freed by reference counting (a quantized layer's float kernels are);
  one held in a reference cycle stays until the caller unfreezes.
  """
  callers = gc.get_freeze_count() > 0
  if callers:
    gc.collect()
  gc.freeze()
  try:
    yield
  finally:
    if not callers:
      gc.unfreeze()
    if collect_after:
      gc.collect()
