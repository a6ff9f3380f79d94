"""`run_fn`: what TFX's generic Trainer calls (`Trainer(run_fn='trainer.task.run_fn', ...)`).

The hyperparameters come as `custom_config={'trainer': TrainerConfig(...).to_dict()}`; train and
eval steps default to the Trainer's `TrainArgs` / `EvalArgs`. The run writes TensorBoard logs and
`eval_history.json` to `fn_args.model_run_dir`, checkpoints keyed on the run's inputs in the
component's `.system` folder (`checkpoint_dir`: a rerun of a killed Trainer, which TFX gives a
new model_run_dir, resumes from them), and one SavedModel (see
`trainer/export.py`) to `fn_args.serving_model_dir`, with `assets.extra/trainer_config.json`
(the config used) and `assets.extra/backbone_weights.npz` (what a later run warm-starts from).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from tfxlm import contract
from trainer import distribute, export, inputs, models, optimization, training
from trainer.config import TrainerConfig

if TYPE_CHECKING:  # TFX is there when TFX calls run_fn; tests pass look-alikes.
  from tfx.components.trainer.fn_args_utils import FnArgs

_TFX_CLOUD_KEY_PREFIX = 'ai_platform_'
CHECKPOINTS_FOLDER = os.path.join('.system', 'checkpoints')


def checkpoint_dir(fn_args: 'FnArgs', config: TrainerConfig) -> str:
  """Where a run keeps its checkpoints: in the Trainer component's `.system` folder (TFX's own
  housekeeping folder, beside its output folders), named after a hash of everything that decides
  the trained weights (config, data, transform graph, base model).

  TFX gives each execution a new `model_run_dir` (`<component>/model_run/<execution>`), so
  checkpoints there would be lost to a rerun after a crash; here the rerun, with the same
  (cached) inputs, finds them.
  """
  identity = json.dumps({
      'config': config.to_dict(),
      'train_files': sorted(fn_args.train_files or []),
      'transform_graph': fn_args.transform_graph_path or fn_args.transform_output,
      'base_model': fn_args.base_model,
  }, sort_keys=True, default=str)
  digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
  component = os.path.dirname(os.path.dirname(os.path.normpath(fn_args.model_run_dir)))
  return os.path.join(component, CHECKPOINTS_FOLDER, digest)


def config_from_fn_args(fn_args: 'FnArgs') -> TrainerConfig:
  """The TrainerConfig of this run: custom_config's, with steps from Train/EvalArgs if unset."""
  custom = fn_args.custom_config or {}
  # TFX's Vertex AI Training executor (kubeflow.trainer_replicas / trainer_tpu) reads its
  # `ai_platform_*` keys here and passes the whole dict on to run_fn on every replica.
  unknown = sorted(k for k in set(custom) - {contract.TRAINER_CONFIG_KEY}
                   if not k.startswith(_TFX_CLOUD_KEY_PREFIX))
  if unknown:
    raise ValueError(f'Trainer custom_config: unknown key(s) {unknown}; expected only '
                     f'{contract.TRAINER_CONFIG_KEY!r}')
  config = TrainerConfig.from_dict(custom.get(contract.TRAINER_CONFIG_KEY),
                                  where=contract.TRAINER_CONFIG_KEY)
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
  """The token and label vocabularies carried by the transform graph (line number = id)."""

  tokens: list
  labels: list | None

  @classmethod
  def from_tft_output(cls, tft_output: tft.TFTransformOutput, task: str) -> 'Vocabularies':
    tokens = export.read_lines(tft_output.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME))
    labels = None
    if task == contract.CLASSIFY:
      labels = export.read_lines(tft_output.vocabulary_file_by_name(contract.LABEL_VOCAB_NAME))
    if len(tokens) <= len(contract.RESERVED_TOKENS):
      raise ValueError(f'token vocabulary has only {len(tokens)} entries')
    if list(tokens[:len(contract.RESERVED_TOKENS)]) != list(contract.RESERVED_TOKENS):
      raise ValueError(f'token vocabulary must start with {contract.RESERVED_TOKENS}, starts '
                       f'with {tokens[:len(contract.RESERVED_TOKENS)]}')
    return cls(tokens, labels)


def build_task_model(config: TrainerConfig, vocabularies: Vocabularies,
                     base_model: str | None = None) -> keras.Model:
  """Backbone + head of `config.task`, warm-started from `base_model`'s backbone if given.

  Args:
    config: The TrainerConfig.
    vocabularies: `Vocabularies` (vocabulary size, number of classes).
    base_model: Serving dir of an earlier model of this trainer (the Trainer's `base_model`).

  Raises:
    ValueError: if the base model's backbone weights do not all load.
  """
  backbone = models.build_backbone(config, len(vocabularies.tokens))
  if base_model:
    path = os.path.join(base_model, contract.EXTRA_DIR, contract.BACKBONE_WEIGHTS_FILE)
    loaded = models.load_backbone_weights(backbone, path)
    logging.info('warm start: loaded %d backbone weights from %s', loaded, path)
  return models.build_model(
    config.task, backbone, num_classes=len(vocabularies.labels or []) or None,
    max_predictions=inputs.max_predictions(config.seq_len, config.mask_rate),
    dropout=config.dropout)


