"""Which files an input pattern reads, and the warnings of what it leaves out beside them."""

import json
import logging
import os
import re

import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_component_specs

from components import example_gen, file_selection
from pipeline import local_runner, summary
from tests.components import text_data
from tfxlm import contract

CSV = 'text,label\n"a good film",1\n'
DEFAULT = '*.csv*'  # the csv format's default pattern


@pytest.fixture
def probe_folder(tmp_path):
  """The folder of a new user's probe: two CSV files read, and what lies beside them."""
  for name in ('reviews.csv', 'z.csv.gz', 'notes.CSV', 'backup.csv.bak', 'readme.txt', 'x.jsonl'):
    (tmp_path / name).write_text(CSV)
  (tmp_path / '.DS_Store').write_bytes(b'\0')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'more.csv').write_text(CSV)
  return tmp_path


def _logged(caplog, level):
  return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_every_entry_left_out_beside_the_input_files_is_warned_with_what_to_do(
  probe_folder, caplog
):
  with caplog.at_level(logging.INFO, logger='absl'):
    files = file_selection.input_files(str(probe_folder / DEFAULT))
  assert files == [str(probe_folder / 'reviews.csv'), str(probe_folder / 'z.csv.gz')]
  warned = _logged(caplog, logging.WARNING)
  assert len(warned) == 4, warned  # one line per kind; .DS_Store is not one
  prefix = f'input: 1 folder in {probe_folder} left out (sub): sub-folders are not read'
  (folder,) = [w for w in warned if w.startswith(prefix)]
  assert "data.file_pattern to 'sub/*.csv*'" in folder
  (case,) = [w for w in warned if '(notes.CSV)' in w]
  assert "the extension's case differs from '*.csv*'" in case and "'*.CSV*'" in case
  (backup,) = [w for w in warned if '(backup.csv.bak)' in w]
  assert 'not .csv files' in backup
  (other,) = [w for w in warned if 'left out (readme.txt, x.jsonl)' in w]
  assert other.startswith('input: 2 files in ') and 'data.format or data.file_pattern' in other
  assert not any('.DS_Store' in w for w in warned)


def test_a_compression_suffix_whose_case_differs_is_left_out_as_such(tmp_path, caplog):
  for name in ('a.csv', 'b.csv.GZ'):
    (tmp_path / name).write_text(CSV)
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert file_selection.input_files(str(tmp_path / DEFAULT)) == [str(tmp_path / 'a.csv')]
  (warned,) = _logged(caplog, logging.WARNING)
  assert '(b.csv.GZ)' in warned and "extension's case differs" in warned


def test_a_folder_of_many_left_out_files_gets_one_line_with_a_count(tmp_path, caplog):
  (tmp_path / 'a.csv').write_text(CSV)
  for i in range(50):
    (tmp_path / f'n{i:02}.txt').write_text('x')
  with caplog.at_level(logging.WARNING, logger='absl'):
    file_selection.input_files(str(tmp_path / DEFAULT))
  (warned,) = _logged(caplog, logging.WARNING)
  assert warned.startswith(
    f'input: 50 files in {tmp_path} left out (n00.txt, n01.txt, n02.txt, ...)'
  )


def test_under_a_pattern_of_the_users_own_other_files_are_info_not_warnings(tmp_path, caplog):
  for name in ('train-1.csv', 'test-1.csv'):
    (tmp_path / name).write_text(CSV)
  with caplog.at_level(logging.INFO, logger='absl'):
    assert file_selection.input_files(str(tmp_path / 'train-*.csv')) == [
      str(tmp_path / 'train-1.csv')
    ]
  assert not _logged(caplog, logging.WARNING)
  assert any('(test-1.csv)' in m for m in _logged(caplog, logging.INFO))


def test_a_split_folders_own_sub_folders_are_warned_not_its_siblings(tmp_path, caplog):
  for split in ('train', 'eval'):
    (tmp_path / split).mkdir()
    (tmp_path / split / 'a.csv').write_text(CSV)
  (tmp_path / 'train' / 'old').mkdir()
  with caplog.at_level(logging.WARNING, logger='absl'):
    file_selection.input_files(str(tmp_path / 'train' / DEFAULT))
  (warned,) = _logged(caplog, logging.WARNING)
  assert warned.startswith(f'input: 1 folder in {tmp_path / "train"} left out (old)')


def test_the_left_out_warnings_reach_the_run_summary(probe_folder):
  collector = local_runner.WarningCollector(lambda: contract.EXAMPLE_GEN_ID)
  absl_logger = logging.getLogger('absl')
  absl_logger.addHandler(collector)
  try:
    file_selection.input_files(str(probe_folder / DEFAULT))
  finally:
    absl_logger.removeHandler(collector)
  assert len(collector.messages) == 4
  assert any('left out (notes.CSV)' in m for m in collector.messages)


