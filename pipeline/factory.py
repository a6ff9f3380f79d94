"""The pipeline factory: wires the components and owns nothing else.

ExampleGen → StatisticsGen → ExampleValidator (against ImportSchemaGen's curated schema)
→ Vocabulary (gate: stops on anomalies) → Transform → [pretraining Trainer →] Trainer
→ Resolver (latest blessed) → Evaluator → Pusher [→ distill Trainer (student, on the Trainer's
model as teacher) → Resolver → Evaluator → Pusher].

One Transform serves both training stages when they read the same examples (no label
filtering): it tokenizes once and outputs both stages' features. A pretraining stage that reads
the unfiltered corpus gets its own Transform of it.

`create_pipeline` is pure: it reads no environment and fetches nothing; runners work out the
paths and Beam arguments, fetch the input data (`config_lib.input_base_dir`) and pass them in.
"""

import dataclasses
from typing import Callable, List, Optional

from components import evaluator as evaluator_lib
from components import example_gen as example_gen_lib
from components import pusher as pusher_lib
from components import resolver as resolver_lib
from components import schema as schema_lib
from components import transform as transform_lib
from components import vocabulary as vocabulary_lib
from pipeline import config as config_lib
from pipeline import config_checks, distill_stage, evaluation
from pipeline.tfx_api import tfx
from tfxlm import checkpoint_fingerprint, contract


def _example_gen(config: config_lib.PipelineConfig, input_base: Optional[str]):
  data = config.data
  split_pattern = data.file_pattern or example_gen_lib.FORMATS[data.format].default_pattern
  labeled = config.train.task == contract.CLASSIFY
  # The schema's label rules, checked as rows are read: an error then names the file and line.
  domain, require_label = (
    config_checks.label_rules(config.schema_file, per_row=True) if labeled else (None, False)
  )
  return example_gen_lib.create_example_gen(
    data.format,
    input_base or config_lib.local_input_base(config),
    text_column=data.text_column,
    label_column=data.label_column if labeled else None,
    text_mode=data.text_mode,
    jsonl_text_field=data.jsonl_text_field,
    input_splits={name: f'{name}/{split_pattern}' for name in data.input_splits} or None,
    train_eval_ratio=tuple(data.train_eval_ratio),
    file_pattern=data.file_pattern or None,
    shuffle=data.shuffle,
    label_values=data.label_values if labeled else (),
    compression=config_lib.intermediate_compression(config),
    label_domain=domain or (),
    require_label=require_label,
  ).with_id(contract.EXAMPLE_GEN_ID)


def _same_path(path: str) -> str:
  return path


def _corpus(config: config_lib.PipelineConfig, example_gen, schema, schema_path):
  """The examples and schema that pretraining and the vocabulary read, and their components.

  Label filtering keeps rows out of classification only: with a pretrain stage, a second
  ExampleGen of the same files (and the same text-keyed splits) keeps every row's text.
  """
  if config.pretrain is None or not example_gen.filters_labels:
    return [], example_gen.outputs['examples'], schema
  corpus_gen = example_gen.without_labels().with_id(contract.CORPUS_EXAMPLE_GEN_ID)
  corpus_schema_gen = schema_lib.CuratedSchemaGen(
    schema_file=schema_path(config_lib.CORPUS_SCHEMA),
    fingerprint=schema_lib.fingerprint(config_lib.CORPUS_SCHEMA),
  ).with_id(contract.CORPUS_SCHEMA_GEN_ID)
  return (
    [corpus_gen, corpus_schema_gen],
    corpus_gen.outputs['examples'],
    corpus_schema_gen.outputs['schema'],
  )


def _schema_gen(config: config_lib.PipelineConfig, schema_path):
  """The curated schema's import; the fingerprint of the local file re-runs it when the schema
  is edited in place."""
  return schema_lib.CuratedSchemaGen(
    schema_file=schema_path(config.schema_file),
    fingerprint=schema_lib.fingerprint(config.schema_file),
  ).with_id(contract.SCHEMA_GEN_ID)


