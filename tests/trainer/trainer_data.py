"""Generated data for the trainer tests: learnable text tasks, a vocabulary, real Transform outputs.

`transform_data` runs TF Transform (`tft_beam.AnalyzeAndTransformDataset` with the project's
`preprocessing_fn`) and writes what TFX's Transform writes: a transform graph and gzipped
TFRecords of transformed examples per split. `shared_transform_data` runs it once per test
session for the same arguments, whichever files and pytest-xdist workers ask.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import metadata_io
from tfx.components.trainer import fn_args_utils

from pipeline import local_runner
from tfxlm import contract
from trainer import preprocessing
from trainer.config import TrainerConfig
from trainer.vocabulary import Vocabulary

POSITIVE = ('good', 'great', 'fine', 'nice', 'happy')
NEGATIVE = ('bad', 'awful', 'poor', 'sad', 'angry')
FILLER = tuple(
  (
    'the a film movie story actor plot scene music ending watch again never always '
    'really quite very director camera light dark night day world people time life '
    'house tree river stone cloud bird'
  ).split()
)
WORDS = FILLER + POSITIVE + NEGATIVE
# Transform's sequence length for the shared data sets (`classify_data`, `mlm_data`, `clm_data`).
SEQ_LEN = 16


def write_vocab(directory):
  """A Vocabulary artifact folder (vocab.txt + vocab.json) holding every generated word."""
  os.makedirs(directory, exist_ok=True)
  tokens = list(contract.RESERVED_TOKENS) + sorted(WORDS) + ['##s', '##ly']
  with open(os.path.join(directory, 'vocab.txt'), 'w') as f:
    f.write(''.join(t + '\n' for t in tokens))
  meta = {
    'kind': 'wordpiece',
    'size': len(tokens),
    'lowercase': True,
    'strip_accents': True,
    'nfkc': True,
    'suffix_indicator': '##',
  }
  Vocabulary(tokens, meta).write(directory)
  return directory, tokens


def labeled_texts(n, seed):
  """(text, label) pairs: the label is 'pos' or 'neg' after which word set the text uses."""
  rng = random.Random(seed)
  rows = []
  for _ in range(n):
    label = rng.choice(('pos', 'neg'))
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    for _ in range(rng.randint(1, 2)):
      words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == 'pos' else NEGATIVE))
    rows.append((' '.join(words), label))
  return rows


def corpus_texts(n, seed, chain_seed=7):
  """Texts from a fixed Markov chain: each word is followed by its own successor 90% of the time,
  by a random word otherwise. Predictable text, so perplexity has far to fall."""
  chain_rng = random.Random(chain_seed)
  successor = dict(zip(FILLER, chain_rng.sample(FILLER, len(FILLER))))
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    word = rng.choice(FILLER)
    words = [word]
    for _ in range(rng.randint(6, 20)):
      word = successor[word] if rng.random() < 0.9 else rng.choice(FILLER)
      words.append(word)
    texts.append(' '.join(words))
  return texts


def transform_data(root, task, train_rows, eval_rows, seq_len, vocab_dir=None):
  """Runs TF Transform over raw rows and writes a TFX-like layout under `root`.

  Args:
    root: Output folder.
    task: 'mlm', 'clm' or 'classify'.
    train_rows, eval_rows: lists of text, or (text, label) for classify.
    seq_len: Transform's classification length.
    vocab_dir: A Vocabulary artifact folder to tokenize with (e.g. a preset's, imported);
      None writes one holding every generated word.

  Returns:
    dict with 'transform_graph', 'train_files', 'eval_files', 'vocab' (tokens).
  """
  if vocab_dir is None:
    vocab_dir, tokens = write_vocab(os.path.join(root, 'vocabulary'))
  else:
    with open(os.path.join(vocab_dir, contract.VOCAB_FILE), encoding='utf-8') as f:
      tokens = f.read().splitlines()
  spec = {contract.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}
  if task == contract.CLASSIFY:
    spec[contract.LABEL_KEY] = tf.io.FixedLenFeature([1], tf.string)
  metadata = tft.DatasetMetadata.from_feature_spec(spec)

  def instances(rows):
    if task == contract.CLASSIFY:
      return [{contract.TEXT_KEY: [t.encode()], contract.LABEL_KEY: [y.encode()]} for t, y in rows]
    return [{contract.TEXT_KEY: [t.encode()]} for t in rows]

  custom_config = {
    contract.VOCAB_URI_KEY: vocab_dir,
    **TrainerConfig(task=task, seq_len=seq_len).transform_custom_config(),
  }
  graph_dir = os.path.join(root, 'transform_graph')
  out = {'transform_graph': graph_dir, 'vocab': tokens}
  with (
    beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline,
    tft_beam.Context(temp_dir=os.path.join(root, 'tmp')),
  ):
    train = pipeline | 'Train' >> beam.Create(instances(train_rows))
    evaluation = pipeline | 'Eval' >> beam.Create(instances(eval_rows))
    (train_out, train_meta), transform_fn = (train, metadata) | tft_beam.AnalyzeAndTransformDataset(
      lambda inputs: preprocessing.preprocessing_fn(inputs, custom_config)
    )
    eval_out, _ = ((evaluation, metadata), transform_fn) | tft_beam.TransformDataset()
    _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
    for split, data in (('train', train_out), ('eval', eval_out)):
      prefix = os.path.join(root, 'transformed', f'Split-{split}', 'data')
      coder = tft.coders.ExampleProtoCoder(train_meta.schema)
      _ = (
        data
        | f'Encode{split}' >> beam.Map(coder.encode)
        | f'Write{split}' >> beam.io.WriteToTFRecord(prefix, file_name_suffix='.gz')
      )
      out[f'{split}_files'] = [os.path.join(root, 'transformed', f'Split-{split}', '*')]
  # TFX's Transform also keeps the raw schema beside the graph (TFTransformOutput.raw_metadata).
  metadata_io.write_metadata(
    metadata, os.path.join(graph_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
  )
  return out


def _session_dir(tmp_path_factory):
  """A folder every pytest-xdist worker of this session sees (the workers' base temp folders are
  popen-gw0, popen-gw1, ... under one pytest-N folder); the base temp folder without xdist."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@contextlib.contextmanager
def _locked(path):
  with open(path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def shared_transform_data(tmp_path_factory, task, train_rows, eval_rows, seq_len):
  """`transform_data` built once per test session for these arguments, then read back.

  The outputs live under the session's shared temp folder, keyed on the arguments; a file lock
  makes a second worker wait for the first one's build instead of repeating it. Callers must
  not write into the returned folders.

  Returns:
    What `transform_data` returns.
  """
  key = json.dumps([task, train_rows, eval_rows, seq_len], sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  root = os.path.join(str(_session_dir(tmp_path_factory)), 'shared-transform', f'{task}-{digest}')
  os.makedirs(os.path.dirname(root), exist_ok=True)
  done = root + '.json'
  with _locked(root + '.lock'):
    if not os.path.exists(done):
      shutil.rmtree(root, ignore_errors=True)  # a build that an earlier worker left half done
      data = transform_data(root, task, train_rows, eval_rows, seq_len)
      with open(done + '.tmp', 'w') as f:
        json.dump(data, f)
      os.replace(done + '.tmp', done)
  with open(done) as f:
    return json.load(f)


def classify_data(tmp_path_factory):
  """The labeled data the trainer tests learn the word rule from (`labeled_texts`)."""
  return shared_transform_data(
    tmp_path_factory, contract.CLASSIFY, labeled_texts(600, 1), labeled_texts(128, 2), SEQ_LEN
  )


def mlm_data(tmp_path_factory):
  """The Markov-chain corpus (`corpus_texts`), transformed for masked-LM training."""
  return shared_transform_data(
    tmp_path_factory, contract.MLM, corpus_texts(400, 1), corpus_texts(80, 2), SEQ_LEN
  )


def clm_data(tmp_path_factory):
  """The Markov-chain corpus (`corpus_texts`), transformed for causal-LM training."""
  return shared_transform_data(
    tmp_path_factory, contract.CLM, corpus_texts(400, 1), corpus_texts(80, 2), SEQ_LEN
  )


def fn_args(data, tmp_dir, trainer_config, *, base_model=None, train_steps=None, eval_steps=None):
  """The FnArgs TFX's generic Trainer would pass run_fn for `data` (from `transform_data`)."""
  return fn_args_utils.FnArgs(
    working_dir=os.path.join(tmp_dir, 'working'),
    train_files=data['train_files'],
    eval_files=data['eval_files'],
    transform_graph_path=data['transform_graph'],
    transform_output=data['transform_graph'],
    serving_model_dir=os.path.join(tmp_dir, 'serving'),
    model_run_dir=os.path.join(tmp_dir, 'model_run'),
    base_model=base_model,
    custom_config={contract.TRAINER_CONFIG_KEY: dict(trainer_config)},
    train_steps=train_steps,
    eval_steps=eval_steps,
  )


def tiny_config(task, **overrides):
  """A TrainerConfig dict for a model small enough for a test on a shared CPU."""
  config = {
    'task': task,
    'num_layers': 2,
    'hidden_dim': 32,
    'num_heads': 2,
    'intermediate_dim': 64,
    'dropout': 0.0,
    'seq_len': 16,
    'per_replica_batch_size': 16,
    'train_steps': 20,
    'eval_steps': 2,
    'eval_every_steps': 10,
    'log_every_steps': 5,
    'checkpoint_every_steps': 10,
    'learning_rate': 3e-3,
    'warmup_steps': 2,
    'strategy': 'default',
    'shuffle_buffer': 256,
  }
  config.update(overrides)
  return config