def test_the_files_read_are_logged_with_their_count_and_first_names(probe_folder, caplog):
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: str(probe_folder),
    example_gen.INPUT_FORMAT_KEY: 'csv',
    example_gen.TEXT_COLUMN_KEY: 'text',
    example_gen.LABEL_COLUMN_KEY: 'label',
  }
  with text_data.local_pipeline() as pipeline, caplog.at_level(logging.INFO, logger='absl'):
    _ = pipeline | example_gen.ReadTextExamples(
      exec_properties, DEFAULT, [('train', 2), ('eval', 1)]
    )
  pattern = os.path.join(str(probe_folder), DEFAULT)
  assert (
    f'input: reading 2 csv file(s) matching {pattern} (hash-split into train, eval): '
    'reviews.csv, z.csv.gz'
  ) in _logged(caplog, logging.INFO)


def test_the_files_read_are_recorded_for_summary_json(tmp_path):
  for split in ('train', 'eval'):
    (tmp_path / split).mkdir()
    (tmp_path / split / 'a.csv').write_text(CSV)
    (tmp_path / split / 'a.csv.bak').write_text(CSV)
  recorded = file_selection.recorded(str(tmp_path), ['train/*.csv*', 'eval/*.csv*'])
  expected = {'count': 2, 'files': ['train/a.csv', 'eval/a.csv']}
  assert json.loads(recorded) == expected
  artifact = metadata_store_pb2.Artifact()
  artifact.custom_properties[contract.INPUT_FILES_PROPERTY].string_value = recorded
  assert summary.input_files(artifact) == expected
  assert summary.input_files(None) == {}


@pytest.mark.parametrize('folder', ['wr[1]', 'a*b', 'q?', 'x[!]]'])
def test_input_base_is_a_folder_as_written_never_a_pattern(tmp_path, folder, caplog):
  (tmp_path / folder).mkdir()
  (tmp_path / folder / 'a.csv').write_text(CSV)
  (tmp_path / folder / 'b [1].csv').write_text(CSV)  # glob characters in a file name too
  (tmp_path / folder / 'c?.txt').write_text(CSV)
  for look_alike in ('wr1', 'ab', 'axb', 'qq', 'x]'):  # what the name would match as a glob
    (tmp_path / look_alike).mkdir()
    (tmp_path / look_alike / 'other.csv').write_text(CSV)
  base = str(tmp_path / folder)
  component = example_gen.create_example_gen('csv', base, label_column='label')
  base_glob = component.exec_properties[standard_component_specs.INPUT_BASE_KEY]
  read = [os.path.join(base, 'a.csv'), os.path.join(base, 'b [1].csv')]
  # What TFX fingerprints (the escaped input_base joined to the split's pattern) is what is read.
  assert sorted(tf.io.gfile.glob(os.path.join(base_glob, DEFAULT))) == read
  with caplog.at_level(logging.INFO, logger='absl'):
    assert file_selection.input_files(os.path.join(base_glob, DEFAULT)) == read
  assert any(f'in {base} left out (c?.txt)' in w for w in _logged(caplog, logging.WARNING))
  recorded = file_selection.recorded(base_glob, [DEFAULT])
  assert json.loads(recorded)['files'] == ['a.csv', 'b [1].csv']
  described = file_selection.describe_files(os.path.join(base_glob, DEFAULT))
  assert described.startswith(f'{base}/{DEFAULT} (2 file(s)')


def test_an_empty_folder_with_glob_characters_is_named_as_written(tmp_path):
  folder = tmp_path / 'd [1]'
  folder.mkdir()
  (folder / 'notes.txt').write_text(CSV)
  exec_properties = {
    standard_component_specs.INPUT_BASE_KEY: file_selection.escape(str(folder)),
    example_gen.INPUT_FORMAT_KEY: 'csv',
    example_gen.TEXT_COLUMN_KEY: 'text',
    example_gen.LABEL_COLUMN_KEY: 'label',
  }
  with (
    text_data.local_pipeline() as pipeline,
    pytest.raises(ValueError, match=re.escape(f"match '{folder}/*.csv*'") + '.*holds notes.txt'),
  ):
    _ = pipeline | example_gen.ReadTextExamples(exec_properties, DEFAULT)


def test_macos_metadata_files_are_left_out_as_such(tmp_path, caplog):
  for name in ('a.csv', '._a.csv', '.~lock.a.csv#'):
    (tmp_path / name).write_text(CSV)
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert file_selection.input_files(str(tmp_path / DEFAULT)) == [str(tmp_path / 'a.csv')]
  (macos,) = [w for w in _logged(caplog, logging.WARNING) if '._a.csv' in w]
  assert macos == (
    f"input: 1 file in {tmp_path} left out (._a.csv): macOS metadata (AppleDouble '._' files a "
    'copy from a Mac leaves), not data: delete them (dot_clean, or rm ._*)'
  )
  (lock,) = [w for w in _logged(caplog, logging.WARNING) if '.~lock' in w]
  assert "an editor's lock or swap file?" in lock
