"""Efficient fine-tuning: LoRA and frozen layers train only what they should, the export merges
the adapters (same outputs as the Keras model with LoRA on), the adapter file round-trips
through keras-hub, resume works with LoRA on, and bad settings fail with what to do."""

import hashlib
import json
import os

import keras
import keras_hub
import numpy as np
import presets
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import trainer_data

from tfxlm import contract, typed_config
from trainer import (
  adapters,
  finetune_config,
  keras_internals,
  optimization,
  task,
  tokenizers,
  training,
)
from trainer.config import TrainerConfig

SEQ_LEN = 16
TARGETS = ['query', 'value', 'feedforward_intermediate_dense', 'feedforward_output_dense']


@pytest.fixture(scope='module')
def bert(tmp_path_factory):
  return presets.bert_preset(str(tmp_path_factory.mktemp('bert') / 'preset'), seq_len=SEQ_LEN)


@pytest.fixture(scope='module')
def bert_classify_data(bert, tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('bert_data'))
  vocab_dir = os.path.join(tmp, 'vocabulary')
  tokenizers.import_preset(bert, vocab_dir)
  rows = (trainer_data.labeled_texts(160, 1), trainer_data.labeled_texts(48, 2))
  return trainer_data.transform_data(
    os.path.join(tmp, 'data'), contract.CLASSIFY, *rows, SEQ_LEN, vocab_dir=vocab_dir
  )


def _preset_config(preset, **overrides):
  config = trainer_data.tiny_config(
    contract.CLASSIFY,
    preset=preset,
    train_steps=12,
    eval_every_steps=12,
    checkpoint_every_steps=6,
    per_replica_batch_size=8,
    learning_rate=1e-2,
  )
  for size_key in ('num_layers', 'hidden_dim', 'num_heads', 'intermediate_dim'):
    config.pop(size_key)
  config.update(overrides)
  return config


def _vocabularies(data, task_name):
  return task.Vocabularies.from_tft_output(
    tft.TFTransformOutput(data['transform_graph']), task_name
  )


def _examples(texts, label=None):
  def feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  features = [{contract.TEXT_KEY: feature(t)} for t in texts]
  if label is not None:
    for f in features:
      f[contract.LABEL_KEY] = feature(label)
  return tf.constant(
    [tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString() for f in features]
  )


