"""The serving export's cost: each signature's graph is traced once, and saving adds no trace."""

import pytest
import tensorflow as tf
import tensorflow_transform as tft

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
  assert set(served) == expected | ({contract.GENERATE} if task == contract.CLM else set())
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
