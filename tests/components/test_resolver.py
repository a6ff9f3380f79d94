"""The Evaluator's baseline: the latest blessed model, never the candidate itself."""

import os
import random

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components import resolver as resolver_lib
from pipeline import config as config_lib
from pipeline import local_runner
from tests.pipeline import tiny_pipeline


def _model(model_id):
  model = standard_artifacts.Model()
  model.id = model_id
  return model


def _blessing(blessing_id, model_id, blessed=True):
  blessing = standard_artifacts.ModelBlessing()
  blessing.id = blessing_id
  blessing.set_int_custom_property('current_model_id', model_id)
  blessing.set_int_custom_property('blessed', int(blessed))
  return blessing


def _resolve(models, blessings, candidate):
  strategy = resolver_lib.LatestBlessedBaselineStrategy()
  result = strategy.resolve_artifacts(
    None,
    {
      'model': [_model(i) for i in models],
      'model_blessing': blessings,
      resolver_lib.CANDIDATE_KEY: [_model(candidate)],
    },
  )
  assert [a.id for a in result[resolver_lib.CANDIDATE_KEY]] == [candidate]
  return [a.id for a in result['model']], [a.id for a in result['model_blessing']]


@pytest.mark.parametrize(
  'models, blessings, candidate, baseline',
  [
    # The candidate is new and the newest: the newest blessed other model.
    ([1, 2, 3], [(11, 1), (12, 2)], 3, [2]),
    # A rerun with nothing changed: the candidate is cached and blessed; the one before it.
    ([1, 2], [(11, 1), (12, 2)], 2, [1]),
    # A reverted config: an older cached candidate while a newer blessed model exists.
    ([1, 2, 3], [(11, 1), (13, 3)], 1, [3]),
    # Only the candidate is blessed, or nothing is: no baseline.
    ([1], [(11, 1)], 1, []),
    ([1, 2], [], 2, []),
    # Not blessed models are never a baseline.
    ([1, 2, 3], [(11, 1), (12, 2, False)], 3, [1]),
  ],
)
def test_the_baseline_is_the_latest_blessed_model_other_than_the_candidate(
  models, blessings, candidate, baseline
):
  resolved_models, resolved_blessings = _resolve(
    models, [_blessing(b[0], b[1], *b[2:]) for b in blessings], candidate
  )
  assert resolved_models == baseline
  assert candidate not in resolved_models
  assert len(resolved_blessings) == len(baseline)


def test_the_baseline_comes_from_the_candidates_own_trainer():
  def model(model_id, component):
    artifact = _model(model_id)
    artifact.uri = f'/root/{component}/model/{model_id}'
    return artifact

  strategy = resolver_lib.LatestBlessedBaselineStrategy()
  teachers, students = [model(1, 'Trainer'), model(3, 'Trainer')], [model(2, 'DistillTrainer')]
  blessings = [_blessing(11, 1), _blessing(12, 2), _blessing(13, 3)]
  for candidate, baseline in ((model(4, 'DistillTrainer'), 2), (model(5, 'Trainer'), 3)):
    result = strategy.resolve_artifacts(
      None,
      {
        'model': teachers + students,
        'model_blessing': blessings,
        resolver_lib.CANDIDATE_KEY: [candidate],
      },
    )
    assert [a.id for a in result['model']] == [baseline]


def test_the_strategy_refuses_to_run_without_the_candidate():
  with pytest.raises(ValueError, match='candidate'):
    resolver_lib.LatestBlessedBaselineStrategy().resolve_artifacts(
      None, {'model': [_model(1)], 'model_blessing': [_blessing(11, 1)]}
    )


# --- Real runs ---------------------------------------------------------------------------------

WORDS = {'1': ('good', 'great', 'fine'), '0': ('bad', 'awful', 'dull')}
FILLER = tuple('the a film movie story plot scene music ending day night world'.split())


def _config(tmp_path, learning_rate):
  data = tmp_path / 'data'
  if not data.exists():
    data.mkdir()
    rng = random.Random(0)
    with open(data / 'reviews.csv', 'w') as f:
      f.write('review,sentiment\n')
      for _ in range(160):
        label = rng.choice('01')
        words = [rng.choice(FILLER) for _ in range(5)] + [rng.choice(WORDS[label])]
        f.write(f'"{" ".join(rng.sample(words, len(words)))}",{label}\n')
  config = tiny_pipeline.classify_config(
    'baseline',
    tmp_path / 'outputs',
    data,
    per_replica_batch_size=16,
    train_steps=6,
    eval_steps=1,
    eval_every_steps=6,
    checkpoint_every_steps=6,
    learning_rate=learning_rate,
  )
  # Everything is blessed: the test is about which model is the baseline.
  config['evaluation'] = tiny_pipeline.BLESS_EVERY_MODEL
  path = tiny_pipeline.write(tmp_path / f'config-{learning_rate}.yaml', config)
  return str(path)


def _evaluations(config):
  """(candidate model id, baseline model id or None) of every Evaluator execution that ran."""
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = config.metadata_path
  store = metadata_store.MetadataStore(connection)
  evaluator = store.get_execution_type('tfx.components.evaluator.component.Evaluator')
  runs = []
  for execution in sorted(store.get_executions_by_type(evaluator.name), key=lambda e: e.id):
    if execution.last_known_state != metadata_store_pb2.Execution.COMPLETE:
      continue
    inputs = {}
    for event in store.get_events_by_execution_ids([execution.id]):
      if event.type == metadata_store_pb2.Event.INPUT:
        inputs[event.path.steps[0].key] = event.artifact_id
    runs.append((inputs['model'], inputs.get('baseline_model')))
  return runs


@pytest.mark.slow
def test_real_runs_compare_each_candidate_with_the_last_other_blessed_model(tmp_path):
  first, second = _config(tmp_path, 3e-3), _config(tmp_path, 1e-3)
  assert local_runner.main(['--config', first, '--no-summary']) == 0
  assert local_runner.main(['--config', second, '--no-summary']) == 0
  # Back to the first config: its Trainer is cached, and its model is older than the second's.
  assert local_runner.main(['--config', first, '--no-summary']) == 0
  config = config_lib.load_config(first)
  runs = _evaluations(config)
  assert len(runs) == 3, runs
  (model_a, baseline_1), (model_b, baseline_2), (model_c, baseline_3) = runs
  assert baseline_1 is None  # nothing was blessed before the first run
  assert model_b != model_a and baseline_2 == model_a
  assert model_c == model_a  # the cached candidate ...
  assert baseline_3 == model_b  # ... against the newer blessed model, not itself
  assert os.path.isdir(config.serving_root)
