"""Compiles the pipeline for Kubeflow Pipelines v2 (and Vertex AI Pipelines), and submits it.

    python -m pipeline.kubeflow_runner [compile] [--config ...] [--set KEY=VALUE ...]
    python -m pipeline.kubeflow_runner submit --host http://KFP_HOST [--experiment NAME] [...]

The same `create_pipeline(config)` as the local runner; only the paths, the Beam arguments and
the Trainer's resources differ. Every component runs in the `kubeflow.image` container (this
repository's Dockerfile), where the project sits at `kubeflow.image_repo_dir`: local paths inside
the repository (the curated schemas) are rewritten to that folder. Tasks that use GPUs run
`kubeflow.gpu_image` instead: the same Dockerfile with TensorFlow's CUDA libraries.

The TFX CLI (engine `vertex`, TFX 1.21's KFP v2 engine) runs this file too, with the config from
TFXLM_CONFIG:

    tfx pipeline create --engine vertex --pipeline_path pipeline/kubeflow_runner.py
    tfx pipeline compile --engine vertex --pipeline_path pipeline/kubeflow_runner.py
    tfx run create --engine vertex --pipeline_name NAME --project P --region R   # Vertex AI
"""

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from typing import Dict, Tuple, Union

from pipeline import beam_policy, config_checks, demo_data
from pipeline import config as config_lib
from tfxlm import contract, schema_file

# The image's Python (Debian 13, see the Dockerfile) and where the demo's data sits in it.
IMAGE_SITE_PACKAGES = '/opt/venv/lib/python3.13/site-packages'
IMAGE_BUNDLED_IMDB = f'{IMAGE_SITE_PACKAGES}/tfx/examples/imdb/data'
# The named data sets (pipeline/demo_data.py), fetched into the image by the Dockerfile.
IMAGE_DATA_CACHE = '/opt/tfxlm-cache'
GPU_RESOURCE = 'NVIDIA_TESLA_T4'  # Vertex AI Training's accelerator type
KFP_GPU_RESOURCE = 'nvidia.com/gpu'  # the Kubernetes resource KFP requests for a pod
# The tasks `kubeflow.trainer_cpu` / `trainer_memory` size: every stage's Trainer.
TRAINERS = (*contract.TRAINER_IDS, contract.DISTILL_TRAINER_ID)
# The one pipeline-root scheme both KFP 2's launcher and TensorFlow 2.21's file system take.
PORTABLE_ROOT_SCHEME = 'gs://'


def _in_image(config: config_lib.PipelineConfig, path: str) -> str:
  """Maps a local path inside this repository to the same file inside the image."""
  repo = config_lib.REPO + os.sep
  if path.startswith(repo):
    return os.path.join(config.kubeflow.image_repo_dir, path[len(repo) :])
  return path


def _cluster_input_base(config: config_lib.PipelineConfig) -> str:
  """`data.input_base` as the pods see it."""
  base = config.data.input_base
  if not base:
    return IMAGE_BUNDLED_IMDB  # the demo's data, inside the image's tfx package
  if '://' in base:
    return base
  if demo_data.is_dataset(base):
    return demo_data.dataset_dir(base, IMAGE_DATA_CACHE)  # fetched when the image was built
  path = config.resolve_path(base)
  if path.startswith(config_lib.REPO + os.sep):
    return _in_image(config, path)
  raise config_lib.ConfigError(
    f'data.input_base: {path!r} is a folder of this machine, which the cluster cannot see: '
    'copy the data to gs://... and point data.input_base there'
  )


def _check_cluster_paths(config: config_lib.PipelineConfig) -> None:
  """Checkpoints and models the pods read must be where they can: a local folder is refused
  here, as a local data.input_base is, not by KFP's launcher or a pod that cannot find it."""
  from tfxlm import pinned_wheels

  paths = [
    ('train.preset', config.train.preset),
    ('pretrain.preset', config.pretrain.preset if config.pretrain else None),
    ('base_model', config.base_model),
    ('distill.teacher', config.distill.teacher if config.distill else None),
  ]
  for key, value in paths:
    if not value or '://' in value or pinned_wheels.is_handle(value) or os.sep not in value:
      continue  # a bucket, a pinned wheel (baked into the image) or a keras-hub preset name
    raise config_lib.ConfigError(
      f'{key}: {value!r} is a folder of this machine, which the cluster cannot see: copy it to'
      f' gs://... and point {key} there (or give a pypi: or hf:// handle)'
    )


