"""Fine-tuning from keras-hub presets made here, end to end: the whole pipeline under
LocalDagRunner (tiny config through `--set` overrides), through Evaluator and Pusher; the pushed
model then answers in-process (GPT-2's `generate` too).

Each run takes about a minute of a 2-core machine; the default set runs one, LoRA from a Hugging
Face folder, and the others are slow tests.
"""

import json
import os
import random

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 (registers the ops the pushed models use)
import tokenizers
import yaml

from pipeline import config as config_lib
from pipeline import local_runner
from tests.trainer import hf_checkpoints, presets
from tfxlm import contract

SEQ_LEN = 16
# Words of the presets' corpus (tests/trainer/presets.py): whole tokens of the BERT preset.
POSITIVE = ('great', 'nice', 'good', 'fine')
NEGATIVE = ('bad', 'lazy')
FILLER = ('the', 'film', 'movie', 'story', 'music', 'dog', 'fox', 'quick', 'brown', 'ending')
TRAINING = {
  'per_replica_batch_size': 16,
  'seq_len': SEQ_LEN,
  'train_steps': 30,
  'eval_steps': 2,
  'eval_every_steps': 30,
  'log_every_steps': 10,
  'checkpoint_every_steps': 30,
  'learning_rate': 3e-3,
  'warmup_steps': 3,
  'dropout': 0.0,
}


def _labeled_csv(path, rows, seed=0):
  rng = random.Random(seed)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('review,sentiment\n')
    for _ in range(rows):
      label = rng.choice('01')
      words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
      words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == '1' else NEGATIVE))
      f.write(f'"{" ".join(words)}",{label}\n')


def _corpus(folder, documents, seed=0):
  rng = random.Random(seed)
  os.makedirs(folder)
  with open(os.path.join(folder, 'docs.txt'), 'w', encoding='utf-8') as f:
    for _ in range(documents):
      f.write(' '.join(rng.choice(FILLER + POSITIVE) for _ in range(rng.randint(4, 12))) + '\n')


def _examples(texts, **features):
  """Serialized tf.Examples of `texts` (and the same extra string features on each)."""

  def feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))

  return tf.constant(
    [
      tf.train.Example(
        features=tf.train.Features(
          feature={contract.TEXT_KEY: feature(text), **{k: feature(v) for k, v in features.items()}}
        )
      ).SerializeToString()
      for text in texts
    ]
  )


def _run(tmp, name, data, train, evaluation):
  """Runs the pipeline from a minimal config file plus `--set` overrides; returns its summary."""
  path = tmp / f'{name}.yaml'
  path.write_text(yaml.safe_dump({'pipeline_name': name, 'data': data}))
  overrides = [
    f'outputs_dir={tmp / "outputs"}',
    'serving.model_name=' + name,
    'beam.direct_num_workers=1',
  ]
  overrides += [f'train.{k}={json.dumps(v)}' for k, v in train.items()]
  overrides += [f'evaluation.{k}={v}' for k, v in evaluation.items()]
  args = ['--config', str(path)]
  for override in overrides:
    args += ['--set', override]
  assert local_runner.main(args) == 0
  config = config_lib.load_config(str(path), overrides)
  with open(os.path.join(config.resolved_outputs_dir, contract.SUMMARY_FILE)) as f:
    return json.load(f)


def _pushed(run):
  assert run['blessed'] is True and run['pushed_path'], run
  states = {c['name']: c['state'] for c in run['components']}
  assert states[contract.VOCABULARY_ID] == states[contract.PUSHER_ID] == 'COMPLETE', states
  return run['pushed_path']


