"""run_fn inside real TFX Trainer components: mlm pretraining, then classify warm-started from it
through the Trainer's `base_model` channel, both reading one Transform (the classify stage's,
which serves the pretraining stage too), in one LocalDagRunner pipeline."""

import csv
import glob
import json
import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from components import example_encoding, example_gen, transform, vocabulary
from pipeline import local_runner
from pipeline.tfx_api import tfx
from tests.trainer import trainer_data
from tfxlm import contract
from trainer import models, training
from trainer.config import TrainerConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQ_LEN = 16
BACKBONE = {'num_layers': 2, 'hidden_dim': 32, 'num_heads': 2, 'intermediate_dim': 64}


def _uri(root, component_id, key):
  found = glob.glob(os.path.join(root, component_id, key, '*'))
  assert len(found) == 1, (component_id, key, found)
  return found[0]


def _trainer(component_id, transformed, config, steps, base_model=None):
  return tfx.components.Trainer(
    run_fn='trainer.task.run_fn',
    examples=transformed.outputs['transformed_examples'],
    transform_graph=transformed.outputs['transform_graph'],
    base_model=base_model,
    train_args=tfx.proto.TrainArgs(num_steps=steps),
    eval_args=tfx.proto.EvalArgs(num_steps=2),
    custom_config={contract.TRAINER_CONFIG_KEY: config},
  ).with_id(component_id)


