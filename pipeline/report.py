"""The run summary rendered: the terminal text printed at the end of `make demo`, report.html
(SVG charts of the TensorBoard curves, tables of metrics, statistics and the confusion matrix)
and summary.json.

report.html is written beside the pushed model (`<version>/assets.extra/report.html`, which TF
Serving ignores) and in the pipeline's outputs folder, with summary.json.
"""

import dataclasses
import html
import json
import math
import os
import shlex
from typing import Dict, List, Tuple

from pipeline import compression, evaluation
from pipeline import config as config_lib
from pipeline.summary import GENERATE_TEMPERATURE, GENERATE_TOKENS, GENERATE_TOP_K, RunSummary
from tfxlm import contract


def _key_metrics(summary: RunSummary) -> List[Tuple[str, float]]:
  wanted = (
    evaluation.ACCURACY,
    'auc',
    evaluation.PERPLEXITY,
    'example_count',
    'sparse_categorical_crossentropy',
  )
  return [(name, summary.metrics[name]) for name in wanted if name in summary.metrics]


def comparison_lines(summary: RunSummary) -> List[str]:
  """The model against its reference on the same eval examples, as plain lines."""
  lines = []
  accuracy = summary.metrics.get(evaluation.ACCURACY)
  if summary.baseline and accuracy is not None:
    b = summary.baseline
    # Scored on eval, as a model that learned only the train split's label shares would be.
    label = b.get('majority_label')
    majority = f"always train's majority label {label!r}" if label else "train's majority label"
    lines += [
      f'Against a baseline on the same {b["eval_examples"]:,.0f} eval examples '
      f'(both trained on the same {b["train_examples"]:,.0f}):',
      f'  {"this model":<40} accuracy {accuracy:.4f}',
      f'  {"TF-IDF + logistic regression":<40} accuracy {b["accuracy"]:.4f}',
      f'  {"difference (model - baseline)":<40} {accuracy - b["accuracy"]:+.4f}',
      f'  {majority:<40} accuracy {b["majority_accuracy"]:.4f}',
    ]
  perplexity = summary.metrics.get(evaluation.PERPLEXITY)
  if summary.unigram and perplexity is not None:
    u = summary.unigram
    lines += [
      f'Against a unigram model on the same {u["eval_tokens"]:,.0f} eval tokens:',
      f'  {"this model":<40} perplexity {perplexity:.2f}',
      f'  {"unigram (train token frequencies)":<40} perplexity {u["perplexity"]:.2f}',
      f'  {"ratio (model / unigram)":<40} {perplexity / u["perplexity"]:.3f}',
    ]
  lines += last_blessed_lines(summary)
  lines += compression.lines(summary.compression)
  if summary.reference_error:
    lines.append(f'No reference figure: {summary.reference_error}')
  return lines


def last_blessed_lines(summary: RunSummary) -> List[str]:
  """The model against the last blessed one (the Evaluator's baseline) on the same eval
  examples: the figure its thresholds compare (accuracy or perplexity)."""
  if not summary.last_blessed:
    return []
  theirs = summary.last_blessed.get('metrics') or {}
  where = summary.last_blessed.get('model') or "the Evaluator's baseline"
  lines = []
  for name, label in ((evaluation.ACCURACY, 'accuracy'), (evaluation.PERPLEXITY, 'perplexity')):
    if name in theirs and name in summary.metrics:
      ours = summary.metrics[name]
      lines += [
        f'Against the last blessed model ({where}) on the same eval examples:',
        f'  {"this model":<40} {label} {ours:.4f}',
        f'  {"last blessed model":<40} {label} {theirs[name]:.4f}',
        f'  {"difference (model - last blessed)":<40} {ours - theirs[name]:+.4f}',
      ]
  return lines


def verdict_and_why(verdict: str, why: List[str]) -> str:
  """'<verdict>: <reasons>', or the verdict alone when no reason is known: never a colon with
  nothing after it ("Model not evaluated: .")."""
  reasons = '; '.join(reason for reason in why if reason.strip())
  return f'{verdict}: {reasons}' if reasons else verdict