def beam_args(config: config_lib.PipelineConfig) -> list:
  """Beam arguments on the cluster (`pipeline.beam_policy.kubeflow`)."""
  return beam_policy.kubeflow(config.kubeflow.beam_args, config.kubeflow.image_repo_dir)


def gpu_tasks(kubeflow: config_lib.KubeflowConfig) -> Tuple[str, ...]:
  """Tasks whose own pods use GPUs: the Trainers with `trainer_gpus` on one replica.

  With several replicas or a TPU, the Trainer pods only start a Vertex AI Training job (the
  replicas, not the pods, get the accelerators), so they run the CPU image.
  """
  if kubeflow.trainer_gpus and kubeflow.trainer_replicas == 1 and not kubeflow.trainer_tpu:
    return contract.TRAINER_IDS
  return ()


def task_images(kubeflow: config_lib.KubeflowConfig) -> Union[str, Dict[str, str]]:
  """KubeflowV2DagRunner's `default_image`: the GPU image for `gpu_tasks`, the CPU one else."""
  gpu = gpu_tasks(kubeflow)
  if not gpu:
    return kubeflow.image
  from tfx.orchestration.kubeflow.v2 import pipeline_builder

  return {
    pipeline_builder.DEFAULT_IMAGE_PATH_KEY: kubeflow.image,
    **{task: kubeflow.gpu_image for task in gpu},
  }


def _trainer_resources(pipeline, kubeflow: config_lib.KubeflowConfig) -> None:
  """Hands training to Vertex AI Training with several replicas or a TPU."""
  trainers = [c for c in pipeline.components if c.id in contract.TRAINER_IDS]
  if kubeflow.trainer_replicas > 1 or kubeflow.trainer_tpu:
    # One Kubeflow pod cannot host several workers: Vertex AI Training runs the replicas with
    # TF_CONFIG set (MultiWorkerMirrored) or the TPU (TPUStrategy), in our image.
    from tfx.dsl.components.base import executor_spec
    from tfx.extensions.google_cloud_ai_platform import constants as vertex
    from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_executor

    machine = {'machine_type': kubeflow.trainer_machine_type}
    if kubeflow.trainer_tpu:
      machine = (
        {'machine_type': 'cloud-tpu', 'accelerator_type': 'TPU_V2', 'accelerator_count': 8}
        if kubeflow.trainer_tpu == 'v2-8'
        else {'machine_type': kubeflow.trainer_tpu}
      )
    elif kubeflow.trainer_gpus:
      machine.update(accelerator_type=GPU_RESOURCE, accelerator_count=kubeflow.trainer_gpus)
    image = (
      kubeflow.gpu_image if kubeflow.trainer_gpus and not kubeflow.trainer_tpu else (kubeflow.image)
    )
    pool = {'machine_spec': machine, 'container_spec': {'image_uri': image}}
    pools = [dict(pool, replica_count=1)]  # the chief
    if kubeflow.trainer_replicas > 1:
      pools.append(dict(pool, replica_count=kubeflow.trainer_replicas - 1))
    # A CustomJob as TFX's Vertex client takes it: `job_spec` holds the CustomJobSpec (a bare
    # CustomJobSpec is deprecated there).
    training_args = {'project': kubeflow.vertex_project, 'job_spec': {'worker_pool_specs': pools}}
    for trainer in trainers:
      custom = json.loads(trainer.exec_properties.get('custom_config') or 'null') or {}
      custom.update(
        {
          vertex.ENABLE_VERTEX_KEY: True,
          vertex.VERTEX_REGION_KEY: kubeflow.vertex_region,
          vertex_executor.TRAINING_ARGS_KEY: training_args,
        }
      )
      trainer.exec_properties['custom_config'] = json.dumps(custom, sort_keys=True)
      trainer.executor_spec = executor_spec.ExecutorClassSpec(vertex_executor.GenericExecutor)


