"""The private TFX names the project relies on (components/tfx_internals.py) still exist, with
the signatures its hooks forward, in the installed TFX."""

import inspect
import types

import pyarrow as pa
import pytest
from tfx.components.transform import executor as transform_executor

from components import tfx_internals


def test_every_private_name_exists_in_the_installed_tfx():
  tfx_internals.check()


def test_a_missing_name_is_named_with_the_version_it_was_written_for():
  gone = types.SimpleNamespace(__name__='gone_module')
  with pytest.raises(ImportError, match=r'gone_module\._Name does not exist in TFX .*written for'):
    tfx_internals._private(gone, '_Name')


@pytest.mark.parametrize('name', ['_EncodeAndWrite', '_MakeDatasetList', '_CreateTFXIO'])
def test_the_forwarded_steps_keep_the_stock_parameters(name):
  # The hooks forward these calls: a renamed or added parameter in TFX would be dropped or
  # misplaced silently.
  stock = inspect.signature(getattr(transform_executor.TransformProcessor, name))
  ours = inspect.signature(getattr(tfx_internals.TransformProcessor, name))
  stock_names = [p for p in stock.parameters if p != 'pcoll']
  assert [p for p in ours.parameters if p != 'self'] == [p for p in stock_names if p != 'self']


def test_the_key_column_is_dropped_and_other_columns_kept():
  batch = pa.RecordBatch.from_arrays(
    [pa.array([1, 2]), pa.array([b'k1', b'k2'])], ['token_ids', tfx_internals.TRANSFORM_KEY_COLUMN]
  )
  assert tfx_internals.without_key_column(batch).schema.names == ['token_ids']
  plain = batch.select(['token_ids'])
  assert tfx_internals.without_key_column(plain).equals(plain)


def test_the_executor_runs_the_given_processor_only_inside_the_block():
  class Mine(tfx_internals.TransformProcessor):
    pass

  with tfx_internals.running(Mine):
    assert transform_executor.TransformProcessor is Mine
  assert transform_executor.TransformProcessor is not Mine
