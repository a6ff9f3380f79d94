"""What a local run did, collected: component timings, statistics, metrics, blessing, push,
reference figures and, for causal LMs, sample generations (`collect` -> `RunSummary`).

It reads ML Metadata (pipeline/run_metadata.py), the TFMA, TFDV and TensorBoard outputs the
artifacts point at, and runs the SavedModel's `generate`. pipeline/report.py renders the
result (the terminal text, report.html, summary.json).
"""

import dataclasses
import glob
import json
import math
import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

from pipeline import compression, run_metadata
from pipeline import config as config_lib
from tfxlm import contract


@dataclasses.dataclass
class RunSummary:
  """What one run of the pipeline produced.

  Attributes:
    components: each component's state and wall time, in execution order.
    metrics: overall-slice eval metrics of the candidate model.
    per_label: eval metrics per label slice (classification).
    confusion: (labels, matrix) of the overall slice, classification only.
    last_blessed: the model the candidate was compared with (the Evaluator's baseline, the last
      blessed model), if any: {'model': its folder, 'metrics': its overall metrics on the same
      eval examples}.
    left_out: what the evaluation left out and why (`evaluation.left_out`), if anything.
    blessed: whether the Evaluator blessed the model (None if it did not run).
    why: the validation failures, why the model was blessed, or why it has no verdict.
    pushed_path: where the Pusher wrote the model, None if it did not push.
    push_missing: when the pushed version is no longer there (deleted after a push the run
      reused from the cache), the command that copies it back ('' if unknown); a warning says so.
    model_run_dirs: TensorBoard log folders of the Trainers.
    input_files: the files ExampleGen read: {'count': n, 'files': [their paths relative to
      data.input_base, the first 1,000]}; empty if unknown.
    statistics: per split, example count and mean text length in tokens, if known.
    curves: TensorBoard scalar series per tag.
    baseline: classification: TF-IDF + logistic regression trained and scored on the same
      train/eval examples (`pipeline.baseline.ClassifierBaseline` fields).
    unigram: language models: unigram perplexity of the same eval tokens
      (`pipeline.baseline.UnigramBaseline` fields).
    reference_error: why the baseline or unigram reference could not be computed.
    generations: causal LMs: (prompt, continuation) for each of `report_prompts`.
    compression: with `export.quantize` or a `distill` stage (`compression.summarize`): the
      quantization mode, the float model's accuracy beside the evaluated export's, and the
      student's accuracy, blessing and push.
    warnings: the run's distinct WARNING (or worse) lines of the project's own code (components,
      trainer, pipeline), in order: skipped documents, a vocabulary far below its size, ...;
      a component reused from the cache brings those its first execution logged.
    log_path: the run's full log, where every warning and library line is.
  """

  components: List[run_metadata.ComponentRun] = dataclasses.field(default_factory=list)
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  per_label: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
  confusion: Optional[Tuple[List[str], List[List[float]]]] = None
  last_blessed: Optional[Dict[str, Any]] = None
  left_out: Optional[str] = None
  blessed: Optional[bool] = None
  why: List[str] = dataclasses.field(default_factory=list)
  pushed_path: Optional[str] = None
  push_missing: Optional[str] = None
  model_run_dirs: List[str] = dataclasses.field(default_factory=list)
  input_files: Dict[str, Any] = dataclasses.field(default_factory=dict)
  statistics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
  curves: Dict[str, List[Tuple[int, float]]] = dataclasses.field(default_factory=dict)
  baseline: Optional[Dict[str, float]] = None
  unigram: Optional[Dict[str, float]] = None
  reference_error: Optional[str] = None
  generations: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  compression: Dict[str, Any] = dataclasses.field(default_factory=dict)
  warnings: List[str] = dataclasses.field(default_factory=list)
  log_path: Optional[str] = None


