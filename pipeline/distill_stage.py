"""The `distill` stage's components: a Trainer running trainer/distillation.py on the `train`
stage's Transform output with the teacher as its base model, then its own baseline resolver,
Evaluator and Pusher (with the project's resolver strategy, the student's baseline is the last
blessed student, never the teacher: components/resolver.py).
"""

from components import evaluator as evaluator_lib
from components import pusher as pusher_lib
from components import resolver as resolver_lib
from pipeline import evaluation
from pipeline.tfx_api import tfx
from tfxlm import checkpoint_fingerprint, contract


def components(config, examples, transform, teacher_trainer, serving_root, baseline_strategy):
  """The stage's components, in order: [teacher importer,] Trainer, Resolver, Evaluator, Pusher.

  Args:
    config: The PipelineConfig (its `distill` section is set).
    examples: ExampleGen's examples (the Evaluator's input).
    transform: The `train` stage's Transform.
    teacher_trainer: The `train` stage's Trainer (the teacher unless `distill.teacher` is set).
    serving_root: The Pusher's destination root.
    baseline_strategy: The resolver strategy (see pipeline/factory.py).
  """
  stage = config.distill
  nodes = []
  if stage.teacher:
    importer = tfx.dsl.Importer(
      source_uri=config.resolve_path(stage.teacher),
      artifact_type=tfx.types.standard_artifacts.Model,
      reimport=False,
    ).with_id(contract.TEACHER_IMPORTER_ID)
    nodes.append(importer)
    teacher = importer.outputs['result']
  else:
    teacher = teacher_trainer.outputs['model']
  trainer = tfx.components.Trainer(
    run_fn=contract.DISTILL_RUN_FN,
    examples=transform.outputs['transformed_examples'],
    transform_graph=transform.outputs['transform_graph'],
    base_model=teacher,
    train_args=tfx.proto.TrainArgs(num_steps=stage.student.train_steps),
    eval_args=tfx.proto.EvalArgs(num_steps=stage.student.eval_steps),
    # An imported teacher's files re-run the stage when they change in place.
    custom_config=checkpoint_fingerprint.with_fingerprint(
      stage.trainer_custom_config(),
      config.resolve_path(stage.teacher),
      key=contract.BASE_MODEL_FINGERPRINT_KEY,
    ),
  ).with_id(contract.DISTILL_TRAINER_ID)
  inputs = {
    'model': tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
    'model_blessing': tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  }
  if issubclass(baseline_strategy, resolver_lib.LatestBlessedBaselineStrategy):
    inputs[resolver_lib.CANDIDATE_KEY] = trainer.outputs['model']
  resolver = tfx.dsl.Resolver(strategy_class=baseline_strategy, **inputs).with_id(
    contract.DISTILL_RESOLVER_ID
  )
  resolver.add_upstream_node(trainer)
  evaluator = tfx.components.Evaluator(
    examples=examples,
    model=trainer.outputs['model'],
    baseline_model=resolver.outputs['model'],
    eval_config=evaluation.eval_config(
      contract.CLASSIFY, config.evaluation, config.schema_file, config.data.label_values
    ),
  ).with_id(contract.DISTILL_EVALUATOR_ID)
  evaluator = evaluator_lib.use_executor(evaluator)
  pusher = tfx.components.Pusher(
    model=trainer.outputs['model'],
    model_blessing=evaluator.outputs['blessing'],
    push_destination=tfx.proto.PushDestination(
      filesystem=tfx.proto.PushDestination.Filesystem(
        base_directory=f'{serving_root}/{stage.model_name}'
      )
    ),
  ).with_id(contract.DISTILL_PUSHER_ID)
  pusher = pusher_lib.use_executor(pusher)
  return [*nodes, trainer, resolver, evaluator, pusher]