def _generate_queries(name, grpc, rest):
  """How to call a causal LM's generate signature, from the client and with curl."""
  inputs = (
    f'"{contract.PROMPT_INPUT}": ["the film"], "{contract.MAX_NEW_TOKENS_INPUT}": [16], '
    f'"{contract.TEMPERATURE_INPUT}": [0.8], "{contract.TOP_K_INPUT}": [0], '
    f'"{contract.TOP_P_INPUT}": [0.9], "{contract.SEED_INPUT}": [7]'
  )
  return [
    f'  ./dev python -m serving.client --grpc localhost:{grpc} --model_name={name} --generate '
    '--prompt "the film" --temperature 0.8 --top_p 0.9 --seed 7',
    f'  curl -s -d \'{{"inputs": {{{inputs}}}, "signature_name": "{contract.GENERATE}"}}\' '
    f'localhost:{rest}/v1/models/{name}:predict',
  ]


# The console's Warnings block: at most this many lines, each cut to this many characters.
MAX_WARNING_LINES, MAX_WARNING_CHARS = 10, 300


def warning_lines(summary: RunSummary) -> List[str]:
  """The console's Warnings block: the run's distinct warnings, the first line of each, at most
  MAX_WARNING_LINES of them with a count of the rest, and where the full log is."""
  if not summary.warnings:
    return []
  where = f' (full log: {summary.log_path})' if summary.log_path else ''
  lines = [f'Warnings ({len(summary.warnings)}){where}:']
  shown = summary.warnings
  if len(shown) > MAX_WARNING_LINES:
    shown = shown[: MAX_WARNING_LINES - 1]
  for message in shown:
    first, _, rest = message.partition('\n')
    if rest or len(first) > MAX_WARNING_CHARS:
      first = first[: MAX_WARNING_CHARS - 3] + '...'
    lines.append(f'  {first}')
  if len(shown) < len(summary.warnings):
    lines.append(f'  ... and {len(summary.warnings) - len(shown)} more in the log')
  return lines


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
    lines += [f'  {name:<32} {_metric_text(name, value)}' for name, value in _key_metrics(summary)]
  if summary.left_out:
    lines.append(f'Left out of the evaluation: {summary.left_out}.')
  lines += comparison_lines(summary)
  if summary.generations:
    lines.append(
      f'Generations (sampled, temperature {GENERATE_TEMPERATURE}, top-k {GENERATE_TOP_K}, '
      f'up to {GENERATE_TOKENS} tokens, seed 1, 2, ... by prompt):'
    )
    lines += [f'  {prompt!r} -> {continuation!r}' for prompt, continuation in summary.generations]
  verdict = {True: 'BLESSED', False: 'NOT blessed', None: 'not evaluated'}[summary.blessed]
  lines.append(f'Model: {verdict_and_why(verdict, summary.why)}')
  outputs = config.resolved_outputs_dir
  report = os.path.join(outputs, contract.REPORT_FILE)
  if summary.pushed_path and summary.push_missing is not None:
    lines += [
      f'Pushed to: {summary.pushed_path}, which is missing now (deleted after the push; a '
      'cached Pusher copies nothing). Put it back:',
      *([f'  {summary.push_missing}'] if summary.push_missing else []),
      '  or rerun with --set enable_cache=false (every component runs again)',
      f'Report:    {report}',
    ]
  elif summary.pushed_path:
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
      f'-v {shlex.quote(base)}:/models/{name} -e MODEL_NAME={name} tensorflow/serving:2.21.0)',
      'Query it:',
      *(
        _generate_queries(name, grpc, rest)
        if config.train.task == contract.CLM
        else [
          f'  ./dev python -m serving.client --grpc localhost:{grpc} --model_name={name} '
          '--text "a wonderful, moving film"',
          f'  curl -s -d \'{{"inputs": {{"{contract.TEXT_INPUT}": ["a wonderful, moving film"]}}, '
          f'"signature_name": "{contract.PREDICT_TEXT}"}}\' localhost:{rest}/v1/models/{name}:predict',
        ]
      ),
    ]
  else:
    why = ' (the model was not blessed)' if summary.blessed is False else ''
    lines += [f'Nothing was pushed{why}.', f'Report:    {report}']
  lines += [
    'TensorBoard:',
    f'  ./dev tensorboard --logdir {shlex.quote(outputs)}  '
    f'(or: make tensorboard OUTPUTS={shlex.quote(outputs)})',
    *warning_lines(summary),
    '',
  ]
  return '\n'.join(lines)