def _data_validation(config: config_lib.PipelineConfig, examples, schema_path):
  """StatisticsGen, the curated schema's import, and ExampleValidator against it."""
  statistics_gen = tfx.components.StatisticsGen(examples=examples).with_id(
    contract.STATISTICS_GEN_ID
  )
  schema_gen = _schema_gen(config, schema_path)
  example_validator = tfx.components.ExampleValidator(
    statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema']
  ).with_id(contract.EXAMPLE_VALIDATOR_ID)
  return statistics_gen, schema_gen, example_validator


def _vocabulary(config: config_lib.PipelineConfig, examples, anomalies):
  vocab_cfg = config.vocabulary
  return vocabulary_lib.Vocabulary(
    examples=examples,
    anomalies=anomalies,
    vocab_size=vocab_cfg.size,
    kind=vocab_cfg.kind,
    lowercase=vocab_cfg.lowercase,
    strip_accents=vocab_cfg.strip_accents,
    nfkc=vocab_cfg.nfkc,
    preset=config.train.preset or '',
    task=config.train.task if config.train.preset else '',
    # The tokenizer's files only: new weights re-run the Trainer, not this and Transform.
    preset_fingerprint=checkpoint_fingerprint.fingerprint(config.train.preset, weights=False),
  ).with_id(contract.VOCABULARY_ID)


def _warm_start(config: config_lib.PipelineConfig, examples, schema, vocab, shared_transform):
  """The components that produce the final Trainer's base model, and that model's channel.

  A `pretrain` stage (its Trainer, reading `shared_transform` if given, else its own Transform
  of `examples`), else an imported `base_model`, else none.
  """
  if config.pretrain is not None:
    components = []
    transform = shared_transform
    if transform is None:
      transform = _transform(
        config, examples, schema, vocab, config.pretrain, contract.PRETRAIN_TRANSFORM_ID
      )
      components.append(transform)
    pretrainer = _trainer(config.pretrain, transform, None, contract.PRETRAIN_TRAINER_ID)
    return [*components, pretrainer], pretrainer.outputs['model']
  if config.base_model:
    importer = tfx.dsl.Importer(
      source_uri=config.resolve_path(config.base_model),
      artifact_type=tfx.types.standard_artifacts.Model,
      reimport=False,
    ).with_id(contract.BASE_MODEL_IMPORTER_ID)
    return [importer], importer.outputs['result']
  return [], None


def _evaluation(config: config_lib.PipelineConfig, examples, trainer, baseline_strategy):
  """The baseline resolver and the Evaluator that blesses (or not) the Trainer's model."""
  resolver_inputs = {
    'model': tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
    'model_blessing': tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  }
  if issubclass(baseline_strategy, resolver_lib.LatestBlessedBaselineStrategy):
    # The candidate, so that it is never its own baseline (Kubeflow's stock strategy takes none).
    resolver_inputs[resolver_lib.CANDIDATE_KEY] = trainer.outputs['model']
  model_resolver = tfx.dsl.Resolver(strategy_class=baseline_strategy, **resolver_inputs).with_id(
    contract.BASELINE_RESOLVER_ID
  )
  # After the Trainer, so that the candidate's run has trained when the baseline is chosen.
  model_resolver.add_upstream_node(trainer)
  evaluator = tfx.components.Evaluator(
    examples=examples,
    model=trainer.outputs['model'],
    baseline_model=model_resolver.outputs['model'],
    eval_config=evaluation.eval_config(
      config.train.task, config.evaluation, config.schema_file, config.data.label_values
    ),
  ).with_id(contract.EVALUATOR_ID)
  return model_resolver, evaluator_lib.use_executor(evaluator)


def _pusher(config: config_lib.PipelineConfig, trainer, evaluator, serving_root: str):
  pusher = tfx.components.Pusher(
    model=trainer.outputs['model'],
    model_blessing=evaluator.outputs['blessing'],
    push_destination=tfx.proto.PushDestination(
      filesystem=tfx.proto.PushDestination.Filesystem(
        base_directory=f'{serving_root}/{config.serving.model_name}'
      )
    ),
  ).with_id(contract.PUSHER_ID)
  return pusher_lib.use_executor(pusher)


