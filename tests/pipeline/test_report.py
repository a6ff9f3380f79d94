"""The run summary's text and report.html, from summaries built here (no pipeline run)."""

import html
import json
import math
import re

import pytest
import tensorflow as tf

from pipeline import config as config_lib
from pipeline import report, summary
from tfxlm import contract


def _classify_summary():
  return summary.RunSummary(
    metrics={'sparse_categorical_accuracy': 0.80, 'example_count': 1000.0},
    confusion=(['fresh', 'rotten'], [[500.0, 100.0], [100.0, 300.0]]),
    curves={
      'Trainer: train/accuracy': [(100, 0.6), (200, 0.7)],
      'Trainer: eval/accuracy': [(100, 0.65), (200, 0.75)],
      'Trainer: train/learning_rate': [(100, 1e-3), (200, 5e-4)],
    },
    baseline={
      'accuracy': 0.78,
      'majority_label': 'fresh',
      'majority_accuracy': 0.58,
      'train_examples': 9000,
      'eval_examples': 1000,
    },
  )


def test_text_prints_model_baseline_difference_and_eval_count():
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  out = report.text(config, _classify_summary())
  assert re.search(r'same 1,000 eval examples', out)
  assert re.search(r'this model\s+accuracy 0\.8000', out)
  assert re.search(r'TF-IDF \+ logistic regression\s+accuracy 0\.7800', out)
  assert re.search(r'difference \(model - baseline\)\s+\+0\.0200', out)
  assert re.search(r"always train's majority label 'fresh'\s+accuracy 0\.5800", out)


def test_report_charts_train_and_eval_together_with_labelled_axes():
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  page = report.render_report(config, _classify_summary())
  charts = re.findall(r'<svg.*?</svg>', page, flags=re.S)
  accuracy = [c for c in charts if 'aria-label="Trainer: accuracy"' in c]
  assert len(accuracy) == 1, 'train and eval accuracy belong on one chart'
  assert accuracy[0].count('<polyline') == 2
  assert '— train' in accuracy[0] and '— eval' in accuracy[0]
  assert 'training step' in accuracy[0] and '>accuracy</text>' in accuracy[0]
  # Counts with the share of each actual label, and the baseline comparison, on the page.
  assert '500 (83.3%)' in page and '100 (25.0%)' in page
  assert 'TF-IDF + logistic regression' in page and '+0.0200' in page


def test_an_undefined_metric_says_why_instead_of_nan():
  # A model that never predicts "rotten": TFMA's precision for it is 0 / 0 (NaN).
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  metrics = {
    'precision (label rotten)': float('nan'),
    'recall (label fresh)': float('nan'),
    'auc': float('nan'),
    'precision (label fresh)': 0.6,
  }
  page = report.render_report(config, summary.RunSummary(metrics=metrics))
  out = report.text(config, summary.RunSummary(metrics=metrics))
  assert not re.search(r'\bnan\b', page, re.I) and not re.search(r'\bnan\b', out, re.I)
  assert 'undefined: the model predicted this label for no example' in page
  assert 'undefined: no eval example has this label' in page
  assert re.search(r'auc\s+undefined \(0 / 0 on these eval examples\)', out)
  assert '0.6000' in page


def test_summary_json_writes_an_undefined_metric_as_null_and_the_report_says_why(tmp_path):
  # json.dump wrote `NaN`, which is not JSON: strict readers (jq, JavaScript) refuse the file.
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  run = summary.RunSummary(
    metrics={'precision (label 1)': float('nan'), 'sparse_categorical_accuracy': 0.7},
    per_label={'label 1': {'auc': float('inf')}},
    curves={'Trainer: train/loss': [(1, float('nan')), (2, 0.5)]},
  )
  report.write_report(config, run)
  text = (tmp_path / contract.SUMMARY_FILE).read_text()

  def refuse(constant):
    raise ValueError(f'{constant} in summary.json')

  written = json.loads(text, parse_constant=refuse)
  assert written['metrics'] == {'precision (label 1)': None, 'sparse_categorical_accuracy': 0.7}
  assert written['per_label'] == {'label 1': {'auc': None}}
  assert written['curves'] == {'Trainer: train/loss': [[1, None], [2, 0.5]]}
  page = (tmp_path / contract.REPORT_FILE).read_text()
  assert 'undefined: the model predicted this label for no example' in page
  assert not re.search(r'\bnan\b', page, re.I)