def _datasets(strategy, fn_args, tft_output, config, vocab_size, start_step):
  per_replica = config.per_replica_batch_size
  feature_spec = tft_output.transformed_feature_spec()

  def dataset_fn(files, training, batch_size):
    def fn(context):
      return inputs.make_dataset(
        files, feature_spec, config, vocab_size=vocab_size, batch_size=batch_size,
        training=training,
        # A resumed run draws new shuffles and masks instead of replaying the first steps'.
        seed=config.seed + start_step if training else config.seed,
        num_shards=context.num_input_pipelines, shard=context.input_pipeline_id)
    return fn

  options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
  train = strategy.distribute_datasets_from_function(
    dataset_fn(fn_args.train_files, True, per_replica * config.grad_accum_steps), options)
  evaluation = strategy.distribute_datasets_from_function(
    dataset_fn(fn_args.eval_files, False, per_replica), options)
  return train, evaluation


def train_and_export(config: TrainerConfig, fn_args: 'FnArgs') -> list[dict[str, Any]]:
  """Trains under the configured strategy and precision, then exports. Returns eval history."""
  tft_output = tft.TFTransformOutput(fn_args.transform_output or fn_args.transform_graph_path)
  vocabularies = Vocabularies.from_tft_output(tft_output, config.task)
  keras.utils.set_random_seed(config.seed)
  strategy = distribute.create_strategy(config.strategy)
  chief = distribute.is_chief(strategy)
  replicas = strategy.num_replicas_in_sync
  logging.info('strategy %s, %d replica(s), chief=%s, precision %s', type(strategy).__name__,
               replicas, chief, config.precision)
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(config.precision)
  try:
    with strategy.scope():
      model = build_task_model(config, vocabularies, fn_args.base_model)
      optimizer = optimization.create_optimizer(
        model, learning_rate=config.learning_rate, total_steps=config.train_steps,
        warmup_steps=optimization.warmup_steps_for(config.train_steps, config.warmup_steps,
                                                   config.warmup_ratio),
        decay=config.decay, end_ratio=config.end_learning_rate_ratio,
        weight_decay=config.weight_decay, clip_norm=config.clip_norm / replicas,
        loss_scaling=config.precision == contract.MIXED_FLOAT16)
      optimizer.build(model.trainable_variables)
    loop = training.Loop(strategy, model, optimizer, config, fn_args.model_run_dir, chief=chief,
                         worker_name=distribute.worker_id(strategy),
                         checkpoint_dir=checkpoint_dir(fn_args, config))
    start = loop.restore()
    if start:
      logging.info('resuming from checkpoint at step %d', start)
    train_data, eval_data = _datasets(strategy, fn_args, tft_output, config,
                                      len(vocabularies.tokens), start)
    history = loop.run(train_data, eval_data, train_steps=config.train_steps,
                       eval_steps=config.eval_steps)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  if chief:
    _export(model, tft_output, config, vocabularies, fn_args.serving_model_dir)
    if not config.keep_checkpoints:
      # Exported: the checkpoints have done their job (resuming a killed run).
      tf.io.gfile.rmtree(loop.checkpoint_dir)
      logging.info('removed the checkpoints in %s (keep_checkpoints: false)', loop.checkpoint_dir)
  else:
    # Non-chief workers export too (the same work, so they finish together), then drop it.
    scratch = tempfile.mkdtemp(prefix=f'export_{distribute.worker_id(strategy)}_')
    try:
      _export(model, tft_output, config, vocabularies, scratch)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  return history


def _export(trained, tft_output, config, vocabularies, export_dir):
  """Exports a float32, strategy-free copy of `trained`, plus the config and backbone weights."""
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(contract.FLOAT32)
  try:
    copy = build_task_model(config, vocabularies)
    copy.set_weights(trained.get_weights())
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  export.export_saved_model(copy, tft_output, config, vocabularies.tokens, vocabularies.labels,
                            export_dir)
  extra = os.path.join(export_dir, contract.EXTRA_DIR)
  tf.io.gfile.makedirs(extra)
  with tf.io.gfile.GFile(os.path.join(extra, contract.TRAINER_CONFIG_FILE), 'w') as f:
    f.write(config.to_json())
  models.save_backbone_weights(copy.backbone, os.path.join(extra, contract.BACKBONE_WEIGHTS_FILE))
  logging.info('exported %s model to %s', config.task, export_dir)


def run_fn(fn_args: 'FnArgs') -> None:
  """Trains the model `fn_args.custom_config['trainer']` describes and exports it.

  Args:
    fn_args: TFX `FnArgs`: train_files, eval_files, transform_graph_path (or transform_output),
      serving_model_dir, model_run_dir, base_model, custom_config, train_steps, eval_steps.
  """
  config = config_from_fn_args(fn_args)
  train_and_export(config, fn_args)