def _trainer(
  trainer_cfg, transform, base_model, component_id, export_cfg=None, base_model_folder=''
):
  """The stage's Trainer; `base_model_folder`: the local folder `base_model` imports, whose
  fingerprint re-runs the Trainer when its files change in place (the Importer would not)."""
  custom_config = checkpoint_fingerprint.with_fingerprint(
    trainer_cfg.trainer_custom_config(), trainer_cfg.preset
  )
  custom_config = checkpoint_fingerprint.with_fingerprint(
    custom_config, base_model_folder, key=contract.BASE_MODEL_FINGERPRINT_KEY
  )
  if export_cfg is not None and export_cfg != export_cfg.__class__():
    custom_config[contract.EXPORT_CONFIG_KEY] = export_cfg.to_dict()
  trainer = tfx.components.Trainer(
    run_fn=contract.RUN_FN,
    examples=transform.outputs['transformed_examples'],
    transform_graph=transform.outputs['transform_graph'],
    base_model=base_model,
    train_args=tfx.proto.TrainArgs(num_steps=trainer_cfg.train_steps),
    eval_args=tfx.proto.EvalArgs(num_steps=trainer_cfg.eval_steps),
    custom_config=custom_config,
  )
  return trainer.with_id(component_id)


def _transform(
  config,
  examples,
  schema,
  vocabulary,
  trainer_cfg,
  component_id,
  pretrain_cfg=None,
  statistics=None,
):
  """The stage's Transform, configured from the same TrainerConfig as its Trainer (and from the
  pretraining stage's, when it serves that stage too); `statistics`: StatisticsGen's of
  `examples`, for the warning of labels without training rows."""
  transform = transform_lib.create_transform(
    examples=examples,
    schema=schema,
    vocabulary=vocabulary,
    trainer_config=trainer_cfg,
    pretrain_config=pretrain_cfg,
    compression=config_lib.intermediate_compression(config),
    label_values=config.data.label_values,
    statistics=statistics,
  )
  return transform.with_id(component_id)


