"""The run summary's compression figures: the quantized export's accuracy next to the float
model's, and the distilled student's evaluation, blessing and push."""

import json
import os
from typing import Any, Callable, Dict, List

from pipeline import evaluation, run_metadata
from tfxlm import contract
from trainer import training


def _float_accuracy(store) -> float | None:
  """The `train` model's last eval accuracy in float, from its Trainer's eval history: the same
  eval split the Evaluator scores, but only the `train.eval_steps` batches the Trainer reads."""
  run = run_metadata.latest_output(store, 'ModelRun', contract.TRAINER_ID, 'model_run')
  if run is None:
    return None
  path = os.path.join(run.uri, training.EVAL_HISTORY_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    history = json.load(f)
  return history[-1].get('accuracy') if history else None


def summarize(config, store, read_metrics: Callable[[str], Dict[str, float]]) -> Dict[str, Any]:
  """{quantize, float_accuracy, student: {accuracy, blessed, pushed_path}}, the parts that
  apply to this config (empty without `export.quantize` or a `distill` stage).

  `read_metrics(evaluation_uri)` gives an Evaluator's overall-slice metrics (the summary's).
  """
  found: Dict[str, Any] = {}
  if config.export.quantize != contract.QUANTIZE_NONE:
    found['quantize'] = config.export.quantize
    found['float_accuracy'] = _float_accuracy(store)
  if config.distill is not None:
    evaluated = run_metadata.latest_output(
      store, 'ModelEvaluation', contract.DISTILL_EVALUATOR_ID, 'evaluation'
    )
    metrics = read_metrics(evaluated.uri) if evaluated is not None else {}
    blessing = run_metadata.latest_output(
      store, 'ModelBlessing', contract.DISTILL_EVALUATOR_ID, 'blessing'
    )
    pushed = run_metadata.latest_output(
      store, 'PushedModel', contract.DISTILL_PUSHER_ID, 'pushed_model'
    )
    found['student'] = {
      'accuracy': metrics.get(evaluation.ACCURACY),
      'blessed': bool(run_metadata.custom(blessing, 'blessed')) if blessing else None,
      'pushed_path': (
        run_metadata.custom(pushed, 'pushed_destination')
        if pushed is not None and run_metadata.custom(pushed, 'pushed')
        else None
      ),
    }
  return found


def lines(found: Dict[str, Any]) -> List[str]:
  """Plain lines for the terminal summary and the report's headline."""
  out = []
  if 'quantize' in found:
    float_accuracy = found.get('float_accuracy')
    out.append(
      f'  {"this model is the " + found["quantize"] + " export;":<40} the float model before '
      + (f'quantization: accuracy {float_accuracy:.4f}' if float_accuracy is not None else '?')
      + " (the Trainer's last eval: its eval_steps batches, not the whole eval split TFMA"
      ' scores, so the two differ by sampling too)'
    )
  student = found.get('student')
  if student:
    accuracy = student['accuracy']
    verdict = {True: 'blessed', False: 'NOT blessed', None: 'not evaluated'}[student['blessed']]
    out.append(
      f'  {"distilled student":<40} accuracy '
      + (f'{accuracy:.4f}' if accuracy is not None else '?')
      + f', {verdict}'
      + (f', pushed to {student["pushed_path"]}' if student['pushed_path'] else '')
    )
  return out
