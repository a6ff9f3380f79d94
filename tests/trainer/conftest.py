"""Session fixtures: real Transform outputs (one per task) that the trainer tests share, built
once per session whichever worker asks first (`trainer_data.shared_transform_data`)."""

import pytest

from tests.trainer import trainer_data


@pytest.fixture(scope='session')
def classify_data(tmp_path_factory):
  return trainer_data.classify_data(tmp_path_factory)


@pytest.fixture(scope='session')
def mlm_data(tmp_path_factory):
  return trainer_data.mlm_data(tmp_path_factory)


@pytest.fixture(scope='session')
def clm_data(tmp_path_factory):
  return trainer_data.clm_data(tmp_path_factory)
