"""What a local run did, read back from ML Metadata: timings, metrics, blessing, push; the report.

The summary is printed at the end of `make demo`; the report (report.html) is written beside
the pushed model (`<version>/assets.extra/report.html`, which TF Serving ignores) and in the
pipeline's outputs folder.
"""

import dataclasses
import glob
import html
import json
import os
import shlex
from typing import Dict, List, Optional, Tuple

from pipeline import config as config_lib
from pipeline import evaluation
from tfxlm import contract


@dataclasses.dataclass
class ComponentRun:
  name: str
  state: str  # COMPLETE, CACHED, FAILED, ...
  seconds: float


@dataclasses.dataclass
class RunSummary:
  """What one run of the pipeline produced.

  Attributes:
    components: each component's state and wall time, in execution order.
    metrics: overall-slice eval metrics of the candidate model.
    per_label: eval metrics per label slice (classification).
    confusion: (labels, matrix) of the overall slice, classification only.
    blessed: whether the Evaluator blessed the model (None if it did not run).
    why: the validation failures, or why the model was blessed.
    pushed_path: where the Pusher wrote the model, None if it did not push.
    model_run_dirs: TensorBoard log folders of the Trainers.
    statistics: per split, example count and mean text length in tokens, if known.
    curves: TensorBoard scalar series per tag.
  """
  components: List[ComponentRun] = dataclasses.field(default_factory=list)
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  per_label: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
  confusion: Optional[Tuple[List[str], List[List[float]]]] = None
  blessed: Optional[bool] = None
  why: List[str] = dataclasses.field(default_factory=list)
  pushed_path: Optional[str] = None
  model_run_dirs: List[str] = dataclasses.field(default_factory=list)
  statistics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
  curves: Dict[str, List[Tuple[int, float]]] = dataclasses.field(default_factory=dict)


def _store(config):
  from ml_metadata.metadata_store import metadata_store
  from tfx import v1 as tfx
  return metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))


def _latest(store, type_name, since_ms):
  artifacts = [a for a in store.get_artifacts_by_type(type_name)
               if a.create_time_since_epoch >= since_ms]
  return max(artifacts, key=lambda a: a.id) if artifacts else None


def _custom(artifact, key):
  if artifact is None or key not in artifact.custom_properties:
    return None
  value = artifact.custom_properties[key]
  return value.WhichOneof('value') and getattr(value, value.WhichOneof('value'))


