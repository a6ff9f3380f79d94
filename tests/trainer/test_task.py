"""run_fn on real Transform outputs: learning, warm start, strategies, precision, resume, export."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer import fn_args_utils

from pipeline import summary
from tests.trainer import trainer_data
from tfxlm import contract
from trainer import models, precision, task, training
from trainer.config import TrainerConfig

HERE = os.path.dirname(os.path.abspath(__file__))
# mlm and classify share the backbone size, so classify can warm-start from the mlm model.
BACKBONE = {'hidden_dim': 64, 'intermediate_dim': 128}


def _history(run_dir):
  with open(os.path.join(run_dir, training.EVAL_HISTORY_FILE)) as f:
    return json.load(f)


def _run(data, tmp, config, **kwargs):
  args = trainer_data.fn_args(data, str(tmp), config, **kwargs)
  task.run_fn(args)
  return args


# What AutoGraph rewrote during each module fixture's run, by fixture.
CONVERTED = {}


@contextlib.contextmanager
def _autograph_rewrites(name):
  """Records `module.qualname` of each function AutoGraph rewrites inside, starting from an
  empty cache (AutoGraph rewrites a function once per process)."""
  from tensorflow.python.autograph.impl import api

  transpiler = api.PyToTF()
  transform = transpiler.transform
  converted = CONVERTED.setdefault(name, [])

  def recording(fn, user_context):
    converted.append(f'{getattr(fn, "__module__", "?")}.{getattr(fn, "__qualname__", fn)}')
    return transform(fn, user_context)

  transpiler.transform = recording
  saved, api._TRANSPILER = api._TRANSPILER, transpiler
  try:
    yield
  finally:
    api._TRANSPILER = saved


@pytest.fixture(scope='module')
def mlm_run(mlm_data, tmp_path_factory):
  config = trainer_data.tiny_config(
    'mlm',
    **BACKBONE,
    train_steps=200,
    eval_every_steps=50,
    eval_steps=4,
    # Two checkpoints, not twenty (a tenth of a second each): test_kill_and_resume tests them.
    checkpoint_every_steps=100,
    learning_rate=3e-3,
    warmup_steps=10,
    per_replica_batch_size=32,
    mask_rate=0.25,
    precision='auto',
  )
  return _run(mlm_data, tmp_path_factory.mktemp('mlm_run'), config)


@pytest.fixture(scope='module')
def clm_run(clm_data, tmp_path_factory):
  # Also covers MirroredStrategy on one CPU device and bfloat16 mixed precision.
  config = trainer_data.tiny_config(
    'clm', train_steps=60, eval_every_steps=20, strategy='mirrored', precision='mixed_bfloat16'
  )
  with _autograph_rewrites('clm_run'):
    return _run(clm_data, tmp_path_factory.mktemp('clm_run'), config)


@pytest.fixture(scope='module')
def classify_run(classify_data, mlm_run, tmp_path_factory):
  # Steps come from the Trainer's TrainArgs/EvalArgs; gradients accumulate over 2 micro-batches.
  config = trainer_data.tiny_config(
    'classify',
    **BACKBONE,
    train_steps=None,
    eval_steps=None,
    eval_every_steps=20,
    grad_accum_steps=2,
    per_replica_batch_size=16,
    learning_rate=3e-3,
    warmup_steps=5,
  )
  with _autograph_rewrites('classify_run'):
    return _run(
      classify_data,
      tmp_path_factory.mktemp('classify_run'),
      config,
      base_model=mlm_run.serving_model_dir,
      train_steps=60,
      eval_steps=4,
    )


def _perplexity_fall(history):
  first, last = history[0]['perplexity'], history[-1]['perplexity']
  return 1.0 - last / first


def test_mlm_perplexity_falls(mlm_run):
  history = _history(mlm_run.model_run_dir)
  assert [h['step'] for h in history] == [50, 100, 150, 200]
  assert _perplexity_fall(history) >= 0.3, history
  assert history[-1]['accuracy'] > history[0]['accuracy']
  # `auto` is resolved on this host and the export records what was used.
  with open(
    os.path.join(mlm_run.serving_model_dir, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  ) as f:
    used = json.load(f)['precision']
  assert used == precision.choose('auto', precision.detect(tf.distribute.get_strategy()))
  assert used != 'auto'


def test_clm_perplexity_falls_in_bfloat16_under_mirrored(clm_run):
  history = _history(clm_run.model_run_dir)
  assert _perplexity_fall(history) >= 0.3, history
  with open(
    os.path.join(clm_run.serving_model_dir, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  ) as f:
    used = json.load(f)
  assert (used['strategy'], used['precision']) == ('mirrored', 'mixed_bfloat16')


def test_classify_learns_the_word_rule(classify_run):
  history = _history(classify_run.model_run_dir)
  assert history[-1]['step'] == 60  # TrainArgs(num_steps=60)
  assert history[-1]['accuracy'] >= 0.9, history


@pytest.mark.parametrize('run', ['clm_run', 'classify_run'])
def test_training_and_export_rewrite_no_code_with_autograph(run, request):
  """AutoGraph rewrites a function's source at its first trace in a process, seconds of each
  Trainer run. The steps (accumulating, under MirroredStrategy), the export's signatures (cached
  generation included) and Transform's layer do without it. Still rewritten: tf.data's map
  functions (trainer/inputs.py) and TensorFlow's own wrappers around a saved signature."""
  request.getfixturevalue(run)
  converted = CONVERTED[run]
  assert any(name.startswith('trainer.inputs.') for name in converted), converted
  ours = ('trainer.', 'tensorflow_transform.', 'keras_hub.', 'keras.')
  rewritten = [n for n in converted if n.startswith(ours) and not n.startswith('trainer.inputs.')]
  assert rewritten == []


