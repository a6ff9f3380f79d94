"""The eval metrics and confusion matrix the summary reads from an Evaluator's output."""

import tensorflow as tf
from tensorflow_model_analysis.proto import metrics_for_slice_pb2 as pb

from pipeline import summary


def _slice(label):
  key = pb.SliceKey()
  if label is not None:
    key.single_slice_keys.add(column='label', bytes_value=label.encode())
  return key


def _write(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record.SerializeToString())


def _evaluation(folder, labels):
  """An Evaluator's metrics and plots files: the overall slice and one slice per label, each
  with its count and a confusion matrix; the label slices also with a calibration plot."""
  metrics, plots = [], []
  for label in [None, *labels]:
    count = float(len(labels) if label is None else 1)
    m = pb.MetricsForSlice(slice_key=_slice(label))
    kv = m.metric_keys_and_values.add()
    kv.key.name = 'example_count'
    kv.value.double_value.value = count
    kv = m.metric_keys_and_values.add()
    kv.key.name = 'calibration'
    kv.key.sub_key.class_id.value = 0
    kv.value.double_value.value = 0.5
    metrics.append(m)
    p = pb.PlotsForSlice(slice_key=_slice(label))
    kv = p.plot_keys_and_values.add()
    kv.key.name = 'multi_class_confusion_matrix_plot'
    matrix = kv.value.multi_class_confusion_matrix_at_thresholds.matrices.add()
    for i, name in enumerate(labels):
      if label in (None, name):  # every example predicted right
        matrix.entries.add(actual_class_id=i, predicted_class_id=i, num_weighted_examples=1.0)
    if label is not None:
      kv = p.plot_keys_and_values.add()
      kv.key.name = 'calibration_plot'
      kv.key.sub_key.class_id.value = 0
      for b in range(1000):
        kv.value.calibration_histogram_buckets.buckets.add(
          lower_threshold_inclusive=b / 1000, upper_threshold_exclusive=(b + 1) / 1000
        )
    plots.append(p)
  _write(folder / 'metrics-00000-of-00001.tfrecord', metrics)
  _write(folder / 'plots-00000-of-00001.tfrecord', plots)


def test_metrics_of_every_slice_and_the_overall_confusion_matrix(tmp_path):
  labels = [f'class_{i}' for i in range(30)]
  _evaluation(tmp_path, labels)
  run = summary.RunSummary()
  summary.read_evaluation(str(tmp_path), run)
  assert run.metrics == {'example_count': 30.0, 'calibration (classId:0)': 0.5}
  assert sorted(run.per_label) == sorted(f'label={name}' for name in labels)
  assert run.per_label['label=class_7']['example_count'] == 1.0
  ids, grid = run.confusion  # the overall slice's: every label, not one label's slice
  assert ids == [str(i) for i in range(30)]
  assert [row[i] for i, row in enumerate(grid)] == [1.0] * 30
  assert sum(map(sum, grid)) == 30.0


def _per_label_run(slice_names, class_key):
  """A 3-label evaluation as TFMA reports it: the overall matrix, and in each label's slice the
  argmax accuracy beside TFMA's precision and recall binarized at a probability of 0.5 (right
  answers at 0.4 count as missed)."""
  grid = [[18.0, 2.0, 0.0], [0.0, 22.0, 0.0], [1.0, 0.0, 17.0]]
  binarized_recall = [0.5, 3 / 22, 0.25]
  run = summary.RunSummary(confusion=(['0', '1', '2'], grid))
  for i, name in enumerate(slice_names):
    run.per_label[f'label={name}'] = {
      'sparse_categorical_accuracy': grid[i][i] / sum(grid[i]),
      'example_count': sum(grid[i]),
      f'precision ({class_key}:{i})': 1.0,
      f'recall ({class_key}:{i})': binarized_recall[i],
    }
  return run


def test_each_label_slice_has_the_precision_and_recall_of_its_accuracy():
  names = ['neg', 'pos', 'very neg']
  run = _per_label_run(['0', '1', '2'], 'classId')
  run.confusion = (names, run.confusion[1])
  summary.name_labels(run, names)
  summary.argmax_precision_recall(run, unnamed=False)
  for name in names:
    metrics = run.per_label[f'label={name}']
    assert metrics[f'recall (label {name})'] == metrics['sparse_categorical_accuracy']
    assert metrics[f'precision (label {name})'] == 1.0
  assert run.per_label['label=pos']['recall (label pos)'] == 1.0
  assert run.per_label['label=very neg']['recall (label very neg)'] == 17 / 18
  # The overall figures are the matrix's too.
  assert run.metrics['recall (label very neg)'] == 17 / 18
  assert run.metrics['precision (label neg)'] == 18 / 19