@pytest.mark.slow
def test_classify_lora_fine_tunes_a_local_bert_preset_and_the_pushed_model_serves(tmp_path):
  """LoRA through the whole pipeline from a keras-hub preset folder: the pushed model is a plain
  one (adapters merged, the signatures of a full fine-tune) with the adapter beside it. (The
  default set runs LoRA from a Hugging Face folder below, and warm-starts from a keras-hub preset
  in tests/trainer/test_pretrained.py.)"""
  preset = presets.bert_preset(str(tmp_path / 'bert'), seq_len=SEQ_LEN)
  (tmp_path / 'data').mkdir()
  _labeled_csv(tmp_path / 'data' / 'reviews.csv', rows=240)
  data = {
    'format': 'csv',
    'input_base': str(tmp_path / 'data'),
    'text_column': 'review',
    'label_column': 'sentiment',
    'train_eval_ratio': [3, 1],
  }
  run = _run(
    tmp_path,
    'bert-preset',
    data,
    {
      'task': 'classify',
      'preset': preset,
      **TRAINING,
      'lora': {'rank': 4, 'target_layers': ['query', 'value']},
    },
    {'min_accuracy': 0.0},
  )
  pushed = _pushed(run)
  assert run['metrics']['example_count'] > 0

  model = tf.saved_model.load(pushed)
  assert set(model.signatures) == {
    contract.SERVING_DEFAULT,
    contract.PREDICT_TEXT,
    contract.TRANSFORM_FEATURES,
    contract.CLASSIFICATION,
  }
  assert not [v.name for v in model.model_variables if 'lora' in v.name.lower()]
  with open(os.path.join(pushed, contract.EXTRA_DIR, 'lora', 'adapter.json')) as f:
    assert json.load(f)['rank'] == 4
  texts = ['a great and nice film', 'the bad lazy dog']
  out = model.signatures[contract.PREDICT_TEXT](text=tf.constant(texts))
  np.testing.assert_allclose(out[contract.PROBABILITIES].numpy().sum(axis=1), 1.0, rtol=1e-5)
  assert set(out[contract.LABELS].numpy().tolist()) <= {b'0', b'1'}
  by_example = model.signatures[contract.SERVING_DEFAULT](examples=_examples(texts))
  np.testing.assert_allclose(
    by_example[contract.PROBABILITIES], out[contract.PROBABILITIES], rtol=1e-5
  )
  # The preset's own ids, as its keras-hub tokenizer gives them ([CLS] is not id 2 there).
  tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)
  ids = model.signatures[contract.TRANSFORM_FEATURES](
    examples=_examples(texts, **{contract.LABEL_KEY: '1'})
  )[contract.TOKEN_IDS_KEY]
  for text, row in zip(texts, ids.numpy().tolist()):
    want = [tokenizer.cls_token_id, *map(int, tokenizer(text)), tokenizer.sep_token_id]
    assert row == want + [tokenizer.pad_token_id] * (SEQ_LEN - len(want))
  assert tokenizer.cls_token_id != contract.CLS_ID
  with open(
    os.path.join(pushed, contract.EXTRA_DIR, contract.PRESET_DIR, contract.PRESET_CONFIG_FILE)
  ) as f:
    assert json.load(f)['class_name'] == 'BertBackbone'


@pytest.mark.slow
def test_clm_fine_tunes_a_local_gpt2_preset_and_the_pushed_model_generates(tmp_path):
  preset = presets.gpt2_preset(str(tmp_path / 'gpt2'), seq_len=SEQ_LEN)
  _corpus(str(tmp_path / 'corpus'), documents=200)
  data = {
    'format': 'text',
    'input_base': str(tmp_path / 'corpus'),
    'label_column': None,
    'shuffle': False,
  }
  run = _run(
    tmp_path,
    'gpt2-preset',
    data,
    {'task': 'clm', 'preset': preset, **TRAINING},
    {'max_perplexity': 1e6},
  )
  pushed = _pushed(run)
  assert 1.0 < run['metrics']['perplexity'] < 1e6

  model = tf.saved_model.load(pushed)
  scored = model.signatures[contract.PREDICT_TEXT](text=tf.constant(['the quick brown fox']))
  assert scored[contract.TOKEN_COUNT].numpy()[0] > 0
  assert np.isfinite(scored[contract.TOKEN_LOGPROB_SUM].numpy()[0])
  rows = 3
  generated = model.signatures[contract.GENERATE](
    prompt=tf.constant(['the film', 'Café', '']),
    max_new_tokens=tf.constant([8, 4, 0]),
    temperature=tf.constant([0.0, 0.8, 0.0]),
    top_k=tf.zeros([rows], tf.int32),
    top_p=tf.ones([rows]),
    seed=tf.constant([0, 1, 2]),
  )[contract.GENERATED_TEXT].numpy()
  texts = [g.decode('utf-8') for g in generated]
  assert texts[2] == ''
  # Byte-level BPE decoded back to text: no byte-alphabet characters, no special token.
  for text in texts:
    assert not set(text) & {'Ġ', 'Ċ'} and '<|endoftext|>' not in text, texts
  assert any(texts[:2]), texts
  with open(
    os.path.join(pushed, contract.EXTRA_DIR, contract.PRESET_DIR, contract.PRESET_CONFIG_FILE)
  ) as f:
    assert json.load(f)['class_name'] == 'GPT2Backbone'


def _sentiment_data(tmp_path):
  (tmp_path / 'data').mkdir()
  _labeled_csv(tmp_path / 'data' / 'reviews.csv', rows=240)
  return {
    'format': 'csv',
    'input_base': str(tmp_path / 'data'),
    'text_column': 'review',
    'label_column': 'sentiment',
    'train_eval_ratio': [3, 1],
  }


