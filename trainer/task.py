"""`run_fn`: what TFX's generic Trainer calls (`Trainer(run_fn='trainer.task.run_fn', ...)`).

The hyperparameters come as `custom_config={'trainer': TrainerConfig(...).to_dict()}`; train and
eval steps default to the Trainer's `TrainArgs` / `EvalArgs`. The run writes TensorBoard logs and
`eval_history.json` to `fn_args.model_run_dir` (with `checkpoints.json`: the checkpoint folder
and the step it resumed from), checkpoints keyed on what decides the weights in the component's
`.system` folder (`checkpoint_dir`: a rerun of a killed Trainer, which TFX gives a new
model_run_dir, resumes from them), and one SavedModel (see
`trainer/export.py`) to `fn_args.serving_model_dir`, with `assets.extra/trainer_config.json`
(the config used) and `assets.extra/keras_hub_preset/` (the trained backbone, and the preset's
tokenizer when the run started from one, for keras-hub's `from_preset`; what a later run
warm-starts from).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from tfxlm import contract
from trainer import (
  adapters,
  distribute,
  export,
  hf_tokenizer,
  inputs,
  models,
  optimization,
  pretrained,
  quantization,
  step_memory,
  tokenizers,
  training,
)
from trainer import precision as precision_lib
from trainer.compression_config import FLOAT_COPY_DIR, ExportConfig
from trainer.config import TrainerConfig
from trainer.vocabulary import LEARNED_SPECIAL_TOKENS, SpecialTokens, Vocabulary

if TYPE_CHECKING:  # TFX is there when TFX calls run_fn; tests pass look-alikes.
  from tfx.components.trainer.fn_args_utils import FnArgs

_TFX_CLOUD_KEY_PREFIX = 'ai_platform_'
_CUSTOM_CONFIG_KEYS = (
  contract.TRAINER_CONFIG_KEY,
  contract.EXPORT_CONFIG_KEY,
  contract.DISTILL_CONFIG_KEY,
  contract.PRESET_FINGERPRINT_KEY,  # for TFX's cache key only (pipeline/factory.py)
  contract.BASE_MODEL_FINGERPRINT_KEY,  # the same, of a local base model's folder
)
CHECKPOINTS_FOLDER = os.path.join('.system', 'checkpoints')
# The custom_config keys that decide the trained weights beside the TrainerConfig: the distill
# stage's options (the export's do not), and the files of a local preset or base model (rewritten
# in place, they make another run at the same path).
_WEIGHT_CUSTOM_KEYS = (
  contract.DISTILL_CONFIG_KEY,
  contract.PRESET_FINGERPRINT_KEY,
  contract.BASE_MODEL_FINGERPRINT_KEY,
)


# TrainerConfig fields that never change the trained weights, left out of the checkpoint key so
# that changing one resumes a killed run: how often the run logs, evaluates and checkpoints, the
# evaluation's size, whether checkpoints are kept, when it gives up on non-finite losses, and the
# export's options. `train_steps` stays in: the learning-rate schedule (warmup ratio, decay to
# its end) is laid over it, so a run with more steps is another run (to train a finished model
# further, warm-start from it with base_model).
NOT_WEIGHT_FIELDS = (
  'eval_steps',
  'eval_every_steps',
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'max_nonfinite_steps',
  'mask_top_k',
  'max_new_tokens_limit',
  'generate_jit_compile',
)
# In each checkpoint folder: the identity it is keyed on, to name what differs from another run's.
IDENTITY_FILE = 'identity.json'
# Checkpoints of other settings (a killed run's) are kept for its rerun to resume from until
# they have gone untouched this long; then the next successful export removes them.
ABANDONED_AFTER_DAYS = 7


def checkpoint_identity(fn_args: 'FnArgs', config: TrainerConfig) -> dict[str, Any]:
  """Everything that decides the trained weights: the config but `NOT_WEIGHT_FIELDS`, the
  data, the transform graph, the base model, the distill stage's options, and the fingerprints
  of local checkpoint and base model folders (new files there at the same path: another run)."""
  fields = {k: v for k, v in config.to_dict().items() if k not in NOT_WEIGHT_FIELDS}
  identity = {
    'config': fields,
    'train_files': sorted(fn_args.train_files or []),
    'transform_graph': fn_args.transform_graph_path or fn_args.transform_output,
    'base_model': fn_args.base_model,
    **{
      key: value
      for key, value in (fn_args.custom_config or {}).items()
      if key in _WEIGHT_CUSTOM_KEYS
    },
  }
  # As JSON would give it back, so a stored identity compares equal.
  return json.loads(json.dumps(identity, sort_keys=True, default=str))


def checkpoint_dir(fn_args: 'FnArgs', config: TrainerConfig) -> str:
  """Where a run keeps its checkpoints: in the Trainer component's `.system` folder (TFX's own
  housekeeping folder, beside its output folders), named after a hash of
  `checkpoint_identity`, everything that decides the trained weights.

  TFX gives each execution a new `model_run_dir` (`<component>/model_run/<execution>`), so
  checkpoints there would be lost to a rerun after a crash; here the rerun, with the same
  (cached) inputs and weight settings, finds them.
  """
  identity = json.dumps(checkpoint_identity(fn_args, config), sort_keys=True)
  digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
  component = os.path.dirname(os.path.dirname(os.path.normpath(fn_args.model_run_dir)))
  return os.path.join(component, CHECKPOINTS_FOLDER, digest)


def _differences(theirs: dict, ours: dict, most: int = 4) -> str:
  """The settings two checkpoint identities differ in, e.g. `train.seed: 1 there, 2 here`."""
  found = []
  for key in sorted(set(theirs) | set(ours)):
    a, b = theirs.get(key), ours.get(key)
    if key == 'config' and isinstance(a, dict) and isinstance(b, dict):
      found += [
        f'train.{k}: {a.get(k)!r} there, {b.get(k)!r} here'
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
      ]
    elif a != b:
      found.append(f'{key}: {a!r} there, {b!r} here' if key == 'base_model' else f'the {key}')
  shown = '; '.join(found[:most])
  return shown + (f' and {len(found) - most} more' if len(found) > most else '')


def other_checkpoints(
  directory: str, identity: dict[str, Any], remove: bool, now: float | None = None
) -> list[str]:
  """The checkpoint folders beside `directory` (other weight settings or inputs): each is
  logged as not resumed, naming the settings it differs in when it recorded them. Returns
  those to remove after the export when `remove`: the ones untouched for
  `ABANDONED_AFTER_DAYS` (a killed run's rerun, after a run of other settings in between,
  still resumes), but those kept by their own `keep_checkpoints`."""
  parent = os.path.dirname(directory)
  if not tf.io.gfile.isdir(parent):
    return []
  now = time.time() if now is None else now
  others = []
  for name in sorted(tf.io.gfile.listdir(parent)):
    folder = os.path.join(parent, name.rstrip('/'))
    if folder == directory or '_scratch_' in name or not tf.io.gfile.isdir(folder):
      continue
    record = {}
    try:
      with tf.io.gfile.GFile(os.path.join(folder, IDENTITY_FILE)) as f:
        record = json.load(f)
    except (tf.errors.NotFoundError, ValueError):
      pass  # an older run's, or one killed before it wrote the file
    kept = isinstance(record, dict) and bool(record.get('keep_checkpoints'))
    days = (now - _newest_change(folder)) / 86400
    stale = remove and not kept and days >= ABANDONED_AFTER_DAYS
    latest = tf.train.latest_checkpoint(folder)
    if latest:
      differs = (
        _differences(record['identity'], identity)
        if isinstance(record, dict) and isinstance(record.get('identity'), dict)
        else 'its settings were not recorded'
      )
      if stale:
        fate = f'removed after the export (untouched for {days:.0f} days)'
      elif kept or not remove:
        fate = 'kept (keep_checkpoints: true)'
      else:
        fate = (
          f'kept for a rerun of those settings to resume from ({_megabytes(folder)} MB; removed '
          f'once untouched for {ABANDONED_AFTER_DAYS} days, or delete the folder)'
        )
      logging.warning(
        'checkpoints %s (step %s) are of other weight settings or inputs (%s): not resumed, '
        'training starts afresh; they are %s',
        folder,
        latest.rsplit('-', 1)[1],
        differs,
        fate,
      )
    if stale:
      others.append(folder)
  return others


def _megabytes(folder: str) -> str:
  total = 0
  for root, _, files in tf.io.gfile.walk(folder):
    total += sum(tf.io.gfile.stat(os.path.join(root, name)).length for name in files)
  return f'{total / 1e6:,.0f}'


def _newest_change(folder: str) -> float:
  newest = 0.0
  for root, _, files in tf.io.gfile.walk(folder):
    for name in files:
      newest = max(newest, tf.io.gfile.stat(os.path.join(root, name)).mtime_nsec / 1e9)
  return newest


def remove_abandoned(folders: list[str], since: float) -> None:
  """Removes the checkpoint folders `other_checkpoints` found, but one written to since
  `since` (epoch seconds; another run of the component may be training there)."""
  for folder in folders:
    if not tf.io.gfile.exists(folder):
      continue
    if _newest_change(folder) >= since:
      logging.info('kept checkpoints %s: written to while this run trained', folder)
      continue
    tf.io.gfile.rmtree(folder)
    logging.info('removed the abandoned checkpoints %s', folder)


def config_from_fn_args(fn_args: 'FnArgs') -> TrainerConfig:
  """The TrainerConfig of this run: custom_config's, with steps from Train/EvalArgs if unset."""
  custom = fn_args.custom_config or {}
  # TFX's Vertex AI Training executor (kubeflow.trainer_replicas / trainer_tpu) reads its
  # `ai_platform_*` keys here and passes the whole dict on to run_fn on every replica.
  unknown = sorted(
    k for k in set(custom) - set(_CUSTOM_CONFIG_KEYS) if not k.startswith(_TFX_CLOUD_KEY_PREFIX)
  )
  if unknown:
    raise ValueError(
      f'Trainer custom_config: unknown key(s) {unknown}; expected only '
      f'{", ".join(repr(k) for k in _CUSTOM_CONFIG_KEYS)}'
    )
  config = TrainerConfig.from_dict(
    custom.get(contract.TRAINER_CONFIG_KEY), where=contract.TRAINER_CONFIG_KEY
  )
  if config.train_steps is None:
    if not fn_args.train_steps:
      raise ValueError('no train steps: set TrainerConfig.train_steps or TrainArgs(num_steps=)')
    config = dataclasses.replace(config, train_steps=int(fn_args.train_steps))
  if config.eval_steps is None:
    if not fn_args.eval_steps:
      raise ValueError('no eval steps: set TrainerConfig.eval_steps or EvalArgs(num_steps=)')
    config = dataclasses.replace(config, eval_steps=int(fn_args.eval_steps))
  return config