def _resource_spec(cpu: float, memory: str, gpus: int = 0):
  """A pod's ResourceSpec as kfp's compiler writes one: the request and the limit of each
  resource alike, in both the `resource_*` fields of KFP >= 2.5 and the older numeric ones
  (cores; memory in GB of 10^9 bytes). None when nothing is set."""
  from kfp.pipeline_spec import pipeline_spec_pb2

  resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
  spec = resources()
  if cpu:
    spec.cpu_request = spec.cpu_limit = cpu
    spec.resource_cpu_request = spec.resource_cpu_limit = f'{cpu:g}'
  if memory:
    spec.memory_request = spec.memory_limit = memory_gb(memory)
    spec.resource_memory_request = spec.resource_memory_limit = memory
  if gpus:
    spec.accelerator.CopyFrom(
      resources.AcceleratorConfig(
        type=KFP_GPU_RESOURCE, count=gpus, resource_type=KFP_GPU_RESOURCE, resource_count=str(gpus)
      )
    )
  return spec if spec.ByteSize() else None


def memory_gb(quantity: str) -> float:
  """A memory quantity (`kubeflow.trainer_memory`'s form, e.g. 8G or 8Gi) in GB of 10^9 bytes."""
  number = quantity.rstrip('EPTGMKi')
  suffix = quantity[len(number) :]
  if not suffix:
    return int(number) / 1e9
  power = 'KMGTPE'.index(suffix[0]) + 1
  scale = 1024**power if suffix.endswith('i') else 1000**power
  return int(number) * scale / 1e9


def _pod_resources(pipeline, kubeflow: config_lib.KubeflowConfig) -> None:
  """Gives every task's pod its CPU and memory (`kubeflow.trainer_*` for the Trainers that
  train in their pod, `kubeflow.task_*` for the others) and the GPUs of `gpu_tasks`.

  TFX's builder drops the resources of a FileBasedExampleGen: `compile_pipeline` writes them
  into the spec (`_example_gen_resources`).
  """
  from tfx.dsl.components.base import base_component

  trains_in_pod = kubeflow.trainer_replicas == 1 and not kubeflow.trainer_tpu
  gpu = gpu_tasks(kubeflow)
  for component in pipeline.components:
    if not isinstance(component, base_component.BaseComponent):
      continue  # a resolver or an importer: no container of ours
    if trains_in_pod and component.id in TRAINERS:
      spec = _resource_spec(
        kubeflow.trainer_cpu,
        kubeflow.trainer_memory,
        kubeflow.trainer_gpus if component.id in gpu else 0,
      )
    else:
      spec = _resource_spec(kubeflow.task_cpu, kubeflow.task_memory)
    if spec is not None:
      component.with_platform_config(spec)


def _example_gen_resources(spec_path: str, kubeflow: config_lib.KubeflowConfig) -> None:
  """Writes `kubeflow.task_*` into the containers the compile left without resources (the
  FileBasedExampleGens, whose builder ignores a platform config)."""
  from google.protobuf import json_format

  spec = _resource_spec(kubeflow.task_cpu, kubeflow.task_memory)
  if spec is None:
    return
  with open(spec_path, encoding='utf-8') as f:
    job = json.load(f)
  executors = job['pipelineSpec']['deploymentSpec']['executors']
  containers = [e['container'] for e in executors.values() if 'container' in e]
  missing = [c for c in containers if 'resources' not in c]
  if not missing:
    return
  for container in missing:
    container['resources'] = json_format.MessageToDict(spec)
  with open(spec_path, 'w', encoding='utf-8') as f:
    json.dump(job, f, sort_keys=True)  # as KubeflowV2DagRunner writes it


def under_tfx_cli() -> bool:
  """Whether the TFX CLI runs this file: it patched KubeflowV2DagRunner.run in this process."""
  module = sys.modules.get('tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner')
  return module is not None and hasattr(module.KubeflowV2DagRunner.run, '__wrapped__')