# --- Report -------------------------------------------------------------------------------


_COLORS = {'train': '#1f6feb', 'eval': '#d9480f'}
# Train-only diagnostics, drawn after the metrics that have a train and an eval curve.
_DIAGNOSTICS = ('learning_rate', 'tokens_per_second')
# A flat series is drawn in a band of this fraction of its value either side.
FLAT_PAD = 0.1


def nice_ticks(low: float, high: float, minimum: int = 3) -> List[float]:
  """Round tick values (1, 2 or 5 times a power of ten apart) within [low, high]: the widest
  spacing that still gives at least `minimum` ticks."""
  span = high - low
  if span <= 0:
    return [low]
  exponent = math.floor(math.log10(span))
  steps = sorted(
    (m * 10.0**e for e in (exponent - 2, exponent - 1, exponent) for m in (1, 2, 5)), reverse=True
  )
  for step in steps:
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    if last - first + 1 >= minimum:
      return [i * step for i in range(first, last + 1)]
  return [low, high]


def _tick_labels(ticks: List[float]) -> List[str]:
  """Labels with the decimals the ticks' spacing needs, so no two read the same (a flat
  series' 2,831.8 and 2,832.0, not 2,832 twice)."""
  if any(t != 0 and (abs(t) < 1e-4 or abs(t) >= 1e6) for t in ticks):
    return [f'{t:.0e}' for t in ticks]
  step = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
  decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
  return [f'{t:,.{decimals}f}' for t in ticks]


def svg_chart(
  title: str,
  series: Dict[str, List[Tuple[int, float]]],
  y_label: str,
  x_label: str = 'training step',
  width: int = 440,
  height: int = 240,
) -> str:
  """A line chart of one metric: one polyline per series, labelled axes, a legend."""
  # A non-finite point (a NaN loss) has no place on the axis, and would make the ticks NaN.
  series = {
    name: [(s, v) for s, v in points if math.isfinite(v)] for name, points in series.items()
  }
  series = {name: points for name, points in series.items() if points}
  if not series:
    return ''
  steps = [s for points in series.values() for s, _ in points]
  values = [v for points in series.values() for _, v in points]
  x0, x1 = min(steps), max(steps)
  y0, y1 = min(values), max(values)
  if x1 == x0:
    # One logged step (train_steps at or below the log and eval intervals): an axis would be
    # made up (steps 20 to 21, a learning rate from -0.5 to 0.5); say the figures instead.
    return _one_step_chart(title, series, width)
  if y1 == y0:  # a flat series: a band around its value, in its own scale
    pad = abs(y0) * FLAT_PAD if y0 else 1.0
    y0, y1 = y0 - pad, y1 + pad
  left, right, top, bottom = 62, 12, 28, 44

  def x(step):
    return left + (step - x0) / (x1 - x0) * (width - left - right)

  def y(value):
    return height - bottom - (value - y0) / (y1 - y0) * (height - top - bottom)

  parts = [
    f'<rect x="{left}" y="{top}" width="{width - left - right}" '
    f'height="{height - top - bottom}" fill="#fff" stroke="#bbb"/>'
  ]
  y_ticks = nice_ticks(y0, y1)
  for tick, label in zip(y_ticks, _tick_labels(y_ticks)):
    parts.append(
      f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
      'stroke="#eee"/>'
      f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" font-size="10" '
      f'text-anchor="end">{label}</text>'
    )
  for tick in (t for t in nice_ticks(x0, x1) if t == int(t)):  # steps are whole numbers
    parts.append(
      f'<text x="{x(tick):.1f}" y="{height - bottom + 13}" font-size="10" '
      f'text-anchor="middle">{tick:,.0f}</text>'
    )
  parts.append(
    f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" font-size="11" '
    f'text-anchor="middle">{html.escape(x_label)}</text>'
    f'<text x="12" y="{(top + height - bottom) / 2:.0f}" font-size="11" '
    f'text-anchor="middle" transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">'
    f'{html.escape(y_label)}</text>'
    f'<text x="{left}" y="16" font-size="12" font-weight="bold">'
    f'{html.escape(title)}</text>'
  )
  legend_x = width - right
  for name, points in sorted(series.items(), key=lambda kv: kv[0] == 'train'):
    # Legend entries right to left above the plot, so they never cover a curve.
    color = _COLORS.get(name, '#555')
    path = ' '.join(f'{x(s):.1f},{y(v):.1f}' for s, v in sorted(points))
    radius = 2.5 if len(points) > 1 else 4.5  # a lone point has no line to show it
    marker = (
      ''.join(
        f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="{radius}" fill="{color}"/>' for s, v in points
      )
      if len(points) <= 30
      else ''
    )
    parts.append(
      f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>'
      f'{marker}<text x="{legend_x}" y="16" font-size="11" fill="{color}" '
      f'text-anchor="end">— {html.escape(name)}</text>'
    )
    legend_x -= 12 + 7 * len(name)
  return (
    f'<figure><svg width="{width}" height="{height}" role="img" '
    f'aria-label="{html.escape(title)}">{"".join(parts)}</svg></figure>'
  )


