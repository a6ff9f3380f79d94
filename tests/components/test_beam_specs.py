"""The cached `get_dofn_specs`, options views and state-cache weighing (components/beam_specs.py)
answer exactly as Beam's own."""

import os
import sys
import types

import apache_beam as beam
import numpy as np
import objsize
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options import pipeline_options as po
from apache_beam.runners.worker import statecache
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from components import beam_specs
from pipeline.beam_policy import FN_API_RUNNER

COUNT = userstate.ReadModifyWriteStateSpec('count', VarIntCoder())
SEEN = userstate.BagStateSpec('seen', VarIntCoder())
FLUSH = userstate.TimerSpec('flush', TimeDomain.WATERMARK)
# Beam reads state and timers from parameter defaults.
COUNT_PARAM = beam.DoFn.StateParam(COUNT)
SEEN_PARAM = beam.DoFn.StateParam(SEEN)
FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)


class Plain(beam.DoFn):
  def process(self, element):
    yield element


class Counting(beam.DoFn):
  """Numbers each key's elements in arrival order: needs its state to be found."""

  def process(self, element, count=COUNT_PARAM):
    key, _ = element
    n = (count.read() or 0) + 1
    count.write(n)
    yield key, n


class WithTimer(beam.DoFn):
  def process(self, element, seen=SEEN_PARAM, flush=FLUSH_PARAM):
    yield element

  @userstate.on_timer(FLUSH)
  def on_flush(self, seen=SEEN_PARAM):
    yield from seen.read()


class Duplicated(beam.DoFn):
  def process(self, element, a=COUNT_PARAM, b=COUNT_PARAM):
    yield element


class Holder:
  """Its bound methods, held by a DoFn instance, are read by Beam too."""

  def stateful(self, element, seen=SEEN_PARAM):
    yield element

  def stateless(self, element):
    yield element


class Dynamic(beam.DoFn):
  """Computes attributes on the fly: what it holds cannot be known from its class."""

  def __getattr__(self, name):
    if name == 'extra':
      return Holder().stateful
    raise AttributeError(name)

  def process(self, element):
    yield element


# Beam's own function, whether or not the components package has installed the cache yet.
ORIGINAL = getattr(userstate.get_dofn_specs, '__wrapped__', userstate.get_dofn_specs)


@pytest.fixture
def counted():
  """A cached get_dofn_specs over Beam's own, and the kinds of DoFn that reached Beam's."""
  asked = []

  def beams_own(dofn):
    asked.append(type(dofn).__name__)
    return ORIGINAL(dofn)

  return beam_specs._cached(beams_own), asked


def _held(method):
  dofn = Plain()
  dofn.extra = method
  return dofn


@pytest.mark.parametrize(
  'make',
  [
    Plain,
    Counting,
    WithTimer,
    lambda: beam.transforms.core.CallableWrapperDoFn(lambda x: [x]),
    lambda: beam.transforms.core.CallableWrapperDoFn(Holder().stateful),
    lambda: _held(Holder().stateful),
    lambda: _held(Holder().stateless),
    Dynamic,
  ],
  ids=['plain', 'state', 'state-and-timer', 'map-lambda', 'map-bound', 'held-state', 'held', 'dyn'],
)
def test_the_cached_answer_is_beams_own_on_every_look(counted, make):
  cached, _ = counted
  expected = ORIGINAL(make())
  for _ in range(3):
    assert cached(make()) == expected


def test_a_second_dofn_of_the_same_kind_is_not_asked_again(counted):
  cached, asked = counted
  for dofn in (Counting(), Counting(), Plain(), Plain(), Counting()):
    cached(dofn)
  assert asked == ['Counting', 'Plain']