def test_unnamed_label_slices_are_recomputed_by_class_id():
  run = _per_label_run(['0', '1', '2'], 'classId')
  run.metrics = {'recall (classId:1)': 3 / 22, 'recall_diff (classId:1)': -0.1}
  run.per_label['label=1']['recall_diff (classId:1)'] = -0.136
  summary.argmax_precision_recall(run)
  assert run.per_label['label=1']['recall (classId:1)'] == 1.0
  # TFMA's change of its binarized recall against the last blessed model is not this recall's.
  assert 'recall_diff (classId:1)' not in run.metrics
  assert 'recall_diff (classId:1)' not in run.per_label['label=1']
  assert run.per_label['label=2']['recall (classId:2)'] == 17 / 18
  assert run.metrics['recall (classId:1)'] == 1.0


def _two_model_evaluation(folder):
  """An Evaluator's output with a baseline, as TFMA writes it: each figure of the candidate and
  of the baseline by model name, the candidate's changes (`is_diff`), and both models' matrices,
  the baseline's plot first."""
  metrics, plots = [], []
  for label in [None, 0, 1]:
    m = pb.MetricsForSlice(slice_key=_slice(None if label is None else str(label)))
    for model, accuracy, diff in (('candidate', 0.75, False), ('baseline', 0.5, False)):
      for name, value, class_id in (
        ('sparse_categorical_accuracy', accuracy, None),
        ('precision', accuracy / 2, 0),
        ('auc', accuracy, 0),
      ):
        kv = m.metric_keys_and_values.add()
        kv.key.name, kv.key.model_name, kv.key.is_diff = name, model, diff
        if class_id is not None:
          kv.key.sub_key.class_id.value = class_id
        kv.value.double_value.value = value
    for name, class_id in (('sparse_categorical_accuracy', None), ('auc', 0)):
      kv = m.metric_keys_and_values.add()
      kv.key.name, kv.key.model_name, kv.key.is_diff = name, 'candidate', True
      if class_id is not None:
        kv.key.sub_key.class_id.value = class_id
      kv.value.double_value.value = 0.25
    metrics.append(m)
  p = pb.PlotsForSlice(slice_key=_slice(None))
  for model, right in (('baseline', 1.0), ('candidate', 3.0)):
    kv = p.plot_keys_and_values.add()
    kv.key.name, kv.key.model_name = 'multi_class_confusion_matrix_plot', model
    matrix = kv.value.multi_class_confusion_matrix_at_thresholds.matrices.add()
    matrix.entries.add(actual_class_id=0, predicted_class_id=0, num_weighted_examples=right)
    matrix.entries.add(actual_class_id=1, predicted_class_id=0, num_weighted_examples=1.0)
  plots.append(p)
  _write(folder / 'metrics-00000-of-00001.tfrecord', metrics)
  _write(folder / 'plots-00000-of-00001.tfrecord', plots)


def test_with_a_baseline_the_candidates_figures_and_matrix_are_read_as_without(tmp_path):
  _two_model_evaluation(tmp_path)
  run = summary.RunSummary()
  summary.read_evaluation(str(tmp_path), run)
  # The candidate's figures, named as in a run without a baseline, and no TFMA change keys.
  assert run.metrics == {
    'sparse_categorical_accuracy': 0.75,
    'precision (classId:0)': 0.375,
    'auc (classId:0)': 0.75,
  }
  assert run.per_label['label=1']['sparse_categorical_accuracy'] == 0.75
  assert not [k for m in [run.metrics, *run.per_label.values()] for k in m if '_diff' in k]
  assert run.confusion == (['0', '1'], [[3.0, 0.0], [1.0, 0.0]])  # the candidate's matrix
  # The baseline's figures of the whole split (its per-class ones are TFMA's binarized ones).
  assert run.last_blessed == {'metrics': {'sparse_categorical_accuracy': 0.5}}
  # With the matrix, the labels are named and precision comes from it, as without a baseline.
  summary.name_labels(run, ['neg', 'pos'])
  run.confusion = (['neg', 'pos'], run.confusion[1])
  summary.argmax_precision_recall(run, unnamed=False)
  assert run.metrics['precision (label neg)'] == 0.75
  assert 'label=pos' in run.per_label
