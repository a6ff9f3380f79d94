"""Runs a compiled KFP v2 pipeline spec on this machine, task by task: a test harness, not a runtime.

    ./dev python tools/run_kfp_spec.py pipeline_outputs/kubeflow/pipeline.json [--run_id ID]

It checks what a cluster would do with `pipeline.json` before one is involved: every container
task runs the exact `command` and `args` of its `deploymentSpec` executor, in dependency order,
with `{{$}}` replaced by an ExecutorInput built the way the KFP v2 driver builds it: the task's
constant parameters as `parameterValues`, each upstream output artifact (URI and the metadata its
producer wrote to its output metadata file) as an input artifact, and output artifacts under the
pipeline root with empty metadata. The launcher's part is done here too: the output metadata file
is read back and handed downstream.

What it is not: no images (the command runs in the current environment, with the repository on
PYTHONPATH as in the image), no pods, no ML Metadata, no caching, no retries, one task at a time.
Resolver tasks (the LatestBlessedModelResolver, ML Metadata queries) resolve to no artifact: a
fresh pipeline root has no blessed model, which is what a first run on a cluster finds too.
Importer and any other executor kind, and placeholders other than `{{$}}`, stop the run with a
message. Use a local pipeline root (`kubeflow.pipeline_root`), which the cluster would refuse.
"""

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTOR_INPUT_PLACEHOLDER = '{{$}}'
OUTPUT_METADATA_FILE = 'executor_output.json'
# Vertex-style artifact resource names; TFX's entrypoint derives artifact ids from them.
ARTIFACT_NAME_PREFIX = 'projects/local/locations/local/metadataStores/default/artifacts/'


class SpecError(RuntimeError):
  """The spec asks for something this harness does not do, or a task failed."""


@dataclasses.dataclass
class TaskRun:
  """What one task did.

  Attributes:
    name: the task's name in the DAG.
    kind: its executor kind: `container` or `resolver`.
    outputs: output key -> RuntimeArtifact dicts (URI and metadata), as handed downstream.
    seconds: wall time of the task.
    log: the container's combined stdout and stderr (empty for a resolver).
  """

  name: str
  kind: str
  outputs: Dict[str, List[dict]]
  seconds: float = 0.0
  log: str = ''


def _title(artifact_type: dict) -> str:
  if 'schemaTitle' in artifact_type:
    return artifact_type['schemaTitle']
  return yaml.safe_load(artifact_type['instanceSchema'])['title']


def task_order(tasks: Dict[str, dict]) -> List[str]:
  """Task names so that each comes after the tasks it depends on (ties by name).

  Raises:
    SpecError: a dependency names no task, or the dependencies form a cycle.
  """
  upstream = {}
  for name, task in tasks.items():
    needs = set(task.get('dependentTasks', []))
    for source in task.get('inputs', {}).get('artifacts', {}).values():
      if 'taskOutputArtifact' in source:
        needs.add(source['taskOutputArtifact']['producerTask'])
    unknown = needs - set(tasks)
    if unknown:
      raise SpecError(f'task {name!r} depends on unknown tasks {sorted(unknown)}')
    upstream[name] = needs
  order, done = [], set()
  while len(order) < len(tasks):
    ready = sorted(n for n in tasks if n not in done and upstream[n] <= done)
    if not ready:
      raise SpecError(f'dependency cycle among {sorted(set(tasks) - done)}')
    order.extend(ready)
    done.update(ready)
  return order


def _parameter_values(name: str, task: dict, runtime_parameters: dict) -> dict:
  values = {}
  for key, source in task.get('inputs', {}).get('parameters', {}).items():
    if 'constant' in source.get('runtimeValue', {}):
      values[key] = source['runtimeValue']['constant']
    elif 'componentInputParameter' in source:
      values[key] = runtime_parameters[source['componentInputParameter']]
    else:
      raise SpecError(
        f'task {name!r}: parameter {key!r} has a source this harness does not '
        f'resolve: {sorted(source)}'
      )
  return values