@dataclasses.dataclass(frozen=True)
class Vocabularies:
  """The token and label vocabularies carried by the transform graph (line number = id), the
  tokenizer's kind and its special tokens (the graph's `tokenizer_spec` asset, vocab.json)."""

  tokens: list
  labels: list | None
  kind: str = contract.WORDPIECE
  special: SpecialTokens = LEARNED_SPECIAL_TOKENS

  @classmethod
  def from_tft_output(cls, tft_output: tft.TFTransformOutput, task: str) -> 'Vocabularies':
    vocab = Vocabulary.from_files(
      tft_output.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME),
      tft_output.vocabulary_file_by_name(contract.TOKENIZER_SPEC_NAME),
    )
    labels = None
    if task == contract.CLASSIFY:
      labels = export.read_lines(tft_output.vocabulary_file_by_name(contract.LABEL_VOCAB_NAME))
    return cls(list(vocab.tokens), labels, vocab.kind, vocab.special)


def base_model_dir(base_model: str) -> str:
  """The SavedModel folder of the Trainer's `base_model`.

  TFX hands run_fn `<model artifact uri>/Format-Serving`. That is the SavedModel when the base
  model is a Trainer's output; when the pipeline imported a SavedModel folder itself (a pushed
  `<serving_root>/<name>/<version>`, `base_model:` in the config), `Format-Serving` does not
  exist and the folder above it is the model.

  Raises:
    ValueError: if neither holds this trainer's backbone weights (its keras-hub preset).
  """
  candidates = [base_model]
  if os.path.basename(os.path.normpath(base_model)) == contract.SERVING_MODEL_DIR:
    candidates.append(os.path.dirname(os.path.normpath(base_model)))
  for folder in candidates:
    if tf.io.gfile.exists(os.path.join(exported_preset(folder), contract.PRESET_CONFIG_FILE)):
      return folder
  # Name the folder the user gave (TFX appends Format-Serving to an imported one), and the
  # reason when it is one: a quantized export keeps no float backbone weights.
  present = [folder for folder in candidates if tf.io.gfile.isdir(folder)] or candidates
  for folder in present:
    quantize = _quantized(folder)
    if quantize:
      raise ValueError(
        f'base model {folder} is a quantized export (export.quantize: {quantize}): it keeps '
        'no float weights to start from; give a float version of it (exported with '
        f'export.quantize: none, or the {FLOAT_COPY_DIR} folder export.float_copy keeps '
        "beside a Trainer's quantized model)"
      )
  raise ValueError(
    f'base model {" or ".join(present)}: no {contract.EXTRA_DIR}/'
    f'{contract.PRESET_DIR} there; base_model must be a model this pipeline '
    'exported (a Trainer output or a pushed version)'
  )


