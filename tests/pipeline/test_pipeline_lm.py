"""A language-model pipeline end to end: a text corpus, causal-LM training, perplexity in TFMA."""

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
import yaml

from pipeline import config as config_lib
from pipeline import local_runner
from tfxlm import contract

WORDS = (
  'the cat sat on a mat while the dog ran to the park and a bird sang in the old tree '
  'near the river where children played every day after school'
).split()


def _write_corpus(folder, documents, seed=0):
  """Predictable text: each word is followed by one of two fixed successors."""
  rng = random.Random(seed)
  successors = {w: rng.sample(WORDS, 2) for w in WORDS}
  os.makedirs(folder)
  for part in range(2):
    with open(os.path.join(folder, f'part-{part}.txt'), 'w', encoding='utf-8') as f:
      for _ in range(documents // 2):
        word, words = rng.choice(WORDS), []
        for _ in range(rng.randint(8, 20)):
          words.append(word)
          word = rng.choice(successors[word])
        f.write(' '.join(words) + '\n')


@pytest.mark.slow
def test_clm_pipeline_reports_perplexity_gates_on_it_and_pushes_a_generator(tmp_path):
  _write_corpus(str(tmp_path / 'corpus'), documents=300)
  config = {
    'pipeline_name': 'lm-e2e',
    'outputs_dir': str(tmp_path / 'outputs'),
    'data': {
      'format': 'text',
      'input_base': str(tmp_path / 'corpus'),
      'label_column': None,
      'shuffle': False,
    },
    'vocabulary': {'size': 80},
    'train': {
      'task': 'clm',
      'num_layers': 1,
      'hidden_dim': 32,
      'num_heads': 2,
      'intermediate_dim': 64,
      'seq_len': 16,
      'per_replica_batch_size': 16,
      'train_steps': 60,
      'eval_steps': 2,
      'eval_every_steps': 30,
      'checkpoint_every_steps': 30,
      'learning_rate': 3e-3,
      'warmup_steps': 5,
    },
    # Two successors per word: a trained model is far below the vocabulary size.
    'evaluation': {'max_perplexity': 40.0},
    'serving': {'model_name': 'lm'},
    'beam': {'direct_num_workers': 1},
  }
  path = tmp_path / 'lm.yaml'
  path.write_text(yaml.safe_dump(config))
  assert local_runner.main(['--config', str(path)]) == 0
  loaded = config_lib.load_config(str(path))
  with open(os.path.join(loaded.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    run = json.load(f)
  assert 1.0 < run['metrics']['perplexity'] < 40.0, run['metrics']
  assert run['blessed'] is True and run['pushed_path']

  script = textwrap.dedent(f"""
      import json, tensorflow as tf, tensorflow_text  # noqa
      model = tf.saved_model.load({run['pushed_path']!r})
      out = model.signatures['generate'](
          prompt=tf.constant(['the cat']), max_new_tokens=tf.constant([5]),
          temperature=tf.constant([0.0]), top_k=tf.constant([0]), top_p=tf.constant([1.0]),
          seed=tf.constant([0]))
      print(json.dumps(out['text'].numpy()[0].decode()))
  """)
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, check=True
  )
  continuation = json.loads(result.stdout.strip().splitlines()[-1])
  assert continuation.split() and set(continuation.split()) <= set(WORDS), continuation