def _failure(name, value, diff=False, **threshold):
  from tensorflow_model_analysis.proto import validation_result_pb2

  failure = validation_result_pb2.ValidationFailure(metric_threshold=threshold)
  failure.metric_key.name = name
  failure.metric_key.is_diff = diff
  failure.metric_value.double_value.value = value
  return failure


def test_not_blessed_says_the_models_figure_the_last_blessed_ones_and_the_setting(monkeypatch):
  # It said `sparse_categorical_accuracy = -0.09756 misses its allowed change -0.01`: the value
  # shown was the change from the last blessed model, not the accuracy.
  import tensorflow_model_analysis as tfma
  from tensorflow_model_analysis.proto import config_pb2, validation_result_pb2

  higher, lower = (
    config_pb2.MetricDirection.HIGHER_IS_BETTER,
    config_pb2.MetricDirection.LOWER_IS_BETTER,
  )
  failures = [
    _failure(
      'sparse_categorical_accuracy',
      -0.09756,
      diff=True,
      change_threshold={'direction': higher, 'absolute': {'value': -0.01}},
    ),
    _failure(
      'sparse_categorical_accuracy', 0.7073, value_threshold={'lower_bound': {'value': 0.75}}
    ),
    _failure(
      'perplexity', 3.5, diff=True, change_threshold={'direction': lower, 'absolute': {'value': 0}}
    ),
    _failure('perplexity', 85.5, value_threshold={'upper_bound': {'value': 50}}),
  ]
  result = validation_result_pb2.ValidationResult(validation_ok=False)
  result.metric_validations_per_slice.add().failures.extend(failures)
  monkeypatch.setattr(tfma, 'load_validation_result', lambda uri: result)
  run = summary.RunSummary(metrics={'sparse_categorical_accuracy': 0.7073, 'perplexity': 85.5})
  summary._validation('unused', run)
  assert run.why == [
    "accuracy 0.7073 is 0.0976 below the last blessed model's 0.8049 (allowed drop 0.01, "
    'evaluation.max_accuracy_drop)',
    'accuracy 0.7073 is below the lower bound 0.75 by 0.0427 (evaluation.min_accuracy)',
    "perplexity 85.50 is 3.50 above the last blessed model's 82.00 (allowed rise 0, "
    'evaluation.max_perplexity_rise)',
    'perplexity 85.50 is above the upper bound 50 by 35.50 (evaluation.max_perplexity)',
  ]
  # Every figure with its decimals: a last blessed accuracy of 1 is 1.0000, not 1.
  drop = summary.why_not_blessed(
    'sparse_categorical_accuracy', failures[0].metric_threshold, -0.4, 0.6
  )
  assert "accuracy 0.6000 is 0.4000 below the last blessed model's 1.0000" in drop
  run.blessed = False
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  assert f'Model: NOT blessed: {run.why[0]}; {run.why[1]}' in report.text(config, run)


def test_per_label_precision_and_recall_agree_with_the_confusion_matrix():
  # Three labels: TFMA's one-vs-rest at 0.5 gave recall 0.7 for `a` where every `a` was
  # predicted `a` (with probabilities under 0.5). The table must say what the matrix shows.
  run = summary.RunSummary(
    metrics={
      'precision (label a)': 0.4667,
      'recall (label a)': 0.7,
      'recall (label c)': 0.0,
      'sparse_categorical_accuracy': 0.5,
    },
    confusion=(['a', 'b', 'c'], [[10.0, 0.0, 0.0], [11.0, 9.0, 0.0], [0.0, 0.0, 0.0]]),
  )
  summary.argmax_precision_recall(run)
  assert run.metrics['recall (label a)'] == 1.0
  assert run.metrics['precision (label a)'] == 10 / 21
  assert run.metrics['precision (label b)'] == 1.0 and run.metrics['recall (label b)'] == 9 / 20
  # No `c` predicted and none in the eval split: undefined, as the report explains.
  assert math.isnan(run.metrics['precision (label c)']) and math.isnan(
    run.metrics['recall (label c)']
  )
  # Labels the summary could not name keep TFMA's class ids.
  unnamed = summary.RunSummary(
    metrics={'precision (classId:0)': 0.1}, confusion=(['0', '1'], [[3.0, 1.0], [0.0, 4.0]])
  )
  summary.argmax_precision_recall(unnamed)
  assert unnamed.metrics['precision (classId:0)'] == 1.0
  assert unnamed.metrics['recall (classId:1)'] == 1.0