def test_classify_lora_fine_tunes_a_hugging_face_bert_folder_and_the_pushed_model_serves(tmp_path):
  """A checkpoint in the Hugging Face layout (config.json, model.safetensors, tokenizer files):
  imported through keras-hub's converter, tokenized as the `tokenizers` library does, fine-tuned
  with LoRA and mean pooling, exported, pushed, served. The pushed model is a plain one
  (adapters merged, the signatures of a full fine-tune) with the adapter beside it."""
  checkpoint = hf_checkpoints.hf_bert(str(tmp_path / 'hf_bert'), positions=SEQ_LEN)
  run = _run(
    tmp_path,
    'hf-bert',
    _sentiment_data(tmp_path),
    {
      'task': 'classify',
      'preset': checkpoint,
      'pooling': 'mean',
      **TRAINING,
      'lora': {'rank': 4, 'target_layers': ['query', 'value']},
    },
    {'min_accuracy': 0.0},
  )
  pushed = _pushed(run)
  assert run['metrics']['example_count'] > 0
  model = tf.saved_model.load(pushed)
  # The signatures a fully fine-tuned classifier serves: merged adapters add none.
  assert set(model.signatures) == {
    contract.SERVING_DEFAULT,
    contract.PREDICT_TEXT,
    contract.TRANSFORM_FEATURES,
    contract.CLASSIFICATION,
  }
  assert not [v.name for v in model.model_variables if 'lora' in v.name.lower()]
  with open(os.path.join(pushed, contract.EXTRA_DIR, 'lora', 'adapter.json')) as f:
    assert json.load(f)['rank'] == 4
  texts = ['A GREAT and nice film!', 'the bad lazy dog', 'Café naïve résumé [MASK]']
  out = model.signatures[contract.PREDICT_TEXT](text=tf.constant(texts))
  np.testing.assert_allclose(out[contract.PROBABILITIES].numpy().sum(axis=1), 1.0, rtol=1e-5)
  by_example = model.signatures[contract.SERVING_DEFAULT](examples=_examples(texts))
  np.testing.assert_allclose(
    by_example[contract.PROBABILITIES], out[contract.PROBABILITIES], rtol=1e-5
  )
  # Transform's ids are the checkpoint's tokenizer.json's, special tokens at its own ids.
  reference = tokenizers.Tokenizer.from_file(os.path.join(checkpoint, 'tokenizer.json'))
  reference.no_padding()
  ids = model.signatures[contract.TRANSFORM_FEATURES](
    examples=_examples(texts, **{contract.LABEL_KEY: '1'})
  )[contract.TOKEN_IDS_KEY]
  pad, cls, sep = (reference.token_to_id(t) for t in ('[PAD]', '[CLS]', '[SEP]'))
  for text, row in zip(texts, ids.numpy().tolist()):
    pieces = reference.encode(text, add_special_tokens=False).ids
    want = [cls, *pieces[: SEQ_LEN - 2], sep]  # Transform cuts long texts before [SEP]
    assert row == want + [pad] * (SEQ_LEN - len(want))
  assert reference.token_to_id('[CLS]') != contract.CLS_ID
  # The keras-hub preset beside the SavedModel loads with keras-hub alone.
  preset_dir = os.path.join(pushed, contract.EXTRA_DIR, contract.PRESET_DIR)
  backbone = keras_hub.models.Backbone.from_preset(preset_dir)
  assert type(backbone).__name__ == 'BertBackbone'
  assert keras_hub.tokenizers.Tokenizer.from_preset(preset_dir).strip_accents is True


@pytest.mark.slow
def test_clm_fine_tunes_a_hugging_face_gpt2_folder_and_the_pushed_model_generates(tmp_path):
  checkpoint = hf_checkpoints.hf_gpt2(str(tmp_path / 'hf_gpt2'), positions=SEQ_LEN + 1)
  _corpus(str(tmp_path / 'corpus'), documents=200)
  data = {
    'format': 'text',
    'input_base': str(tmp_path / 'corpus'),
    'label_column': None,
    'shuffle': False,
  }
  run = _run(
    tmp_path,
    'hf-gpt2',
    data,
    {'task': 'clm', 'preset': checkpoint, **TRAINING},
    {'max_perplexity': 1e6},
  )
  model = tf.saved_model.load(_pushed(run))
  generated = model.signatures[contract.GENERATE](
    prompt=tf.constant(['the film']),
    max_new_tokens=tf.constant([6]),
    temperature=tf.constant([0.0]),
    top_k=tf.zeros([1], tf.int32),
    top_p=tf.ones([1]),
    seed=tf.constant([0]),
  )[contract.GENERATED_TEXT].numpy()
  assert '<|endoftext|>' not in generated[0].decode('utf-8')
  scored = model.signatures[contract.PREDICT_TEXT](text=tf.constant(['the quick brown fox']))
  assert scored[contract.TOKEN_COUNT].numpy()[0] > 0
