"""The Evaluator's executor: TFX's own, run with the earlier objects frozen and no type checks."""

import gc
import json
import logging
import re

import pytest
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import standard_artifacts

from components import evaluator
from pipeline import local_runner
from pipeline.tfx_api import tfx
from tfxlm import contract

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


def _model(folder, task='classify', labels=('neg', 'pos'), outputs=('probabilities',)):
  """A Model artifact's folder as the Trainer writes it, with what the check reads: the trainer
  config's task, the label vocabulary and the serving signature's outputs."""
  from tensorflow.core.framework import types_pb2
  from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

  serving = folder / contract.SERVING_MODEL_DIR
  (serving / contract.EXTRA_DIR).mkdir(parents=True)
  (serving / contract.EXTRA_DIR / contract.TRAINER_CONFIG_FILE).write_text(
    json.dumps({'task': task})
  )
  if labels is not None:
    (serving / 'assets').mkdir()
    (serving / 'assets' / contract.LABEL_VOCAB_NAME).write_text('\n'.join(labels) + '\n')
  signature = meta_graph_pb2.SignatureDef()
  for name in outputs:
    signature.outputs[name].dtype = types_pb2.DT_FLOAT
  saved = saved_model_pb2.SavedModel()
  saved.meta_graphs.add().signature_def[contract.SERVING_DEFAULT].CopyFrom(signature)
  (serving / 'saved_model.pb').write_bytes(saved.SerializeToString())
  artifact = standard_artifacts.Model()
  artifact.uri = str(folder)
  return artifact


@pytest.mark.parametrize(
  'baseline, why',
  [
    ({}, None),
    ({'labels': ('mid', 'neg', 'pos')}, r'has labels \[mid, neg, pos\], this model \[neg, pos\]'),
    ({'labels': ('bad', 'good')}, r'has labels \[bad, good\]'),
    ({'task': 'clm', 'labels': None}, 'is a clm model, this model classify'),
    ({'outputs': ('logits',)}, r"outputs \['logits'\], this model \['probabilities'\]"),
  ],
)
def test_a_baseline_of_other_labels_task_or_outputs_is_not_comparable(tmp_path, baseline, why):
  candidate = _model(tmp_path / 'candidate')
  other = _model(tmp_path / 'baseline', **baseline)
  found = evaluator.baseline_mismatch(candidate.uri, other.uri)
  assert found is None if why is None else re.search(why, found), found


def test_an_unusable_baseline_is_left_out_with_one_warning_naming_it(monkeypatch, tmp_path, caplog):
  candidate = _model(tmp_path / 'Trainer' / 'model' / '30')
  gone = standard_artifacts.Model()
  gone.uri = str(tmp_path / 'Trainer' / 'model' / '29')  # deleted by hand, or moved
  kept = _model(tmp_path / 'Trainer' / 'model' / '28')
  seen = {}
  monkeypatch.setattr(tfx_evaluator.Executor, 'Do', lambda self, i, o, e: seen.update(inputs=i))
  executor = evaluator.Executor(tfx_evaluator.Executor.Context(beam_pipeline_args=[SETUP]))
  with caplog.at_level(logging.WARNING):
    executor.Do({'model': [candidate], 'baseline_model': [gone]}, {}, {})
  assert seen['inputs'] == {'model': [candidate], 'baseline_model': []}
  [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert f'the last blessed model ({gone.uri}) has no SavedModel' in warning
  assert 'not compared' in warning
  # A comparable one is passed on as it is.
  caplog.clear()
  executor.Do({'model': [candidate], 'baseline_model': [kept]}, {}, {})
  assert seen['inputs'] == {'model': [candidate], 'baseline_model': [kept]}
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