def one_point_text(name: str, points: List[Tuple[int, float]]) -> str:
  """`train: one point: 0.6931 at step 20` (the last, if one step was logged twice)."""
  step, value = sorted(points)[-1]
  figure = f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4g}'
  return f'{name}: one point: {figure} at step {step:,}'


def _one_step_chart(title: str, series: Dict[str, List[Tuple[int, float]]], width: int) -> str:
  """A chart's box holding its figures in words, for series logged at one step only."""
  rows = sorted(series.items(), key=lambda kv: kv[0] != 'train')
  height = 44 + 18 * len(rows)
  parts = [
    f'<rect x="1" y="24" width="{width - 2}" height="{height - 26}" fill="#fff" stroke="#bbb"/>'
    f'<text x="1" y="16" font-size="12" font-weight="bold">{html.escape(title)}</text>'
  ]
  for i, (name, points) in enumerate(rows):
    color = _COLORS.get(name, '#555')
    row_y = 46 + 18 * i
    parts.append(
      f'<circle cx="14" cy="{row_y - 4}" r="4.5" fill="{color}"/>'
      f'<text x="26" y="{row_y}" font-size="12">'
      f'{html.escape(one_point_text(name, points))}</text>'
    )
  return (
    f'<figure><svg width="{width}" height="{height}" role="img" '
    f'aria-label="{html.escape(title)}">{"".join(parts)}</svg></figure>'
  )


def _charts(curves: Dict[str, List[Tuple[int, float]]]) -> str:
  """One chart per (trainer, metric), its train and eval curves together."""
  grouped: Dict[Tuple[str, str], Dict[str, List[Tuple[int, float]]]] = {}
  for key, points in curves.items():
    producer, _, tag = key.partition(': ')
    split, _, metric = tag.partition('/')
    if not metric:
      split, metric = 'train', tag
    grouped.setdefault((producer, metric), {})[split] = points
  order = sorted(
    grouped,
    key=lambda k: (k[0] != contract.TRAINER_ID, k[0], k[1] in _DIAGNOSTICS, k[1] != 'loss', k[1]),
  )
  return ''.join(
    svg_chart(
      f'{producer}: {metric}', grouped[(producer, metric)], y_label=metric.replace('_', ' ')
    )
    for producer, metric in order
  )


def _table(rows, header) -> str:
  head = ''.join(f'<th>{html.escape(str(h))}</th>' for h in header)
  body = ''.join(
    '<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>' for row in rows
  )
  return f'<table><tr>{head}</tr>{body}</table>'


