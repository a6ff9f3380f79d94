"""What a local run did, read back from ML Metadata: timings, metrics, blessing, push; the report.

The summary is printed at the end of `make demo`; the report (report.html) is written beside
the pushed model (`<version>/assets.extra/report.html`, which TF Serving ignores) and in the
pipeline's outputs folder.
"""

import dataclasses
import glob
import html
import json
import math
import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

from pipeline import compression, evaluation
from pipeline import config as config_lib
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
    baseline: classification: TF-IDF + logistic regression trained and scored on the same
      train/eval examples (`pipeline.baseline.ClassifierBaseline` fields).
    unigram: language models: unigram perplexity of the same eval tokens
      (`pipeline.baseline.UnigramBaseline` fields).
    reference_error: why the baseline or unigram reference could not be computed.
    generations: causal LMs: (prompt, continuation) for each of `report_prompts`.
    compression: with `export.quantize` or a `distill` stage (`compression.summarize`): the
      quantization mode, the float model's accuracy beside the evaluated export's, and the
      student's accuracy, blessing and push.
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
  baseline: Optional[Dict[str, float]] = None
  unigram: Optional[Dict[str, float]] = None
  reference_error: Optional[str] = None
  generations: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  compression: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _store(config):
  from ml_metadata.metadata_store import metadata_store
  from tfx import v1 as tfx

  return metadata_store.MetadataStore(
    tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
  )


