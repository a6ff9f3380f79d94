"""Fine-tuning from keras-hub presets made here: warm start, training, the signatures, and the
keras-hub preset written beside the SavedModel (round trip: same logits)."""

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

from tfxlm import contract
from trainer import export, task, tokenizers
from trainer.config import TrainerConfig

SEQ_LEN = 16


def _config(task_name, preset, **overrides):
  config = trainer_data.tiny_config(
    task_name,
    preset=preset,
    train_steps=12,
    eval_every_steps=6,
    checkpoint_every_steps=6,
    per_replica_batch_size=8,
  )
  for size_key in ('num_layers', 'hidden_dim', 'num_heads', 'intermediate_dim'):
    config.pop(size_key)
  config.update(overrides)
  return config


def _data(tmp, task_name, preset):
  vocab_dir = os.path.join(tmp, 'vocabulary')
  tokenizers.import_preset(preset, vocab_dir)
  if task_name == contract.CLASSIFY:
    rows = (trainer_data.labeled_texts(160, 1), trainer_data.labeled_texts(48, 2))
  else:
    rows = (trainer_data.corpus_texts(120, 1), trainer_data.corpus_texts(40, 2))
  return trainer_data.transform_data(
    os.path.join(tmp, 'data'), task_name, *rows, SEQ_LEN, vocab_dir=vocab_dir
  )


@pytest.fixture(scope='module')
def bert(tmp_path_factory):
  return presets.bert_preset(str(tmp_path_factory.mktemp('bert') / 'preset'), seq_len=SEQ_LEN)


@pytest.fixture(scope='module')
def gpt2(tmp_path_factory):
  return presets.gpt2_preset(str(tmp_path_factory.mktemp('gpt2') / 'preset'), seq_len=SEQ_LEN)


def _weights(backbone):
  return {w.path: np.array(w) for w in backbone.weights}


def test_classify_warm_starts_from_a_bert_preset_and_serves(bert, tmp_path):
  data = _data(str(tmp_path), contract.CLASSIFY, bert)
  config = TrainerConfig.from_dict(_config(contract.CLASSIFY, bert))
  vocabularies = task.Vocabularies.from_tft_output(
    tft.TFTransformOutput(data['transform_graph']), contract.CLASSIFY
  )
  assert vocabularies.kind == contract.PRESET_WORDPIECE
  assert vocabularies.special.start == vocabularies.tokens.index('[CLS]') != contract.CLS_ID
  model = task.build_task_model(config, vocabularies)
  preset_weights = _weights(keras_hub.models.Backbone.from_preset(bert))
  for path, value in _weights(model.backbone).items():
    np.testing.assert_array_equal(value, preset_weights[path])

  args = trainer_data.fn_args(data, str(tmp_path / 'run'), _config(contract.CLASSIFY, bert))
  task.run_fn(args)
  served = tf.saved_model.load(args.serving_model_dir)
  out = served.signatures[contract.PREDICT_TEXT](text=tf.constant(['a good film', 'bad dog']))
  np.testing.assert_allclose(out[contract.PROBABILITIES].numpy().sum(axis=1), 1.0, rtol=1e-5)
  assert set(out[contract.LABELS].numpy().tolist()) <= {b'neg', b'pos'}


@pytest.mark.slow
def test_mlm_continues_pretraining_a_bert_preset(bert, tmp_path):
  data = _data(str(tmp_path), contract.MLM, bert)
  args = trainer_data.fn_args(data, str(tmp_path / 'run'), _config(contract.MLM, bert))
  task.run_fn(args)
  served = tf.saved_model.load(args.serving_model_dir)
  out = served.signatures[contract.PREDICT_TEXT](text=tf.constant(['the [MASK] fox']))
  predictions = [p.decode() for p in out[contract.MASK_PREDICTIONS].numpy()[0]]
  assert predictions and not any(p.startswith('[') and p.endswith(']') for p in predictions)
  assert out[contract.TOKEN_COUNT].numpy()[0] > 0


@pytest.mark.slow
def test_clm_fine_tunes_a_gpt2_preset_generates_and_writes_a_preset_back(gpt2, tmp_path):
  data = _data(str(tmp_path), contract.CLM, gpt2)
  # generate ends at the preset's end token and never produces its other special tokens.
  tft_output = tft.TFTransformOutput(data['transform_graph'])
  vocabularies = task.Vocabularies.from_tft_output(tft_output, contract.CLM)
  config = TrainerConfig.from_dict(_config(contract.CLM, gpt2))
  module = export.ExportModule(
    task.build_task_model(config, vocabularies),
    tft_output,
    config,
    vocabularies.tokens,
    kind=vocabularies.kind,
    special=vocabularies.special,
  )
  special = vocabularies.special
  assert module.generator.end_id == special.end == vocabularies.tokens.index('<|endoftext|>')
  assert set(np.flatnonzero(module.generator.banned.numpy())) == set(special.reserved) - {
    special.end
  }

  args = trainer_data.fn_args(data, str(tmp_path / 'run'), _config(contract.CLM, gpt2))
  task.run_fn(args)
  served = tf.saved_model.load(args.serving_model_dir)
  generated = served.signatures[contract.GENERATE](
    prompt=tf.constant(['the film', '']),
    max_new_tokens=tf.constant([6, 6]),
    temperature=tf.zeros([2]),
    top_k=tf.zeros([2], tf.int32),
    top_p=tf.ones([2]),
    seed=tf.zeros([2], tf.int32),
  )[contract.GENERATED_TEXT].numpy()
  assert len(generated) == 2 and all(isinstance(g.decode(), str) for g in generated)

  # The preset written beside the SavedModel: keras-hub loads it and scores a text exactly as
  # the SavedModel does.
  preset_dir = os.path.join(args.serving_model_dir, contract.EXTRA_DIR, contract.PRESET_DIR)
  tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset_dir)
  backbone = keras_hub.models.Backbone.from_preset(preset_dir)
  text = 'the film was a good story'
  ids = [tokenizer.end_token_id] + [int(i) for i in tokenizer(text)]
  context, targets = np.array([ids[:-1]]), np.array(ids[1:])
  hidden = backbone({'token_ids': context, 'padding_mask': np.ones_like(context)})
  logits = keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))[0]
  logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
  logprobs -= logits.max(-1, keepdims=True)
  want = logprobs[np.arange(len(targets)), targets].sum()
  got = served.signatures[contract.PREDICT_TEXT](text=tf.constant([text]))
  np.testing.assert_allclose(got[contract.TOKEN_LOGPROB_SUM].numpy()[0], want, rtol=1e-4)
  assert got[contract.TOKEN_COUNT].numpy()[0] == len(targets)