def test_instance_held_methods_and_dynamic_attributes_are_told_apart(counted):
  cached, asked = counted
  assert cached(_held(Holder().stateless)) == (set(), set())
  assert cached(_held(Holder().stateful)) == ({SEEN}, set())  # same class, other held method
  assert cached(_held(Holder().stateful)) == ({SEEN}, set())
  assert cached(Dynamic()) == ORIGINAL(Dynamic())
  cached(Dynamic())
  assert asked == ['Plain', 'Plain', 'Dynamic', 'Dynamic']


def test_a_malformed_dofn_raises_on_every_look(counted):
  cached, asked = counted
  for _ in range(2):
    with pytest.raises(ValueError, match='duplicate'):
      cached(Duplicated())
  assert asked == ['Duplicated', 'Duplicated']


def test_callers_get_fresh_sets(counted):
  cached, _ = counted
  states, _ = cached(Counting())
  states.clear()
  assert cached(Counting()) == ({COUNT}, set())


def test_importing_an_executor_installs_it_once():
  from components import transform  # noqa: F401 (the import installs it)

  installed = userstate.get_dofn_specs, po.PipelineOptions.view_as, statecache.get_deep_size
  assert all(getattr(f, beam_specs._MARK) for f in installed)
  beam_specs.install()
  assert (
    userstate.get_dofn_specs,
    po.PipelineOptions.view_as,
    statecache.get_deep_size,
  ) == installed


def test_a_stateful_pipeline_keeps_its_state_under_the_cache():
  beam_specs.install()
  rows = [('a', 1), ('b', 1), ('a', 2), ('a', 3), ('b', 2)]
  with beam.Pipeline(runner=FN_API_RUNNER) as p:
    numbered = p | beam.Create(rows) | beam.ParDo(Counting())
    # Many Maps of one kind, as a real pipeline has: each needs its own (empty) specs.
    for i in range(20):
      numbered = numbered | f'same{i}' >> beam.Map(lambda kv: kv)
    assert_that(numbered, equal_to([('a', 1), ('a', 2), ('a', 3), ('b', 1), ('b', 2)]))


def _beams_weight(value):
  """Beam 2.77's `statecache.get_deep_size`, as it is written there."""
  return objsize.get_deep_size(
    value,
    get_size_func=statecache._size_func,
    get_referents_func=statecache._get_referents_func,
    filter_func=statecache._filter_func,
  )


class _Holder:
  def __init__(self):
    self.rows = [b'x' * 100, (1, 2.0, 'three')]
    self.array = np.zeros(300)
    self.json_globals = vars(sys.modules['json'])  # a module's globals: not counted


@pytest.mark.parametrize(
  'value',
  [
    [list(range(50)) for _ in range(5)],
    {'text': 'a' * 1000, 'ids': np.arange(100), 'nested': {'x': [None, True]}},
    _Holder(),
    [vars(sys.modules['os']), vars(np), 'kept'],
    b'bytes',
    7,
  ],
  ids=['lists', 'dict', 'object', 'module-globals', 'bytes', 'int'],
)
def test_the_state_cache_weighs_a_value_as_beam_does(value):
  beam_specs.install()
  assert statecache.get_deep_size(value) == _beams_weight(value)


def test_a_module_loaded_after_a_weighing_is_left_out_of_the_next():
  beam_specs.install()
  statecache.get_deep_size([1])  # the loaded modules' globals are collected
  module = types.ModuleType('tfxlm_test_late_module')
  module.payload = ['y' * 10_000]
  sys.modules[module.__name__] = module
  try:
    held = [vars(module), 'kept']
    assert statecache.get_deep_size(held) == _beams_weight(held)
    assert statecache.get_deep_size(held) < statecache.get_deep_size([dict(vars(module)), 'kept'])
  finally:
    del sys.modules[module.__name__]