def _component_runs(store, config, since_ms) -> List[ComponentRun]:
  from ml_metadata.proto import metadata_store_pb2
  state_names = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
  runs = []
  prefix = config.pipeline_name + '.'
  for context in store.get_contexts_by_type('node'):
    if not context.name.startswith(prefix):
      continue
    executions = [e for e in store.get_executions_by_context(context.id)
                  if e.create_time_since_epoch >= since_ms]
    for e in executions:
      seconds = max(0, e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
      runs.append((e.create_time_since_epoch,
                   ComponentRun(context.name[len(prefix):], state_names.get(e.last_known_state,
                                                                             '?'), seconds)))
  return [r for _, r in sorted(runs, key=lambda x: x[0])]


def _metrics(evaluation_uri, summary: RunSummary):
  import tensorflow_model_analysis as tfma
  result = tfma.load_eval_result(evaluation_uri)
  for slice_key, metrics in result.slicing_metrics:
    values = {}
    for output in metrics.values():
      for sub_key, named in output.items():
        for name, value in named.items():
          if 'doubleValue' not in value:
            continue
          label = name if not sub_key else f'{name} ({sub_key})'
          values[label] = float(value['doubleValue'])  # 'NaN' arrives as a string
    if not slice_key:
      summary.metrics = values
    else:
      summary.per_label[', '.join(f'{k}={v}' for k, v in slice_key)] = values
  for slice_key, plots in result.plots or []:
    if slice_key:
      continue
    for output in (plots or {}).values():  # None when no plot was asked for
      for named in output.values():
        matrix = named.get('multiClassConfusionMatrixAtThresholds')
        if matrix:
          entries = matrix['matrices'][0].get('entries', [])
          classes = sorted({int(e.get('actualClassId', 0)) for e in entries} |
                           {int(e.get('predictedClassId', 0)) for e in entries})
          index = {c: i for i, c in enumerate(classes)}
          grid = [[0.0] * len(classes) for _ in classes]
          for e in entries:
            grid[index[int(e.get('actualClassId', 0))]][
                index[int(e.get('predictedClassId', 0))]] = e.get('numWeightedExamples', 0.0)
          summary.confusion = ([str(c) for c in classes], grid)


def _validation(evaluation_uri, summary: RunSummary):
  import tensorflow_model_analysis as tfma
  result = tfma.load_validation_result(evaluation_uri)
  reasons = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      threshold = failure.metric_threshold
      bound = ''
      if threshold.value_threshold.HasField('lower_bound'):
        bound = f'lower bound {threshold.value_threshold.lower_bound.value:.4g}'
      elif threshold.value_threshold.HasField('upper_bound'):
        bound = f'upper bound {threshold.value_threshold.upper_bound.value:.4g}'
      elif threshold.HasField('change_threshold'):
        bound = (f'allowed change {threshold.change_threshold.absolute.value:+.4g} against the '
                 'last blessed model')
      reasons.append(f'{failure.metric_key.name} = {failure.metric_value.double_value.value:.4g}'
                     f' misses its {bound or "threshold"}')
  if not result.validation_ok and not reasons:
    reasons = [f'validation failed (see {evaluation_uri})']
  summary.why = reasons


def _curves(model_run_dir) -> Dict[str, List[Tuple[int, float]]]:
  import tensorflow as tf
  curves: Dict[str, List[Tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(model_run_dir, '**', 'events.out.tfevents.*'),
                               recursive=True)):
    split = os.path.basename(os.path.dirname(path))
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          number = (value.simple_value if value.HasField('simple_value') else
                    float(tf.make_ndarray(value.tensor)) if value.HasField('tensor') else None)
          if number is not None:
            curves.setdefault(f'{split}/{value.tag}', []).append((event.step, number))
    except tf.errors.DataLossError:
      continue  # a file still being written: keep what was read
  return curves


def _statistics(statistics_uri) -> Dict[str, Dict[str, float]]:
  """Per split: example count, mean text length and label shares, from StatisticsGen."""
  import tensorflow_data_validation as tfdv
  result = {}
  for path in sorted(glob.glob(os.path.join(statistics_uri, 'Split-*', 'FeatureStats.pb'))):
    split = os.path.basename(os.path.dirname(path))[len('Split-'):]
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


def collect(config: config_lib.PipelineConfig, started: float) -> RunSummary:
  """Reads what the run that started at `started` (epoch seconds) produced."""
  since_ms = int(started * 1000) - 1000
  store = _store(config)
  summary = RunSummary(components=_component_runs(store, config, since_ms))

  # Outputs of this run, or of the cached executions it reused.
  statistics = _latest(store, 'ExampleStatistics', 0)
  if statistics is not None:
    summary.statistics = _statistics(statistics.uri)
  evaluation_artifact = _latest(store, 'ModelEvaluation', 0)
  if evaluation_artifact is not None:
    _metrics(evaluation_artifact.uri, summary)
    _validation(evaluation_artifact.uri, summary)
  blessing = _latest(store, 'ModelBlessing', 0)
  if blessing is not None:
    summary.blessed = bool(_custom(blessing, 'blessed'))
    if summary.blessed:
      summary.why = ['every metric passed its threshold']
  pushed = _latest(store, 'PushedModel', 0)
  if pushed is not None and _custom(pushed, 'pushed'):
    summary.pushed_path = _custom(pushed, 'pushed_destination')
  for run in store.get_artifacts_by_type('ModelRun'):
    summary.model_run_dirs.append(run.uri)
  latest_runs = {}
  for run in store.get_artifacts_by_type('ModelRun'):
    producer = os.path.basename(os.path.dirname(os.path.dirname(run.uri)))
    latest_runs[producer] = run.uri
  summary.model_run_dirs = sorted(latest_runs.values())
  for model_run_dir in summary.model_run_dirs:
    producer = os.path.basename(os.path.dirname(os.path.dirname(model_run_dir)))
    for tag, points in _curves(model_run_dir).items():
      summary.curves[f'{producer}: {tag}'] = points
  return summary


# --- Text ---------------------------------------------------------------------------------


def _key_metrics(summary: RunSummary) -> List[Tuple[str, float]]:
  wanted = (evaluation.ACCURACY, 'auc', evaluation.PERPLEXITY, 'example_count',
            'sparse_categorical_crossentropy')
  return [(name, summary.metrics[name]) for name in wanted if name in summary.metrics]


def text(config: config_lib.PipelineConfig, summary: RunSummary) -> str:
  """The end-of-run summary printed to the terminal."""
  lines = ['', f'=== {config.pipeline_name}: run summary ===', 'Components:']
  total = 0.0
  for run in summary.components:
    total += run.seconds
    lines.append(f'  {run.name:<30} {run.state.lower():<9} {run.seconds:7.1f} s')
  lines.append(f'  {"total":<30} {"":<9} {total:7.1f} s')
  if summary.metrics:
    lines.append('Eval metrics (overall):')
    lines += [f'  {name:<32} {value:.4f}' for name, value in _key_metrics(summary)]
  if summary.blessed is not None:
    verdict = 'BLESSED' if summary.blessed else 'NOT blessed'
    lines.append(f'Model: {verdict}: ' + '; '.join(summary.why))
  outputs = config.resolved_outputs_dir
  report = os.path.join(outputs, contract.REPORT_FILE)
  if summary.pushed_path:
    base = os.path.dirname(summary.pushed_path.rstrip('/'))
    name = config.serving.model_name
    grpc, rest = contract.GRPC_PORT, contract.REST_PORT
    lines += [
        f'Pushed to: {summary.pushed_path}',
        f'Report:    {report}',
        '',
        f'Serve it (gRPC :{grpc}, REST :{rest}):',
        f'  ./dev python -m serving --model_name={name} --model_base_path={shlex.quote(base)}',
        f'  (or the stock image: docker run -p {grpc}:{grpc} -p {rest}:{rest} '
        f'-v {shlex.quote(base)}:/models/{name} -e MODEL_NAME={name} tensorflow/serving)',
        'Query it:',
        f'  ./dev python -m serving.client --grpc localhost:{grpc} --model_name={name} '
        '--text "a wonderful, moving film"',
        f'  curl -s -d \'{{"inputs": {{"{contract.TEXT_INPUT}": ["a wonderful, moving film"]}}, '
        f'"signature_name": "{contract.PREDICT_TEXT}"}}\' localhost:{rest}/v1/models/{name}:predict',
    ]
  else:
    lines += ['Nothing was pushed (the model was not blessed).', f'Report:    {report}']
  lines += ['TensorBoard:', f'  ./dev tensorboard --logdir {shlex.quote(outputs)}  '
            '(or: make tensorboard)', '']
  return '\n'.join(lines)


# --- Report -------------------------------------------------------------------------------


def _svg_chart(title: str, points: List[Tuple[int, float]], width=420, height=180) -> str:
  if not points:
    return ''
  steps = [p[0] for p in points]
  values = [p[1] for p in points]
  x0, x1 = min(steps), max(steps) or 1
  y0, y1 = min(values), max(values)
  if y1 == y0:
    y1 = y0 + 1
  pad = 30

  def xy(step, value):
    x = pad + (step - x0) / max(1, x1 - x0) * (width - 2 * pad)
    y = height - pad - (value - y0) / (y1 - y0) * (height - 2 * pad)
    return f'{x:.1f},{y:.1f}'

  path = ' '.join(xy(s, v) for s, v in points)
  return (f'<figure><svg width="{width}" height="{height}" role="img" '
          f'aria-label="{html.escape(title)}">'
          f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>'
          f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{path}"/>'
          f'<text x="{pad}" y="16" font-size="12">{html.escape(title)}</text>'
          f'<text x="2" y="{pad}" font-size="10">{y1:.3g}</text>'
          f'<text x="2" y="{height - pad}" font-size="10">{y0:.3g}</text>'
          f'<text x="{width - pad}" y="{height - 8}" font-size="10">{x1}</text>'
          '</svg></figure>')


def _table(rows, header) -> str:
  head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>'
                 for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def render_report(config: config_lib.PipelineConfig, summary: RunSummary) -> str:
  """The run report as one self-contained HTML page."""
  parts = [f'<h1>{html.escape(config.pipeline_name)}: run report</h1>']
  verdict = ('blessed' if summary.blessed else 'not blessed') if summary.blessed is not None \
      else 'not evaluated'
  parts.append(f'<p>Model {verdict}: {html.escape("; ".join(summary.why))}. '
               f'Pushed to: {html.escape(summary.pushed_path or "nothing pushed")}.</p>')
  parts.append('<h2>Components</h2>' + _table(
      [(r.name, r.state.lower(), f'{r.seconds:.1f} s') for r in summary.components],
      ('component', 'state', 'time')))
  if summary.metrics:
    parts.append('<h2>Eval metrics</h2>' + _table(
        [(k, f'{v:.4f}') for k, v in sorted(summary.metrics.items())], ('metric', 'value')))
  if summary.per_label:
    names = sorted({k for m in summary.per_label.values() for k in m})
    parts.append('<h2>By slice</h2>' + _table(
        [[s] + [f'{m.get(n, float("nan")):.4f}' for n in names]
         for s, m in sorted(summary.per_label.items())], ['slice'] + names))
  if summary.confusion:
    labels, grid = summary.confusion
    parts.append('<h2>Confusion matrix (rows: actual, columns: predicted label id)</h2>' +
                 _table([[labels[i]] + [f'{c:g}' for c in row] for i, row in enumerate(grid)],
                        ['actual \\ predicted'] + labels))
  if summary.curves:
    parts.append('<h2>Training curves</h2>' + ''.join(
        _svg_chart(tag, points) for tag, points in sorted(summary.curves.items())))
  if summary.statistics:
    columns = sorted({k for row in summary.statistics.values() for k in row},
                     key=lambda k: (k != 'examples', k))
    parts.append('<h2>Data (StatisticsGen)</h2>' + _table(
        [[split] + [f'{row[c]:g}' if c in row else '' for c in columns]
         for split, row in summary.statistics.items()], ['split'] + columns))
  parts.append('<h2>Configuration</h2><pre>' + html.escape(config.to_json()) + '</pre>')
  style = ('body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:'
           'collapse}td,th{border:1px solid #ccc;padding:2px 8px}figure{display:inline-block}')
  return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(config.pipeline_name)}'
          f'</title><style>{style}</style></head><body>{"".join(parts)}</body></html>')


def write_report(config: config_lib.PipelineConfig, summary: RunSummary) -> List[str]:
  """Writes report.html into the outputs folder and beside the pushed model."""
  page = render_report(config, summary)
  targets = [os.path.join(config.resolved_outputs_dir, contract.REPORT_FILE)]
  if summary.pushed_path and os.path.isdir(summary.pushed_path):
    targets.append(os.path.join(summary.pushed_path, contract.EXTRA_DIR, contract.REPORT_FILE))
  for target in targets:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'w', encoding='utf-8') as f:
      f.write(page)
  with open(os.path.join(config.resolved_outputs_dir, 'summary.json'), 'w') as f:
    json.dump(dataclasses.asdict(summary), f, indent=2, default=str)
  return targets
