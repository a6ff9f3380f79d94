"""A new user's mistakes that the README's "What bad input gets" table lists: each kind gets one
short error from the earliest step that can know, naming what, where and what to do."""

import pytest
import yaml

from pipeline import config as config_lib
from pipeline import local_runner


def _config_file(tmp_path, **sections):
  data = tmp_path / 'data'
  data.mkdir(exist_ok=True)
  (data / 'reviews.csv').write_text('text,label\n"a good film",1\n')
  config = {
    'pipeline_name': 'badinput',
    'outputs_dir': str(tmp_path / 'outputs'),
    'data': {'format': 'csv', 'input_base': str(data)},
  }
  config.update(sections)
  path = tmp_path / 'config.yaml'
  path.write_text(yaml.safe_dump(config))
  return path


@pytest.mark.parametrize('text', ['', '\n\n', '# copied from the README\n', '---\n', 'null\n'])
def test_an_empty_config_file_is_refused_instead_of_running_the_demo(tmp_path, text):
  path = tmp_path / 'config.yaml'
  path.write_text(text)
  with pytest.raises(config_lib.ConfigError, match='is empty') as error:
    config_lib.load_config(str(path))
  assert str(path) in str(error.value) and 'pipeline/configs/' in str(error.value)


def test_an_input_base_that_is_a_file_names_it_and_says_to_give_its_folder(tmp_path):
  path = _config_file(tmp_path)
  csv = tmp_path / 'data' / 'reviews.csv'
  with pytest.raises(config_lib.ConfigError, match='is a file') as error:
    config_lib.load_config(str(path), [f'data.input_base={csv}'])
  assert str(csv) in str(error.value) and 'data.file_pattern' in str(error.value)


@pytest.mark.parametrize(
  'outputs, why',
  [
    ('a_file', 'it is a file, not a folder'),  # outputs_dir names an existing file
    ('a_file/outputs', 'Not a directory'),  # a file where a parent folder should be
  ],
)
def test_an_outputs_dir_that_cannot_be_written_is_one_line_before_tensorflow_loads(
  tmp_path, capsys, outputs, why
):
  (tmp_path / 'a_file').write_text('not a folder')
  path = _config_file(tmp_path, outputs_dir=str(tmp_path / outputs))
  assert local_runner.main(['--config', str(path)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith(f'error: {path}: outputs_dir: cannot write {tmp_path / outputs}')
  assert why in err and 'set outputs_dir to a folder you can write' in err


@pytest.mark.parametrize('pattern', ['/data/reviews/*.csv', '../other/*.csv', 'a/../../*.csv'])
def test_a_file_pattern_outside_the_input_folder_is_refused(tmp_path, pattern):
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='data.file_pattern: .* leaves data.input_base'):
    config_lib.load_config(str(path), [f'data.file_pattern={pattern}'])


def test_a_file_pattern_inside_the_input_folder_is_accepted(tmp_path):
  path = _config_file(tmp_path)
  config = config_lib.load_config(str(path), ['data.file_pattern=sub/reviews-*.csv'])
  assert config.data.file_pattern == 'sub/reviews-*.csv'
