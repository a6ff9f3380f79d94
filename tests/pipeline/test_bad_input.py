"""A new user's mistakes that the README's "What bad input gets" table lists: each kind gets one
short error from the earliest step that can know, naming what, where and what to do."""

import re

import pytest
import yaml

from pipeline import config as config_lib
from pipeline import local_runner
from tfxlm import tfx_cli


def _config_file(tmp_path, **sections):
  data = tmp_path / 'data'
  data.mkdir(exist_ok=True)
  (data / 'reviews.csv').write_text('text,label\n"a good film",1\n')
  config = {
    'pipeline_name': 'badinput',
    'outputs_dir': str(tmp_path / 'outputs'),
    'data': {'format': 'csv', 'input_base': str(data)},
    'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
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


@pytest.mark.parametrize('key', ['outputs_dir', 'serving.serving_root'])
def test_an_output_folder_that_is_a_file_is_refused_when_the_config_loads(tmp_path, key):
  (tmp_path / 'a_file').write_text('not a folder')
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match=f'{key}: .* is a file; give a folder'):
    config_lib.load_config(str(path), [f'{key}={tmp_path / "a_file"}'])


def test_an_outputs_dir_that_cannot_be_written_is_one_line(tmp_path, capsys):
  (tmp_path / 'a_file').write_text('not a folder')
  outputs = tmp_path / 'a_file' / 'outputs'  # a file where a parent folder should be
  path = _config_file(tmp_path, outputs_dir=str(outputs))
  assert local_runner.main(['--config', str(path)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith(f'error: {path}: outputs_dir: cannot write {outputs}: Not a directory')
  assert 'set outputs_dir to a folder you can write' in err


@pytest.mark.parametrize('pattern', ['/data/reviews/*.csv', '../other/*.csv', 'a/../../*.csv'])
def test_a_file_pattern_outside_the_input_folder_is_refused(tmp_path, pattern):
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='data.file_pattern: .* leaves data.input_base'):
    config_lib.load_config(str(path), [f'data.file_pattern={pattern}'])


def test_a_file_pattern_inside_the_input_folder_is_accepted(tmp_path):
  path = _config_file(tmp_path)
  config = config_lib.load_config(str(path), ['data.file_pattern=sub/reviews-*.csv'])
  assert config.data.file_pattern == 'sub/reviews-*.csv'


@pytest.mark.parametrize(
  'text, first, again',
  [
    ('train:\n  train_steps: 5\ntrain:\n  seq_len: 16\n', 1, 3),  # a section given twice
    ('train:\n  seq_len: 16\n  seq_len: 32\n', 2, 3),  # a key given twice in a section
  ],
)
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, text, first, again):
  path = tmp_path / 'config.yaml'
  path.write_text(text)
  with pytest.raises(config_lib.ConfigError, match=f'appears twice .*first on line {first}\\)'):
    config_lib.load_config(str(path))
  with pytest.raises(config_lib.ConfigError, match=re.escape(f'{path}", line {again},')):
    config_lib.load_config(str(path))


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
  path = tmp_path / 'config.yaml'
  path.write_text(
    'x-small: &small {num_layers: 1, hidden_dim: 16, num_heads: 2}\n'
    'train:\n  <<: *small\n  hidden_dim: 32\n'
  )
  with pytest.raises(config_lib.ConfigError, match="unknown key 'x-small'"):
    config_lib.load_config(str(path))  # parsed: the merge is no repeat; the anchor key is unknown


def test_a_config_that_is_not_utf8_or_is_a_folder_is_named(tmp_path):
  path = tmp_path / 'config.yaml'
  path.write_bytes('pipeline_name: café\n'.encode('latin-1'))
  with pytest.raises(config_lib.ConfigError, match='not UTF-8 text .*0xe9.*save it as UTF-8'):
    config_lib.load_config(str(path))
  with pytest.raises(config_lib.ConfigError, match='is a folder: give a YAML file'):
    config_lib.load_config(str(tmp_path))


def test_classifying_text_input_which_holds_no_labels_is_refused(tmp_path):
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='data.format is text, which holds no labels'):
    config_lib.load_config(str(path), ['data.format=text', 'train.task=classify'])
  config = config_lib.load_config(str(path), ['data.format=text', 'train.task=mlm'])
  assert config.data.format == 'text'


@pytest.mark.parametrize(
  'overrides',
  [
    ['data.text_column=review', 'data.label_column=review'],
    ['data.format=jsonl', 'data.jsonl_text_field=body', 'data.label_column=body'],
  ],
)
def test_a_label_column_that_is_the_text_column_is_refused(tmp_path, overrides):
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='data.label_column: .* is also the text column'):
    config_lib.load_config(str(path), overrides)


@pytest.mark.parametrize(
  'value, hint',
  [
    ('[0, 1]', "YAML reads 0 as a number: quote it, e.g. '0'"),
    ('[yes, no]', 'YAML reads yes, no, true, false, on and off as booleans: quote it'),
    ('[fresh, 1.5]', "YAML reads 1.5 as a number: quote it, e.g. '1.5'"),
  ],
)
def test_an_unquoted_number_or_boolean_where_a_string_goes_says_to_quote_it(tmp_path, value, hint):
  path = _config_file(tmp_path)
  with pytest.raises(config_lib.ConfigError, match=re.escape(hint)) as error:
    config_lib.load_config(str(path), [f'data.label_values={value}'])
  assert 'data.label_values[' in str(error.value)


