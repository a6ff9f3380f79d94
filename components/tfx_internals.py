"""Every private name of TFX that the project relies on, and only here (written for TFX 1.21).

TFX offers no public hook for what these do; each is wrapped in a public name of this module so
that a TFX upgrade breaks in one place, and `tests/components/test_tfx_internals.py` names the
missing piece and the version this was written for.

- Transform: the column carrying each example's key (never written), the step that encodes and
  writes transformed examples, the list of datasets and the TFXIO it reads each with, and the
  module-level `TransformProcessor` its executor instantiates.
- Beam executors: the Beam arguments an executor was given.
- The portable launcher: the call that runs a component's executor (benches time it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tfx
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import base_beam_executor
from tfx.orchestration.portable import launcher
from tfx_bsl.tfxio import tfxio

WRITTEN_FOR_TFX = '1.21'


def _private(owner: Any, name: str) -> Any:
  """`owner.name`; ImportError naming it and the TFX versions if this TFX has no such name."""
  try:
    return getattr(owner, name)
  except AttributeError:
    raise ImportError(
      f'{getattr(owner, "__name__", type(owner).__name__)}.{name} does not exist in TFX '
      f'{tfx.__version__}: components/tfx_internals.py was written for TFX {WRITTEN_FOR_TFX}; '
      'adapt it to this version (or install the version in requirements.lock)'
    ) from None


# The private names used here: (owner, name), each checked by `check()`.
PRIVATE_NAMES = (
  (transform_executor, '_TRANSFORM_INTERNAL_FEATURE_FOR_KEY'),
  (transform_executor, '_FilterInternalColumn'),
  (transform_executor.TransformProcessor, '_EncodeAndWrite'),
  (transform_executor.TransformProcessor, '_MakeDatasetList'),
  (transform_executor.TransformProcessor, '_CreateTFXIO'),
  (launcher.Launcher, '_run_executor'),
)


def check() -> None:
  """Raises ImportError naming the first private name this TFX no longer has."""
  for owner, name in PRIVATE_NAMES:
    _private(owner, name)
  probe = type('Probe', (base_beam_executor.BaseBeamExecutor,), {'Do': lambda *_: None})
  _private(probe(), '_beam_pipeline_args')


# The column in which TFX's Transform carries each example's key.
TRANSFORM_KEY_COLUMN: str = _private(transform_executor, '_TRANSFORM_INTERNAL_FEATURE_FOR_KEY')


def without_key_column(record_batch: pa.RecordBatch) -> pa.RecordBatch:
  """`record_batch` without Transform's key column (as TFX leaves it out when it writes)."""
  names = record_batch.schema.names
  if TRANSFORM_KEY_COLUMN not in names:
    return record_batch
  return transform_executor._FilterInternalColumn(record_batch, names.index(TRANSFORM_KEY_COLUMN))


class TransformProcessor(transform_executor.TransformProcessor):
  """TFX's TransformProcessor with three of its private steps as public hooks.

  Subclasses override the hooks; `running(processor)` has the stock executor use one.
  """

  def encode_and_write(self, schema: Any, file_format: Any, output_path: str) -> beam.PTransform:
    """The PTransform that writes a dataset's transformed (RecordBatch, ...) pairs; the
    stock one unless overridden. `file_format` is the input's."""
    return super()._EncodeAndWrite(schema=schema, file_format=file_format, output_path=output_path)

  def made_datasets(self, datasets: list[Any], materialized: bool) -> None:
    """Called with each list of datasets the processor makes; `materialized`: these are the
    datasets it transforms and writes (otherwise, the ones it analyzes)."""

  def tfxio_for(self, dataset: Any, source: tfxio.TFXIO) -> tfxio.TFXIO:
    """The TFXIO to read `dataset` with, given the stock one."""
    return source

  # The private steps, each forwarding to its hook.
  def _EncodeAndWrite(  # noqa: N802 (TFX's name)
    self, schema: Any, file_format: Any, output_path: str
  ) -> beam.PTransform:
    return self.encode_and_write(schema, file_format, output_path)

  def _MakeDatasetList(  # noqa: N802 (TFX's name)
    self,
    file_patterns: Sequence[Any],
    file_formats: Sequence[Any],
    data_format: int,
    data_view_uri: str | None,
    can_process_jointly: bool,
    stats_output_paths: Sequence[str] | None = None,
    materialize_output_paths: Sequence[str] | None = None,
  ) -> list[Any]:
    datasets = super()._MakeDatasetList(
      file_patterns,
      file_formats,
      data_format,
      data_view_uri,
      can_process_jointly,
      stats_output_paths,
      materialize_output_paths,
    )
    self.made_datasets(datasets, materialized=bool(materialize_output_paths))
    return datasets

  def _CreateTFXIO(self, dataset: Any, schema: Any) -> tfxio.TFXIO:  # noqa: N802 (TFX's name)
    return self.tfxio_for(dataset, super()._CreateTFXIO(dataset, schema))


@contextlib.contextmanager
def running(processor: type[TransformProcessor]) -> Iterator[None]:
  """Has TFX's Transform executor run `processor`, for the duration of the block: its `Do`
  instantiates `TransformProcessor` by its module-level name."""
  stock = transform_executor.TransformProcessor
  transform_executor.TransformProcessor = processor
  try:
    yield
  finally:
    transform_executor.TransformProcessor = stock


def beam_args(executor: base_beam_executor.BaseBeamExecutor) -> list[str]:
  """The Beam arguments a Beam executor runs its pipelines with."""
  return list(executor._beam_pipeline_args)


def set_beam_args(executor: base_beam_executor.BaseBeamExecutor, args: Sequence[str]) -> None:
  """Replaces the Beam arguments a Beam executor runs its pipelines with."""
  executor._beam_pipeline_args = list(args)


@contextlib.contextmanager
def around_each_executor(wrapper: Callable[[str, Callable[[], Any]], Any]) -> Iterator[None]:
  """Runs every component executor the portable launcher starts in the block as
  `wrapper(node_id, run)`, where `run()` runs it and returns its result."""
  stock = launcher.Launcher._run_executor

  def run_executor(self, *args: Any, **kwargs: Any) -> Any:
    return wrapper(self._pipeline_node.node_info.id, lambda: stock(self, *args, **kwargs))

  launcher.Launcher._run_executor = run_executor
  try:
    yield
  finally:
    launcher.Launcher._run_executor = stock