def argmax_precision_recall(summary: RunSummary, unnamed: Optional[bool] = None) -> None:
  """Sets each label's precision and recall from the confusion matrix (the model's answer is its
  most probable label, as for accuracy and the matrix).

  TFMA binarizes them one label against the rest at a probability of 0.5: with three labels or
  more, an answer of 0.45 for the right label counts as not predicted, and the table would
  contradict the matrix beside it. A label no example was predicted as (precision) or has
  (recall) gets NaN, which the report explains.

  The same goes for each label's own slice (`label=<name>`), whose matrix is the label's row of
  the overall one: its recall is the slice's accuracy, its precision 1 (NaN if no example of
  it was predicted as it). TFMA's binarized figures there said, e.g., recall 0.136 beside an
  accuracy of 1.0 (right answers at probabilities below 0.5).

  TFMA's changes of its binarized figures against the last blessed model (`recall_diff (...)`)
  are dropped: beside the matrix's figures they would be differences of other numbers.

  Labels without names (no label vocabulary found, `unnamed`) keep TFMA's class ids; when not
  said, they are unnamed if the metrics name any class id.
  """
  if not summary.confusion:
    return
  labels, grid = summary.confusion
  if unnamed is None:
    unnamed = any('(classId:' in key for key in summary.metrics)
  for i, name in enumerate(labels):
    suffix = f'(classId:{name})' if unnamed else f'(label {name})'
    right, predicted, actual = grid[i][i], sum(row[i] for row in grid), sum(grid[i])
    summary.metrics[f'precision {suffix}'] = right / predicted if predicted else math.nan
    summary.metrics[f'recall {suffix}'] = right / actual if actual else math.nan
    own = summary.per_label.get(f'label={name}')
    if own is not None:
      own[f'precision {suffix}'] = 1.0 if right else math.nan
      own[f'recall {suffix}'] = right / actual if actual else math.nan
    for metrics in [summary.metrics, *summary.per_label.values()]:
      metrics.pop(f'precision_diff {suffix}', None)
      metrics.pop(f'recall_diff {suffix}', None)


def name_labels(summary: RunSummary, names: List[str]) -> None:
  """Says which label TFMA's class ids are (`auc (classId:0)` -> `auc (label rotten)`, the
  slice `label=0` -> `label=rotten`), in the overall metrics and in each label's slice. Within
  one label's slice an AUC, and another class's figures, are undefined (one class present): NaN
  there (null in summary.json), not TFMA's 0 or 1."""

  def named(metrics):
    for i, name in enumerate(names):
      metrics = {k.replace(f'(classId:{i})', f'(label {name})'): v for k, v in metrics.items()}
    return metrics

  summary.metrics = named(summary.metrics)
  per_label = {}
  for key, metrics in summary.per_label.items():
    metrics = named(metrics)
    label = key[len('label=') :] if key.startswith('label=') else None
    if label is not None and label.isdigit() and int(label) < len(names):
      label = names[int(label)]
      key = f'label={label}'
    if label in names:
      metrics = {
        k: float('nan')
        if k.startswith('auc') or ('(label ' in k and not k.endswith(f'(label {label})'))
        else v
        for k, v in metrics.items()
      }
    per_label[key] = metrics
  summary.per_label = per_label


def _confusion(plots) -> Optional[Tuple[List[str], List[List[float]]]]:
  """(class ids, matrix) of a slice's MultiClassConfusionMatrixPlot, if it has one."""
  for output in (plots or {}).values():  # None when no plot was asked for
    for named in output.values():
      matrix = named.get('multiClassConfusionMatrixAtThresholds')
      if matrix:
        entries = matrix['matrices'][0].get('entries', [])
        classes = sorted(
          {int(e.get('actualClassId', 0)) for e in entries}
          | {int(e.get('predictedClassId', 0)) for e in entries}
        )
        index = {c: i for i, c in enumerate(classes)}
        grid = [[0.0] * len(classes) for _ in classes]
        for e in entries:
          grid[index[int(e.get('actualClassId', 0))]][index[int(e.get('predictedClassId', 0))]] = (
            e.get('numWeightedExamples', 0.0)
          )
        return [str(c) for c in classes], grid
  return None


