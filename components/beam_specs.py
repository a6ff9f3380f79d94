"""Beam's state and timer specs of a DoFn, worked out once per kind of DoFn instead of at every look.

`apache_beam.transforms.userstate.get_dofn_specs` reads the signature of every bound method of a
DoFn (`dir(dofn)`: some thirty, most of them inherited) to find state and timer parameters, and
Beam 2.77 asks it again and again: when the ParDo is built, each time the pipeline is converted
to its runner proto, and when a worker builds its bundle processor (from a fresh copy of the
DoFn), for every `Map` and `FlatMap` too. In a local run of this project's pipeline those
signatures took about a fifth of the Beam components' time (profiled with py-spy).

`install()` wraps the function with a cache. What it reads is the DoFn's bound methods: its class's
methods, and bound methods stored on the instance (`beam.Map(obj.method)` keeps `obj.method`
as the DoFn's `process`; a plain function there is not a bound method and is not read). So the
cache is keyed by the class and the functions behind those instance-held methods, and a copy of
a DoFn, or another `Map` of the same kind, finds the answer already there. DoFns whose class
computes attributes on the fly (`__getattr__`, `__getattribute__`) are asked every time, and a
look that raises (a malformed DoFn) is not cached and raises again. Installed once per process
by importing any of this project's Beam executors (example_gen, vocabulary, transform, evaluator:
in a local run, the pipeline's process and each Beam worker; on Kubeflow, those components' pods).
Not by the `components` package itself: its readers load without Beam.
"""

from __future__ import annotations

import functools
import types
import weakref
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

from apache_beam.transforms import userstate

_MARK = '_tfxlm_cached'
Specs = Tuple[frozenset, frozenset]


def _key(dofn: Any) -> Optional[Hashable]:
  """What `get_dofn_specs` reads from `dofn` beyond its class, or None when that is unknowable."""
  cls = type(dofn)
  if cls.__getattribute__ is not object.__getattribute__ or hasattr(cls, '__getattr__'):
    return None
  held = getattr(dofn, '__dict__', {})
  return tuple(
    sorted(
      (name, value.__func__) for name, value in held.items() if isinstance(value, types.MethodType)
    )
  )


def _cached(get_specs: Callable[[Any], tuple]) -> Callable[[Any], tuple]:
  # class -> {instance-held methods -> specs}; weak on the class, so a class that goes leaves.
  by_class: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

  @functools.wraps(get_specs)
  def get_dofn_specs(dofn: Any) -> tuple:
    key = _key(dofn)
    if key is None:
      return get_specs(dofn)
    try:
      known: Dict[Hashable, Specs] = by_class.setdefault(type(dofn), {})
    except TypeError:  # a class that cannot be weakly referenced
      return get_specs(dofn)
    try:
      states, timers = known[key]
    except KeyError:
      states, timers = get_specs(dofn)
      known[key] = (frozenset(states), frozenset(timers))
    # Fresh sets, as Beam returns: a caller that changes them changes no other caller's.
    return set(states), set(timers)

  setattr(get_dofn_specs, _MARK, True)
  return get_dofn_specs


def install() -> None:
  """Caches `userstate.get_dofn_specs` for this process (a second call does nothing)."""
  if not getattr(userstate.get_dofn_specs, _MARK, False):
    userstate.get_dofn_specs = _cached(userstate.get_dofn_specs)