def exported_preset(folder: str) -> str:
  """The keras-hub preset of the exported model in `folder`: its trained backbone, the one copy
  of the backbone weights beside the SavedModel's variables."""
  return os.path.join(folder, contract.EXTRA_DIR, contract.PRESET_DIR)


def _quantized(folder: str) -> str | None:
  """The `export.quantize` mode a quantized export of this pipeline records, else None."""
  path = os.path.join(folder, contract.EXTRA_DIR, contract.EXPORT_CONFIG_FILE)
  try:
    with tf.io.gfile.GFile(path) as f:
      mode = json.load(f).get('quantize')
  except (tf.errors.NotFoundError, ValueError, AttributeError):
    return None
  return mode if mode and mode != contract.QUANTIZE_NONE else None


def check_base_family(base_model: str, folder: str, task: str) -> None:
  """The base model's backbone (its recorded trainer config's task) must be the family `task`
  trains: a BERT classifier cannot warm-start a GPT-2 causal LM, nor the reverse.

  Raises:
    ValueError: naming both tasks and their backbones.
  """
  path = os.path.join(folder, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  try:
    with tf.io.gfile.GFile(path) as f:
      theirs = json.load(f).get('task')
  except (tf.errors.NotFoundError, ValueError, AttributeError):
    return  # load_backbone_weights still checks every weight
  if theirs not in contract.TASK_BACKBONES:
    return
  family, ours = contract.TASK_BACKBONES[theirs], contract.TASK_BACKBONES[task]
  if family != ours:
    raise ValueError(
      f'base_model {base_model} is a {theirs} model (a {family}); task {task} trains a '
      f'{ours}: give a base model of that family (an earlier '
      f'{" or ".join(t for t, b in contract.TASK_BACKBONES.items() if b == ours)} model), or '
      'leave base_model unset'
    )


def check_base_vocabulary(base_model: str, folder: str, tokens: list) -> None:
  """The base model's token vocabulary (its SavedModel's `assets/vocab.txt`, the transform
  graph's copy) must be this run's, token by token: with another vocabulary of the same size
  the weights would load and each embedding row would belong to another token.

  Raises:
    ValueError: naming both vocabularies' sizes and their first differing id.
  """
  path = os.path.join(folder, 'assets', contract.VOCAB_FILE)
  if not tf.io.gfile.exists(path):
    # Not one of this pipeline's exports; load_backbone_weights still checks the shapes.
    logging.warning('base_model %s: no %s, its vocabulary is not checked', base_model, path)
    return
  theirs = export.read_lines(path)
  if theirs == list(tokens):
    return
  first = next(
    (i for i, (a, b) in enumerate(zip(theirs, tokens)) if a != b), min(len(theirs), len(tokens))
  )

  def at(vocab):
    return repr(vocab[first]) if first < len(vocab) else 'past its end'

  raise ValueError(
    f"base_model {base_model} was trained with another vocabulary than this run's "
    f'({len(theirs)} tokens there, {len(tokens)} here; id {first} is {at(theirs)} there, '
    f'{at(tokens)} here): its embeddings would belong to other tokens. Train with the '
    'vocabulary that model was trained with (the same data and vocabulary settings), or '
    'leave base_model unset'
  )


def build_task_model(
  config: TrainerConfig,
  vocabularies: Vocabularies,
  base_model: str | None = None,
  positions: int | None = None,
) -> keras.Model:
  """Backbone + head of `config.task`, warm-started from `base_model`'s backbone if given.

  Args:
    config: The TrainerConfig.
    vocabularies: `Vocabularies` (vocabulary size, number of classes).
    base_model: An earlier model of this trainer (the Trainer's `base_model`; see
      `base_model_dir`): the backbone has as many positions as that model's.
    positions: Without `base_model`: rows of the position embedding (None: `config.seq_len`;
      a copy of a model warm-started from longer sequences keeps their rows).

  Raises:
    ValueError: if the base model's backbone weights do not all load, or were built for
      sequences shorter than `config.seq_len`.
  """
  if not base_model:
    backbone = models.build_backbone(config, len(vocabularies.tokens), positions=positions)
  else:
    folder = base_model_dir(base_model)
    check_base_family(base_model, folder, config.task)
    check_base_vocabulary(base_model, folder, vocabularies.tokens)
    path = exported_preset(folder)
    positions = models.saved_positions(path)
    if positions is not None and positions < config.seq_len:
      raise ValueError(
        f'base_model {base_model} was built for sequences of at most {positions} tokens, '
        f'seq_len is {config.seq_len}: its position embedding has no rows past {positions}; '
        f'write seq_len: {positions} or less'
      )
    # Shorter sequences than the base model's use the first rows of its position embedding.
    backbone = models.build_backbone(config, len(vocabularies.tokens), positions=positions)
    loaded = models.load_backbone_weights(backbone, path)
    logging.info('warm start: loaded %d backbone weights from %s', loaded, path)
  return models.build_model(
    config.task,
    backbone,
    num_classes=len(vocabularies.labels or []) or None,
    max_predictions=inputs.max_predictions(config.seq_len, config.mask_rate),
    dropout=config.head_dropout(),
    pooling=config.pooling,
  )


# A warning when at least this share of the train texts fill all of seq_len (cut there, or
# exactly that long): the model sees only their beginnings.
CUT_TEXTS_SHARE = 0.5


def warn_of_cut_texts(train_files, feature_spec, config, pad) -> None:
  """Logs one warning when most classify train texts (of the first few thousand) fill all of
  `seq_len`: with `seq_len: 4` on texts of 9 tokens, every text was cut to 2 and nothing said so.
  """
  lengths = inputs.classify_lengths(train_files, feature_spec, pad)
  if not lengths.size:
    return
  full = float(np.mean(lengths >= config.seq_len))
  if full < CUT_TEXTS_SHARE:
    return
  logging.warning(
    '%.0f%% of %d train texts fill all train.seq_len %d tokens (the start and end tokens included): '
    'they are cut there (or exactly that long), so the model reads only their first %d tokens. '
    "What to do: raise train.seq_len (up to the model's positions) if the texts are longer",
    100 * full,
    lengths.size,
    config.seq_len,
    config.seq_len - 2,
  )


def _datasets(strategy, fn_args, tft_output, config, vocabularies, start_step):
  per_replica = config.per_replica_batch_size
  feature_spec = tft_output.transformed_feature_spec()

  def dataset_fn(files, training, batch_size):
    def fn(context):
      return inputs.make_dataset(
        files,
        feature_spec,
        config,
        vocab_size=len(vocabularies.tokens),
        special=vocabularies.special,
        batch_size=batch_size,
        training=training,
        # A resumed run draws new shuffles and masks instead of replaying the first steps'.
        seed=config.seed + start_step if training else config.seed,
        num_shards=context.num_input_pipelines,
        shard=context.input_pipeline_id,
        eval_batches=None if training else config.eval_steps,
      )

    return fn

  options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
  train = strategy.distribute_datasets_from_function(
    dataset_fn(fn_args.train_files, True, per_replica * config.grad_accum_steps), options
  )
  evaluation = strategy.distribute_datasets_from_function(
    dataset_fn(fn_args.eval_files, False, per_replica), options
  )
  return train, evaluation


def train_and_export(
  config: TrainerConfig, fn_args: 'FnArgs', *, make_loop=training.Loop, warm_start: bool = True
) -> list[dict[str, Any]]:
  """Trains under the configured strategy and precision, then exports. Returns eval history.

  `make_loop` builds the training loop (a `training.Loop` subclass changes the objective, as
  distillation does); without `warm_start`, `fn_args.base_model` is not loaded into the model
  (the distill stage's base model is its teacher).
  """
  export_config = ExportConfig.from_dict(
    (fn_args.custom_config or {}).get(contract.EXPORT_CONFIG_KEY), where=contract.EXPORT_CONFIG_KEY
  )
  tft_output = tft.TFTransformOutput(fn_args.transform_output or fn_args.transform_graph_path)
  vocabularies = Vocabularies.from_tft_output(tft_output, config.task)
  keras.utils.set_random_seed(config.seed)
  strategy = distribute.create_strategy(config.strategy)
  chief = distribute.is_chief(strategy)
  replicas = strategy.num_replicas_in_sync
  config = dataclasses.replace(config, precision=precision_lib.resolve(config.precision, strategy))
  logging.info(
    'strategy %s, %d replica(s), chief=%s, precision %s',
    type(strategy).__name__,
    replicas,
    chief,
    config.precision,
  )
  if chief and config.task == contract.CLASSIFY:
    warn_of_cut_texts(
      fn_args.train_files,
      tft_output.transformed_feature_spec(),
      config,
      vocabularies.special.pad,
    )
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(config.precision)
  try:
    with strategy.scope():
      base_model = fn_args.base_model if warm_start else None
      model = build_task_model(config, vocabularies, base_model)
      backbone, devices = step_memory.backbone_of(model), step_memory.local_devices(strategy)
      if backbone is not None and step_memory.host_only(devices):
        # Before anything is allocated for training: a batch far too large stops here, in
        # words, rather than when the kernel kills the process.
        step_memory.check(config, backbone, len(vocabularies.tokens), len(devices))
      adapters.apply(model, config, pretrained=bool(config.preset or base_model))
      optimizer = optimization.create_optimizer(
        model,
        learning_rate=config.learning_rate,
        total_steps=config.train_steps,
        warmup_steps=optimization.warmup_steps_for(
          config.train_steps, config.warmup_steps, config.warmup_ratio
        ),
        decay=config.decay,
        end_ratio=config.end_learning_rate_ratio,
        weight_decay=config.weight_decay,
        clip_norm=config.clip_norm / replicas,
        loss_scaling=config.precision == contract.MIXED_FLOAT16,
      )
      optimizer.build(model.trainable_variables)
    loop = make_loop(
      strategy,
      model,
      optimizer,
      config,
      fn_args.model_run_dir,
      chief=chief,
      worker_name=distribute.worker_id(strategy),
      checkpoint_dir=checkpoint_dir(fn_args, config),
    )
    started = time.time()
    start = loop.restore()
    if start:
      logging.info('resuming from checkpoint at step %d', start)
    abandoned = []
    if chief:
      identity = checkpoint_identity(fn_args, config)
      abandoned = other_checkpoints(
        loop.checkpoint_dir, identity, remove=not config.keep_checkpoints
      )
      record = {'identity': identity, 'keep_checkpoints': config.keep_checkpoints}
      tf.io.gfile.makedirs(loop.checkpoint_dir)
      training.write_json_atomically(os.path.join(loop.checkpoint_dir, IDENTITY_FILE), record)
      # A resumed run's TensorBoard events start at `start`; the earlier steps are in the
      # model_run dirs of the executions that wrote these checkpoints.
      training.write_json_atomically(
        os.path.join(fn_args.model_run_dir, contract.CHECKPOINTS_RECORD_FILE),
        {'checkpoint_dir': loop.checkpoint_dir, 'resumed_from_step': start},
      )
    train_data, eval_data = _datasets(strategy, fn_args, tft_output, config, vocabularies, start)
    history = loop.run(
      train_data, eval_data, train_steps=config.train_steps, eval_steps=config.eval_steps
    )
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  if chief:
    _export(model, tft_output, config, vocabularies, fn_args.serving_model_dir, export_config)
    if not config.keep_checkpoints:
      # Exported: the checkpoints have done their job (resuming a killed run).
      tf.io.gfile.rmtree(loop.checkpoint_dir)
      logging.info('removed the checkpoints in %s (keep_checkpoints: false)', loop.checkpoint_dir)
      # Those of other settings, never to be resumed now, go too.
      remove_abandoned(abandoned, started)
  else:
    # Non-chief workers export too (the same work, so they finish together), then drop it.
    scratch = tempfile.mkdtemp(prefix=f'export_{distribute.worker_id(strategy)}_')
    try:
      _export(model, tft_output, config, vocabularies, scratch, export_config)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    # TFX's Trainer executor fails a replica whose serving_model_dir is missing after run_fn (on
    # Vertex AI Training that fails the job), and the chief may still be writing it.
    tf.io.gfile.makedirs(fn_args.serving_model_dir)
  return history


def _export(trained, tft_output, config, vocabularies, export_dir, export_config=None):
  """Exports a float32, strategy-free copy of `trained`, plus the config and the backbone as a
  keras-hub preset (quantized as `export_config` says: then without the float preset)."""
  clock = _PhaseClock(export_dir)
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(contract.FLOAT32)
  try:
    positions = getattr(trained.backbone, 'max_sequence_length', None)
    copy = build_task_model(config, vocabularies, positions=positions)
    # LoRA's A @ B folded into the kernels: the export is that of a fully fine-tuned model.
    copy.set_weights(adapters.merged_weights(trained))
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  clock.done('float32 copy')
  if export_config is not None and export_config.quantize != contract.QUANTIZE_NONE:
    if export_config.float_copy:
      # The distill stage's teacher (trainer/distillation.py::load_teacher), beside the export.
      float_dir = os.path.join(os.path.dirname(os.path.normpath(export_dir)), FLOAT_COPY_DIR)
      _export(trained, tft_output, config, vocabularies, float_dir)
    quantization.export_quantized(
      copy, export_config.quantize, tft_output, config, vocabularies, export_dir
    )
    clock.done(f'{export_config.quantize} SavedModel')
    _write_adapter(trained, config, export_dir, clock)
    logging.info('exported %s model to %s (%s)', config.task, export_dir, clock.summary())
    return
  export.export_saved_model(
    copy,
    tft_output,
    config,
    vocabularies.tokens,
    vocabularies.labels,
    export_dir,
    kind=vocabularies.kind,
    special=vocabularies.special,
  )
  clock.done('SavedModel')
  extra = os.path.join(export_dir, contract.EXTRA_DIR)
  tf.io.gfile.makedirs(extra)
  with tf.io.gfile.GFile(os.path.join(extra, contract.TRAINER_CONFIG_FILE), 'w') as f:
    f.write(config.to_json())
  # The preset is the backbone weights' one copy beside the SavedModel: warm starts and the
  # distill stage's teacher read it too.
  save_preset(copy.backbone, config, exported_preset(export_dir))
  clock.done('keras-hub preset')
  _write_adapter(trained, config, export_dir, clock)
  logging.info('exported %s model to %s (%s)', config.task, export_dir, clock.summary())


def _write_adapter(trained, config, export_dir, clock):
  # The adapter alone, in float32 beside a float or a quantized export: with its base it is the
  # trained model, whatever the export's weights were rounded to.
  if config.lora is not None:
    adapters.write_adapter(
      trained, config, os.path.join(export_dir, contract.EXTRA_DIR, adapters.ADAPTER_DIR)
    )
    clock.done('LoRA adapter')


class _PhaseClock:
  """Seconds per export phase, for the log: where an export's time goes."""

  def __init__(self, where: str):
    self._where = where
    self._last = time.perf_counter()
    self._phases: list[tuple[str, float]] = []

  def done(self, phase: str) -> None:
    now = time.perf_counter()
    seconds, self._last = now - self._last, now
    self._phases.append((phase, seconds))
    logging.info('export to %s: %s took %.1f s', self._where, phase, seconds)

  def summary(self) -> str:
    return ', '.join(f'{phase} {seconds:.1f} s' for phase, seconds in self._phases)


def save_preset(backbone: keras.Model, config: TrainerConfig, preset_dir: str) -> None:
  """Writes the trained backbone as a keras-hub preset (`keras_hub.models.Backbone.from_preset`
  loads it), with the tokenizer of `config.preset` when the run started from one.

  A learned vocabulary's tokenizer is not written: its normalization (NFKC, case folding,
  accent stripping) lives in the transform graph, which no keras-hub tokenizer reproduces.
  A model fine-tuned from a Hugging Face BERT checkpoint also gets that checkpoint's tokenizer
  files in `contract.PRESET_HF_TOKENIZER_DIR` (`_save_hf_tokenizer`).
  """
  local = preset_dir if '://' not in preset_dir else tempfile.mkdtemp(prefix='preset_')
  backbone.save_to_preset(local)
  if config.preset:
    pretrained.load_tokenizer(config.preset).save_to_preset(local)
    _save_hf_tokenizer(
      config.preset, preset_dir, os.path.join(local, contract.PRESET_HF_TOKENIZER_DIR)
    )
  if local != preset_dir:
    for root, _, files in os.walk(local):
      for name in files:
        source = os.path.join(root, name)
        target = os.path.join(preset_dir, os.path.relpath(source, local))
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(source, target, overwrite=True)
    shutil.rmtree(local, ignore_errors=True)


def _save_hf_tokenizer(preset: str, preset_dir: str, target: str) -> None:
  """Copies the Hugging Face BERT tokenizer files the model was trained with (kind
  `hf_wordpiece`) into `target`, if it was: keras-hub's BertTokenizer written beside them
  normalizes some text otherwise (`ß`, `…`, `™`, ligatures: NFKC case folding, which the
  checkpoint's BertNormalizer does not apply), and given as `train.preset` the exported folder
  is then fine-tuned with the same tokenizer again (`tokenizers.hf_wordpiece_folder`).
  """
  source = tokenizers.hf_wordpiece_folder(pretrained.local_preset(preset))
  if source is None:
    return
  os.makedirs(target, exist_ok=True)
  for name in hf_tokenizer.TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source, name)):
      shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
  logging.info(
    'keras-hub preset %s: the tokenizer the model was trained with (Hugging Face WordPiece) is in'
    " its %s/; keras-hub's BertTokenizer.from_preset of the folder differs on some text (NFKC"
    " case folding: ß, …, ™, ligatures). The SavedModel's signatures tokenize as trained.",
    preset_dir,
    contract.PRESET_HF_TOKENIZER_DIR,
  )


def run_fn(fn_args: 'FnArgs') -> None:
  """Trains the model `fn_args.custom_config['trainer']` describes and exports it.

  Args:
    fn_args: TFX `FnArgs`: train_files, eval_files, transform_graph_path (or transform_output),
      serving_model_dir, model_run_dir, base_model, custom_config, train_steps, eval_steps.
  """
  config = config_from_fn_args(fn_args)
  train_and_export(config, fn_args)
