"""What Beam 2.77 works out again at every look, worked out once: a DoFn's state and timer specs,
the views of a pipeline's options, and the modules' globals that the size of each state-cache
entry leaves out.

The specs. `apache_beam.transforms.userstate.get_dofn_specs` reads the signature of every bound
method of a DoFn (`dir(dofn)`: some thirty, most of them inherited) to find state and timer
parameters, and Beam 2.77 asks it again and again: when the ParDo is built, each time the
pipeline is converted to its runner proto, and when a worker builds its bundle processor (from a
fresh copy of the DoFn), for every `Map` and `FlatMap` too. In a local run of this project's
pipeline those signatures took about a fifth of the Beam components' time (profiled with py-spy).

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

The options' views. `PipelineOptions.view_as(cls)` builds an argument parser for `cls` and parses
the pipeline's flags with it, and Beam asks `view_as(TypeOptions)` two or three times for every
transform it applies while building a pipeline (TFX's components apply hundreds): 3.6% of the
test suite's CPU. `install()` keeps each options object's view of each class and hands it out
again while the object's flags and option store are those it was made from and every option the
view knows is still in that store; otherwise (and for options parsed from the command line,
without flags of their own) Beam makes a view as before. A view reads and writes the store it
shares with its source, and its flags only fill in options missing from that store, so a kept
view answers as a fresh one would.

The state cache. Each time a Beam worker loads a side input or a state bag into its cache
(`statecache.StateCache.get`, for every bundle that reads it), it weighs the value with
`objsize`, which first collects the ids of every loaded module's globals so as not to count
them: some 8,000 modules once TensorFlow, TFX and Beam are loaded, 6-7 ms of a 7 ms weighing,
about 2% of the test suite's CPU. `install()` keeps those ids and collects them again only when
the number of loaded modules changes; the weight is otherwise computed as Beam computes it.
(Between collections a module replaced by another leaves one stale id: it only changes an
entry's weight, which decides what the cache evicts, never a value.)
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
import threading
import types
import weakref
from typing import Any, Callable, Dict, Hashable, Iterator, Optional, Tuple

import objsize
from apache_beam.options import pipeline_options
from apache_beam.runners.worker import statecache
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


class _ModuleGlobals:
  """The ids of the loaded modules' globals, collected again when the number of modules changes."""

  def __init__(self):
    self._lock = threading.Lock()
    self._count = -1
    self._ids: frozenset = frozenset()

  def ids(self) -> frozenset:
    with self._lock:
      if len(sys.modules) != self._count:
        modules = list(sys.modules.values())
        found = set()
        for module in modules:
          try:
            found.add(id(vars(module)))
          except TypeError:  # an entry without a __dict__
            pass
        self._count, self._ids = len(modules), frozenset(found)
      return self._ids


def _weigher() -> Callable[..., int]:
  """`statecache.get_deep_size` with the module globals' ids kept between calls."""
  # Beam's own settings, except the module scan, done by `known` instead.
  settings = objsize.traverse.ObjSizeSettings(
    get_size_func=statecache._size_func,
    get_referents_func=statecache._get_referents_func,
    filter_func=statecache._filter_func,
    exclude_modules_globals=False,
  )
  known = _ModuleGlobals()

  def get_deep_size(*objs: Any) -> int:
    context = objsize.traverse.TraversalContext(settings)
    context.exclude_set.update(known.ids())
    return context.get_deep_size(*objs)

  setattr(get_deep_size, _MARK, True)
  return get_deep_size


def _kept_views(view_as: Callable[..., Any]) -> Callable[..., Any]:
  """`PipelineOptions.view_as` keeping the views it made, per options object and class."""
  # options object -> {class: view}; weak, so options that go leave.
  made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

  @functools.wraps(view_as)
  def kept_view_as(self, cls):
    if self._flags is None:  # parsed from sys.argv
      return view_as(self, cls)
    try:
      views = made.setdefault(self, {})
    except TypeError:  # options that cannot be weakly referenced
      return view_as(self, cls)
    view = views.get(cls)
    # A view's values are its source's store; its flags only fill in options missing there.
    if (
      view is None
      or view._all_options is not self._all_options
      or view._flags is not self._flags
      or not all(name in self._all_options for name in view._visible_option_list())
    ):
      view = views[cls] = view_as(self, cls)
    return view

  setattr(kept_view_as, _MARK, True)
  return kept_view_as


@contextlib.contextmanager
def cleaned(pipeline: Any) -> Iterator[Any]:
  """`with pipeline`, and its local temporary folder removed however it ends.

  Beam removes the folder (made in /tmp when the pipeline is created) once the pipeline runs; a
  pipeline that fails while it is built (a data error found then: an empty input folder, a
  missing split) never runs, and each such run left one folder behind.
  """
  try:
    with pipeline:
      yield pipeline
  finally:
    shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)


def install() -> None:
  """Caches `userstate.get_dofn_specs`, the options' views and the state cache's module scan for
  this process (a second call does nothing)."""
  if not getattr(userstate.get_dofn_specs, _MARK, False):
    userstate.get_dofn_specs = _cached(userstate.get_dofn_specs)
  options = pipeline_options.PipelineOptions
  if not getattr(options.view_as, _MARK, False):
    options.view_as = _kept_views(options.view_as)
  if not getattr(statecache.get_deep_size, _MARK, False):
    statecache.get_deep_size = _weigher()
