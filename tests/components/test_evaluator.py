"""The Evaluator's executor: TFX's own, run with the earlier objects frozen and no type checks."""

import gc

import pytest
from tfx.components.evaluator import executor as tfx_evaluator

from components import evaluator
from pipeline import local_runner
from pipeline.tfx_api import tfx

# As local runs pass it: without it, TFX builds an sdist of itself for the Beam workers.
SETUP = f'--setup_file={local_runner.SETUP_FILE}'


def _run(monkeypatch, beam_args, fail=False):
  """Runs the executor's Do over a stand-in for TFX's; returns what the stand-in saw."""
  seen = {}

  def stock_do(self, input_dict, output_dict, exec_properties):
    seen['frozen'] = gc.get_freeze_count()
    seen['args'] = list(self._beam_pipeline_args)
    seen['inputs'] = (input_dict, output_dict, exec_properties)
    if fail:
      raise RuntimeError('evaluation failed')

  monkeypatch.setattr(tfx_evaluator.Executor, 'Do', stock_do)
  context = tfx_evaluator.Executor.Context(beam_pipeline_args=[SETUP, *beam_args], tmp_dir='/tmp')
  executor = evaluator.Executor(context)
  if fail:
    with pytest.raises(RuntimeError, match='evaluation failed'):
      executor.Do({'a': []}, {'b': []}, {'c': 1})
  else:
    executor.Do({'a': []}, {'b': []}, {'c': 1})
  return seen


def test_earlier_objects_frozen_during_the_evaluation_only(monkeypatch, unfrozen_gc):
  earlier = [object() for _ in range(10)]
  seen = _run(monkeypatch, ['--direct_num_workers=1'])
  assert seen['frozen'] >= len(earlier)
  assert seen['inputs'] == ({'a': []}, {'b': []}, {'c': 1})
  assert gc.get_freeze_count() == 0
  # Unfrozen after a failed evaluation too.
  _run(monkeypatch, [], fail=True)
  assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_stays_in_force_through_the_evaluation(monkeypatch, unfrozen_gc):
  gc.freeze()
  try:
    kept = gc.get_freeze_count()
    seen = _run(monkeypatch, ['--direct_num_workers=1'])
    assert kept > 0 and seen['frozen'] >= kept
    assert gc.get_freeze_count() > 0  # frozen again after the evaluation (tfxlm.collector)
    _run(monkeypatch, [], fail=True)
    assert gc.get_freeze_count() > 0
  finally:
    gc.unfreeze()


@pytest.mark.parametrize(
  'args, expected',
  [
    (['--direct_num_workers=1'], ['--no_pipeline_type_check']),
    (['--pipeline_type_check'], ['--pipeline_type_check']),
    (['--no_pipeline_type_check'], ['--no_pipeline_type_check']),
  ],
)
def test_type_checks_off_unless_the_arguments_say(monkeypatch, args, expected):
  seen = _run(monkeypatch, args)['args']
  assert seen[: len(args) + 1] == [SETUP, *args]  # the given arguments kept, in order
  assert [a for a in seen if 'type_check' in a] == expected


def test_use_executor_keeps_the_component_and_its_beam_arguments():
  component = tfx.components.Evaluator(
    examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples),
    model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
  ).with_beam_pipeline_args(['--direct_num_workers=1'])
  assert evaluator.use_executor(component) is component
  assert type(component) is tfx.components.Evaluator  # MLMD's execution type is unchanged
  assert component.executor_spec.executor_class is evaluator.Executor
  assert component.executor_spec.beam_pipeline_args == ['--direct_num_workers=1']
