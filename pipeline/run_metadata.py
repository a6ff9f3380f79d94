"""A run read back from ML Metadata: the store, one run's view of it, the newest artifact a
component wrote, an artifact's custom property, and each component's executions with their wall
times.

The run summary (pipeline/summary.py), the compression figures and the benches read ML
Metadata through these, so there is one definition of "a component's time": its execution's
last update minus its creation, in the order the executions started.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Tuple


@dataclasses.dataclass
class ComponentRun:
  """One execution of one pipeline node.

  Attributes:
    name: The node id (`contract.*_ID`, or the ExampleGen's class name).
    state: COMPLETE, CACHED, FAILED, ...
    seconds: Wall time, from the execution's creation to its last update.
    start: When the execution was created (epoch seconds).
    end: When it was last updated (epoch seconds).
  """

  name: str
  state: str
  seconds: float
  start: float = 0.0
  end: float = 0.0


def open_store(metadata_path: str):
  """The ML Metadata store of a local run (its SQLite file)."""
  from ml_metadata.metadata_store import metadata_store

  from pipeline.tfx_api import tfx

  return metadata_store.MetadataStore(
    tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
  )


class RunView:
  """A store that shows only the artifacts one pipeline run's executions output: those they
  wrote and, for cached executions, those they reused (TFX links a cached execution to the
  outputs it reuses, in the run's context). Everything else goes to the store itself.

  Attributes:
    run: the run's `pipeline_run` context (its name is the run id), None if no run was found.
    nodes: per node id, in the order they started: its execution's state (COMPLETE, CACHED,
      ...) and the ids of the artifacts it output.
  """

  def __init__(self, store, run, artifact_ids, nodes=None):
    self._store, self.run, self._ids = store, run, frozenset(artifact_ids)
    self.nodes: Dict[str, Tuple[str, List[int]]] = nodes or {}

  def get_artifacts_by_type(self, type_name: str):
    return [a for a in self._store.get_artifacts_by_type(type_name) if a.id in self._ids]

  def __getattr__(self, name):
    return getattr(self._store, name)


def run_view(store, pipeline_name: str, since_ms: int = 0) -> RunView:
  """`store` as the newest run of `pipeline_name` started at or after `since_ms` (epoch ms)
  sees it. Without this, "the newest artifact" is another run's when this run reused (cached)
  older outputs: e.g. a config change undone reuses the first model, not the one trained since."""
  from ml_metadata import errors
  from ml_metadata.proto import metadata_store_pb2

  pipeline = store.get_context_by_type_and_name('pipeline', pipeline_name)
  executions = [
    e
    for e in (store.get_executions_by_context(pipeline.id) if pipeline is not None else [])
    if e.create_time_since_epoch >= since_ms
  ]
  try:
    run_type = store.get_context_type('pipeline_run').id
  except errors.NotFoundError:  # no run recorded yet
    run_type = None
  runs = {
    c.id: c
    for e in executions
    for c in store.get_contexts_by_execution(e.id)
    if c.type_id == run_type
  }
  if not runs:
    return RunView(store, None, ())
  run = max(runs.values(), key=lambda c: (c.create_time_since_epoch, c.id))
  executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
  ids = [e.id for e in executions]
  outputs: Dict[int, List[int]] = {i: [] for i in ids}
  for event in store.get_events_by_execution_ids(ids) if ids else []:
    if event.type == metadata_store_pb2.Event.OUTPUT:
      outputs[event.execution_id].append(event.artifact_id)
  state_names = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
  node_type = store.get_context_type('node').id
  nodes = {}
  prefix = f'{pipeline_name}.'
  for e in executions:
    for c in store.get_contexts_by_execution(e.id):
      if c.type_id == node_type and c.name.startswith(prefix):
        nodes[c.name[len(prefix) :]] = (state_names.get(e.last_known_state, '?'), outputs[e.id])
  return RunView(store, run, {a for found in outputs.values() for a in found}, nodes)


def latest(store, type_name: str, since_ms: int = 0):
  """The newest artifact of `type_name` created at or after `since_ms` (epoch ms), or None."""
  artifacts = [
    a for a in store.get_artifacts_by_type(type_name) if a.create_time_since_epoch >= since_ms
  ]
  return max(artifacts, key=lambda a: a.id) if artifacts else None


def latest_output(store, type_name: str, component_id: str, output_key: str):
  """The newest artifact of `type_name` that component `component_id` wrote as output
  `output_key`; artifact URIs are `<root>/<component>/<output_key>/<execution>`."""
  found = []
  for artifact in store.get_artifacts_by_type(type_name):
    parts = os.path.normpath(artifact.uri).split(os.sep)
    if len(parts) >= 3 and parts[-3] == component_id and parts[-2] == output_key:
      found.append(artifact)
  return max(found, key=lambda a: a.id) if found else None


def custom(artifact, key: str):
  """An artifact's custom property `key`, None if the artifact or the property is missing."""
  if artifact is None or key not in artifact.custom_properties:
    return None
  value = artifact.custom_properties[key]
  return value.WhichOneof('value') and getattr(value, value.WhichOneof('value'))


def component_runs(
  store, pipeline_name: Optional[str] = None, since_ms: int = 0, run=None
) -> List[ComponentRun]:
  """Every node execution of `pipeline_name` (every pipeline if None) created at or after
  `since_ms` (epoch ms), in the order they started; with `run` (a `pipeline_run` context,
  `RunView.run`), only that run's: another run ending less than the margin before would be
  listed too."""
  from ml_metadata.proto import metadata_store_pb2

  state_names = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
  mine = None if run is None else {e.id for e in store.get_executions_by_context(run.id)}
  runs = []
  prefix = f'{pipeline_name}.' if pipeline_name is not None else ''
  for context in store.get_contexts_by_type('node'):  # named `<pipeline>.<node id>`
    if not context.name.startswith(prefix):
      continue
    node = context.name[len(prefix) :] if prefix else context.name.rpartition('.')[2]
    for e in store.get_executions_by_context(context.id):
      if e.create_time_since_epoch < since_ms or (mine is not None and e.id not in mine):
        continue
      start, end = e.create_time_since_epoch / 1000, e.last_update_time_since_epoch / 1000
      state = state_names.get(e.last_known_state, '?')
      runs.append(ComponentRun(node, state, max(0.0, end - start), start, end))
  return sorted(runs, key=lambda r: r.start)