def _latest(store, type_name, since_ms):
  artifacts = [
    a for a in store.get_artifacts_by_type(type_name) if a.create_time_since_epoch >= since_ms
  ]
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
    executions = [
      e
      for e in store.get_executions_by_context(context.id)
      if e.create_time_since_epoch >= since_ms
    ]
    for e in executions:
      seconds = max(0, e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
      runs.append(
        (
          e.create_time_since_epoch,
          ComponentRun(
            context.name[len(prefix) :], state_names.get(e.last_known_state, '?'), seconds
          ),
        )
      )
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
          classes = sorted(
            {int(e.get('actualClassId', 0)) for e in entries}
            | {int(e.get('predictedClassId', 0)) for e in entries}
          )
          index = {c: i for i, c in enumerate(classes)}
          grid = [[0.0] * len(classes) for _ in classes]
          for e in entries:
            grid[index[int(e.get('actualClassId', 0))]][
              index[int(e.get('predictedClassId', 0))]
            ] = e.get('numWeightedExamples', 0.0)
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
        bound = (
          f'allowed change {threshold.change_threshold.absolute.value:+.4g} against the '
          'last blessed model'
        )
      reasons.append(
        f'{failure.metric_key.name} = {failure.metric_value.double_value.value:.4g}'
        f' misses its {bound or "threshold"}'
      )
  if not result.validation_ok and not reasons:
    reasons = [f'validation failed (see {evaluation_uri})']
  summary.why = reasons


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


# ExampleGen keeps its class name as its id (TextExampleGen, CsvExampleGen, ...).
EXAMPLE_GEN_IDS = ('TextExampleGen', 'CsvExampleGen', 'ImportExampleGen')
TRANSFORM_IDS = (contract.TRANSFORM_ID,)
TRAINER_IDS = (contract.TRAINER_ID,)
EVALUATOR_IDS = (contract.EVALUATOR_ID,)
PUSHER_IDS = (contract.PUSHER_ID,)


def _latest_output(store, type_name, component_ids, output_key):
  """The newest artifact of `type_name` that one of `component_ids` wrote as output
  `output_key`; artifact URIs are `<root>/<component>/<output_key>/<execution>`."""
  found = []
  for artifact in store.get_artifacts_by_type(type_name):
    parts = os.path.normpath(artifact.uri).split(os.sep)
    if len(parts) >= 3 and parts[-3] in component_ids and parts[-2] == output_key:
      found.append(artifact)
  return max(found, key=lambda a: a.id) if found else None


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
      examples = _latest_output(store, 'Examples', EXAMPLE_GEN_IDS, 'examples')
      if examples is not None:
        summary.baseline = dataclasses.asdict(baseline.classifier_baseline(examples.uri))
    else:
      transformed = _latest_output(store, 'Examples', TRANSFORM_IDS, 'transformed_examples')
      graph = _latest_output(store, 'TransformGraph', TRANSFORM_IDS, 'transform_graph')
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


def collect(config: config_lib.PipelineConfig, started: float) -> RunSummary:
  """Reads what the run that started at `started` (epoch seconds) produced."""
  since_ms = int(started * 1000) - 1000
  store = _store(config)
  summary = RunSummary(components=_component_runs(store, config, since_ms))

  # Outputs of this run, or of the cached executions it reused.
  statistics = _latest(store, 'ExampleStatistics', 0)
  if statistics is not None:
    summary.statistics = _statistics(statistics.uri)
  evaluation_artifact = _latest_output(store, 'ModelEvaluation', EVALUATOR_IDS, 'evaluation')
  if evaluation_artifact is not None:
    _metrics(evaluation_artifact.uri, summary)
    _validation(evaluation_artifact.uri, summary)
  if summary.confusion:
    graph = _latest_output(store, 'TransformGraph', TRANSFORM_IDS, 'transform_graph')
    names = _label_names(graph.uri) if graph is not None else None
    ids, grid = summary.confusion
    if names and all(int(i) < len(names) for i in ids):
      summary.confusion = ([names[int(i)] for i in ids], grid)
      # TFMA names per-class metrics `auc (classId:0)`: say which label that is.
      for i, name in enumerate(names):
        summary.metrics = {
          k.replace(f'(classId:{i})', f'(label {name})'): v for k, v in summary.metrics.items()
        }
        # Slices on the label are keyed by its id.
        summary.per_label = {
          (f'label={name}' if key == f'label={i}' else key): value
          for key, value in summary.per_label.items()
        }
  blessing = _latest_output(store, 'ModelBlessing', EVALUATOR_IDS, 'blessing')
  if blessing is not None:
    summary.blessed = bool(_custom(blessing, 'blessed'))
    if summary.blessed:
      summary.why = ['every metric passed its threshold']
  pushed = _latest_output(store, 'PushedModel', PUSHER_IDS, 'pushed_model')
  if pushed is not None and _custom(pushed, 'pushed'):
    summary.pushed_path = _custom(pushed, 'pushed_destination')
  latest_runs = {}
  for run in store.get_artifacts_by_type('ModelRun'):
    producer = os.path.basename(os.path.dirname(os.path.dirname(run.uri)))
    latest_runs[producer] = run.uri
  summary.model_run_dirs = sorted(latest_runs.values())
  for model_run_dir in summary.model_run_dirs:
    producer = os.path.basename(os.path.dirname(os.path.dirname(model_run_dir)))
    for tag, points in _curves(model_run_dir).items():
      summary.curves[f'{producer}: {tag}'] = points
  _references(config, store, summary)
  summary.compression = compression.summarize(config, store)
  if config.train.task == contract.CLM:
    model = _latest_output(store, 'Model', TRAINER_IDS, 'model')
    if model is not None:
      prompts = report_prompts(config, store)
      summary.generations = _generations(os.path.join(model.uri, 'Format-Serving'), prompts)
  return summary


# Without `evaluation.prompts`, the report's prompts are the first words of eval texts.
PROMPT_COUNT, PROMPT_WORDS = 5, 3
GENERATE_TOKENS = 24


def report_prompts(config: config_lib.PipelineConfig, store=None) -> List[str]:
  """The prompts of the report: `evaluation.prompts`, else the first `PROMPT_WORDS` words of
  the first `PROMPT_COUNT` texts of the eval split of the run's examples."""
  if config.evaluation.prompts:
    return list(config.evaluation.prompts)
  from pipeline import baseline

  examples = _latest_output(store or _store(config), 'Examples', EXAMPLE_GEN_IDS, 'examples')
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
  temperature: float = 0.7,
  top_k: int = 20,
  seed: int = 1,
) -> List[str]:
  """Calls a `generate` signature with per-row controls when it takes them, else scalars."""
  import tensorflow as tf

  specs = signature.structured_input_signature[1]
  rows = len(prompts)

  def value(name, number, dtype):
    per_row = specs[name].shape.rank == 1
    return tf.constant([number] * rows if per_row else number, dtype)

  kwargs = {
    contract.PROMPT_INPUT: tf.constant(prompts),
    contract.MAX_NEW_TOKENS_INPUT: value(contract.MAX_NEW_TOKENS_INPUT, max_new_tokens, tf.int32),
    contract.TEMPERATURE_INPUT: value(contract.TEMPERATURE_INPUT, temperature, tf.float32),
    contract.TOP_K_INPUT: value(contract.TOP_K_INPUT, top_k, tf.int32),
  }
  if contract.SEED_INPUT in specs:
    kwargs[contract.SEED_INPUT] = value(contract.SEED_INPUT, seed, specs[contract.SEED_INPUT].dtype)
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