@pytest.mark.parametrize('task', ['classify', 'clm'])
def test_the_query_printed_after_a_push_fits_the_task(task, tmp_path):
  config = config_lib.from_dict(
    {
      'pipeline_name': 'p',
      'outputs_dir': str(tmp_path),
      'data': {'label_column': 'label' if task == 'classify' else None},
      'train': {'task': task, 'train_steps': 2, 'eval_steps': 1},
      'serving': {'model_name': 'm'},
    }
  )
  out = report.text(config, summary.RunSummary(pushed_path=str(tmp_path / 'serving/m/1')))
  if task == 'clm':
    assert '--generate --prompt "the film"' in out and '"signature_name": "generate"' in out
    assert '--text' not in out and 'predict_text' not in out
  else:
    assert '--text "a wonderful, moving film"' in out and '"signature_name": "predict_text"' in out
  assert 'tensorflow/serving:2.21.0' in out
  assert f'make tensorboard OUTPUTS={tmp_path}' in out


def test_lm_summary_shows_perplexity_next_to_unigram_and_generations():
  config = config_lib.from_dict(
    {
      'pipeline_name': 'lm',
      'data': {'label_column': None},
      'train': {'task': 'clm', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  run = summary.RunSummary(
    metrics={'perplexity': 80.0},
    unigram={'perplexity': 400.0, 'eval_tokens': 5000},
    generations=[('the movie is', 'a delight')],
  )
  out = report.text(config, run)
  assert re.search(r'this model\s+perplexity 80\.00', out)
  assert re.search(r'unigram \(train token frequencies\)\s+perplexity 400\.00', out)
  assert "'the movie is' -> 'a delight'" in out
  page = report.render_report(config, run)
  assert '<td>the movie is</td><td>a delight</td>' in page


def _signature(per_row, folder):
  shape = [None] if per_row else []
  specs = [
    tf.TensorSpec([None], tf.string, name=contract.PROMPT_INPUT),
    tf.TensorSpec(shape, tf.int32, name=contract.MAX_NEW_TOKENS_INPUT),
    tf.TensorSpec(shape, tf.float32, name=contract.TEMPERATURE_INPUT),
    tf.TensorSpec(shape, tf.int32, name=contract.TOP_K_INPUT),
  ]

  def generate(prompt, max_new_tokens, temperature, top_k, *rest):
    # Echo what arrived, so the test sees the shapes the helper chose (and each row's seed).
    del temperature
    suffix = tf.strings.as_string(tf.broadcast_to(max_new_tokens + top_k, tf.shape(prompt)))
    parts = [prompt, suffix] + [tf.strings.as_string(rest[1])] if rest else [prompt, suffix]
    return {contract.GENERATED_TEXT: tf.strings.join(parts, separator=':')}

  if per_row:  # trainer/export.py's per-row form also takes top_p and a seed
    specs += [
      tf.TensorSpec(shape, tf.float32, name=contract.TOP_P_INPUT),
      tf.TensorSpec(shape, tf.int32, name=contract.SEED_INPUT),
    ]
  module = tf.Module()
  module.generate = tf.function(generate, input_signature=specs)
  # As the summary meets it: a signature of a SavedModel loaded back (keyword inputs).
  tf.saved_model.save(module, str(folder), signatures={contract.GENERATE: module.generate})
  return tf.saved_model.load(str(folder)).signatures[contract.GENERATE]


@pytest.mark.parametrize('per_row', [False, True])
def test_generate_calls_scalar_and_per_row_signatures(per_row, tmp_path):
  texts = summary.generate(_signature(per_row, tmp_path), ['a', 'b'], max_new_tokens=3, top_k=4)
  # Per row, each prompt its own seed: one seed would draw the same noise for every prompt.
  assert texts == (['a:7:1', 'b:7:2'] if per_row else ['a:7', 'b:7'])


def _y_labels(chart):
  """The y axis's tick labels (the legend's entries are right-aligned too)."""
  labels = re.findall(r'text-anchor="end">([^<]+)</text>', chart)
  return [label for label in labels if not label.startswith('—')]


def test_a_chart_of_one_step_says_its_figures_instead_of_making_up_axes():
  # train_steps below the log and eval intervals: one point per series, at one step. It drew
  # a step axis from 20 to 21, a learning rate from -0.5 to 0.5 and an empty-looking box.
  chart = report.svg_chart(
    'Trainer: loss', {'train': [(20, 0.6931)], 'eval': [(20, 0.70123)]}, 'loss'
  )
  assert 'train: one point: 0.6931 at step 20' in chart
  assert 'eval: one point: 0.7012 at step 20' in chart
  assert chart.count('<circle') == 2 and '<polyline' not in chart
  assert not _y_labels(chart) and '>21<' not in chart
  rate = report.svg_chart('t', {'train': [(30, 1e-3)]}, 'learning rate')
  assert 'one point: 0.001 at step 30' in rate and '-0.5' not in rate
  speed = report.svg_chart('t', {'train': [(1200, 2832.4)]}, 'tokens per second')
  assert 'train: one point: 2,832 at step 1,200' in speed
  # A lone eval point beside a train curve is a marker on the chart, larger than a curve's.
  mixed = report.svg_chart('t', {'train': [(10, 1.0), (20, 0.5)], 'eval': [(20, 0.7)]}, 'loss')
  assert '<polyline' in mixed and 'r="4.5"' in mixed


def test_a_flat_series_is_drawn_in_its_own_scale_and_repeats_no_tick_label():
  flat = report.svg_chart('t', {'train': [(1, 293.7), (2, 295.1)]}, 'v')
  assert len(set(_y_labels(flat))) == len(_y_labels(flat)) >= 3, _y_labels(flat)
  constant = report.svg_chart('t', {'train': [(1, 1e-3), (2, 1e-3), (3, 1e-3)]}, 'learning rate')
  ticks = [float(label.replace(',', '')) for label in _y_labels(constant)]
  assert len(set(ticks)) == len(ticks) >= 3, ticks
  assert all(0.0008 <= t <= 0.0012 for t in ticks), ticks  # not -0.5 to 0.5


@pytest.mark.parametrize(
  'low,high', [(0.0, 1.0), (50, 300), (373.0, 1407.0), (0.0, 0.002), (0.61, 0.79), (5.92, 7.25)]
)
def test_chart_ticks_are_round_and_inside_the_range(low, high):
  ticks = report.nice_ticks(low, high)
  assert 3 <= len(ticks) <= 8
  assert all(low - 1e-9 <= t <= high + 1e-9 for t in ticks)
  step = ticks[1] - ticks[0]
  mantissa = step / 10 ** math.floor(math.log10(step))
  assert any(math.isclose(mantissa, m) for m in (1, 2, 5, 10))


def test_the_data_table_writes_counts_as_the_report_does():
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  statistics = {
    'train': {'examples': 11515.0, 'mean text length': 108.2517},
    'eval': {'examples': 1293.0, 'mean text length': 2.5},
    'big': {'examples': 2500000.0},
  }
  page = report.render_report(config, summary.RunSummary(statistics=statistics))
  data = page[page.index('<h2>Data') :]
  for text in ('11,515', '108.3', '1,293', '2.5', '2,500,000'):
    assert f'>{text}<' in data, text
  assert not re.search(r'>(11515|1293|2\.5e\+06)<', data)


def test_label_slices_name_their_labels_and_leave_undefined_figures_undefined():
  run = summary.RunSummary(
    metrics={'auc (classId:0)': 0.86, 'recall (classId:1)': 0.7},
    per_label={
      'label=0': {
        'example_count': 749.0,
        'auc (classId:0)': 0.0,
        'recall (classId:0)': 0.83,
        'recall (classId:1)': 0.0,
        'accuracy': 0.83,
      },
      'label=1': {'example_count': 544.0, 'auc (classId:1)': 0.0, 'recall (classId:1)': 0.69},
    },
  )
  summary.name_labels(run, ['fresh', 'rotten'])
  assert run.metrics == {'auc (label fresh)': 0.86, 'recall (label rotten)': 0.7}
  fresh = run.per_label['label=fresh']
  assert fresh['recall (label fresh)'] == 0.83 and fresh['accuracy'] == 0.83
  assert fresh['example_count'] == 749.0
  assert math.isnan(fresh['auc (label fresh)']) and math.isnan(fresh['recall (label rotten)'])
  assert set(run.per_label) == {'label=fresh', 'label=rotten'}
  assert math.isnan(run.per_label['label=rotten']['auc (label rotten)'])


def _configuration(page):
  """The report's Configuration section: its note and its JSON."""
  section = page.split('<h2>Configuration</h2>', 1)[1]
  note, rest = section.split('<pre>', 1)
  return note, json.loads(html.unescape(rest.split('</pre>', 1)[0]))


@pytest.mark.parametrize('origin', ['environment', 'default', 'config'])
def test_the_report_shows_the_outputs_folder_the_run_used_and_where_it_came_from(
  origin, monkeypatch, tmp_path
):
  # An empty outputs_dir read "outputs_dir": "" in the report, which says nothing of where the
  # run wrote: it depends on $TFXLM_OUTPUTS and the working folder.
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(config_lib.OUTPUTS_ENV, raising=False)
  data = {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  expected = tmp_path / 'pipeline_outputs' / 'demo'
  if origin == 'environment':
    monkeypatch.setenv(config_lib.OUTPUTS_ENV, str(tmp_path / 'runs'))
    expected = tmp_path / 'runs' / 'demo'
  elif origin == 'config':
    data['outputs_dir'] = 'mine'
    expected = tmp_path / 'mine'
  config = config_lib.from_dict(data, config_dir=str(tmp_path))
  note, dumped = _configuration(report.render_report(config, summary.RunSummary()))
  assert dumped['outputs_dir'] == str(expected)
  assert dumped['serving']['serving_root'] == str(expected / 'serving')
  assert f'Outputs folder: <code>{expected}</code>' in note
  assert {
    'environment': '$TFXLM_OUTPUTS/&lt;pipeline_name&gt;',
    'default': 'pipeline_outputs/&lt;pipeline_name&gt; in the working folder',
    'config': 'outputs_dir in the config',
  }[origin] in note


def test_a_verdict_without_a_reason_ends_at_the_verdict(tmp_path):
  # The report wrote "Model not evaluated: ." when no reason was known.
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  for blessed, text_verdict, page_verdict in (
    (None, 'Model: not evaluated\n', 'Model not evaluated. '),
    (False, 'Model: NOT blessed\n', 'Model not blessed. '),
  ):
    run = summary.RunSummary(blessed=blessed, why=[''])
    out, page = report.text(config, run), report.render_report(config, run)
    assert text_verdict in out and page_verdict in page
    assert ': .' not in page and not re.search(r'^Model: .*: *$', out, flags=re.M)


def test_a_run_without_a_blessing_says_why_it_has_no_verdict(tmp_path):
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  run = summary.collect(config, started=0.0)  # an empty metadata store: nothing ran
  reason = f'the Evaluator recorded no blessing in {config.metadata_path}'
  assert run.blessed is None and run.why == [reason]
  assert f'Model: not evaluated: {reason}\n' in report.text(config, run)
  assert 'Nothing was pushed.' in report.text(config, run)
  assert f'Model not evaluated: {reason}. ' in report.render_report(config, run)


def test_what_the_evaluation_left_out_is_said_on_the_console_and_in_the_report():
  config = config_lib.from_dict(
    {'pipeline_name': 'demo', 'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1}}
  )
  run = _classify_summary()
  run.left_out = '120 labels: no per-label calibration'
  assert 'Left out of the evaluation: 120 labels: no per-label calibration.' in report.text(
    config, run
  )
  assert 'Left out of the evaluation: 120 labels' in report.render_report(config, run)
  run.left_out = None
  assert 'Left out' not in report.text(config, run) + report.render_report(config, run)


def test_the_runs_warnings_are_on_the_console_in_the_report_and_in_summary_json(tmp_path):
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  log = str(tmp_path / 'run.log')
  warnings = [
    'r.csv: skipped 2 empty or whitespace-only documents (lines 323, 324)',
    'Vocabulary: learned 81 tokens, far below vocabulary.size 500',
    'label <b>neg</b> & more\nits second line',
  ] + [f'warning {i}' for i in range(12)]
  run = summary.RunSummary(warnings=warnings, log_path=log)
  out = report.text(config, run)
  block = out[out.index('Warnings (15)') :].strip().splitlines()
  assert block[0] == f'Warnings (15) (full log: {log}):'
  assert len(block) == 1 + report.MAX_WARNING_LINES
  assert block[1] == f'  {warnings[0]}' and block[2] == f'  {warnings[1]}'
  assert block[3] == '  label <b>neg</b> & more...'  # one line each
  assert block[-1] == '  ... and 6 more in the log'
  report.write_report(config, run)
  assert json.loads((tmp_path / contract.SUMMARY_FILE).read_text())['warnings'] == warnings
  page = (tmp_path / contract.REPORT_FILE).read_text()
  assert '<h2>Warnings</h2>' in page and html.escape(log) in page
  assert f'<li>{html.escape(warnings[2])}</li>' in page and '<b>neg</b>' not in page
  assert all(html.escape(w) in page for w in warnings)
  # A run that warned of nothing says nothing of warnings.
  quiet = summary.RunSummary(log_path=log)
  assert 'Warnings' not in report.text(config, quiet) + report.render_report(config, quiet)


def test_the_reports_configuration_shows_non_ascii_text_as_written(tmp_path):
  # It read "le caf\u00e9" while the generations table showed "le café".
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'clm', 'train_steps': 2, 'eval_steps': 1},
      'evaluation': {'prompts': ['le café', '東京の<桜>']},
    }
  )
  page = report.render_report(config, summary.RunSummary())
  section = page.split('<h2>Configuration</h2>', 1)[1]
  assert '&quot;le café&quot;' in section and '東京の&lt;桜&gt;' in section and '\\u' not in section
  assert _configuration(page)[1]['evaluation']['prompts'] == ['le café', '東京の<桜>']


def test_the_last_blessed_models_figure_is_beside_the_models_with_its_folder(tmp_path):
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  run = _classify_summary()
  run.last_blessed = {
    'model': '/out/Trainer/model/29',
    'metrics': {'sparse_categorical_accuracy': 0.85},
  }
  for page in (report.text(config, run), html.unescape(report.render_report(config, run))):
    assert 'Against the last blessed model (/out/Trainer/model/29)' in page
    assert re.search(r'last blessed model\s+accuracy 0\.8500', page)
    assert re.search(r'difference \(model - last blessed\)\s+-0\.0500', page)
  assert 'last blessed' not in report.text(config, _classify_summary())


def test_a_pushed_version_deleted_since_is_a_warning_with_how_to_put_it_back(tmp_path):
  pushed = tmp_path / 'serving' / 'demo' / '1796569531'
  model = tmp_path / 'root' / 'Trainer' / 'model' / '9'
  command = summary.restore_push_command(str(pushed), str(model))
  assert command == f'mkdir -p {pushed.parent} && cp -r {model}/Format-Serving {pushed}'
  pushed.mkdir(parents=True)
  (pushed / 'saved_model.pb').write_bytes(b'')
  assert summary.restore_push_command(str(pushed), str(model)) is None
  assert summary.restore_push_command('gs://bucket/serving/demo/1', None) is None
  # The console says where it was pushed and how to put it back, with no serve command for an
  # empty folder; the warning says it too.
  config = config_lib.from_dict(
    {
      'pipeline_name': 'demo',
      'outputs_dir': str(tmp_path),
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  run = _classify_summary()
  run.pushed_path, run.push_missing = '/gone/1', 'cp -r /m/Format-Serving /gone/1'
  run.warnings = [summary.push_missing_warning(run.pushed_path, run.push_missing)]
  out = report.text(config, run)
  assert 'Pushed to: /gone/1, which is missing now' in out
  assert '\n  cp -r /m/Format-Serving /gone/1\n' in out
  assert 'Serve it' not in out
  assert 'Pusher: the pushed version /gone/1 is missing' in out
