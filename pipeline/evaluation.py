"""TFMA evaluation configs per task: the metrics, the slices and the blessing thresholds."""

import logging
from typing import Optional, Sequence

from tensorflow_model_analysis.proto import config_pb2 as tfma

from components import metrics
from pipeline import config as config_lib
from tfxlm import contract, schema_file

ACCURACY = 'sparse_categorical_accuracy'
PERPLEXITY = metrics.PERPLEXITY

# TFMA computes each per-class metric (binarized: one label against the rest) on every slice,
# and there is a slice per label: its cost grows with the square of the labels. With 120 labels
# the Evaluator took 9 min instead of 24 s, its calibration plots came to 275 MB and reading them
# back took over 8 GB. Above this many labels the per-class metrics are left out; precision and
# recall, which the summary takes from the confusion matrix, are still reported for every label.
MAX_PER_CLASS_LABELS = 10


def label_classes(schema_path: Optional[str], label_values: Sequence[str] = ()) -> Optional[int]:
  """Number of label classes: of `label_values` (`data.label_values`, which are then the label
  vocabulary) when given, else of the curated schema's `label` domain (a local file or a gs://
  URI), if it says."""
  if label_values:
    return len(label_values)
  if not schema_path:
    return None
  schema = schema_file.read(schema_path)
  for feature in schema.feature:
    if feature.name != contract.LABEL_KEY:
      continue
    if feature.HasField('int_domain') and feature.int_domain.HasField('max'):
      return feature.int_domain.max - feature.int_domain.min + 1
    if feature.HasField('string_domain'):
      return len(feature.string_domain.value)
    if feature.HasField('domain'):
      for domain in schema.string_domain:
        if domain.name == feature.domain:
          return len(domain.value)
  return None


def _overall(threshold):
  """The blessing looks at the whole eval split; per-label slices are reported, not gated (a
  handful of examples in a rare label's slice would otherwise decide it)."""
  return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def left_out(num_classes: Optional[int]) -> Optional[str]:
  """What the evaluation of a classifier with `num_classes` labels leaves out and why, in one
  line (None when nothing is)."""
  if not num_classes or num_classes <= MAX_PER_CLASS_LABELS:
    return None
  return (
    f'{num_classes} labels: no per-label calibration or calibration plot (computed up to '
    f"{MAX_PER_CLASS_LABELS} labels; TFMA computes them on every label's slice, so their time "
    'and size grow with the square of the labels); precision and recall per label come from '
    'the confusion matrix'
  )


def _classify(evaluation: config_lib.EvaluationConfig, num_classes: Optional[int]):
  accuracy = tfma.MetricConfig(
    class_name='SparseCategoricalAccuracy',
    per_slice_thresholds=_overall(
      tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': evaluation.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -evaluation.max_accuracy_drop},
        ),
      )
    ),
  )
  specs = [
    tfma.MetricsSpec(
      metrics=[
        tfma.MetricConfig(class_name='ExampleCount'),
        accuracy,
        tfma.MetricConfig(class_name='SparseCategoricalCrossentropy'),
        tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
      ]
    )
  ]
  note = left_out(num_classes)
  if note:
    logging.warning('Evaluation: %s.', note)
  elif num_classes:
    per_class = [
      tfma.MetricConfig(class_name=name)
      for name in ('Precision', 'Recall', 'Calibration', 'CalibrationPlot')
    ]
    if num_classes == 2:
      per_class.append(tfma.MetricConfig(class_name='AUC'))
    specs.append(
      tfma.MetricsSpec(
        metrics=per_class,
        binarize=tfma.BinarizationOptions(class_ids={'values': list(range(num_classes))}),
      )
    )
  return tfma.EvalConfig(
    model_specs=[
      tfma.ModelSpec(
        signature_name=contract.SERVING_DEFAULT,
        preprocessing_function_names=[contract.TRANSFORM_FEATURES],
        label_key=contract.TRANSFORMED_LABEL_KEY,
        prediction_key=contract.PROBABILITIES,
      )
    ],
    slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[contract.LABEL_KEY])],
    metrics_specs=specs,
  )


def _language_model(evaluation: config_lib.EvaluationConfig):
  perplexity = tfma.MetricConfig(
    class_name='Perplexity',
    module=metrics.__name__,
    per_slice_thresholds=_overall(
      tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(
          upper_bound={'value': evaluation.max_perplexity}
        ),
        change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.LOWER_IS_BETTER,
          absolute={'value': evaluation.max_perplexity_rise},
        ),
      )
    ),
  )
  return tfma.EvalConfig(
    model_specs=[tfma.ModelSpec(signature_name=contract.SERVING_DEFAULT)],
    slicing_specs=[tfma.SlicingSpec()],
    metrics_specs=[
      tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name='ExampleCount'), perplexity])
    ],
  )


def eval_config(
  task: str,
  evaluation: config_lib.EvaluationConfig,
  schema_path: Optional[str] = None,
  label_values: Sequence[str] = (),
) -> tfma.EvalConfig:
  """The TFMA config for a task; the thresholds decide the blessing. For classify, the labels
  are `label_values` (`data.label_values`) when given, else the schema's domain's."""
  if task == contract.CLASSIFY:
    return _classify(evaluation, label_classes(schema_path, label_values))
  return _language_model(evaluation)