def create_pipeline(
  config: config_lib.PipelineConfig,
  *,
  pipeline_root: str,
  metadata_connection_config=None,
  beam_pipeline_args: Optional[List[str]] = None,
  serving_root: Optional[str] = None,
  schema_path: Callable[[str], str] = _same_path,
  baseline_strategy=resolver_lib.LatestBlessedBaselineStrategy,
  input_base: Optional[str] = None,
  share_transform: bool = True,
) -> tfx.dsl.Pipeline:
  """Builds the pipeline described by `config`.

  Args:
    config: the validated pipeline configuration.
    pipeline_root: where artifacts are written (local folder, gs://, s3://).
    metadata_connection_config: ML Metadata connection (None on Kubeflow, which brings its own).
    beam_pipeline_args: arguments for every Beam-based component.
    serving_root: the Pusher's destination root; defaults to `config.serving_root`.
    schema_path: maps the local path of each curated schema (the config's, and the corpus's
      with a pretrain stage) to where the pipeline reads it when it runs (e.g. inside a
      container image); by default, the same path.
    baseline_strategy: the resolver strategy choosing the Evaluator's baseline model (Kubeflow's
      compiler only accepts TFX's stock LatestBlessedModelStrategy).
    input_base: the folder ExampleGen reads, as the runner resolved and fetched it
      (`config_lib.input_base_dir`); None: `data.input_base` as a folder, which must then not
      name a data set to fetch (`config_lib.local_input_base`).
    share_transform: one Transform for the pretrain and train stages when they read the same
      examples; False gives pretraining its own (the layout before they shared one, which
      bench/shared_transform_bench.py measures against).

  Returns:
    The TFX pipeline.
  """
  example_gen = _example_gen(config, input_base)
  examples = example_gen.outputs['examples']
  statistics_gen, schema_gen, example_validator = _data_validation(config, examples, schema_path)
  schema = schema_gen.outputs['schema']
  corpus_components, corpus, corpus_schema = _corpus(config, example_gen, schema, schema_path)
  vocabulary = _vocabulary(config, corpus, example_validator.outputs['anomalies'])
  vocab = vocabulary.outputs['vocabulary']
  # Without a corpus of its own, pretraining reads the training examples with the same
  # vocabulary: one Transform reads, tokenizes and writes them once for both stages.
  shares = share_transform and config.pretrain is not None and not corpus_components
  transform = _transform(
    config,
    examples,
    schema,
    vocab,
    config.train,
    contract.TRANSFORM_ID,
    config.pretrain if shares else None,
    statistics_gen.outputs['statistics'],
  )
  warm_start, base_model = _warm_start(
    config, corpus, corpus_schema, vocab, transform if shares else None
  )
  export_cfg = config.export
  quantized = export_cfg.quantize != contract.QUANTIZE_NONE
  if quantized and config.distill is not None and not config.distill.teacher:
    # A quantized train model keeps its float copy beside it: the distill stage's teacher.
    export_cfg = dataclasses.replace(export_cfg, float_copy=True)
  trainer = _trainer(
    config.train,
    transform,
    base_model,
    contract.TRAINER_ID,
    export_cfg,
    base_model_folder=config.resolve_path(config.base_model),
  )
  model_resolver, evaluator = _evaluation(config, examples, trainer, baseline_strategy)
  pusher = _pusher(config, trainer, evaluator, serving_root or config.serving_root)
  distill = []
  if config.distill is not None:
    distill = distill_stage.components(
      config, examples, transform, trainer, serving_root or config.serving_root, baseline_strategy
    )
  return tfx.dsl.Pipeline(
    pipeline_name=config.pipeline_name,
    pipeline_root=pipeline_root,
    components=[
      example_gen,
      *corpus_components,
      statistics_gen,
      schema_gen,
      example_validator,
      vocabulary,
      transform,
      *warm_start,
      trainer,
      model_resolver,
      evaluator,
      pusher,
      *distill,
    ],
    enable_cache=config.enable_cache,
    metadata_connection_config=metadata_connection_config,
    beam_pipeline_args=beam_pipeline_args or [],
  )


def create_transform_pipeline(
  config: config_lib.PipelineConfig,
  *,
  vocabulary_dir: str,
  pipeline_root: str,
  metadata_connection_config=None,
  beam_pipeline_args: Optional[List[str]] = None,
  schema_path: Callable[[str], str] = _same_path,
  input_base: Optional[str] = None,
) -> tfx.dsl.Pipeline:
  """The pipeline's data stages alone: ExampleGen, the curated schema, Transform for the `train`
  stage, wired as `create_pipeline` wires them, with the vocabulary imported from
  `vocabulary_dir` (a Vocabulary component's output folder) instead of learned.

  For measuring what reading and tokenizing cost (bench/transform_bench.py); the other
  arguments are `create_pipeline`'s.
  """
  example_gen = _example_gen(config, input_base)
  schema_gen = _schema_gen(config, schema_path)
  vocabulary = tfx.dsl.Importer(
    source_uri=vocabulary_dir, artifact_type=vocabulary_lib.VocabularyArtifact, reimport=False
  ).with_id(contract.VOCABULARY_IMPORTER_ID)
  transform = _transform(
    config,
    example_gen.outputs['examples'],
    schema_gen.outputs['schema'],
    vocabulary.outputs['result'],
    config.train,
    contract.TRANSFORM_ID,
  )
  return tfx.dsl.Pipeline(
    pipeline_name=config.pipeline_name,
    pipeline_root=pipeline_root,
    components=[example_gen, schema_gen, vocabulary, transform],
    enable_cache=config.enable_cache,
    metadata_connection_config=metadata_connection_config,
    beam_pipeline_args=beam_pipeline_args or [],
  )