def check(config: config_lib.PipelineConfig, config_file: str = '') -> None:
  """The Kubeflow keys' checks that need no TFX: run before the heavy imports, so a config
  error comes in a second. `config_file`: the file the TFX CLI's run read, for its advice.

  Raises:
    ConfigError: naming the key and what to do.
  """
  kubeflow = config.kubeflow
  if not kubeflow.pipeline_root:
    if under_tfx_cli():
      source = (
        f'{config_file} (from {config_lib.CONFIG_ENV})'
        if os.environ.get(config_lib.CONFIG_ENV)
        else f'{config_file}, the demo config read as {config_lib.CONFIG_ENV} is unset'
      )
      raise config_lib.ConfigError(
        f'kubeflow.pipeline_root is empty in {source}: the TFX CLI takes no --set, so give '
        f'your config file `kubeflow: {{pipeline_root: gs://BUCKET/tfx-lm}}` and name it with '
        f'export {config_lib.CONFIG_ENV}=my.yaml before the tfx command'
      )
    raise config_lib.ConfigError(
      'kubeflow.pipeline_root is empty: set the artifact root the cluster writes to, e.g. '
      '--set kubeflow.pipeline_root=gs://BUCKET/tfx-lm (make: KFP_PIPELINE_ROOT=gs://...)'
    )
  if kubeflow.trainer_gpus and not kubeflow.gpu_image:
    raise config_lib.ConfigError(
      f'kubeflow.trainer_gpus is {kubeflow.trainer_gpus} but kubeflow.gpu_image is empty: the '
      'CPU image has no CUDA libraries, so the Trainers would train on the CPU. Build the GPU '
      'image (docker build --build-arg STACK_LOCK=requirements-gpu.lock, see '
      'pipeline/KUBEFLOW.md) and set --set kubeflow.gpu_image=REGISTRY/tfx-lm-gpu:TAG'
    )
  _check_cluster_paths(config)
  _cluster_input_base(config)
  if '://' not in config.schema_file and not config.schema_file.startswith(
    config_lib.REPO + os.sep
  ):
    _cluster_schema(config, '')  # refuses a folder of this machine, reading nothing


def build(config: config_lib.PipelineConfig):
  """The pipeline as it runs on the cluster."""
  from pipeline import factory
  from pipeline.tfx_api import tfx

  kubeflow = config.kubeflow
  check(config)
  config = dataclasses.replace(
    config, data=dataclasses.replace(config.data, input_base=_cluster_input_base(config))
  )
  config = config_lib.remote_defaults(config)
  with tempfile.TemporaryDirectory() as local_copy:
    # The factory reads the schema (its label rules, its fingerprint) as it builds the pipeline.
    config, schema_uri = _cluster_schema(config, local_copy)

    def schema_path(path: str) -> str:
      return schema_uri if path == config.schema_file else _in_image(config, path)

    pipeline = factory.create_pipeline(
      config,
      input_base=config.data.input_base,  # the folder or bucket the pods read, nothing to fetch
      pipeline_root=kubeflow.pipeline_root,
      metadata_connection_config=None,  # the cluster brings its ML Metadata
      beam_pipeline_args=beam_args(config),
      serving_root=kubeflow.serving_root or f'{kubeflow.pipeline_root}/serving',
      schema_path=schema_path,
      baseline_strategy=tfx.dsl.experimental.LatestBlessedModelStrategy,
    )
  _trainer_resources(pipeline, kubeflow)
  _pod_resources(pipeline, kubeflow)
  return pipeline


def _cluster_schema(
  config: config_lib.PipelineConfig, local_copy: str
) -> Tuple[config_lib.PipelineConfig, str]:
  """The config to build the pipeline from, and the schema file as the pods see it.

  A curated schema of this repository is read inside the image; a bucket's (gs://...) is
  copied into the folder `local_copy` and checked as a local one is at config load, the config
  then naming the copy; a folder elsewhere on this machine is refused.
  """
  path = config.schema_file
  if '://' not in path:
    if path.startswith(config_lib.REPO + os.sep):
      return config, _in_image(config, path)
    raise config_lib.ConfigError(
      f'data.schema_dir: {os.path.dirname(path)!r} is a folder of this machine, which the '
      'cluster cannot see: copy schema.pbtxt to gs://... and point data.schema_dir there (or '
      "put it under this repository's schemas/ and rebuild the image)"
    )
  try:
    content = schema_file.read_bytes(path)
  except OSError as e:
    raise config_lib.ConfigError(
      f'data.schema_dir: cannot read {path} ({e.strerror or e}): the compile reads the schema '
      'for its label rules; check the path and your access to it'
    ) from None
  with open(os.path.join(local_copy, 'schema.pbtxt'), 'wb') as f:
    f.write(content)
  local = dataclasses.replace(config, data=dataclasses.replace(config.data, schema_dir=local_copy))
  try:
    config_checks.check_schema_file(local)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(str(e).replace(local.schema_file, path)) from None
  return local, path


