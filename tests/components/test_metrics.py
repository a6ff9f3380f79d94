"""The perplexity metric and the evaluation configs."""

import math

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from components import metrics
from pipeline import config as config_lib
from pipeline import evaluation
from tfxlm import contract


def _inputs(logprob_sum, count):
  return metric_types.StandardMetricInputs(
    predictions={
      contract.TOKEN_LOGPROB_SUM: np.array([logprob_sum], np.float32),
      contract.TOKEN_COUNT: np.array([count], np.float32),
    }
  )


def test_perplexity_is_token_weighted_over_examples():
  (computation,) = metrics.Perplexity().computations()
  combiner = computation.combiner
  first = combiner.add_input(combiner.create_accumulator(), _inputs(-10.0, 5))
  second = combiner.add_input(combiner.create_accumulator(), _inputs(-2.0, 1))
  (value,) = combiner.extract_output(combiner.merge_accumulators([first, second])).values()
  assert value == pytest.approx(math.exp(12.0 / 6))  # not the mean of exp(2) and exp(2)


def test_perplexity_names_the_outputs_it_needs():
  (computation,) = metrics.Perplexity().computations()
  combiner = computation.combiner
  bad = metric_types.StandardMetricInputs(predictions={'probabilities': np.zeros(2)})
  with pytest.raises(ValueError, match='token_logprob_sum'):
    combiner.add_input(combiner.create_accumulator(), bad)


def test_label_classes_read_from_the_curated_schema():
  config = config_lib.from_dict({'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}})
  assert evaluation.label_classes(config.schema_file) == 2


def test_classify_thresholds_carry_the_configured_bounds():
  config = evaluation.eval_config(
    'classify', config_lib.EvaluationConfig(min_accuracy=0.7, max_accuracy_drop=0.05), None
  )
  (accuracy,) = [
    m
    for spec in config.metrics_specs
    for m in spec.metrics
    if m.class_name == 'SparseCategoricalAccuracy'
  ]
  (gate,) = accuracy.per_slice_thresholds
  assert list(gate.slicing_specs) == [evaluation.tfma.SlicingSpec()]  # the overall slice only
  assert gate.threshold.value_threshold.lower_bound.value == 0.7
  assert gate.threshold.change_threshold.absolute.value == -0.05
  assert config.model_specs[0].preprocessing_function_names == ['transform_features']


def test_language_model_threshold_is_an_upper_bound_on_perplexity():
  config = evaluation.eval_config('clm', config_lib.EvaluationConfig(max_perplexity=50), None)
  (perplexity,) = [
    m for spec in config.metrics_specs for m in spec.metrics if m.class_name == 'Perplexity'
  ]
  assert perplexity.module == 'components.metrics'
  assert perplexity.per_slice_thresholds[0].threshold.value_threshold.upper_bound.value == 50


def _schema_with_labels(tmp_path, count):
  values = ''.join(f'  value: "class_{i:03d}"\n' for i in range(count))
  path = tmp_path / 'schema.pbtxt'
  path.write_text(
    'feature { name: "text" type: BYTES }\n'
    'feature { name: "label" type: BYTES domain: "label" }\n'
    f'string_domain {{\n  name: "label"\n{values}}}\n'
  )
  return str(path)


def _per_class_metrics(config):
  """Class name -> the class ids it is computed for, of the binarized (per-class) metrics."""
  return {
    m.class_name: list(spec.binarize.class_ids.values)
    for spec in config.metrics_specs
    if spec.HasField('binarize')
    for m in spec.metrics
  }


@pytest.mark.parametrize('classes', [2, 3, evaluation.MAX_PER_CLASS_LABELS])
def test_a_few_labels_get_every_per_class_metric(tmp_path, classes, caplog):
  config = evaluation.eval_config(
    'classify', config_lib.EvaluationConfig(), _schema_with_labels(tmp_path, classes)
  )
  expected = ['Precision', 'Recall', 'Calibration', 'CalibrationPlot'] + (
    ['AUC'] if classes == 2 else []
  )
  assert _per_class_metrics(config) == {name: list(range(classes)) for name in expected}
  assert evaluation.left_out(classes) is None
  assert 'Evaluation:' not in caplog.text


def test_many_labels_cost_no_per_class_metric_on_each_labels_slice(tmp_path, caplog):
  # Per-class metrics are computed on every slice, one slice per label: with 120 labels they
  # took the Evaluator 9 minutes and 275 MB of calibration plots.
  configs = {
    n: evaluation.eval_config(
      'classify', config_lib.EvaluationConfig(), _schema_with_labels(tmp_path, n)
    )
    for n in (evaluation.MAX_PER_CLASS_LABELS + 1, 120)
  }
  for config in configs.values():
    assert _per_class_metrics(config) == {}
    names = [m.class_name for spec in config.metrics_specs for m in spec.metrics]
    assert 'CalibrationPlot' not in names
    assert {'SparseCategoricalAccuracy', 'MultiClassConfusionMatrixPlot'} <= set(names)
  # The same config whatever the number of labels: the cost grows with the slices alone.
  assert (
    configs[120].SerializeToString()
    == configs[evaluation.MAX_PER_CLASS_LABELS + 1].SerializeToString()
  )
  assert '120 labels: no per-label calibration' in caplog.text
  assert 'calibration' in evaluation.left_out(120)