def _confusion_table(labels: List[str], grid: List[List[float]]) -> str:
  """Counts and, per actual label, the share predicted as each label (recall on the diagonal)."""
  rows = []
  for label, row in zip(labels, grid, strict=True):
    total = sum(row)
    cells = [f'{count:,.0f} ({count / total:.1%})' if total else f'{count:,.0f}' for count in row]
    rows.append([label] + cells + [f'{total:,.0f}'])
  totals = [sum(row[j] for row in grid) for j in range(len(labels))]
  rows.append(['all'] + [f'{t:,.0f}' for t in totals] + [f'{sum(totals):,.0f}'])
  return _table(rows, ['actual \\ predicted'] + labels + ['examples'])


# Why a metric has no value: TFMA gives NaN for a ratio whose denominator is zero.
_UNDEFINED = {
  'precision': 'undefined: the model predicted this label for no example',
  'recall': 'undefined: no eval example has this label',
}


def _metric_text(name: str, value: float) -> str:
  if isinstance(value, float) and math.isnan(value):
    base = name.split(' (', 1)[0]
    return _UNDEFINED.get(base, 'undefined (0 / 0 on these eval examples)')
  return f'{value:,.0f}' if name == 'example_count' else f'{value:.4f}'


def _headline(summary: RunSummary) -> str:
  lines = comparison_lines(summary)
  if not lines:
    return ''
  return '<pre class="headline">' + html.escape('\n'.join(lines)) + '</pre>'


def render_report(config: config_lib.PipelineConfig, summary: RunSummary) -> str:
  """The run report as one self-contained HTML page."""
  parts = [f'<h1>{html.escape(config.pipeline_name)}: run report</h1>']
  verdict = (
    ('blessed' if summary.blessed else 'not blessed')
    if summary.blessed is not None
    else 'not evaluated'
  )
  parts.append(
    f'<p>Task <b>{html.escape(config.train.task)}</b>. '
    f'Model {html.escape(verdict_and_why(verdict, summary.why))}. '
    f'Pushed to: <code>{html.escape(summary.pushed_path or "nothing pushed")}</code>'
    '</p>'
  )
  parts.append(_headline(summary))
  if summary.warnings:
    where = (
      f' (every line in <code>{html.escape(summary.log_path)}</code>)' if summary.log_path else ''
    )
    parts.append(
      f'<h2>Warnings</h2><p>What the run warned of{where}:</p><ul class="warnings">'
      + ''.join(f'<li>{html.escape(message)}</li>' for message in summary.warnings)
      + '</ul>'
    )
  if summary.generations:
    parts.append(
      f'<h2>Generations</h2><p>Sampled with temperature {GENERATE_TEMPERATURE}, '
      f'top-k {GENERATE_TOP_K}, up to {GENERATE_TOKENS} new tokens, each prompt with its own '
      'seed (1, 2, ... in order): the same seed would draw the same noise for every prompt.</p>'
      + _table([(p, c) for p, c in summary.generations], ('prompt', 'continuation'))
    )
  if summary.curves:
    parts.append(
      '<h2>Training curves</h2><p>Train points average the steps since the previous '
      'point; eval points score the eval split at that step.</p>' + _charts(summary.curves)
    )
  if summary.confusion:
    labels, grid = summary.confusion
    parts.append(
      '<h2>Confusion matrix</h2><p>Eval examples; rows: actual label, columns: '
      'predicted label; in brackets, the share of the row.</p>' + _confusion_table(labels, grid)
    )
  if summary.metrics:
    left_out = (
      f'<p>Left out of the evaluation: {html.escape(summary.left_out)}.</p>'
      if summary.left_out
      else ''
    )
    parts.append(
      '<h2>Eval metrics</h2>'
      + left_out
      + _table(
        [(k, _metric_text(k, v)) for k, v in sorted(summary.metrics.items())], ('metric', 'value')
      )
    )
  if summary.per_label:
    names = sorted({k for m in summary.per_label.values() for k in m})
    # Within one label's slice, per-class metrics of the other classes are 0 or NaN: show the
    # counts and accuracy when there are, which read the same for every slice.
    names = [n for n in ('example_count', evaluation.ACCURACY) if n in names] or names
    parts.append(
      '<h2>By slice</h2>'
      + _table(
        [
          [s] + [_metric_text(n, m.get(n, float('nan'))) for n in names]
          for s, m in sorted(summary.per_label.items())
        ],
        ['slice'] + names,
      )
    )
  if summary.statistics:
    columns = sorted(
      {k for row in summary.statistics.values() for k in row}, key=lambda k: (k != 'examples', k)
    )
    parts.append(
      '<h2>Data (StatisticsGen)</h2>'
      + _table(
        [
          [split] + [_statistic(row[c]) if c in row else '' for c in columns]
          for split, row in summary.statistics.items()
        ],
        ['split'] + columns,
      )
    )
  total = sum(r.seconds for r in summary.components)
  parts.append(
    '<h2>Components</h2>'
    + _table(
      [(r.name, r.state.lower(), f'{r.seconds:.1f} s') for r in summary.components]
      + [('total', '', f'{total:.1f} s')],
      ('component', 'state', 'time'),
    )
  )
  parts.append(
    '<h2>Configuration</h2>'
    f'<p>Outputs folder: <code>{html.escape(config.resolved_outputs_dir)}</code> '
    f'({html.escape(outputs_origin(config))}). Below, the config as the run used it: its empty '
    'path settings filled in with the folders they default to.</p>'
    f'<pre>{html.escape(resolved_config_json(config))}</pre>'
  )
  style = (
    'body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}'
    'table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;'
    'padding:2px 8px;text-align:left}figure{display:inline-block;margin:4px;vertical-align:top}'
    'pre{overflow-x:auto}.warnings li{white-space:pre-wrap;color:#8a4b00}'
    '.headline{background:#f4f8ff;border:1px solid #c8d8f0;padding:8px;font-size:14px}'
  )
  return (
    f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(config.pipeline_name)}'
    f'</title><style>{style}</style></head><body>{"".join(parts)}</body></html>'
  )