def runner_config(config: config_lib.PipelineConfig):
  """The KubeflowV2DagRunner's config: our images (`task_images`), and pipeline spec schema 2.1.

  Schema 2.1 is the one the open-source KFP 2 backend runs: its driver resolves a task's
  constant parameters only in the 2.1 form (`runtimeValue.constant`; 2.0's `constantValue`
  fails with "param runtime value spec ... not implemented") and hands them to the container
  as `parameterValues`, which TFX's entrypoint reads only when the spec passes it the
  component's input definitions (`--json_serialized_inputs_spec_args`, 2.1 only). Vertex AI
  Pipelines runs 2.1 too.
  """
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

  return kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
    default_image=task_images(config.kubeflow), use_pipeline_spec_2_1=True
  )


def compile_pipeline(config: config_lib.PipelineConfig, output_file: str = '') -> str:
  """Writes the KFP v2 pipeline spec (JSON) and returns its path."""
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

  output_file = os.path.abspath(output_file or config.kubeflow.output_file)
  os.makedirs(os.path.dirname(output_file), exist_ok=True)
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
    config=runner_config(config),
    output_dir=os.path.dirname(output_file),
    output_filename=os.path.basename(output_file),
  )
  runner.run(build(config), write_out=True)
  _example_gen_resources(output_file, config.kubeflow)
  return output_file


def open_source_kfp_spec(pipeline_spec: dict) -> dict:
  """The pipeline spec without what the open-source KFP 2 backend cannot run.

  Its compiler has no `resolver` executor ("resolver executors not implemented"), which TFX
  uses for the LatestBlessedModelResolver (a Vertex ML Metadata query). Without those tasks the
  Evaluator gets no baseline model: TFX then ignores the change thresholds and blesses on the
  absolute ones (`evaluation.min_accuracy` / `max_perplexity`).

  Args:
    pipeline_spec: the `pipelineSpec` of a compiled spec (JSON dict); left unchanged.

  Returns:
    A copy without resolver tasks, their components and executors, and the inputs fed by them.
  """
  spec = copy.deepcopy(pipeline_spec)
  executors = spec['deploymentSpec']['executors']
  resolver_labels = {label for label, executor in executors.items() if 'resolver' in executor}
  resolver_components = {
    name
    for name, component in spec['components'].items()
    if component.get('executorLabel') in resolver_labels
  }
  tasks = spec['root']['dag']['tasks']
  resolver_tasks = {
    name for name, task in tasks.items() if task['componentRef']['name'] in resolver_components
  }
  for name in resolver_tasks:
    del tasks[name]
  for name in resolver_components:
    del spec['components'][name]
  for label in resolver_labels:
    del executors[label]
  for task in tasks.values():
    artifacts = task.get('inputs', {}).get('artifacts', {})
    for key in [
      k
      for k, v in artifacts.items()
      if v.get('taskOutputArtifact', {}).get('producerTask') in resolver_tasks
    ]:
      del artifacts[key]
      definitions = spec['components'][task['componentRef']['name']]['inputDefinitions']
      definitions['artifacts'].pop(key, None)
    if 'dependentTasks' in task:
      task['dependentTasks'] = [t for t in task['dependentTasks'] if t not in resolver_tasks]
      if not task['dependentTasks']:
        del task['dependentTasks']
  return spec


class SubmitError(RuntimeError):
  """The KFP endpoint could not be reached or refused the run."""


def submit(spec_path: str, host: str, experiment: str, run_name: str = '') -> str:
  """Submits a compiled spec to an open-source KFP 2 endpoint; returns the run id.

  Raises:
    SubmitError: in one line: the endpoint cannot be reached or refused the run, and the
      package written for it.
  """
  import kfp
  import kfp_server_api
  import urllib3
  import yaml

  with open(spec_path, encoding='utf-8') as f:
    job = json.load(f)
  # KubeflowV2DagRunner writes a PipelineJob (JSON); kfp's client takes the PipelineSpec inside
  # it as a .yaml package, and the pipeline root from the job's runtime config separately.
  package = os.path.splitext(spec_path)[0] + '.yaml'
  with open(package, 'w', encoding='utf-8') as f:
    yaml.safe_dump(open_source_kfp_spec(job['pipelineSpec']), f, sort_keys=False)
  retries = logging.getLogger('urllib3.connectionpool')
  level = retries.level
  # urllib3 logs each retry of an unreachable host and kfp warns that it needs KFP >= 2.0: the
  # error below says what matters in one line.
  retries.setLevel(logging.ERROR)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', FutureWarning)
      client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
      package,
      arguments={},
      run_name=run_name or None,
      experiment_name=experiment,
      pipeline_root=job['runtimeConfig']['gcsOutputDirectory'],
      enable_caching=True,
    )
  except urllib3.exceptions.HTTPError as e:
    raise SubmitError(
      f'cannot reach the KFP endpoint {host} ({_connection_problem(e)}): check KFP_HOST '
      '(--host) and that the endpoint is up, e.g. kubectl -n kubeflow port-forward '
      f'svc/ml-pipeline-ui 8080:80; the package is written: {package}'
    ) from None
  except kfp_server_api.ApiException as e:
    raise SubmitError(
      f'the KFP endpoint {host} refused the run ({e.status} {e.reason}): check the host is '
      f'a KFP 2 API and your access to it; the package is written: {package}'
    ) from None
  finally:
    retries.setLevel(level)
  return run.run_id