def _exported_backbone_weights(folder):
  """{variable path: value} of the backbone an export's keras-hub preset holds."""
  return models.backbone_weights(
    keras_hub.models.Backbone.from_preset(task.exported_preset(folder))
  )


def test_warm_start_loads_the_pretrained_backbone(mlm_run, classify_data):
  config = TrainerConfig.from_dict(trainer_data.tiny_config('classify', **BACKBONE))
  vocabularies = task.Vocabularies.from_tft_output(
    tft.TFTransformOutput(classify_data['transform_graph']), 'classify'
  )
  model = task.build_task_model(config, vocabularies, base_model=mlm_run.serving_model_dir)
  pretrained = _exported_backbone_weights(mlm_run.serving_model_dir)
  for name in (
    'token_embedding/embeddings',
    'transformer_layer_1/self_attention_layer/query/kernel',
  ):
    weight = next(w for w in model.backbone.weights if w.path == name)
    np.testing.assert_array_equal(np.array(weight), pretrained[name])
  fresh = task.build_task_model(config, vocabularies)
  assert not np.array_equal(
    np.array(fresh.backbone.weights[0]), pretrained[fresh.backbone.weights[0].path]
  )


def test_a_warm_start_at_a_shorter_seq_len_keeps_every_position_row(mlm_run, classify_data):
  vocabularies = task.Vocabularies.from_tft_output(
    tft.TFTransformOutput(classify_data['transform_graph']), 'classify'
  )
  base = mlm_run.serving_model_dir
  pretrained = _exported_backbone_weights(base)
  rows = pretrained[models.POSITION_EMBEDDING].shape[0]
  short = TrainerConfig.from_dict(
    trainer_data.tiny_config('classify', **BACKBONE, seq_len=rows // 2)
  )
  model = task.build_task_model(short, vocabularies, base_model=base)
  for weight in model.backbone.weights:
    np.testing.assert_array_equal(np.array(weight), pretrained[weight.path])
  ids = np.full((2, rows // 2), 5, np.int32)
  logits = model({models.TOKEN_IDS: ids, models.PADDING_MASK: np.ones_like(ids)})
  assert logits.shape == (2, len(vocabularies.labels))
  # A longer seq_len than the base model's has no position rows to start from.
  long = TrainerConfig.from_dict(trainer_data.tiny_config('classify', **BACKBONE, seq_len=rows * 2))
  with pytest.raises(
    ValueError,
    match=rf'base_model {re.escape(base)} was built for sequences of at most {rows} tokens, '
    rf'seq_len is {rows * 2}: .* write seq_len: {rows} or less',
  ):
    task.build_task_model(long, vocabularies, base_model=base)


def test_warm_start_from_a_different_size_fails_loudly(mlm_run, classify_data, tmp_path):
  config = trainer_data.tiny_config('classify', hidden_dim=32, intermediate_dim=64)
  with pytest.raises(ValueError, match='warm start .* failed'):
    _run(classify_data, tmp_path, config, base_model=mlm_run.serving_model_dir)


def _fake_base_model(folder, config, tokens):
  """A base model folder as an export lays it out: the backbone's preset and the vocabulary
  asset."""
  backbone = models.build_backbone(config, len(tokens))
  backbone.save_to_preset(task.exported_preset(folder))
  os.makedirs(os.path.join(folder, 'assets'))
  with open(os.path.join(folder, 'assets', contract.VOCAB_FILE), 'w') as f:
    f.write(''.join(t + '\n' for t in tokens))
  return backbone


def test_warm_start_from_another_vocabulary_of_the_same_size_fails(tmp_path):
  config = TrainerConfig.from_dict(trainer_data.tiny_config('mlm'))
  _, tokens = trainer_data.write_vocab(str(tmp_path / 'vocab'))
  base = str(tmp_path / 'base')
  saved = _fake_base_model(base, config, tokens)
  # Two tokens swapped: the same size, so every weight's shape matches.
  other = list(tokens)
  other[10], other[11] = other[11], other[10]
  with pytest.raises(ValueError) as raised:
    task.build_task_model(config, task.Vocabularies(other, None), base_model=base)
  message = str(raised.value)
  assert f'base_model {base}' in message and 'another vocabulary' in message
  assert f'{len(tokens)} tokens there, {len(tokens)} here' in message
  assert f'id 10 is {tokens[10]!r} there, {tokens[11]!r} here' in message
  assert 'leave base_model unset' in message
  # A shorter vocabulary is named by its end.
  with pytest.raises(ValueError, match=f'id {len(tokens) - 1} is .* there, past its end here'):
    task.build_task_model(config, task.Vocabularies(tokens[:-1], None), base_model=base)
  # The vocabulary it was trained with loads.
  model = task.build_task_model(config, task.Vocabularies(tokens, None), base_model=base)
  np.testing.assert_array_equal(
    np.array(model.backbone.token_embedding.embeddings), np.array(saved.token_embedding.embeddings)
  )


def test_tensorboard_scalars(clm_run):
  tags = {}
  for split in (training.TRAIN_LOGS, training.EVAL_LOGS):
    pattern = os.path.join(clm_run.model_run_dir, split, 'events.out.tfevents.*')
    tags[split] = {
      value.tag
      for path in tf.io.gfile.glob(pattern)
      for event in tf.compat.v1.train.summary_iterator(path)
      for value in event.summary.value
    }
  assert {'loss', 'perplexity', 'learning_rate', 'tokens_per_second'} <= tags['train']
  assert {'loss', 'perplexity'} <= tags['eval']


_FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the only import a consumer needs)
requests = json.load(open(sys.argv[1]))
out = {}
for name, path in requests['models'].items():
  model = tf.saved_model.load(path)
  for signature, inputs in requests['calls'][name].items():
    fn = model.signatures[signature]
    args = {k: tf.constant(v['value'], getattr(tf, v['dtype'])) for k, v in inputs.items()}
    out[f'{name}/{signature}'] = {k: v.numpy().tolist() for k, v in fn(**args).items()}
json.dump(out, open(sys.argv[2], 'w'), default=lambda b: b.decode())
"""


def _example(text, label=None):
  feature = {'text': tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
  if label is not None:
    feature['label'] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _decode(value):
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


@pytest.mark.slow
def test_every_signature_answers_the_same_in_a_fresh_process(
  mlm_run, clm_run, classify_run, tmp_path
):
  texts = ['good great film nice happy fine', 'a bad [MASK] movie night', 'river']
  examples = [_example(t, 'pos') for t in texts]
  strings = lambda values: {'value': values, 'dtype': 'string'}
  common = {
    'serving_default': {'examples': strings([e.hex() for e in examples])},
    'predict_text': {'text': strings(texts)},
    'transform_features': {'examples': strings([e.hex() for e in examples])},
  }
  calls = {
    'mlm': common,
    'classify': common,
    'clm': {
      **common,
      'generate': {
        'prompt': strings(texts),
        'max_new_tokens': {'value': [6] * 3, 'dtype': 'int32'},
        'temperature': {'value': [0.0] * 3, 'dtype': 'float32'},
        'top_k': {'value': [0] * 3, 'dtype': 'int32'},
        'top_p': {'value': [1.0] * 3, 'dtype': 'float32'},
        'seed': {'value': [0] * 3, 'dtype': 'int32'},
      },
    },
  }
  runs = {'mlm': mlm_run, 'clm': clm_run, 'classify': classify_run}
  copies = {}
  for name, run in runs.items():
    copies[name] = str(tmp_path / 'copies' / name)
    shutil.copytree(run.serving_model_dir, copies[name])

  def to_args(inputs):
    args = {}
    for key, spec in inputs.items():
      value = spec['value']
      if key == 'examples':
        value = [bytes.fromhex(v) for v in value]
      args[key] = tf.constant(value, getattr(tf, spec['dtype']))
    return args

  expected = {}
  for name, run in runs.items():
    model = tf.saved_model.load(run.serving_model_dir)
    for signature, inputs in calls[name].items():
      outputs = model.signatures[signature](**to_args(inputs))
      expected[f'{name}/{signature}'] = {k: _decode(v.numpy().tolist()) for k, v in outputs.items()}
  # The fresh process gets serialized examples as latin-1-safe hex; decode them there.
  script = _FRESH_PROCESS.replace(
    "args = {k: tf.constant(v['value'], getattr(tf, v['dtype'])) for k, v in inputs.items()}",
    "args = {k: tf.constant([bytes.fromhex(x) for x in v['value']] if k == 'examples' "
    "else v['value'], getattr(tf, v['dtype'])) for k, v in inputs.items()}",
  )
  request = tmp_path / 'request.json'
  request.write_text(json.dumps({'models': copies, 'calls': calls}))
  result = tmp_path / 'result.json'
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  subprocess.run(
    [sys.executable, '-c', script, str(request), str(result)],
    check=True,
    cwd=str(tmp_path),
    env=env,
    timeout=300,
  )
  got = json.loads(result.read_text())
  assert set(got) == set(expected)
  for key, outputs in expected.items():
    assert set(got[key]) == set(outputs), key
    for output, value in outputs.items():
      if isinstance(value, list) and value and isinstance(np.ravel(value)[0], float):
        np.testing.assert_allclose(
          got[key][output], value, rtol=1e-4, atol=1e-5, err_msg=f'{key}:{output}'
        )
      else:
        assert got[key][output] == value, f'{key}:{output}'
  # What the outputs mean.
  classify = expected['classify/predict_text']
  assert classify['labels'][0] == 'pos' and np.allclose(np.sum(classify['probabilities'], 1), 1)
  mlm = expected['mlm/predict_text']
  assert mlm['mask_predictions'][0] == [''] * len(mlm['mask_predictions'][0])
  assert all(mlm['mask_predictions'][1]) and mlm['mask_scores'][1][0] > 0
  # Scored: up to ceil(16 * 0.25) = 4 evenly spread tokens, never the [MASK] already there.
  assert mlm['token_count'] == [4.0, 3.0, 1.0] and all(v < 0 for v in mlm['token_logprob_sum'])
  clm = expected['clm/serving_default']
  assert clm['token_count'] == [6.0, 7.0, 1.0] and all(v < 0 for v in clm['token_logprob_sum'])
  assert all(isinstance(t, str) for t in expected['clm/generate']['text'])
  assert expected['classify/transform_features']['label'] == [1, 1, 1]


@pytest.mark.slow
def test_kill_and_resume(clm_data, tmp_path):
  config = trainer_data.tiny_config(
    'clm', train_steps=200, checkpoint_every_steps=20, eval_every_steps=100, log_every_steps=20
  )
  args = trainer_data.fn_args(clm_data, str(tmp_path / 'runs'), config)
  keys = (
    'train_files',
    'eval_files',
    'transform_graph_path',
    'serving_model_dir',
    'model_run_dir',
    'custom_config',
  )
  args_file = tmp_path / 'args.json'
  args_file.write_text(json.dumps({k: getattr(args, k) for k in keys}))
  command = [sys.executable, os.path.join(HERE, 'run_fn_main.py'), str(args_file)]
  checkpoints = task.checkpoint_dir(args, task.config_from_fn_args(args))
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  try:
    while time.time() < deadline and process.poll() is None:
      latest = tf.train.latest_checkpoint(checkpoints)
      if latest and int(latest.rsplit('-', 1)[1]) >= 40:
        break
      time.sleep(0.2)
    assert process.poll() is None, 'the run ended before it could be killed'
    process.send_signal(signal.SIGKILL)
  finally:
    process.kill()
    process.wait()
  killed_at = int(tf.train.latest_checkpoint(checkpoints).rsplit('-', 1)[1])
  assert 40 <= killed_at < 200
  assert not os.path.exists(os.path.join(args.serving_model_dir, 'saved_model.pb'))
  # TFX reruns a failed Trainer as a new execution, with new output folders: the same inputs
  # must still find the checkpoints.
  rerun_args = {k: getattr(args, k) for k in keys}
  rerun_args['model_run_dir'] = args.model_run_dir + '-rerun'
  rerun_args['serving_model_dir'] = args.serving_model_dir + '-rerun'
  args_file.write_text(json.dumps(rerun_args))
  rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'resuming from checkpoint at step {killed_at}' in rerun.stderr
  assert f'clm step {killed_at + 20}/200' in rerun.stderr  # progress is logged from there on
  assert os.path.exists(os.path.join(rerun_args['serving_model_dir'], 'saved_model.pb'))
  assert not os.path.exists(checkpoints)  # exported: the checkpoints are removed
  # The summary's curves span the whole training: the killed execution's steps up to the resume.
  curves = summary._run_curves(rerun_args['model_run_dir'])
  steps = [step for step, _ in curves['train/loss']]
  assert steps == list(range(20, 201, 20))


def test_config_from_fn_args_fills_steps_and_rejects_bad_input():
  def args(custom_config, train_steps=None, eval_steps=None):
    return fn_args_utils.FnArgs(
      custom_config=custom_config, train_steps=train_steps, eval_steps=eval_steps
    )

  config = task.config_from_fn_args(args({contract.TRAINER_CONFIG_KEY: {'task': 'clm'}}, 7, 3))
  assert (config.task, config.train_steps, config.eval_steps) == ('clm', 7, 3)
  config = task.config_from_fn_args(
    args({contract.TRAINER_CONFIG_KEY: {'train_steps': 5, 'eval_steps': 1}}, 7, 3)
  )
  assert (config.train_steps, config.eval_steps) == (5, 1)
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['trainr'\]"):
    task.config_from_fn_args(args({'trainr': {}}, 7, 3))
  with pytest.raises(ValueError, match='no train steps'):
    task.config_from_fn_args(args({contract.TRAINER_CONFIG_KEY: {}}, None, 3))
  with pytest.raises(ValueError, match=r'^trainer\.learning_rate: must be > 0, got -1.0'):
    task.config_from_fn_args(args({contract.TRAINER_CONFIG_KEY: {'learning_rate': -1.0}}, 7, 3))