# --- Text ---------------------------------------------------------------------------------


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
    lines += [
      f'Against a baseline on the same {b["eval_examples"]:,.0f} eval examples '
      f'(both trained on the same {b["train_examples"]:,.0f}):',
      f'  {"this model":<40} accuracy {accuracy:.4f}',
      f'  {"TF-IDF + logistic regression":<40} accuracy {b["accuracy"]:.4f}',
      f'  {"difference (model - baseline)":<40} {accuracy - b["accuracy"]:+.4f}',
      f'  {"majority class":<40} accuracy {b["majority_accuracy"]:.4f}',
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
  lines += compression.lines(summary.compression)
  if summary.reference_error:
    lines.append(f'No reference figure: {summary.reference_error}')
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
    lines += [f'  {name:<32} {value:.4f}' for name, value in _key_metrics(summary)]
  lines += comparison_lines(summary)
  if summary.generations:
    lines.append(
      f'Generations (sampled, temperature 0.7, top-k 20, up to {GENERATE_TOKENS} tokens):'
    )
    lines += [f'  {prompt!r} -> {continuation!r}' for prompt, continuation in summary.generations]
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
  lines += [
    'TensorBoard:',
    f'  ./dev tensorboard --logdir {shlex.quote(outputs)}  (or: make tensorboard)',
    '',
  ]
  return '\n'.join(lines)


# --- Report -------------------------------------------------------------------------------


_COLORS = {'train': '#1f6feb', 'eval': '#d9480f'}
# Train-only diagnostics, drawn after the metrics that have a train and an eval curve.
_DIAGNOSTICS = ('learning_rate', 'tokens_per_second')


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


def _tick_label(value: float) -> str:
  if value != 0 and (abs(value) < 1e-4 or abs(value) >= 1e6):
    return f'{value:.0e}'
  if abs(value) >= 100:
    return f'{value:,.0f}'
  return f'{value:.4g}'


def svg_chart(
  title: str,
  series: Dict[str, List[Tuple[int, float]]],
  y_label: str,
  x_label: str = 'training step',
  width: int = 440,
  height: int = 240,
) -> str:
  """A line chart of one metric: one polyline per series, labelled axes, a legend."""
  series = {name: points for name, points in series.items() if points}
  if not series:
    return ''
  steps = [s for points in series.values() for s, _ in points]
  values = [v for points in series.values() for _, v in points]
  x0, x1 = min(steps), max(steps)
  y0, y1 = min(values), max(values)
  if x1 == x0:
    x1 = x0 + 1
  if y1 == y0:
    y0, y1 = y0 - 0.5, y1 + 0.5
  left, right, top, bottom = 62, 12, 28, 44

  def x(step):
    return left + (step - x0) / (x1 - x0) * (width - left - right)

  def y(value):
    return height - bottom - (value - y0) / (y1 - y0) * (height - top - bottom)

  parts = [
    f'<rect x="{left}" y="{top}" width="{width - left - right}" '
    f'height="{height - top - bottom}" fill="#fff" stroke="#bbb"/>'
  ]
  for tick in nice_ticks(y0, y1):
    parts.append(
      f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
      'stroke="#eee"/>'
      f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" font-size="10" '
      f'text-anchor="end">{_tick_label(tick)}</text>'
    )
  for tick in nice_ticks(x0, x1):
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
    marker = (
      ''.join(
        f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>' for s, v in points
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
    grouped, key=lambda k: (k[0] != 'Trainer', k[0], k[1] in _DIAGNOSTICS, k[1] != 'loss', k[1])
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


def _metric_text(name: str, value: float) -> str:
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
    f'<p>Task <b>{html.escape(config.train.task)}</b>. Model {verdict}: '
    f'{html.escape("; ".join(summary.why))}. '
    f'Pushed to: <code>{html.escape(summary.pushed_path or "nothing pushed")}</code>'
    '</p>'
  )
  parts.append(_headline(summary))
  if summary.generations:
    parts.append(
      f'<h2>Generations</h2><p>Sampled with temperature 0.7, top-k 20, up to '
      f'{GENERATE_TOKENS} new tokens.</p>'
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
    parts.append(
      '<h2>Eval metrics</h2>'
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
          [split] + [f'{row[c]:g}' if c in row else '' for c in columns]
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
  parts.append('<h2>Configuration</h2><pre>' + html.escape(config.to_json()) + '</pre>')
  style = (
    'body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}'
    'table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;'
    'padding:2px 8px;text-align:left}figure{display:inline-block;margin:4px}'
    'pre{overflow-x:auto}'
    '.headline{background:#f4f8ff;border:1px solid #c8d8f0;padding:8px;font-size:14px}'
  )
  return (
    f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(config.pipeline_name)}'
    f'</title><style>{style}</style></head><body>{"".join(parts)}</body></html>'
  )


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
