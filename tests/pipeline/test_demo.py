"""`make demo` and `make demo-lm` as a user runs them, with fewer steps: they must learn.

Both read the Rotten Tomatoes text the demo fetches from PyPI once (pipeline/demo_data.py) into
the environment cache, so after the first run of either no network is used.
"""

import json
import os

from pipeline import local_runner
from pipeline import summary as summary_lib

CONFIGS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  'pipeline',
  'configs',
)
# Fewer steps than the configs (they set why), the rest as they are.
FAST = ['train.log_every_steps=20', 'train.checkpoint_every_steps=1000', 'train.warmup_steps=20']


def _run(config, outputs, overrides, capsys):
  args = ['--config', os.path.join(CONFIGS, config), '--set', f'outputs_dir={outputs}']
  for override in FAST + overrides:
    args += ['--set', override]
  code = local_runner.main(args)
  out = capsys.readouterr().out
  assert code == 0, out
  with open(os.path.join(outputs, 'summary.json')) as f:
    return json.load(f), out


def test_demo_classifier_learns_sentiment_and_reports_the_baseline(tmp_path, capsys):
  run, out = _run(
    'demo.yaml',
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

  accuracy = run['metrics'][summary_lib.evaluation.ACCURACY]
  baseline = run['baseline']
  assert baseline is not None, run.get('reference_error')
  assert baseline['eval_examples'] >= 1000
  assert baseline['eval_examples'] == run['metrics']['example_count']
  assert accuracy >= baseline['majority_accuracy'] + 0.05, (accuracy, baseline)
  assert 'TF-IDF + logistic regression' in out and 'difference (model - baseline)' in out


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

  perplexity = run['metrics'][summary_lib.evaluation.PERPLEXITY]
  unigram = run['unigram']
  assert unigram is not None, run.get('reference_error')
  assert perplexity < 0.9 * unigram['perplexity'], (perplexity, unigram)
  prompts = [prompt for prompt, _ in run['generations']]
  assert prompts == list(summary_lib.PROMPTS)
  assert all(continuation.strip() for _, continuation in run['generations'])
  assert 'unigram (train token frequencies)' in out
