"""The Evaluator's executor: TFX's own, without two costs that do not depend on the data.

Measured on the demo (50 eval rows, in-process Beam, a shared 2-core machine):
- Python's cyclic garbage collector: by the time the Evaluator runs, the process holds about a
  million objects (TensorFlow, Keras, the Trainer's model); TFMA's Beam pipeline allocates enough
  to trigger a full collection, which walks all of them: 0.9 s of the Evaluator's 4.1 s of CPU.
  The objects that exist before the evaluation are frozen (`gc.freeze`) for its duration, so the
  collector only walks what the evaluation creates; they are unfrozen after it (in a process that
  froze objects itself they stay frozen, with its own: `tfxlm.collector`).
- Beam's construction-time type checks (`--pipeline_type_check`, on by default): they inspect
  the type hints of each of the ~240 transforms that TFMA builds, about 0.3 s. They check
  nothing at run time and decide no coder, so turning them off changes no result. An explicit
  `--pipeline_type_check` or `--no_pipeline_type_check` in the Beam arguments wins.

It also leaves out a baseline (the last blessed model, from the resolver) it cannot compare the
candidate with, with a warning that names it and why (`baseline_mismatch`): its files gone (deleted,
or the outputs folder moved: ML Metadata keeps absolute paths), or another task, label vocabulary
or serving signature. TFMA would fail on it inside Beam, and every rerun the same way, since the
resolver picks it again. The check is here and not in the resolver because it needs both models'
files, and it leaves the resolver's choice, which ML Metadata records as the Evaluator's input (and
which the Evaluator's cache key holds), as TFX's own: a rerun with nothing changed is still cached.
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec

from components import beam_specs, tfx_internals
from tfxlm import collector, contract

beam_specs.install()  # Beam DoFn specs read once per kind of DoFn

NO_TYPE_CHECK = '--no_pipeline_type_check'
_TYPE_CHECK_FLAGS = ('--pipeline_type_check', NO_TYPE_CHECK)


# TFX's Evaluator input keys (tfx.types.standard_component_specs).
MODEL_KEY, BASELINE_MODEL_KEY = 'model', 'baseline_model'


def _read_text(path: str) -> Optional[str]:
  import tensorflow as tf

  try:
    with tf.io.gfile.GFile(path) as f:
      return f.read()
  except tf.errors.NotFoundError:
    return None


def _task(serving_dir: str) -> Optional[str]:
  text = _read_text(os.path.join(serving_dir, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE))
  try:
    return json.loads(text).get('task') if text else None
  except (ValueError, AttributeError):
    return None


def _labels(serving_dir: str) -> Optional[List[str]]:
  text = _read_text(os.path.join(serving_dir, 'assets', contract.LABEL_VOCAB_NAME))
  return text.splitlines() if text is not None else None


def _outputs(serving_dir: str) -> Optional[Dict[str, int]]:
  """The serving signature's outputs, {name: dtype enum}, if the SavedModel has one."""
  import tensorflow as tf
  from tensorflow.core.protobuf import saved_model_pb2

  path = os.path.join(serving_dir, 'saved_model.pb')
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, 'rb') as f:
    saved = saved_model_pb2.SavedModel.FromString(f.read())
  for graph in saved.meta_graphs:
    signature = graph.signature_def.get(contract.SERVING_DEFAULT)
    if signature is not None:
      return {name: tensor.dtype for name, tensor in signature.outputs.items()}
  return None


def baseline_mismatch(candidate_uri: str, baseline_uri: str) -> Optional[str]:
  """Why the baseline Model artifact cannot be compared with the candidate, None if it can.

  Args:
    candidate_uri: the candidate Model artifact's folder (the SavedModel in `Format-Serving`).
    baseline_uri: the baseline's.
  """
  import tensorflow as tf

  theirs = os.path.join(baseline_uri, contract.SERVING_MODEL_DIR)
  ours = os.path.join(candidate_uri, contract.SERVING_MODEL_DIR)
  if not tf.io.gfile.exists(os.path.join(theirs, 'saved_model.pb')):
    return (
      'has no SavedModel (its files were deleted, or the outputs folder moved: ML Metadata '
      'keeps absolute paths)'
    )
  task, their_task = _task(ours), _task(theirs)
  if task and their_task and task != their_task:
    return f'is a {their_task} model, this model {task}'
  labels, their_labels = _labels(ours), _labels(theirs)
  if labels is not None and their_labels is not None and labels != their_labels:
    return f'has labels [{", ".join(their_labels)}], this model [{", ".join(labels)}]'
  outputs, their_outputs = _outputs(ours), _outputs(theirs)
  if outputs is not None and their_outputs is not None and outputs != their_outputs:
    return (
      f'answers {contract.SERVING_DEFAULT} with outputs {sorted(their_outputs)}, this model '
      f'{sorted(outputs)} (or of other types)'
    )
  return None


def usable_baseline(input_dict: Dict[str, List[types.Artifact]]) -> Dict[str, List[types.Artifact]]:
  """`input_dict` without its baseline model if the candidate cannot be compared with it, which a
  warning says; else as it is."""
  baselines, models = input_dict.get(BASELINE_MODEL_KEY), input_dict.get(MODEL_KEY)
  if not baselines or not models:
    return input_dict
  why = baseline_mismatch(models[0].uri, baselines[0].uri)
  if why is None:
    return input_dict
  logging.warning(
    "Evaluator: the last blessed model (%s) %s: not compared; only this run's own thresholds "
    'apply (no max_accuracy_drop or max_perplexity_rise check).',
    baselines[0].uri,
    why,
  )
  return {**input_dict, BASELINE_MODEL_KEY: []}


class Executor(tfx_evaluator.Executor):
  """TFX's Evaluator executor, run with the earlier objects frozen and no type checks, without
  a baseline it cannot compare the candidate with."""

  def Do(  # noqa: N802 (TFX API)
    self,
    input_dict: Dict[str, List[types.Artifact]],
    output_dict: Dict[str, List[types.Artifact]],
    exec_properties: Dict[str, Any],
  ) -> None:
    args = tfx_internals.beam_args(self)
    if not any(a.startswith(_TYPE_CHECK_FLAGS) for a in args):
      tfx_internals.set_beam_args(self, [*args, NO_TYPE_CHECK])
    input_dict = usable_baseline(input_dict)
    with collector.new_objects_only():
      super().Do(input_dict, output_dict, exec_properties)


def use_executor(evaluator):
  """Has `evaluator` (a `tfx.components.Evaluator`) run this module's executor; returns it.

  The component stays TFX's own (its type, inputs, outputs and MLMD execution type unchanged);
  only the executor class that runs it changes.
  """
  spec = executor_spec.BeamExecutorSpec(Executor)
  spec.add_beam_pipeline_args(evaluator.executor_spec.beam_pipeline_args)
  evaluator.executor_spec = spec
  return evaluator
