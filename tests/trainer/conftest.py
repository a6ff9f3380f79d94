"""Session fixtures: real Transform outputs (one per task) that the trainer tests share."""

import pytest

from tests.trainer import trainer_data

SEQ_LEN = 16


@pytest.fixture(scope='session')
def classify_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('classify_data'))
  return trainer_data.transform_data(
    root,
    'classify',
    trainer_data.labeled_texts(600, 1),
    trainer_data.labeled_texts(128, 2),
    SEQ_LEN,
  )


@pytest.fixture(scope='session')
def mlm_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('mlm_data'))
  return trainer_data.transform_data(
    root, 'mlm', trainer_data.corpus_texts(400, 1), trainer_data.corpus_texts(80, 2), SEQ_LEN
  )


@pytest.fixture(scope='session')
def clm_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('clm_data'))
  return trainer_data.transform_data(
    root, 'clm', trainer_data.corpus_texts(400, 1), trainer_data.corpus_texts(80, 2), SEQ_LEN
  )
