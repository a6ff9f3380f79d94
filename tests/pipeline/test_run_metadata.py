"""The run summary reads the run it follows from ML Metadata, not the newest artifacts on disk."""

import os

from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline import config as config_lib
from pipeline import run_metadata, summary
from tfxlm import contract


class _Store:
  """An ML Metadata store laid out as TFX's LocalDagRunner lays it out: each execution in the
  contexts of its pipeline, its run and its node, linked to its outputs by OUTPUT events."""

  def __init__(self, path, pipeline_name):
    self.store = run_metadata.open_store(path)
    self.name = pipeline_name
    self.types = {
      name: self.store.put_context_type(mlmd.ContextType(name=name))
      for name in ('pipeline', 'pipeline_run', 'node')
    }
    self.pipeline = self._context('pipeline', pipeline_name)
    self.root = os.path.dirname(path)

  def _context(self, type_name, name):
    found = self.store.get_context_by_type_and_name(type_name, name)
    if found is not None:
      return found
    context = mlmd.Context(type_id=self.types[type_name], name=name)
    context.id = self.store.put_contexts([context])[0]
    return context

  def artifact(self, type_name, component, key, number, **custom):
    type_id = self.store.put_artifact_type(mlmd.ArtifactType(name=type_name))
    artifact = mlmd.Artifact(
      type_id=type_id, uri=os.path.join(self.root, 'root', component, key, str(number))
    )
    for name, value in custom.items():
      if isinstance(value, int):
        artifact.custom_properties[name].int_value = value
      else:
        artifact.custom_properties[name].string_value = value
    artifact.id = self.store.put_artifacts([artifact])[0]
    return artifact

  def run(self, run_id, outputs):
    """One pipeline run: `outputs` maps a node id to ([(output key, artifact)], cached)."""
    run = self._context('pipeline_run', run_id)
    for node, (artifacts, cached) in outputs.items():
      type_id = self.store.put_execution_type(mlmd.ExecutionType(name=f'tfx.{node}'))
      execution = mlmd.Execution(
        type_id=type_id,
        last_known_state=mlmd.Execution.CACHED if cached else mlmd.Execution.COMPLETE,
      )
      events = []
      for key, artifact in artifacts:
        event = mlmd.Event(type=mlmd.Event.OUTPUT)
        event.path.steps.add(key=key)
        event.path.steps.add(index=0)
        events.append((artifact, event))
      self.store.put_execution(
        execution, events, [self.pipeline, run, self._context('node', f'{self.name}.{node}')]
      )


def test_a_run_that_reuses_older_outputs_is_summarized_from_them_not_the_newest(tmp_path):
  config = config_lib.from_dict(
    {
      'pipeline_name': 'undo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 30, 'eval_steps': 1},
    }
  )
  built = _Store(config.metadata_path, 'undo')

  def trained(number, blessed, pushed):
    """The Trainer's, Evaluator's and Pusher's outputs of one training."""
    return {
      contract.TRAINER_ID: [
        ('model_run', built.artifact('ModelRun', contract.TRAINER_ID, 'model_run', number))
      ],
      contract.EVALUATOR_ID: [
        (
          'blessing',
          built.artifact(
            'ModelBlessing', contract.EVALUATOR_ID, 'blessing', number, blessed=int(blessed)
          ),
        )
      ],
      contract.PUSHER_ID: [
        (
          'pushed_model',
          built.artifact(
            'PushedModel',
            contract.PUSHER_ID,
            'pushed_model',
            number,
            pushed=int(bool(pushed)),
            **({'pushed_destination': pushed} if pushed else {}),
          ),
        )
      ],
    }

  first = trained(1, blessed=True, pushed='/serving/undo/100')
  built.run('run-1', {node: (outputs, False) for node, outputs in first.items()})
  # The changed config: a newer model, not blessed, nothing pushed.
  second = trained(2, blessed=False, pushed=None)
  built.run('run-2', {node: (outputs, False) for node, outputs in second.items()})
  # The change undone: every step is a cache hit on the first run's executions.
  built.run('run-3', {node: (outputs, True) for node, outputs in first.items()})

  run = summary.collect(config, started=0.0)
  # The components table too: this run's three (cached) executions, not all nine since `started`.
  assert [(c.name, c.state) for c in run.components] == [
    (node, 'CACHED') for node in (contract.TRAINER_ID, contract.EVALUATOR_ID, contract.PUSHER_ID)
  ]
  assert run.blessed is True
  assert run.pushed_path == '/serving/undo/100'
  assert run.model_run_dirs == [first[contract.TRAINER_ID][0][1].uri]

  view = run_metadata.run_view(built.store, 'undo')
  assert view.run.name == 'run-3'
  assert [a.id for a in view.get_artifacts_by_type('ModelBlessing')] == [
    first[contract.EVALUATOR_ID][0][1].id
  ]
  # Another pipeline in the same store, or none at all: nothing of this one's.
  assert run_metadata.run_view(built.store, 'other').get_artifacts_by_type('ModelRun') == []