def _connection_problem(error) -> str:
  """What kept urllib3 from the host, in a few words: `connection refused`, ..."""
  import urllib3

  reason = getattr(error, 'reason', None) or error  # a MaxRetryError wraps the last one
  if isinstance(reason, urllib3.exceptions.NameResolutionError):
    return 'host name not found'
  if isinstance(reason, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError too
    return 'connection refused' if 'refused' in str(reason).lower() else 'no connection'
  if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
    return 'connection timed out'
  return type(reason).__name__


VERBS = ('compile', 'submit')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m pipeline.kubeflow_runner',
    description=__doc__.split('\n\n')[0],
    epilog='Without a command, compile. `COMMAND --help` lists its options.',
  )
  commands = parser.add_subparsers(dest='verb', metavar='{compile,submit}')
  for verb, summary in (
    ('compile', 'write the KFP v2 pipeline spec (the default)'),
    ('submit', 'compile, then start a run of the spec on an open-source KFP 2 endpoint'),
  ):
    command = commands.add_parser(
      verb, help=summary, description=f'{verb.capitalize()}: {summary}.'
    )
    command.add_argument('--config', default=None, help=config_lib.CONFIG_HELP)
    command.add_argument(
      '--set',
      dest='overrides',
      action='append',
      default=[],
      metavar='KEY=VALUE',
      help='override a config key with a YAML value, e.g. kubeflow.pipeline_root=gs://B/tfx-lm '
      '(repeatable)',
    )
    command.add_argument('--output', default='', help='spec path (default: kubeflow.output_file)')
    if verb == 'submit':
      command.add_argument('--host', default='', help='KFP endpoint, e.g. http://localhost:8080')
      command.add_argument(
        '--experiment', default='tfx-lm', help='KFP experiment of the run (default: %(default)s)'
      )
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in (*VERBS, '-h', '--help'):
    argv.insert(0, 'compile')
  args = _parser().parse_args(argv)
  if args.verb == 'submit' and not args.host:
    print(
      'error: submit needs --host (the KFP endpoint, e.g. http://localhost:8080)', file=sys.stderr
    )
    return 2

  path = config_lib.config_path(args.config)
  try:
    config = config_lib.load_config(path, args.overrides)
    check(config, path)  # before TensorFlow loads: a config error in a second
    if under_tfx_cli():
      # The TFX CLI patched the runner: it chooses the output path itself.
      from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KubeflowV2DagRunner

      KubeflowV2DagRunner(config=runner_config(config)).run(build(config))
      return 0
    spec = compile_pipeline(config, args.output)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'Compiled {config.pipeline_name!r} for Kubeflow Pipelines v2: {spec}')
  if not config.kubeflow.pipeline_root.startswith(PORTABLE_ROOT_SCHEME):
    print(
      f'warning: kubeflow.pipeline_root {config.kubeflow.pipeline_root!r} is not a '
      f'{PORTABLE_ROOT_SCHEME} URI: KFP 2 accepts only object-store artifact URIs, and of '
      'those the stack reads and writes only gs:// (see pipeline/KUBEFLOW.md)',
      file=sys.stderr,
    )
  if config.kubeflow.image == config_lib.KubeflowConfig.image:
    print(
      f'warning: kubeflow.image is the placeholder {config.kubeflow.image}, which is not '
      'published: build and push the image (pipeline/KUBEFLOW.md, "Images") and set '
      'kubeflow.image=REGISTRY/tfx-lm:TAG',
      file=sys.stderr,
    )
  if args.verb == 'submit':
    try:
      run_id = submit(spec, args.host, args.experiment)
    except SubmitError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'Submitted: run {run_id} on {args.host}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
