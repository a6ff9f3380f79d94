"""The serving export's cost: each signature's graph is traced once, and saving adds no trace."""

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import export
from trainer import task as task_lib
from trainer.config import TrainerConfig


@pytest.mark.parametrize('task', [contract.CLASSIFY, contract.CLM])
def test_serving_default_and_predict_text_share_one_trace_of_the_model(
  task, classify_data, clm_data, tmp_path
):
  data = classify_data if task == contract.CLASSIFY else clm_data
  config = TrainerConfig.from_dict(trainer_data.tiny_config(task))
  tft_output = tft.TFTransformOutput(data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, task)
  model = task_lib.build_task_model(config, vocabularies)
  traces = []
  call = model.call
  model.call = lambda *args, **kwargs: traces.append(1) or call(*args, **kwargs)
  export.export_saved_model(
    model,
    tft_output,
    config,
    vocabularies.tokens,
    vocabularies.labels,
    str(tmp_path),
    kind=vocabularies.kind,
    special=vocabularies.special,
  )
  # Python runs a model's call only while a graph is traced: once for both signatures, and
  # not again while saving (the clm `generate` signature runs the backbone's layers itself).
  assert len(traces) == 1
  served = tf.saved_model.load(str(tmp_path)).signatures
  expected = {contract.SERVING_DEFAULT, contract.PREDICT_TEXT, contract.TRANSFORM_FEATURES}
  expected.add(contract.CLASSIFICATION if task == contract.CLASSIFY else contract.GENERATE)
  assert set(served) == expected
  texts = tf.constant(['good film', 'the plot'])
  examples = tf.constant(
    [
      tf.train.Example(
        features=tf.train.Features(
          feature={contract.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t]))}
        )
      ).SerializeToString()
      for t in (b'good film', b'the plot')
    ]
  )
  from_text = served[contract.PREDICT_TEXT](text=texts)
  from_examples = served[contract.SERVING_DEFAULT](examples=examples)
  assert from_text.keys() == from_examples.keys()
  for key, value in from_text.items():
    assert (value.numpy() == from_examples[key].numpy()).all(), key
  if task == contract.CLASSIFY:
    classified = served[contract.CLASSIFICATION](inputs=examples)
    assert (
      classified[contract.SCORES].numpy() == from_examples[contract.PROBABILITIES].numpy()
    ).all()
    labels = [label.encode() for label in vocabularies.labels]
    assert classified[contract.CLASSES].numpy().tolist() == [labels, labels]


def _signature_defs(export_dir):
  saved_model = saved_model_pb2.SavedModel()
  saved_model.ParseFromString((export_dir / 'saved_model.pb').read_bytes())
  return saved_model.meta_graphs[0].signature_def


def test_classifier_export_has_a_signature_tf_serving_can_classify_with(classify_data, tmp_path):
  """TF Serving's Classify runs a signature only if its method_name is the classify one, its one
  input `inputs` and its outputs `classes` (string) and/or `scores` (float): as
  tensorflow_serving/servables/tensorflow/classifier.cc checks them. Saving writes the predict
  method_name; the export sets it, and writes the fingerprint of the changed file again."""
  config = TrainerConfig.from_dict(trainer_data.tiny_config(contract.CLASSIFY))
  tft_output = tft.TFTransformOutput(classify_data['transform_graph'])
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  model = task_lib.build_task_model(config, vocabularies)
  export.export_saved_model(
    model, tft_output, config, vocabularies.tokens, vocabularies.labels, str(tmp_path)
  )
  signatures = _signature_defs(tmp_path)
  classification = signatures[contract.CLASSIFICATION]
  assert classification.method_name == 'tensorflow/serving/classify'
  assert list(classification.inputs) == ['inputs']
  assert classification.inputs['inputs'].dtype == tf.string.as_datatype_enum
  assert {k: v.dtype for k, v in classification.outputs.items()} == {
    'classes': tf.string.as_datatype_enum,
    'scores': tf.float32.as_datatype_enum,
  }
  # The other signatures keep the predict method (TFMA and Predict clients read them).
  for name in (contract.SERVING_DEFAULT, contract.PREDICT_TEXT, contract.TRANSFORM_FEATURES):
    assert signatures[name].method_name == 'tensorflow/serving/predict'
  # The fingerprint's checksum is that of the saved_model.pb on disk.
  written = tf.saved_model.experimental.read_fingerprint(str(tmp_path))
  (tmp_path / 'fingerprint.pb').unlink()
  fingerprinting_utils.write_fingerprint(str(tmp_path))
  fresh = tf.saved_model.experimental.read_fingerprint(str(tmp_path))
  assert written.saved_model_checksum == fresh.saved_model_checksum
  assert not list(tmp_path.glob('*.partial'))
