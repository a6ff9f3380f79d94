"""Compression through the whole pipeline: a quantized model and a distilled student each are
evaluated by TFMA, blessed, pushed and answer over gRPC; the summary sets their accuracy next to
the float model's."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from pipeline import local_runner
from serving.config import ModelConfig
from tests.pipeline import tiny_pipeline
from tests.pipeline.test_pipeline_e2e import _write_csv
from tests.serving.conftest import start_server
from tfxlm import contract
from trainer.compression_config import FLOAT_COPY_DIR

TEXTS = ['a great and happy film', 'an awful and sad movie']
TRAIN = {
  'per_replica_batch_size': 16,
  'train_steps': 60,
  'eval_steps': 2,
  'eval_every_steps': 30,
  'log_every_steps': 10,
  'checkpoint_every_steps': 30,
  'learning_rate': 3e-3,
  'warmup_steps': 5,
}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('compression_data')
  _write_csv(folder / 'reviews.csv', rows=300)
  return folder


def _run(tmp, data, name, **sections):
  config = tiny_pipeline.classify_config(name, tmp / 'outputs', data, **TRAIN)
  config['evaluation'] = tiny_pipeline.BLESS_EVERY_MODEL
  config.update(sections)
  path = tiny_pipeline.write(tmp / 'config.yaml', config)
  assert local_runner.main(['--config', str(path)]) == 0
  with open(tmp / 'outputs' / contract.SUMMARY_FILE) as f:
    return json.load(f)


def _grpc_labels(pushed, name):
  base = os.path.dirname(os.path.dirname(pushed))
  running = start_server(base, [ModelConfig(name, os.path.join(base, name))], poll_wait_seconds=0)
  try:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = contract.PREDICT_TEXT
    request.inputs[contract.TEXT_INPUT].CopyFrom(tf.make_tensor_proto(TEXTS))
    response = running.predictions.Predict(request, timeout=60)
    return [v.decode() for v in tf.make_ndarray(response.outputs[contract.LABELS])]
  finally:
    running.close()


# Two more whole pipelines: test_pipeline_e2e.py runs the product in the default suite already.
@pytest.mark.slow
def test_a_quantized_model_is_evaluated_as_shipped_pushed_and_served(tmp_path, data):
  run = _run(tmp_path, data, 'quantized', export={'quantize': 'int8_weights'})
  assert run['blessed'] is True
  pushed = run['pushed_path']
  assert os.path.isfile(os.path.join(pushed, contract.EXTRA_DIR, contract.EXPORT_CONFIG_FILE))
  compression = run['compression']
  assert compression['quantize'] == 'int8_weights'
  # TFMA scored the int8 export; the float model's accuracy sits beside it.
  assert abs(compression['float_accuracy'] - run['metrics']['sparse_categorical_accuracy']) < 0.1
  in_process = tf.saved_model.load(pushed).signatures[contract.PREDICT_TEXT]
  want = [v.decode() for v in in_process(text=tf.constant(TEXTS))[contract.LABELS].numpy()]
  assert _grpc_labels(pushed, 'quantized') == want


@pytest.mark.slow
def test_a_distilled_student_is_its_own_evaluated_blessed_and_pushed_model(tmp_path, data):
  student = {**tiny_pipeline.TINY_CLASSIFIER, **TRAIN, 'hidden_dim': 16, 'train_steps': 60}
  run = _run(
    tmp_path,
    data,
    'teacher',
    distill={'student': student, 'model_name': 'student', 'options': {'temperature': 2.0}},
  )
  assert run['blessed'] is True and run['pushed_path']
  distilled = run['compression']['student']
  assert distilled['blessed'] is True
  assert distilled['pushed_path'].startswith(str(tmp_path / 'outputs' / 'serving' / 'student'))
  assert distilled['accuracy'] is not None
  # The teacher's own figures are still the main model's, not the student's.
  assert run['pushed_path'].startswith(str(tmp_path / 'outputs' / 'serving' / 'teacher'))
  labels = _grpc_labels(distilled['pushed_path'], 'student')
  assert len(labels) == 2 and np.all([label in ('0', '1') for label in labels])


@pytest.mark.slow
def test_a_quantized_model_and_a_student_distilled_from_it_in_one_run(tmp_path, data):
  # make demo-compress in small: the train model is pushed quantized, its float copy (never
  # pushed) teaches the student, and both answer over gRPC.
  student = {**tiny_pipeline.TINY_CLASSIFIER, **TRAIN, 'hidden_dim': 16, 'train_steps': 60}
  run = _run(
    tmp_path,
    data,
    'teacher',
    export={'quantize': 'int8_weights'},
    distill={'student': student, 'model_name': 'student'},
  )
  assert run['blessed'] is True and run['compression']['quantize'] == 'int8_weights'
  pushed = run['pushed_path']
  assert os.path.isfile(os.path.join(pushed, contract.EXTRA_DIR, contract.EXPORT_CONFIG_FILE))
  assert not os.path.exists(os.path.join(pushed, contract.EXTRA_DIR, contract.PRESET_DIR))
  serving = tmp_path / 'outputs' / 'serving'
  assert not [p for p in serving.rglob('*') if FLOAT_COPY_DIR in p.name]
  distilled = run['compression']['student']
  assert distilled['blessed'] is True and distilled['pushed_path']
  assert len(_grpc_labels(pushed, 'teacher')) == 2
  assert len(_grpc_labels(distilled['pushed_path'], 'student')) == 2