@pytest.fixture(scope='module')
def pipeline_root(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('trainer_pipeline'))
  data = os.path.join(tmp, 'data')
  os.makedirs(data)
  with open(os.path.join(data, 'reviews.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['label', 'text'])
    # The labels of the schema's domain (schemas/labeled: 0 and 1): with 'neg' and 'pos' the
    # label vocabulary held all four, and the fine-tuner's untrained head could answer '0'.
    ids = {'neg': '0', 'pos': '1'}
    writer.writerows((ids[label], text) for text, label in trainer_data.labeled_texts(300, 5))

  examples = example_gen.create_example_gen('csv', data, text_column='text', label_column='label')
  schema = tfx.components.ImportSchemaGen(
    schema_file=os.path.join(REPO, 'schemas', 'labeled', 'schema.pbtxt')
  )
  vocab = vocabulary.Vocabulary(examples=examples.outputs['examples'], vocab_size=80, min_count=1)
  shared = transform.create_transform(
    examples.outputs['examples'],
    schema.outputs['schema'],
    vocab.outputs['vocabulary'],
    trainer_config=TrainerConfig(task='classify', seq_len=SEQ_LEN),
    pretrain_config=TrainerConfig(task='mlm', seq_len=SEQ_LEN),
  ).with_id('Transform')
  common = {
    **BACKBONE,
    'seq_len': SEQ_LEN,
    'per_replica_batch_size': 8,
    'eval_every_steps': 10,
    'log_every_steps': 5,
    'strategy': 'auto',
    'shuffle_buffer': 64,
    'warmup_steps': 1,
  }
  pretrainer = _trainer(
    contract.PRETRAIN_TRAINER_ID, shared, {**common, 'task': 'mlm', 'learning_rate': 3e-3}, steps=10
  )
  # A learning rate this small leaves the backbone where the warm start put it.
  finetuner = _trainer(
    'Trainer',
    shared,
    {**common, 'task': 'classify', 'learning_rate': 1e-9, 'weight_decay': 0.0},
    steps=10,
    base_model=pretrainer.outputs['model'],
  )
  # A causal-LM stage reads the same pieces (the shared Transform's ids do not depend on the
  # LM task).
  clm_trainer = _trainer(
    'ClmTrainer', shared, {**common, 'task': 'clm', 'learning_rate': 3e-3}, steps=4
  )
  root = os.path.join(tmp, 'root')
  pipeline = tfx.dsl.Pipeline(
    pipeline_name='trainer-e2e',
    pipeline_root=root,
    components=[examples, schema, vocab, shared, pretrainer, finetuner, clm_trainer],
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
      os.path.join(tmp, 'metadata.sqlite')
    ),
    beam_pipeline_args=local_runner.in_process_beam_args(),
  )
  tfx.orchestration.LocalDagRunner().run(pipeline)
  return root


def test_trainer_components_export_serving_models(pipeline_root):
  for component_id, task in (
    (contract.PRETRAIN_TRAINER_ID, 'mlm'),
    (contract.TRAINER_ID, 'classify'),
  ):
    serving = os.path.join(_uri(pipeline_root, component_id, 'model'), contract.SERVING_MODEL_DIR)
    model = tf.saved_model.load(serving)
    assert {contract.SERVING_DEFAULT, contract.PREDICT_TEXT, contract.TRANSFORM_FEATURES} <= set(
      model.signatures
    )
    with open(os.path.join(serving, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)) as f:
      used = json.load(f)
    assert (used['task'], used['train_steps'], used['eval_steps']) == (task, 10, 2)
    run_dir = _uri(pipeline_root, component_id, 'model_run')
    with open(os.path.join(run_dir, training.EVAL_HISTORY_FILE)) as f:
      assert [h['step'] for h in json.load(f)] == [10]
  outputs = model.signatures[contract.PREDICT_TEXT](text=tf.constant(['good film', 'bad film']))
  assert set(outputs['labels'].numpy()) <= {b'0', b'1'}


def test_classify_backbone_starts_from_the_base_model(pipeline_root):
  def weights(component_id):
    serving = os.path.join(_uri(pipeline_root, component_id, 'model'), contract.SERVING_MODEL_DIR)
    preset = os.path.join(serving, contract.EXTRA_DIR, contract.PRESET_DIR)
    return models.backbone_weights(keras_hub.models.Backbone.from_preset(preset))

  pretrained, finetuned = weights('PretrainTrainer'), weights('Trainer')
  assert set(pretrained) == set(finetuned)
  for name in pretrained:
    np.testing.assert_allclose(finetuned[name], pretrained[name], atol=1e-6, err_msg=name)


def test_the_pretrained_model_reads_the_lm_pieces_of_the_shared_transform(pipeline_root):
  graph = tft.TFTransformOutput(_uri(pipeline_root, 'Transform', 'transform_graph'))
  serving = os.path.join(
    _uri(pipeline_root, contract.PRETRAIN_TRAINER_ID, 'model'), contract.SERVING_MODEL_DIR
  )
  model = tf.saved_model.load(serving)
  texts = ['good film', 'the movie story really quite awful', 'a good [MASK] film']
  out = model.signatures[contract.PREDICT_TEXT](text=tf.constant(texts))
  # Framed ids ([CLS] ... [SEP] [PAD]...) would push the [MASK] out of the window and score
  # reserved and padding positions; the pieces give a prediction for the [MASK] and score up to
  # ceil(seq_len * mask_rate) = 3 pieces of each text.
  pieces = graph.transform_features_layer()(
    {contract.TEXT_KEY: tf.constant([[t] for t in texts[:2]])}
  )
  lengths = tf.RaggedTensor.from_sparse(pieces[contract.LM_TOKEN_IDS_KEY]).row_lengths().numpy()
  np.testing.assert_array_equal(out[contract.TOKEN_COUNT].numpy()[:2], np.minimum(lengths, 3))
  with open(os.path.join(_uri(pipeline_root, 'Vocabulary', 'vocabulary'), 'vocab.txt')) as f:
    words = set(f.read().splitlines()) - set(contract.RESERVED_TOKENS)
  predictions = out[contract.MASK_PREDICTIONS].numpy()
  assert set(predictions[:2].ravel()) == {b''}
  assert {p.decode() for p in predictions[2]} <= words
  # serving_default (serialized tf.Examples) gives the same scores.
  examples = [example_encoding.make_example(t, '1') for t in texts]
  served = model.signatures[contract.SERVING_DEFAULT](examples=tf.constant(examples))
  np.testing.assert_allclose(
    served[contract.TOKEN_LOGPROB_SUM].numpy(), out[contract.TOKEN_LOGPROB_SUM].numpy(), rtol=1e-5
  )


def test_a_causal_lm_on_the_shared_transform_scores_the_pieces(pipeline_root):
  graph = tft.TFTransformOutput(_uri(pipeline_root, 'Transform', 'transform_graph'))
  serving = os.path.join(_uri(pipeline_root, 'ClmTrainer', 'model'), contract.SERVING_MODEL_DIR)
  model = tf.saved_model.load(serving)
  texts = ['good film', 'the movie story really quite awful']
  pieces = graph.transform_features_layer()({contract.TEXT_KEY: tf.constant([[t] for t in texts])})
  lengths = tf.RaggedTensor.from_sparse(pieces[contract.LM_TOKEN_IDS_KEY]).row_lengths().numpy()
  # Every piece is scored (framed ids would score seq_len tokens for each text).
  out = model.signatures[contract.PREDICT_TEXT](text=tf.constant(texts))
  np.testing.assert_array_equal(out[contract.TOKEN_COUNT].numpy(), lengths)