@pytest.mark.parametrize(
  'key, value, message',
  [
    # YAML 1.1 reads 9:1 as the base-60 number 541.
    ('data.train_eval_ratio', '9:1', ": expected a list, got the text '9:1': write [9, 1]"),
    ('data.train_eval_ratio', '[9, 1.0]', '[1]: expected an integer, got the float 1.0: write 1'),
    # YAML 1.1 reads 1e4 as a string, which the config reads as the float users mean.
    (
      'train.train_steps',
      '1e4',
      ': expected an integer, got the float 1e4, read as 10000.0: write 10000',
    ),
    ('train.seq_len', '128.0', ': expected an integer, got the float 128.0: write 128'),
  ],
)
def test_a_number_yaml_misreads_says_what_was_read_and_what_to_write(tmp_path, key, value, message):
  path = _config_file(tmp_path, train={'task': 'classify'})
  section, field = key.split('.')
  path.write_text(path.read_text().replace(f'{section}:\n', f'{section}:\n  {field}: {value}\n'))
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(str(path))
  assert str(error.value) == f'{path}: {key}{message}'
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(str(_config_file(tmp_path)), [f'{key}={value}'])
  assert str(error.value) == f'--set {key}{message}'


def test_a_run_called_in_process_leaves_logging_as_it_found_it(tmp_path, capsys, monkeypatch):
  """`main` sets INFO logging into run.log for its run only: afterwards the caller's logging is
  as it was (no handler on the old run.log, the root level and absl's verbosity unchanged)."""
  import logging

  from absl import logging as absl_logging

  def build(config, pool=None):
    logging.getLogger('tfx').info('building %s', config.pipeline_name)
    raise ValueError('no pipeline today')

  monkeypatch.setattr(local_runner, 'build', build)
  root = logging.getLogger()
  before = (root.level, absl_logging.get_verbosity(), list(root.handlers))
  assert local_runner.main(['--config', str(_config_file(tmp_path))]) == 2
  assert 'no pipeline today' in capsys.readouterr().err
  log = tmp_path / 'outputs' / 'run.log'
  assert 'building badinput' in log.read_text()  # the run's INFO lines went to its log
  assert (root.level, absl_logging.get_verbosity(), list(root.handlers)) == before
  assert not any(
    isinstance(f, local_runner._ProgressFilter) for h in root.handlers for f in h.filters
  )
  logging.getLogger('tfx').warning('after the run')
  assert 'after the run' not in log.read_text()


@pytest.mark.parametrize(
  'sections, key',
  [
    ({'train': {'task': 'classify', 'eval_steps': 1}}, 'train.train_steps'),
    ({'train': {'task': 'classify', 'train_steps': None, 'eval_steps': 1}}, 'train.train_steps'),
    ({'train': {'task': 'classify', 'train_steps': 2}}, 'train.eval_steps'),
    ({'pretrain': {'task': 'mlm', 'eval_steps': 1}}, 'pretrain.train_steps'),
    ({'pretrain': {'task': 'mlm', 'train_steps': 2, 'eval_steps': None}}, 'pretrain.eval_steps'),
    ({'distill': {'student': {'task': 'classify', 'seq_len': 128}}}, 'distill.student.train_steps'),
  ],
)
def test_a_training_stage_without_its_step_counts_is_refused_before_anything_runs(
  tmp_path, capsys, sections, key
):
  # They are its Trainer's TrainArgs and EvalArgs: without them, it failed after ExampleGen and
  # Transform ran.
  path = _config_file(tmp_path, **sections)
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(str(path))
  assert str(error.value) == f'{path}: {key}: required, a positive integer'
  assert local_runner.main(['--config', str(path)]) == 2
  assert capsys.readouterr().err.strip() == f'error: {path}: {key}: required, a positive integer'
  assert not (tmp_path / 'outputs' / 'root').exists()


@pytest.mark.parametrize(
  'argv, name',
  [
    (['tfx', 'run', 'create', '--engine', 'local', '--pipeline_name', 'probe-cli'], 'probe-cli'),
    (['tfx', 'run', 'create', '--pipeline-name=probe-cli', '--engine', 'local'], 'probe-cli'),
    (['tfx', 'pipeline', 'create', '--pipeline_path', 'pipeline/local_runner.py'], None),
    (['tfx', 'run', 'list', '--pipeline_name', 'probe-cli'], None),
  ],
)
def test_the_tfx_cli_notes_the_pipeline_run_create_asks_for(argv, name):
  environ = {tfx_cli.PIPELINE_ENV: 'stale'}
  tfx_cli.note_requested_pipeline(argv, environ)
  assert environ.get(tfx_cli.PIPELINE_ENV) == name


def test_a_tfx_run_of_another_pipeline_than_the_configs_is_refused_and_its_log_kept(
  tmp_path, capsys, monkeypatch
):
  # `tfx run create --pipeline_name probe-cli` without TFXLM_CONFIG used to run the demo.
  path = _config_file(tmp_path)
  log = tmp_path / 'outputs' / 'run.log'
  log.parent.mkdir()
  log.write_text('the last run of badinput\n')

  def build(config, pool=None):
    raise ValueError(f'building {config.pipeline_name}')

  monkeypatch.setattr(local_runner, 'build', build)  # nothing runs, whatever the outcome
  monkeypatch.setenv(tfx_cli.PIPELINE_ENV, 'probe-cli')
  assert local_runner.main(['--config', str(path)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith(
    f"error: tfx asked for pipeline 'probe-cli', but the config {path} is pipeline 'badinput'"
  )
  assert err.endswith(
    'TFXLM_CONFIG=path/to/config.yaml tfx run create --engine local --pipeline_name probe-cli'
  )
  assert log.read_text() == 'the last run of badinput\n'
  monkeypatch.setenv(tfx_cli.PIPELINE_ENV, 'badinput')  # the pipeline asked for: it is built
  assert local_runner.main(['--config', str(path)]) == 2
  assert 'building badinput' in capsys.readouterr().err