def outputs_origin(config: config_lib.PipelineConfig) -> str:
  """Where the outputs folder came from. An empty `outputs_dir` means a folder that depends on
  the run's environment and working folder, which the config alone cannot tell a reader."""
  if config.outputs_dir:
    return 'outputs_dir in the config'
  if os.environ.get(config_lib.OUTPUTS_ENV):
    return f'outputs_dir is empty: ${config_lib.OUTPUTS_ENV}/<pipeline_name>'
  return 'outputs_dir is empty: pipeline_outputs/<pipeline_name> in the working folder'


def resolved_config_json(config: config_lib.PipelineConfig) -> str:
  """The config as JSON, with `outputs_dir` and `serving.serving_root` as the folders the run
  used: left empty in the config, they would read "" in the report, which says nothing of where
  the run wrote."""
  values = config.to_dict()
  values['outputs_dir'] = config.resolved_outputs_dir
  values['serving'] = {**values['serving'], 'serving_root': config.serving_root}
  # Prompts and labels as written (le café, not le caf\u00e9): the page is UTF-8.
  return json.dumps(values, indent=2, sort_keys=True, ensure_ascii=False)


def _statistic(value: float) -> str:
  """A count or mean of the Data table, written as the rest of the report writes numbers:
  1,293 (not 1293 or 1.3e+04), 108.3."""
  if float(value).is_integer():
    return f'{int(value):,}'
  return f'{value:,.1f}' if abs(value) >= 10 else f'{value:.3g}'


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
  with open(os.path.join(config.resolved_outputs_dir, contract.SUMMARY_FILE), 'w') as f:
    json.dump(json_safe(dataclasses.asdict(summary)), f, indent=2, default=str, allow_nan=False)
  return targets


def json_safe(value):
  """`value` with every NaN or infinity as None: JSON has no such numbers (json.dump would
  write `NaN`, which strict readers such as jq and JavaScript refuse). An undefined metric (0 / 0)
  is null in summary.json; the report and the console say why."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value