class SpecRunner:
  """Runs the tasks of one compiled PipelineJob (the JSON KubeflowV2DagRunner writes)."""

  def __init__(
    self, job: dict, run_id: str, env: Optional[Dict[str, str]] = None, task_timeout_s: float = 1800
  ):
    self.job = job
    self.spec = job['pipelineSpec']
    self.pipeline_root = job['runtimeConfig']['gcsOutputDirectory']
    if '://' in self.pipeline_root:
      raise SpecError(
        f'pipeline root {self.pipeline_root!r} is not a local folder: compile with '
        '--set kubeflow.pipeline_root=/some/local/folder to run the spec here'
      )
    self.run_root = os.path.join(self.pipeline_root, self.spec['pipelineInfo']['name'], run_id)
    self.runtime_parameters = job['runtimeConfig'].get('parameterValues', {})
    self.env = env if env is not None else dict(os.environ)
    self.timeout_s = task_timeout_s
    self._ids = itertools.count(1)

  def _executor(self, task: dict) -> Tuple[dict, dict]:
    component = self.spec['components'][task['componentRef']['name']]
    return component, self.spec['deploymentSpec']['executors'][component['executorLabel']]

  def _input_artifacts(self, name: str, task: dict, runs: Dict[str, TaskRun]) -> dict:
    artifacts = {}
    for key, source in task.get('inputs', {}).get('artifacts', {}).items():
      if 'taskOutputArtifact' not in source:
        raise SpecError(
          f'task {name!r}: input artifact {key!r} has a source this harness does '
          f'not resolve: {sorted(source)}'
        )
      producer = source['taskOutputArtifact']
      produced = runs[producer['producerTask']].outputs[producer['outputArtifactKey']]
      # The driver reads input artifacts back from ML Metadata, where the type is the schema
      # title of the artifact's type.
      artifacts[key] = {
        'artifacts': [dict(a, type={'schemaTitle': _title(a['type'])}) for a in produced]
      }
    return artifacts

  def executor_input(self, name: str, runs: Dict[str, TaskRun]) -> dict:
    """The ExecutorInput of container task `name`, given the runs of its upstream tasks."""
    task = self.spec['root']['dag']['tasks'][name]
    component, _ = self._executor(task)
    task_root = os.path.join(self.run_root, name)
    outputs = component.get('outputDefinitions', {})
    return {
      'inputs': {
        'parameterValues': _parameter_values(name, task, self.runtime_parameters),
        'artifacts': self._input_artifacts(name, task, runs),
      },
      'outputs': {
        'artifacts': {
          key: {
            'artifacts': [
              {
                'name': f'{ARTIFACT_NAME_PREFIX}{next(self._ids)}',
                'type': definition['artifactType'],
                'uri': os.path.join(task_root, key),
                'metadata': {},
              }
            ]
          }
          for key, definition in outputs.get('artifacts', {}).items()
        },
        'parameters': {
          key: {'outputFile': os.path.join(task_root, key)} for key in outputs.get('parameters', {})
        },
        'outputFile': os.path.join(task_root, OUTPUT_METADATA_FILE),
      },
    }

  def _run_container(self, name: str, container: dict, runs: Dict[str, TaskRun]) -> TaskRun:
    executor_input = self.executor_input(name, runs)
    args = []
    for arg in container.get('args', []):
      if arg == EXECUTOR_INPUT_PLACEHOLDER:
        arg = json.dumps(executor_input)
      elif '{{$' in arg:
        raise SpecError(f'task {name!r}: placeholder {arg!r} is not one this harness fills')
      args.append(arg)
    task_root = os.path.dirname(executor_input['outputs']['outputFile'])
    os.makedirs(task_root, exist_ok=True)
    start = time.monotonic()
    result = subprocess.run(
      [*container['command'], *args],
      cwd=REPO,
      env=self.env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      timeout=self.timeout_s,
    )
    seconds = time.monotonic() - start
    if result.returncode != 0:
      raise SpecError(f'task {name!r} exited with {result.returncode}:\n{result.stdout[-6000:]}')
    # The launcher's part: what the executor wrote to the output metadata file (URIs, metadata)
    # replaces the output artifacts it was given.
    outputs = {k: v['artifacts'] for k, v in executor_input['outputs']['artifacts'].items()}
    path = executor_input['outputs']['outputFile']
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        written = json.load(f).get('artifacts', {})
      for key, artifacts in outputs.items():
        for given, back in zip(artifacts, written.get(key, {}).get('artifacts', [])):
          given['uri'] = back.get('uri', given['uri'])
          given['metadata'] = dict(given['metadata'], **back.get('metadata', {}))
    return TaskRun(name, 'container', outputs, seconds, result.stdout)

  def run(self, log: Callable[[str], None] = print) -> Dict[str, TaskRun]:
    """Runs every task in dependency order; returns the runs by task name.

    Raises:
      SpecError: an executor kind or input source the harness does not handle, or a failed task.
    """
    tasks = self.spec['root']['dag']['tasks']
    runs = {}
    for name in task_order(tasks):
      component, executor = self._executor(tasks[name])
      if 'container' in executor:
        runs[name] = self._run_container(name, executor['container'], runs)
      elif 'resolver' in executor:
        runs[name] = TaskRun(
          name,
          'resolver',
          {key: [] for key in component.get('outputDefinitions', {}).get('artifacts', {})},
        )
      else:
        raise SpecError(
          f'task {name!r}: executor kind {sorted(executor)} is not one this '
          'harness runs (container, resolver)'
        )
      log(f'{name}: {runs[name].kind} done in {runs[name].seconds:.1f} s')
    return runs


def run_spec(
  spec_path: str,
  run_id: str = 'local-run',
  env: Optional[Dict[str, str]] = None,
  log: Callable[[str], None] = print,
) -> Dict[str, TaskRun]:
  """Runs the compiled spec at `spec_path`; see SpecRunner.

  `env` is the tasks' environment: by default this process's, with the repository on PYTHONPATH
  as the image sets it.
  """
  with open(spec_path, encoding='utf-8') as f:
    job = json.load(f)
  if env is None:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  return SpecRunner(job, run_id, env).run(log)


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('spec', help='compiled PipelineJob JSON (kubeflow.output_file)')
  parser.add_argument('--run_id', default=time.strftime('run-%Y%m%d-%H%M%S'))
  args = parser.parse_args(argv)
  try:
    runs = run_spec(args.spec, args.run_id)
  except SpecError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{len(runs)} tasks done')
  return 0


if __name__ == '__main__':
  sys.exit(main())