def _metric_values(metrics) -> Dict[str, float]:
  """{'name (sub key)': value} of one model's converted metrics, without TFMA's changes against
  the other model (`auc_diff`): the candidate's figures read the same with a baseline or
  without; `RunSummary.last_blessed` holds the baseline's own."""
  values = {}
  for output in (metrics or {}).values():
    for sub_key, named in output.items():
      for name, value in named.items():
        if 'doubleValue' not in value or name.endswith('_diff'):
          continue
        label = name if not sub_key else f'{name} ({sub_key})'
        values[label] = float(value['doubleValue'])  # 'NaN' arrives as a string
  return values


def read_evaluation(evaluation_uri, summary: RunSummary):
  """The candidate's metrics of every slice and its overall slice's confusion matrix; with a
  baseline (the last blessed model), the baseline's overall metrics in `summary.last_blessed`.

  With a baseline TFMA writes both models' figures, named `candidate` and `baseline`, and their
  differences: each is read by model name, so a run with a baseline shows the same figures,
  matrix and label names as one without.

  Read record by record, as `tfma.load_eval_result` does, but only the overall slice's plots
  are converted to dicts: the report shows no other plot, and an evaluation with many labels
  can hold hundreds of MB of them (per-class calibration plots of every label's slice).
  """
  import tensorflow_model_analysis as tfma
  from tensorflow_model_analysis.view import util as view_util

  candidate = None  # one model: TFMA names it ''
  for proto in tfma.load_metrics(evaluation_uri):
    models = {kv.key.model_name for kv in proto.metric_keys_and_values}
    if tfma.CANDIDATE_KEY in models:
      candidate = tfma.CANDIDATE_KEY
    converted = view_util.convert_metrics_proto_to_dict(proto, model_name=candidate)
    if converted is None:
      continue
    slice_key, metrics = converted
    values = _metric_values(metrics)
    if not slice_key:
      summary.metrics = values
      if tfma.BASELINE_KEY in models:
        baseline = view_util.convert_metrics_proto_to_dict(proto, model_name=tfma.BASELINE_KEY)
        # Its figures of the whole split only: per-class ones would be TFMA's binarized ones,
        # not the confusion matrix's the candidate's are (`argmax_precision_recall`).
        theirs = _metric_values(baseline[1] if baseline else None)
        summary.last_blessed = {'metrics': {k: v for k, v in theirs.items() if ' (' not in k}}
    else:
      summary.per_label[', '.join(f'{k}={v}' for k, v in slice_key)] = values
  for proto in tfma.load_plots(evaluation_uri):
    if proto.slice_key.single_slice_keys:
      continue  # a label's slice: the report shows the overall slice's matrix only
    models = {kv.key.model_name for kv in proto.plot_keys_and_values}
    model = tfma.CANDIDATE_KEY if tfma.CANDIDATE_KEY in models else None
    converted = view_util.convert_plots_proto_to_dict(proto, model_name=model)
    confusion = _confusion(converted[1]) if converted is not None else None
    if confusion:
      summary.confusion = confusion


def _overall_metrics(evaluation_uri) -> Dict[str, float]:
  """An evaluation's overall-slice metrics alone."""
  found = RunSummary()
  read_evaluation(evaluation_uri, found)
  return found.metrics


def _validation(evaluation_uri, summary: RunSummary):
  import tensorflow_model_analysis as tfma

  result = tfma.load_validation_result(evaluation_uri)
  reasons = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      name = failure.metric_key.name
      reasons.append(
        why_not_blessed(
          name,
          failure.metric_threshold,
          failure.metric_value.double_value.value,
          summary.metrics.get(name),
        )
      )
  if not result.validation_ok and not reasons:
    reasons = [f'validation failed (see {evaluation_uri})']
  summary.why = reasons


