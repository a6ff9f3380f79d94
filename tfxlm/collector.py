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
    collect_after: run one full collection on exit (e.g. to free what the step dropped while
      its own collections could not reach it).

  A caller's own freeze (`gc.get_freeze_count()` > 0 on entry: a server or a test harness that
  froze its long-lived objects) stays in force. `gc.unfreeze` cannot tell the caller's objects
  from the others, so on exit one full collection runs with nothing frozen (freeing what the
  step dropped) and what survives it is frozen again: the caller's objects, and those that
  existed on entry.
  """
  callers = gc.get_freeze_count() > 0
  gc.freeze()
  try:
    yield
  finally:
    gc.unfreeze()
    if collect_after or callers:
      gc.collect()
    if callers:
      gc.freeze()