def test_a_side_input_pipeline_runs_under_the_weighing(monkeypatch):
  beam_specs.install()
  weighed = []
  installed = statecache.get_deep_size
  monkeypatch.setattr(statecache, 'get_deep_size', lambda *v: weighed.append(v) or installed(*v))
  with beam.Pipeline(runner=FN_API_RUNNER) as p:
    table = p | 'table' >> beam.Create([('a', 1), ('b', 2)])
    keys = p | 'keys' >> beam.Create(['a', 'b', 'a'])
    looked_up = keys | beam.Map(lambda k, t: (k, t[k]), t=beam.pvalue.AsDict(table))
    assert_that(looked_up, equal_to([('a', 1), ('b', 2), ('a', 1)]))
  assert weighed  # the worker cached the side input


def _fresh_view(options, cls):
  """Beam's own `view_as`, a new view on every call."""
  beam_specs.install()
  return po.PipelineOptions.view_as.__wrapped__(options, cls)


def test_a_kept_view_reads_and_writes_the_options_as_a_fresh_one():
  beam_specs.install()
  options = po.PipelineOptions(['--direct_num_workers=2', '--experiments=a', '--runner=Direct'])
  view = options.view_as(po.TypeOptions)
  assert options.view_as(po.TypeOptions) is view  # kept
  options.view_as(po.DebugOptions).add_experiment('b')
  options.view_as(po.StandardOptions).runner = 'Other'
  options.view_as(po.TypeOptions).pipeline_type_check = False
  for cls in (po.DebugOptions, po.StandardOptions, po.TypeOptions, po.DirectOptions):
    kept, fresh = options.view_as(cls), _fresh_view(options, cls)
    assert kept.get_all_options() == fresh.get_all_options(), cls
  assert options.view_as(po.DebugOptions).experiments == ['a', 'b']
  assert _fresh_view(options, po.StandardOptions).runner == 'Other'
  assert options.view_as(po.TypeOptions).pipeline_type_check is False
  assert options.view_as(po.DirectOptions).direct_num_workers == 2
  # Views of views, and other options objects, are their own.
  assert options.view_as(po.DebugOptions).view_as(po.StandardOptions).runner == 'Other'
  assert po.PipelineOptions(['--runner=Direct']).view_as(po.StandardOptions).runner == 'Direct'


def test_changed_flags_or_a_dropped_option_make_a_fresh_view():
  beam_specs.install()
  flags = ['--direct_num_workers=2']
  options = po.PipelineOptions(flags)
  view = options.view_as(po.DirectOptions)
  flags[0] = '--direct_num_workers=3'
  assert options.view_as(po.DirectOptions).direct_num_workers == 2  # the store's, as Beam's
  assert _fresh_view(options, po.DirectOptions).direct_num_workers == 2
  options._all_options.pop('direct_num_workers')
  again = options.view_as(po.DirectOptions)
  assert again is not view and again.direct_num_workers == 3
  assert options.view_as(po.DirectOptions) is again
  options._all_options = dict(options._all_options)  # another store
  assert options.view_as(po.DirectOptions) is not again
  assert options.view_as(po.DirectOptions).direct_num_workers == 3


def test_options_from_the_command_line_are_viewed_afresh(monkeypatch):
  beam_specs.install()
  monkeypatch.setattr(sys, 'argv', ['prog', '--direct_num_workers=5'])
  options = po.PipelineOptions()
  view = options.view_as(po.DirectOptions)
  assert view.direct_num_workers == 5
  assert options.view_as(po.DirectOptions) is not view


def test_a_pipeline_that_fails_while_built_leaves_no_temporary_folder():
  # Beam makes the folder when the pipeline is created and removes it when it runs: a data error
  # found while an executor builds its pipeline left one in /tmp per failed run.
  with pytest.raises(ValueError, match='bad input'):
    with beam_specs.cleaned(beam.Pipeline(runner=FN_API_RUNNER)) as pipeline:
      folder = pipeline.local_tempdir
      assert os.path.isdir(folder)
      raise ValueError('bad input')
  assert not os.path.exists(folder)
  with beam_specs.cleaned(beam.Pipeline(runner=FN_API_RUNNER)) as pipeline:
    folder = pipeline.local_tempdir
    _ = pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x + 1)
  assert not os.path.exists(folder)