def why_not_blessed(name: str, threshold, value: float, candidate: Optional[float]) -> str:
  """One failed blessing threshold in words: the model's figure, the bound it misses and the
  config key that sets it.

  Args:
    name: the metric's TFMA name.
    threshold: the failed `tfma.MetricThreshold` (TFMA reports a value and a change threshold
      as separate failures).
    value: TFMA's figure: the candidate's metric, or for a change threshold its difference from
      the baseline's (candidate - baseline), not the metric itself.
    candidate: the candidate's overall metric, if known (the baseline's is then candidate - value).
  """
  from tensorflow_model_analysis.proto import config_pb2  # pylint: disable=g-import-not-at-top

  from pipeline import evaluation  # pylint: disable=g-import-not-at-top

  label, lower_key, upper_key, change_key = {
    evaluation.ACCURACY: ('accuracy', 'min_accuracy', None, 'max_accuracy_drop'),
    evaluation.PERPLEXITY: ('perplexity', None, 'max_perplexity', 'max_perplexity_rise'),
  }.get(name, (name, None, None, None))
  # Figures as the summary prints the metric (perplexity 2 decimals, the rest 4); bounds and
  # allowances as the config has them.
  digits = 2 if name == evaluation.PERPLEXITY else 4

  def figure(number):
    return f'{number:.{digits}f}'

  def key(field):
    return f' (evaluation.{field})' if field else ''

  bounds = threshold.value_threshold
  if bounds.HasField('lower_bound'):
    bound = bounds.lower_bound.value
    return (
      f'{label} {figure(value)} is below the lower bound {bound:g} by {figure(bound - value)}'
      + key(lower_key)
    )
  if bounds.HasField('upper_bound'):
    bound = bounds.upper_bound.value
    return (
      f'{label} {figure(value)} is above the upper bound {bound:g} by {figure(value - bound)}'
      + key(upper_key)
    )
  if threshold.HasField('change_threshold'):
    change = threshold.change_threshold
    higher_is_better = change.direction == config_pb2.MetricDirection.HIGHER_IS_BETTER
    allowed = abs(change.absolute.value)
    side, allowance = ('below', 'drop') if higher_is_better else ('above', 'rise')
    if candidate is None:
      figures = f"{label} is {figure(abs(value))} {side} the last blessed model's"
    else:
      figures = (
        f"{label} {figure(candidate)} is {figure(abs(value))} {side} the last blessed model's "
        f'{figure(candidate - value)}'
      )
    setting = f', evaluation.{change_key}' if change_key else ''
    return f'{figures} (allowed {allowance} {allowed:g}{setting})'
  return f'{label} {figure(value)} misses its threshold'


def _curves(model_run_dir) -> Dict[str, List[Tuple[int, float]]]:
  import tensorflow as tf

  curves: Dict[str, List[Tuple[int, float]]] = {}
  for path in sorted(
    glob.glob(os.path.join(model_run_dir, '**', 'events.out.tfevents.*'), recursive=True)
  ):
    split = os.path.basename(os.path.dirname(path))
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          number = (
            value.simple_value
            if value.HasField('simple_value')
            else float(tf.make_ndarray(value.tensor))
            if value.HasField('tensor')
            else None
          )
          if number is not None:
            curves.setdefault(f'{split}/{value.tag}', []).append((event.step, number))
    except tf.errors.DataLossError:
      continue  # a file still being written: keep what was read
  return curves