def test_a_lora_fine_tune_exports_merged_weights_and_its_adapter(
  bert, bert_classify_data, tmp_path
):
  lora = {'rank': 4, 'alpha': 8.0, 'target_layers': TARGETS}
  args = trainer_data.fn_args(
    bert_classify_data, str(tmp_path / 'run'), _preset_config(bert, lora=lora)
  )
  task.run_fn(args)
  extra = os.path.join(args.serving_model_dir, contract.EXTRA_DIR)
  adapter_dir = os.path.join(extra, adapters.ADAPTER_DIR)

  # The Keras model with LoRA enabled: the base preset plus the adapter written beside the export.
  plain = TrainerConfig.from_dict(_preset_config(bert))
  vocabularies = _vocabularies(bert_classify_data, contract.CLASSIFY)
  keras_model = task.build_task_model(plain, vocabularies)
  description = adapters.load_adapter(keras_model, adapter_dir)
  layers = adapters.lora_layers(keras_model)
  assert len(layers) == 2 * len(TARGETS)  # two transformer layers
  assert all(layer.lora_alpha == 8.0 and layer.lora_rank == 4 for layer in layers)
  assert any(np.abs(np.array(layer.lora_kernel_b)).max() > 0 for layer in layers), 'B never moved'

  # The SavedModel serves the merged model: same probabilities, no adapter variables left.
  served = tf.saved_model.load(args.serving_model_dir)
  texts = [b'a good film', b'the awful movie was bad', b'great story and nice music']
  examples = _examples(texts)
  transformed = served.signatures[contract.TRANSFORM_FEATURES](examples=_examples(texts, b'pos'))
  ids = transformed[contract.TOKEN_IDS_KEY]
  ids = tf.cast(ids, tf.int32)
  pad = vocabularies.special.pad
  logits = keras_model({'token_ids': ids, 'padding_mask': tf.cast(ids != pad, tf.int32)})
  expected = tf.nn.softmax(logits, axis=-1).numpy()
  out = served.signatures[contract.SERVING_DEFAULT](examples=examples)
  np.testing.assert_allclose(out[contract.PROBABILITIES].numpy(), expected, atol=1e-5)
  # The served variables are those of the model built without LoRA, the kernels merged.
  plain_model = task.build_task_model(plain, vocabularies)
  assert [tuple(v.shape) for v in served.model_variables] == [
    tuple(v.shape) for v in plain_model.weights
  ]

  # adapter.json names and checksums the base checkpoint.
  assert description['base']['preset'] == bert
  with open(os.path.join(bert, 'model.weights.h5'), 'rb') as f:
    assert description['base']['files_sha256']['model.weights.h5'] == (
      hashlib.sha256(f.read()).hexdigest()
    )
  # The adapter is small beside the backbone it adapts.
  lora_bytes = os.path.getsize(os.path.join(adapter_dir, adapters.LORA_FILE))
  assert lora_bytes < os.path.getsize(os.path.join(bert, 'model.weights.h5'))

  # keras-hub alone reads the adapter file back: the same A and B.
  backbone = keras_hub.models.Backbone.from_preset(bert)
  backbone.enable_lora(description['rank'], target_layer_names=description['target_layers'])
  backbone.load_lora_weights(os.path.join(adapter_dir, adapters.LORA_FILE))
  for mine, theirs in zip(layers, adapters.lora_layers(backbone), strict=True):
    np.testing.assert_array_equal(np.array(mine.lora_kernel_a), np.array(theirs.lora_kernel_a))
    np.testing.assert_array_equal(np.array(mine.lora_kernel_b), np.array(theirs.lora_kernel_b))

  # An adapter refuses a backbone that is not its base.
  other = task.build_task_model(plain, vocabularies)
  other.backbone.weights[0].assign(other.backbone.weights[0] + 1.0)
  with pytest.raises(adapters.AdapterError, match='is not its base checkpoint'):
    adapters.load_adapter(other, adapter_dir)
  with open(os.path.join(extra, contract.TRAINER_CONFIG_FILE)) as f:
    assert json.load(f)['lora']['rank'] == 4


def _loop(config, data, run_dir):
  model = task.build_task_model(config, _vocabularies(data, config.task))
  adapters.apply(model, config, pretrained=True)
  optimizer = optimization.create_optimizer(
    model, learning_rate=config.learning_rate, total_steps=config.train_steps, warmup_steps=2
  )
  optimizer.build(model.trainable_variables)
  return training.Loop(tf.distribute.get_strategy(), model, optimizer, config, run_dir)


def _train_dataset(loop, data):
  tft_output = tft.TFTransformOutput(data['transform_graph'])
  vocabularies = _vocabularies(data, loop.config.task)
  from trainer import inputs

  return inputs.make_dataset(
    data['train_files'],
    tft_output.transformed_feature_spec(),
    loop.config,
    vocab_size=len(vocabularies.tokens),
    special=vocabularies.special,
    batch_size=loop.config.per_replica_batch_size,
    training=True,
    seed=1,
  )


FREEZE_LOWEST = {'embeddings': True, 'layers': 1}


