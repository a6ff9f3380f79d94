"""The run summary's compression figures: the quantized export's accuracy next to the float
model's, and the distilled student's evaluation, blessing and push."""

import json
import os
from typing import Any, Dict, List

from pipeline import evaluation
from tfxlm import contract
from trainer import training


def _float_accuracy(store, latest_output) -> float | None:
  """The `train` model's last eval accuracy in float, from its Trainer's eval history (the same
  eval split the Evaluator scores)."""
  run = latest_output(store, 'ModelRun', (contract.TRAINER_ID,), 'model_run')
  if run is None:
    return None
  path = os.path.join(run.uri, training.EVAL_HISTORY_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    history = json.load(f)
  return history[-1].get('accuracy') if history else None


def summarize(config, store) -> Dict[str, Any]:
  """{quantize, float_accuracy, student: {accuracy, blessed, pushed_path}}, the parts that
  apply to this config (empty without `export.quantize` or a `distill` stage)."""
  from pipeline import summary as summary_lib  # it imports this module

  found: Dict[str, Any] = {}
  if config.export.quantize != contract.QUANTIZE_NONE:
    found['quantize'] = config.export.quantize
    found['float_accuracy'] = _float_accuracy(store, summary_lib._latest_output)
  if config.distill is not None:
    student = summary_lib.RunSummary()
    evaluated = summary_lib._latest_output(
      store, 'ModelEvaluation', (contract.DISTILL_EVALUATOR_ID,), 'evaluation'
    )
    if evaluated is not None:
      summary_lib._metrics(evaluated.uri, student)
    blessing = summary_lib._latest_output(
      store, 'ModelBlessing', (contract.DISTILL_EVALUATOR_ID,), 'blessing'
    )
    pushed = summary_lib._latest_output(
      store, 'PushedModel', (contract.DISTILL_PUSHER_ID,), 'pushed_model'
    )
    found['student'] = {
      'accuracy': student.metrics.get(evaluation.ACCURACY),
      'blessed': bool(summary_lib._custom(blessing, 'blessed')) if blessing else None,
      'pushed_path': (
        summary_lib._custom(pushed, 'pushed_destination')
        if pushed is not None and summary_lib._custom(pushed, 'pushed')
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
      + " (the Trainer's last eval)"
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
