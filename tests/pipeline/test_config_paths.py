"""The config's path keys: `~` and `$NAME` expanded, and the same words for a path they cannot use."""

import os
import shutil

import pytest

from pipeline import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELED = os.path.join(REPO, 'schemas', 'labeled')
STEPS = ['train.train_steps=2', 'train.eval_steps=1']


@pytest.fixture
def data(tmp_path):
  folder = tmp_path / 'data'
  folder.mkdir()
  (folder / 'reviews.csv').write_text('text,label\ngood,1\n')
  return folder


def _write(tmp_path, text):
  path = tmp_path / 'c.yaml'
  path.write_text(text)
  return str(path)


def test_a_demo_copied_out_of_its_folder_names_the_projects_schema_folder(tmp_path):
  copy = tmp_path / 'my_config.yaml'
  shutil.copy(os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml'), copy)
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(str(copy))
  message = str(error.value)
  assert message.startswith(f'{copy}: data.schema_dir: folder ') and 'does not exist' in message
  assert f"(relative to the config file's folder, {tmp_path})" in message
  assert os.path.join(REPO, 'schemas', 'rotten_tomatoes') in message
  assert 'has no schema.pbtxt' not in message


def test_a_schema_dir_that_is_a_file_or_lacks_the_schema_says_so(tmp_path, data):
  path = _write(tmp_path, f'data: {{input_base: {data}}}\n')
  schema = os.path.join(LABELED, 'schema.pbtxt')
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"^--set data.schema_dir: '{schema}' is a file; give the folder that holds it "
    rf"\('{LABELED}'\)$",
  ):
    config_lib.load_config(path, [*STEPS, f'data.schema_dir={schema}'])
  with pytest.raises(
    config_lib.ConfigError, match=rf"^--set data.schema_dir: folder '{data}' has no schema.pbtxt"
  ):
    config_lib.load_config(path, [*STEPS, f'data.schema_dir={data}'])


@pytest.mark.parametrize('key', ['base_model', 'data.input_base'])
def test_a_folder_key_given_a_file_says_it_is_a_file(tmp_path, data, key):
  path = _write(tmp_path, f'data: {{input_base: {data}}}\n')
  csv = data / 'reviews.csv'
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"^--set {key}: '{csv}' is a file; give the folder that holds it \('{data}'\)",
  ):
    config_lib.load_config(path, [*STEPS, f'{key}={csv}'])


def test_tilde_and_variables_are_expanded_in_the_file_and_in_a_set(tmp_path, data, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setenv('TFXLM_TEST_DATA', str(data))
  path = _write(
    tmp_path,
    'data: {input_base: ~/data}\noutputs_dir: ${TFXLM_TEST_DATA}/../out\n'
    'train: {train_steps: 2, eval_steps: 1}\n',
  )
  config = config_lib.load_config(path)
  assert config.data.input_base == str(data)
  assert config.resolved_outputs_dir == str(tmp_path / 'out')
  config = config_lib.load_config(path, ['data.input_base=$TFXLM_TEST_DATA', 'base_model=~/data'])
  assert config.data.input_base == str(data) and config.base_model == str(data)


def test_an_unset_variable_in_a_path_is_refused_naming_the_key_and_variable(tmp_path, monkeypatch):
  monkeypatch.delenv('TFXLM_NOT_SET', raising=False)
  path = _write(tmp_path, 'data: {input_base: $TFXLM_NOT_SET/data}\n')
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"^{path}: data.input_base: '\$TFXLM_NOT_SET/data' names the environment variable "
    'TFXLM_NOT_SET, which is not set',
  ):
    config_lib.load_config(path)
  with pytest.raises(config_lib.ConfigError, match=r'^--set outputs_dir: .* TFXLM_NOT_SET,'):
    config_lib.load_config(_write(tmp_path, '{}\n'), ['outputs_dir=${TFXLM_NOT_SET}'])


def test_uris_are_left_as_written(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  config = config_lib.load_config(
    _write(tmp_path, '{}\n'), [*STEPS, 'serving.serving_root=gs://b/$X/~serving']
  )
  assert config.serving.serving_root == 'gs://b/$X/~serving'


def test_a_serving_root_that_cannot_be_written_is_named_before_the_run(tmp_path):
  from pipeline import config_checks

  (tmp_path / 'afile').write_text('')
  for root in (str(tmp_path / 'afile' / 'sub'), '/proc/no_such_folder'):
    problem = config_checks.serving_root_problem(root)
    assert problem.startswith(f'serving.serving_root: cannot write in {root}: '), problem
    assert problem.endswith('set serving.serving_root to a folder you can write')
  assert config_checks.serving_root_problem(str(tmp_path / 'new' / 'serving')) == ''
  assert (tmp_path / 'new' / 'serving').is_dir()
  assert config_checks.serving_root_problem('gs://bucket/serving') == ''