@pytest.mark.parametrize(
  'task_name, section',
  [
    (contract.CLASSIFY, {'lora': {'rank': 2}}),
    (contract.CLASSIFY, {'lora': {'rank': 2}, 'freeze': {'layers': 1}}),
    (contract.MLM, {'lora': {'rank': 2, 'target_layers': ['query', 'value']}}),
    (contract.CLM, {'freeze': FREEZE_LOWEST}),
    (contract.CLASSIFY, {'freeze': FREEZE_LOWEST}),
  ],
)
def test_the_step_computes_gradients_and_keeps_state_for_trainable_weights_only(
  task_name, section, request, tmp_path, monkeypatch
):
  data = request.getfixturevalue(f'{task_name}_data')
  config = TrainerConfig.from_dict(trainer_data.tiny_config(task_name, **section))
  loop = _loop(config, data, str(tmp_path))
  model = loop.model
  trainable = {v.path for v in model.trainable_variables}
  if 'lora' in section:
    # Only A and B, and the task head outside the backbone.
    backbone_trainable = {v.path for v in model.backbone.trainable_variables}
    assert backbone_trainable and all(
      p.endswith(('lora_kernel_a', 'lora_kernel_b')) for p in backbone_trainable
    )
    # With freeze.layers, the lowest layer's adapters are frozen too.
    lowest = {p for p in backbone_trainable if p.startswith('transformer_layer_0/')}
    assert bool(lowest) == ('freeze' not in section), sorted(lowest)
  else:
    frozen = {v.path for v in model.non_trainable_variables}
    assert any(p.startswith('token_embedding/') for p in frozen)
    assert any(p.startswith('transformer_layer_0/') for p in frozen)
    assert not any(p.startswith('transformer_layer_0/') for p in trainable)
    assert not any(p.startswith('transformer_layer_1/') for p in frozen)
  sources = []
  gradient = tf.GradientTape.gradient

  def recording_gradient(tape, target, variables, *args, **kwargs):
    sources.append([v.path for v in variables])
    return gradient(tape, target, variables, *args, **kwargs)

  monkeypatch.setattr(tf.GradientTape, 'gradient', recording_gradient)
  before = {v.path: np.array(v) for v in model.weights}
  loop._train_step(iter(_train_dataset(loop, data)))
  assert len(sources) == 1 and set(sources[0]) == trainable == set(sources[0])
  assert len(sources[0]) == len(trainable)
  # Adam keeps two slots per trainable weight, none for a frozen one.
  slots = [v for v in loop.optimizer.variables if len(v.shape) > 0 or v.name != 'iteration']
  assert len([v for v in slots if 'momentum' in v.path]) == len(trainable)
  assert len([v for v in slots if 'velocity' in v.path]) == len(trainable)
  after = {v.path: np.array(v) for v in model.weights}
  for path, value in before.items():
    if path not in trainable:
      np.testing.assert_array_equal(after[path], value, err_msg=path)
  assert any(not np.array_equal(after[p], before[p]) for p in trainable)


def test_a_lora_run_resumes_from_its_checkpoint(classify_data, tmp_path):
  config = TrainerConfig.from_dict(
    trainer_data.tiny_config(contract.CLASSIFY, lora={'rank': 2}, train_steps=6)
  )
  first = _loop(config, classify_data, str(tmp_path / 'a'))
  first.run(
    _train_dataset(first, classify_data),
    _train_dataset(first, classify_data),
    train_steps=4,
    eval_steps=1,
  )
  with open(tmp_path / 'a' / training.TRAIN_SUMMARY_FILE) as f:
    summary = json.load(f)
  trainable = sum(int(np.prod(v.shape)) for v in first.model.trainable_weights)
  assert summary['steps'] == 4 and summary['trainable_weights'] == trainable
  assert summary['trainable_share'] == trainable / summary['weights'] < 0.5
  assert summary['tokens_per_second'] > 0 and summary['peak_rss_bytes'] > 1e8
  saved = [np.array(v) for v in first.checkpoint_variables()]
  second = _loop(config, classify_data, str(tmp_path / 'b'))
  second.checkpoint_dir = first.checkpoint_dir
  second.manager = first.manager
  assert second.restore() == 4
  variables = second.checkpoint_variables()
  assert any('lora_kernel_b' in v.path for v in second.model.weights)
  assert len(variables) == len(saved)
  for variable, value in zip(variables, saved):
    np.testing.assert_array_equal(
      np.array(variable), value, err_msg=getattr(variable, 'path', variable.name)
    )
  # and trains on from there
  history = second.run(
    _train_dataset(second, classify_data),
    _train_dataset(second, classify_data),
    train_steps=6,
    eval_steps=1,
  )
  assert history[-1]['step'] == 6