def test_base_model_is_a_trainer_output_or_a_pushed_folder(tmp_path):
  config = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLASSIFY))
  tokens = list(contract.RESERVED_TOKENS) + [f'w{i}' for i in range(40)]
  vocabularies = task.Vocabularies(tokens, ['neg', 'pos'])
  earlier = task.build_task_model(config, vocabularies)
  # A Trainer's model artifact: TFX hands run_fn <uri>/Format-Serving, the SavedModel.
  artifact = tmp_path / 'Trainer' / 'model' / '7'
  # A pushed version: the pipeline imported the folder itself, Format-Serving is not there.
  pushed = tmp_path / 'serving' / 'imdb' / '1700000000'
  for model_dir in (artifact / contract.SERVING_MODEL_DIR, pushed):
    earlier.backbone.save_to_preset(task.exported_preset(str(model_dir)))
  for base_model in (artifact / contract.SERVING_MODEL_DIR, pushed / contract.SERVING_MODEL_DIR):
    model = task.build_task_model(config, vocabularies, base_model=str(base_model))
    for path, value in _weights(model.backbone).items():
      np.testing.assert_array_equal(value, _weights(earlier.backbone)[path])
  with pytest.raises(ValueError, match='base_model must be a model this pipeline exported'):
    task.build_task_model(config, vocabularies, base_model=str(tmp_path / 'nothing'))


def test_a_quantized_or_other_family_base_model_is_refused_naming_the_folder_and_why(tmp_path):
  config = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLASSIFY))
  tokens = list(contract.RESERVED_TOKENS) + [f'w{i}' for i in range(40)]
  vocabularies = task.Vocabularies(tokens, ['neg', 'pos'])
  # A pushed quantized version: its export config, no float backbone weights.
  pushed = tmp_path / 'serving' / 'sentiment' / '1700000000'
  os.makedirs(pushed / contract.EXTRA_DIR)
  (pushed / contract.EXTRA_DIR / contract.EXPORT_CONFIG_FILE).write_text(
    json.dumps({'quantize': contract.INT8_WEIGHTS})
  )
  # The pipeline imports it: TFX hands run_fn <folder>/Format-Serving, which does not exist.
  with pytest.raises(ValueError) as raised:
    task.build_task_model(config, vocabularies, base_model=str(pushed / contract.SERVING_MODEL_DIR))
  assert str(raised.value).startswith(
    f'base model {pushed} is a quantized export (export.quantize: int8_weights): it keeps no '
    'float weights to start from; give a float version'
  )
  # A BERT classifier given to a causal LM stage.
  earlier = task.build_task_model(config, vocabularies)
  bert = tmp_path / 'bert'
  earlier.backbone.save_to_preset(task.exported_preset(str(bert)))
  (bert / contract.EXTRA_DIR / contract.TRAINER_CONFIG_FILE).write_text(config.to_json())
  clm = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLM))
  with pytest.raises(
    ValueError,
    match=f'^base_model {bert} is a classify model \\(a BertBackbone\\); task clm trains a '
    'GPT2Backbone: give a base model of that family \\(an earlier clm model\\)',
  ):
    task.build_task_model(clm, task.Vocabularies(tokens, None), base_model=str(bert))


@pytest.mark.parametrize('task_name', [contract.MLM, contract.CLASSIFY, contract.CLM])
def test_the_vocabulary_step_refuses_a_preset_the_trainer_cannot_fine_tune(
  task_name, bert, gpt2, tmp_path
):
  albert = presets.albert_preset(str(tmp_path / 'albert'))
  supported = {contract.MLM: bert, contract.CLASSIFY: bert, contract.CLM: gpt2}[task_name]
  tokenizers.check_preset_for_task(supported, task_name)
  for preset in {bert, gpt2, albert} - {supported}:
    with pytest.raises(ValueError, match=rf'task {task_name}: ') as error:
      tokenizers.check_preset_for_task(preset, task_name)
    if task_name == contract.MLM and preset == gpt2:
      assert 'GPT2Backbone preset has no mask token, which mlm needs' in str(error.value)
    else:
      assert (
        'Trainer fine-tunes presets of these backbones only: BertBackbone for classify, '
        'GPT2Backbone for clm, BertBackbone for mlm'
      ) in str(error.value)


def test_importing_a_tokenizer_without_a_mask_token_for_mlm_fails_with_what_to_do(gpt2, tmp_path):
  with pytest.raises(
    ValueError, match='GPT2Tokenizer has no mask token, which mlm needs.*use task clm'
  ):
    tokenizers.import_preset(gpt2, str(tmp_path / 'v'), task=contract.MLM)
  assert tokenizers.import_preset(gpt2, str(tmp_path / 'v'), task=contract.CLM).kind == (
    contract.PRESET_BPE
  )