def _checkpoints_record(model_run_dir) -> Optional[Dict[str, Any]]:
  try:
    with open(os.path.join(model_run_dir, contract.CHECKPOINTS_RECORD_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None  # a run from before the record, or not a Trainer's
  ok = isinstance(record, dict) and isinstance(record.get('resumed_from_step'), int)
  return record if ok else None


def _run_curves(model_run_dir) -> Dict[str, List[Tuple[int, float]]]:
  """`_curves` of a Trainer's execution and, when it resumed from checkpoints, of the earlier
  executions that wrote them (model_run dirs beside it that trained in the same checkpoint
  folder), each up to the step the next one resumed from: the curves of the whole training."""
  curves = _curves(model_run_dir)
  record = _checkpoints_record(model_run_dir)
  if not record or record['resumed_from_step'] <= 0:
    return curves
  parent = os.path.dirname(os.path.normpath(model_run_dir))
  since = os.path.getmtime(os.path.join(model_run_dir, contract.CHECKPOINTS_RECORD_FILE))
  earlier = []
  for name in os.listdir(parent):
    folder = os.path.join(parent, name)
    other = _checkpoints_record(folder)
    if (
      os.path.normpath(folder) != os.path.normpath(model_run_dir)
      and other
      and other['checkpoint_dir'] == record['checkpoint_dir']
    ):
      written = os.path.getmtime(os.path.join(folder, contract.CHECKPOINTS_RECORD_FILE))
      if written <= since:
        earlier.append((written, folder, other['resumed_from_step']))
  bound = record['resumed_from_step']
  parts = []
  # Newest first: each execution contributes the steps after its own resume, up to the next's.
  for _, folder, resumed in sorted(earlier, reverse=True):
    if bound <= 0:
      break
    if resumed >= bound:
      continue  # not one this run's checkpoints descend from
    for tag, points in _curves(folder).items():
      parts.append((tag, [(s, v) for s, v in points if resumed < s <= bound]))
    bound = resumed
  for tag, points in parts:
    curves[tag] = sorted(points + curves.get(tag, []), key=lambda point: point[0])
  return curves


def input_files(examples) -> Dict[str, Any]:
  """The files ExampleGen's `examples` artifact records it read ({} if it records none)."""
  try:
    recorded = json.loads(run_metadata.custom(examples, contract.INPUT_FILES_PROPERTY) or '{}')
  except ValueError:
    return {}
  return recorded if isinstance(recorded, dict) else {}


def _statistics(statistics_uri) -> Dict[str, Dict[str, float]]:
  """Per split: example count, mean text length and label shares, from StatisticsGen."""
  import tensorflow_data_validation as tfdv

  result = {}
  for path in sorted(glob.glob(os.path.join(statistics_uri, 'Split-*', 'FeatureStats.pb'))):
    split = os.path.basename(os.path.dirname(path))[len('Split-') :]
    dataset = tfdv.load_stats_binary(path).datasets[0]
    row = {'examples': float(dataset.num_examples)}
    for feature in dataset.features:
      name = '.'.join(feature.path.step)
      if name == contract.TEXT_KEY:
        row['mean text length (chars)'] = round(feature.string_stats.avg_length, 1)
      elif name == contract.LABEL_KEY and dataset.num_examples:
        for value in feature.string_stats.top_values:
          row[f'share of label {value.value}'] = round(value.frequency / dataset.num_examples, 3)
    result[split] = row
  return result


def _label_names(transform_graph_uri: str) -> Optional[List[str]]:
  """The label vocabulary of a classification transform graph (line number = class id)."""
  import tensorflow_transform as tft

  try:
    path = tft.TFTransformOutput(transform_graph_uri).vocabulary_file_by_name(
      contract.LABEL_VOCAB_NAME
    )
  except (ValueError, OSError):
    return None
  with open(path, encoding='utf-8') as f:
    return f.read().splitlines()


def _references(config, store, summary: RunSummary) -> None:
  """The baseline (classify) or unigram perplexity (mlm, clm) on the run's own examples."""
  from pipeline import baseline

  task = config.train.task
  try:
    if task == contract.CLASSIFY:
      examples = run_metadata.latest_output(store, 'Examples', contract.EXAMPLE_GEN_ID, 'examples')
      if examples is not None:
        summary.baseline = dataclasses.asdict(baseline.classifier_baseline(examples.uri))
    else:
      transformed = run_metadata.latest_output(
        store, 'Examples', contract.TRANSFORM_ID, 'transformed_examples'
      )
      graph = run_metadata.latest_output(
        store, 'TransformGraph', contract.TRANSFORM_ID, 'transform_graph'
      )
      if transformed is not None and graph is not None:
        import tensorflow_transform as tft

        vocab = tft.TFTransformOutput(graph.uri).vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME)
        with open(vocab, encoding='utf-8') as f:
          vocab_size = sum(1 for _ in f)
        summary.unigram = dataclasses.asdict(
          baseline.unigram_perplexity(transformed.uri, vocab_size, seq_len=config.train.seq_len)
        )
  except ImportError as e:
    summary.reference_error = f'{e.name or e} is not installed (pip install -e .[dev]): no baseline'
  except (ValueError, OSError) as e:
    summary.reference_error = f'{type(e).__name__}: {e}'


# In the outputs folder: the warnings each executed component logged, by its output artifacts
# (`<uri>@<creation ms>`), for the runs that reuse them from the cache.
WARNINGS_FILE = 'warnings.json'


def _artifact_keys(store, ids: List[int]) -> List[str]:
  """Names of artifacts that stay theirs if metadata.sqlite is started afresh (URIs repeat)."""
  if not ids:
    return []
  return [f'{a.uri}@{a.create_time_since_epoch}' for a in store.get_artifacts_by_id(ids)]


def run_warnings(
  config: config_lib.PipelineConfig, store, logged: Dict[Optional[str], List[str]]
) -> List[str]:
  """The run's warnings: those logged outside any component, those of each component it ran,
  and for each component it reused from the cache, those its first execution logged (kept in
  WARNINGS_FILE; that run's log is gone), said to be reused. The components' warnings are
  recorded for later runs.

  Args:
    config: the run's config (its outputs folder holds WARNINGS_FILE).
    store: the run's view of ML Metadata (`run_metadata.run_view`).
    logged: this process's warnings by the component that was running (None: none was).
  """
  path = os.path.join(config.resolved_outputs_dir, WARNINGS_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      kept = json.load(f)
  except (OSError, ValueError):
    kept = {}
  kept = kept if isinstance(kept, dict) else {}
  found, changed = list(logged.get(None, [])), False
  for node, (state, ids) in store.nodes.items():
    if state == 'CACHED':
      for key in _artifact_keys(store, ids):
        found += [f'{m} (reused: {node} was cached)' for m in kept.get(key, [])]
    elif logged.get(node):
      kept.update({key: logged[node] for key in _artifact_keys(store, ids)})
      found += logged[node]
      changed = True
  found += [
    m for node, messages in logged.items() if node and node not in store.nodes for m in messages
  ]
  if changed:
    try:
      with open(path, 'w', encoding='utf-8') as f:
        json.dump(kept, f, indent=1)
    except OSError:
      pass  # only a later cached run would miss them: no reason to fail this one
  return list(dict.fromkeys(found))


def restore_push_command(pushed_path: Optional[str], model_uri: Optional[str]) -> Optional[str]:
  """If the version the Pusher recorded is no longer in a local serving folder (deleted since:
  a cached Pusher does not copy it again), the command that puts it back ('' if the model is not
  known); None if it is there or not local (gs://...)."""
  if not pushed_path or '://' in pushed_path:
    return None
  if os.path.exists(os.path.join(pushed_path, 'saved_model.pb')):
    return None
  if not model_uri:
    return ''
  # A push is that copy (TFX's Pusher copies the model's serving folder to a new version).
  parent = os.path.dirname(os.path.normpath(pushed_path))
  source = os.path.join(model_uri, contract.SERVING_MODEL_DIR)
  return f'{shlex.join(["mkdir", "-p", parent])} && {shlex.join(["cp", "-r", source, pushed_path])}'


def push_missing_warning(pushed_path: str, command: str) -> str:
  """The warning of a pushed version missing from the serving folder, with what to do."""
  how = f'put it back with `{command}`, or rerun' if command else 'rerun'
  return (
    f'Pusher: the pushed version {pushed_path} is missing (deleted after the push; a cached '
    f'Pusher copies nothing): {how} with --set enable_cache=false'
  )


def collect(
  config: config_lib.PipelineConfig,
  started: float,
  warnings: Optional[Dict[Optional[str], List[str]]] = None,
) -> RunSummary:
  """Reads what the run that started at `started` (epoch seconds) produced; `warnings`: the
  warnings it logged, by component (`run_warnings`)."""
  since_ms = int(started * 1000) - 1000
  everything = run_metadata.open_store(config.metadata_path)
  # Outputs of this run, or of the cached executions it reused: not the newest on disk, which
  # after a config change undone (cache hits on older executions) is another run's.
  store = run_metadata.run_view(everything, config.pipeline_name, since_ms)
  summary = RunSummary(
    components=run_metadata.component_runs(
      everything, config.pipeline_name, since_ms, run=store.run
    )
  )
  summary.warnings = run_warnings(config, store, warnings or {})
  summary.input_files = input_files(
    run_metadata.latest_output(store, 'Examples', contract.EXAMPLE_GEN_ID, 'examples')
  )
  statistics = run_metadata.latest(store, 'ExampleStatistics')
  if statistics is not None:
    summary.statistics = _statistics(statistics.uri)
  evaluation_artifact = run_metadata.latest_output(
    store, 'ModelEvaluation', contract.EVALUATOR_ID, 'evaluation'
  )
  if evaluation_artifact is not None:
    read_evaluation(evaluation_artifact.uri, summary)
    _validation(evaluation_artifact.uri, summary)
    if config.train.task == contract.CLASSIFY and config.schema_file:
      from pipeline import evaluation  # pylint: disable=g-import-not-at-top

      try:
        summary.left_out = evaluation.left_out(
          evaluation.label_classes(config.schema_file, config.data.label_values)
        )
      except OSError:
        pass  # the schema has gone since the run: nothing to say
  if summary.confusion:
    graph = run_metadata.latest_output(
      store, 'TransformGraph', contract.TRANSFORM_ID, 'transform_graph'
    )
    names = _label_names(graph.uri) if graph is not None else None
    ids, grid = summary.confusion
    named = bool(names) and all(int(i) < len(names) for i in ids)
    if named:
      summary.confusion = ([names[int(i)] for i in ids], grid)
      name_labels(summary, names)
    argmax_precision_recall(summary, unnamed=not named)
  blessing = run_metadata.latest_output(store, 'ModelBlessing', contract.EVALUATOR_ID, 'blessing')
  if blessing is None:
    summary.why = [f'the Evaluator recorded no blessing in {config.metadata_path}']
  else:
    summary.blessed = bool(run_metadata.custom(blessing, 'blessed'))
    if summary.last_blessed is not None:
      # TFX's Evaluator records the baseline it compared with on the blessing.
      summary.last_blessed = {
        'model': run_metadata.custom(blessing, 'baseline_model'),
        **summary.last_blessed,
      }
    if summary.blessed:
      summary.why = ['every metric passed its threshold']
    elif not summary.why:  # no failed threshold to name (no evaluation result beside it)
      summary.why = [f'the Evaluator did not bless it (see {blessing.uri})']
  pushed = run_metadata.latest_output(store, 'PushedModel', contract.PUSHER_ID, 'pushed_model')
  if pushed is not None and run_metadata.custom(pushed, 'pushed'):
    summary.pushed_path = run_metadata.custom(pushed, 'pushed_destination')
    model = run_metadata.latest_output(store, 'Model', contract.TRAINER_ID, 'model')
    summary.push_missing = restore_push_command(summary.pushed_path, model.uri if model else None)
    if summary.push_missing is not None:
      summary.warnings.append(push_missing_warning(summary.pushed_path, summary.push_missing))
  latest_runs = {}
  for run in store.get_artifacts_by_type('ModelRun'):
    producer = os.path.basename(os.path.dirname(os.path.dirname(run.uri)))
    latest_runs[producer] = run.uri
  summary.model_run_dirs = sorted(latest_runs.values())
  for model_run_dir in summary.model_run_dirs:
    producer = os.path.basename(os.path.dirname(os.path.dirname(model_run_dir)))
    for tag, points in _run_curves(model_run_dir).items():
      summary.curves[f'{producer}: {tag}'] = points
  _references(config, store, summary)
  summary.compression = compression.summarize(config, store, _overall_metrics)
  if config.train.task == contract.CLM:
    model = run_metadata.latest_output(store, 'Model', contract.TRAINER_ID, 'model')
    if model is not None:
      prompts = report_prompts(config, store)
      summary.generations = _generations(
        os.path.join(model.uri, contract.SERVING_MODEL_DIR), prompts
      )
  return summary


# Without `evaluation.prompts`, the report's prompts are the first words of eval texts.
PROMPT_COUNT, PROMPT_WORDS = 5, 3
# The report's sample generations: at most this many new tokens, sampled so.
GENERATE_TOKENS, GENERATE_TEMPERATURE, GENERATE_TOP_K = 24, 0.7, 20


def report_prompts(config: config_lib.PipelineConfig, store=None) -> List[str]:
  """The prompts of the report: `evaluation.prompts`, else the first `PROMPT_WORDS` words of
  the first `PROMPT_COUNT` texts of the eval split of the run's examples."""
  if config.evaluation.prompts:
    return list(config.evaluation.prompts)
  from pipeline import baseline

  examples = run_metadata.latest_output(
    store or run_metadata.open_store(config.metadata_path),
    'Examples',
    contract.EXAMPLE_GEN_ID,
    'examples',
  )
  if examples is None:
    return []
  prompts = []
  for row in baseline.iter_examples(baseline.split_files(examples.uri, 'eval')):
    words = (row.get(contract.TEXT_KEY) or [b''])[0].decode('utf-8', 'replace').split()
    if words:
      prompts.append(' '.join(words[:PROMPT_WORDS]))
    if len(prompts) == PROMPT_COUNT:
      break
  return prompts


def generate(
  signature,
  prompts: List[str],
  max_new_tokens: int,
  temperature: float = GENERATE_TEMPERATURE,
  top_k: int = GENERATE_TOP_K,
  seed: int = 1,
) -> List[str]:
  """Calls a `generate` signature with per-row controls when it takes them, else scalars.

  Per row, prompt i samples with seed `seed + i`: the noise is hashed from (seed, position,
  token), so one seed for every row would draw the same noise for each, and prompts whose
  next-token odds are alike would get the same continuation.
  """
  import tensorflow as tf

  specs = signature.structured_input_signature[1]
  rows = len(prompts)

  def value(name, number, dtype, step=0):
    per_row = specs[name].shape.rank == 1
    return tf.constant([number + i * step for i in range(rows)] if per_row else number, dtype)

  kwargs = {
    contract.PROMPT_INPUT: tf.constant(prompts),
    contract.MAX_NEW_TOKENS_INPUT: value(contract.MAX_NEW_TOKENS_INPUT, max_new_tokens, tf.int32),
    contract.TEMPERATURE_INPUT: value(contract.TEMPERATURE_INPUT, temperature, tf.float32),
    contract.TOP_K_INPUT: value(contract.TOP_K_INPUT, top_k, tf.int32),
  }
  if contract.SEED_INPUT in specs:
    kwargs[contract.SEED_INPUT] = value(
      contract.SEED_INPUT, seed, specs[contract.SEED_INPUT].dtype, step=1
    )
  for name, spec in specs.items():
    if name not in kwargs and name == contract.TOP_P_INPUT:
      kwargs[name] = value(name, 1.0, spec.dtype)
  texts = signature(**kwargs)[contract.GENERATED_TEXT].numpy()
  return [t.decode('utf-8', errors='replace') for t in texts]


def _generations(model_dir: str, prompts: List[str]) -> List[Tuple[str, str]]:
  import tensorflow as tf
  import tensorflow_text  # noqa: F401 - registers the tokenizer ops the model uses

  loaded = tf.saved_model.load(model_dir)
  signature = loaded.signatures[contract.GENERATE]
  # The signature refuses more tokens than the limit it was exported with (seq_len - 1 at most).
  with tf.io.gfile.GFile(
    os.path.join(model_dir, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  ) as f:
    trainer = json.load(f)
  tokens = min(GENERATE_TOKENS, trainer['max_new_tokens_limit'], trainer['seq_len'] - 1)
  if not prompts:
    return []
  return list(zip(prompts, generate(signature, prompts, tokens), strict=True))