def test_lora_and_freeze_settings_that_do_not_fit_fail_with_what_to_do(classify_data):
  vocabularies = _vocabularies(classify_data, contract.CLASSIFY)

  def model_for(**section):
    config = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLASSIFY, **section))
    return config, task.build_task_model(config, vocabularies)

  config, model = model_for(lora={'target_layers': ['query', 'position_embedding']})
  with pytest.raises(adapters.AdapterError) as error:
    adapters.apply(model, config, pretrained=True)
  assert str(error.value).startswith(
    "train.lora.target_layers: the layer 'position_embedding' of BertBackbone "
    '(PositionEmbedding) takes no adapters; layers that take LoRA adapters: '
  )
  assert 'layers that take LoRA adapters:' in str(error.value) and 'query' in str(error.value)

  config, model = model_for(lora={'target_layers': ['q_proj']})
  with pytest.raises(adapters.AdapterError, match="BertBackbone has no layer named 'q_proj'"):
    adapters.apply(model, config, pretrained=True)

  # Keras' embeddings have LoRA of their own, which the merged export cannot fold in.
  config, model = model_for(lora={'target_layers': ['query', 'token_embedding']})
  with pytest.raises(adapters.AdapterError) as error:
    adapters.apply(model, config, pretrained=True)
  assert "the layer 'token_embedding' of BertBackbone (ReversibleEmbedding) takes no" in str(
    error.value
  )
  assert 'embedding' not in str(error.value).split('layers that take LoRA adapters:')[1]

  # The tiny model's query kernel is [32, 2, 16]: its adapter's rank sits below 16.
  config, model = model_for(lora={'rank': 17, 'target_layers': ['query']})
  with pytest.raises(
    adapters.AdapterError,
    match=r"train.lora.rank: rank 17 is more than the narrower side \(16\) of the 'query' kernel"
    r' \(32, 2, 16\): its adapter would hold more weights than the layer; set train.lora.rank to'
    r' at most 16 \(4-16 is usual\)$',
  ):
    adapters.apply(model, config, pretrained=True)
  # The usual range is offered only as far as the kernel takes it.
  assert adapters._usual_ranks(768) == ' (4-64 is usual)'
  assert adapters._usual_ranks(4) == adapters._usual_ranks(2) == ''
  config, model = model_for(lora={'rank': 16, 'target_layers': ['query']})
  adapters.apply(model, config, pretrained=True)
  assert {layer.name for layer in adapters.lora_layers(model)} == {'query'}

  # A model kind without adapters: a backbone that is not a keras-hub Backbone.
  config, model = model_for(lora={'rank': 2})
  inputs = keras.Input((4,))
  model.backbone = keras.Model(inputs, keras.layers.Dense(2)(inputs), name='custom')
  with pytest.raises(adapters.AdapterError, match=r'backbone \(Functional\) has no LoRA adapters'):
    adapters.apply(model, config, pretrained=True)

  config, model = model_for(freeze={'layers': 3})
  with pytest.raises(adapters.AdapterError, match='train.freeze.layers: 3 is more than the 2'):
    adapters.apply(model, config, pretrained=True)

  config, model = model_for(lora={'rank': 2})
  with pytest.raises(adapters.AdapterError, match='starts from random weights'):
    adapters.apply(model, config, pretrained=False)

  with pytest.raises(typed_config.ConfigError, match='train.freeze: lora already freezes'):
    TrainerConfig.from_dict({'lora': {}, 'freeze': {}}, where='train')
  config, model = model_for(lora={'rank': 2}, freeze={'layers': 3})
  with pytest.raises(adapters.AdapterError, match='train.freeze.layers: 3 is more than the 2'):
    adapters.apply(model, config, pretrained=True)
  # Every transformer layer frozen: no adapter would train (a remote preset's layer count is
  # known here only).
  config, model = model_for(lora={'rank': 2}, freeze={'layers': 2})
  with pytest.raises(
    adapters.AdapterError, match='train.freeze.layers: 2 freezes every layer LoRA adapts'
  ):
    adapters.apply(model, config, pretrained=True)
  with pytest.raises(typed_config.ConfigError, match='train.lora.rank: must be > 0'):
    TrainerConfig.from_dict({'lora': {'rank': 0}}, where='train')
  with pytest.raises(typed_config.ConfigError, match='train.lora.target_layers: name at least'):
    TrainerConfig.from_dict({'lora': {'target_layers': []}}, where='train')


