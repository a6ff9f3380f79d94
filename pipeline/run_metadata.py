"""A run read back from ML Metadata: the store, the newest artifact a component wrote, an
artifact's custom property, and each component's executions with their wall times.

The run summary (pipeline/summary.py), the compression figures and the benches read ML
Metadata through these, so there is one definition of "a component's time": its execution's
last update minus its creation, in the order the executions started.
"""

import dataclasses
import os
from typing import List, Optional


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
  store, pipeline_name: Optional[str] = None, since_ms: int = 0
) -> List[ComponentRun]:
  """Every node execution of `pipeline_name` (every pipeline if None) created at or after
  `since_ms` (epoch ms), in the order they started."""
  from ml_metadata.proto import metadata_store_pb2

  state_names = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
  runs = []
  prefix = f'{pipeline_name}.' if pipeline_name is not None else ''
  for context in store.get_contexts_by_type('node'):  # named `<pipeline>.<node id>`
    if not context.name.startswith(prefix):
      continue
    node = context.name[len(prefix) :] if prefix else context.name.rpartition('.')[2]
    for e in store.get_executions_by_context(context.id):
      if e.create_time_since_epoch < since_ms:
        continue
      start, end = e.create_time_since_epoch / 1000, e.last_update_time_since_epoch / 1000
      state = state_names.get(e.last_known_state, '?')
      runs.append(ComponentRun(node, state, max(0.0, end - start), start, end))
  return sorted(runs, key=lambda r: r.start)