@pytest.mark.parametrize('task', [contract.CLASSIFY, contract.CLM])
def test_the_layer_names_the_config_check_knows_are_those_of_the_built_backbone(task):
  """The config refuses LoRA and freeze names before a model is built (pipeline/config_checks.py)
  by keras-hub's layer names, listed in trainer/finetune_config.py: they are the built ones."""
  family = contract.TASK_BACKBONES[task]
  backbone = getattr(keras_hub.models, family)(
    vocabulary_size=40,
    num_layers=3,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=SEQ_LEN,
  )
  layers = [layer for layer in keras_internals.sublayers(backbone, False) if layer.weights]
  dense = {
    layer.name
    for layer in layers
    if isinstance(layer, keras.layers.EinsumDense | keras.layers.Dense)
  }
  assert dense == set(finetune_config.LORA_LAYERS[family])
  blocks = {f'transformer_layer_{i}' for i in range(3)}
  assert {layer.name for layer in layers} == dense | set(
    finetune_config.OTHER_LAYERS[family]
  ) | blocks
  for name in {layer.name for layer in layers}:
    lora = finetune_config.LoraConfig(target_layers=('query',), train_layers=(name,))
    assert finetune_config.fit_problem('train', lora, None, family, 3) is None
  lora = finetune_config.LoraConfig(train_layers=('transformer_layer_3',))
  assert 'transformer_layer_0 to transformer_layer_2' in finetune_config.fit_problem(
    'train', lora, None, family, 3
  )


@pytest.mark.slow
def test_a_lora_fine_tuned_gpt2_serves_what_its_base_plus_adapter_computes(tmp_path):
  gpt2 = presets.gpt2_preset(str(tmp_path / 'gpt2'), seq_len=SEQ_LEN)
  vocab_dir = str(tmp_path / 'vocabulary')
  tokenizers.import_preset(gpt2, vocab_dir)
  data = trainer_data.transform_data(
    str(tmp_path / 'data'),
    contract.CLM,
    trainer_data.corpus_texts(120, 1),
    trainer_data.corpus_texts(40, 2),
    SEQ_LEN,
    vocab_dir=vocab_dir,
  )
  config = _preset_config(gpt2, task=contract.CLM, lora={'rank': 4, 'target_layers': TARGETS})
  args = trainer_data.fn_args(data, str(tmp_path / 'run'), config)
  task.run_fn(args)
  served = tf.saved_model.load(args.serving_model_dir)
  generated = served.signatures[contract.GENERATE](
    prompt=tf.constant(['the film']),
    max_new_tokens=tf.constant([4]),
    temperature=tf.zeros([1]),
    top_k=tf.zeros([1], tf.int32),
    top_p=tf.ones([1]),
    seed=tf.zeros([1], tf.int32),
  )[contract.GENERATED_TEXT].numpy()
  assert len(generated) == 1

  config.pop('lora')
  model = task.build_task_model(TrainerConfig.from_dict(config), _vocabularies(data, contract.CLM))
  adapters.load_adapter(model, os.path.join(args.serving_model_dir, contract.EXTRA_DIR, 'lora'))
  tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(gpt2)
  text = 'the film was a good story'
  ids = [tokenizer.end_token_id] + [int(i) for i in tokenizer(text)]
  context, targets = np.array([ids[:-1]]), np.array(ids[1:])
  logits = keras.ops.convert_to_numpy(
    model({'token_ids': context, 'padding_mask': np.ones_like(context)})
  )[0]
  logprobs = logits - logits.max(-1, keepdims=True)
  logprobs -= np.log(np.exp(logprobs).sum(-1, keepdims=True))
  want = logprobs[np.arange(len(targets)), targets].sum()
  got = served.signatures[contract.PREDICT_TEXT](text=tf.constant([text]))
  np.testing.assert_allclose(got[contract.TOKEN_LOGPROB_SUM].numpy()[0], want, rtol=1e-4)
