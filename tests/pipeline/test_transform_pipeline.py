"""factory.create_transform_pipeline: the data stages wired as create_pipeline wires them, with
the vocabulary imported (what bench/transform_bench.py runs)."""

from pipeline import config as config_lib
from pipeline import factory
from tfxlm import contract


def _config(tmp_path, **beam):
  (tmp_path / 'corpus').mkdir(exist_ok=True)
  (tmp_path / 'corpus' / 'part.txt').write_text('one line\nanother line\n')
  return config_lib.from_dict(
    {
      'outputs_dir': str(tmp_path / 'out'),
      'data': {
        'format': contract.TEXT,
        'input_base': str(tmp_path / 'corpus'),
        'label_column': None,
        'text_mode': contract.LINE,
        'shuffle': False,
      },
      'train': {'task': contract.MLM, 'seq_len': 32, 'train_steps': 2, 'eval_steps': 1},
      'beam': beam,
    }
  )


def _by_id(pipeline):
  return {c.id: c for c in pipeline.components}


def test_examples_schema_imported_vocabulary_and_transform(tmp_path):
  config = _config(tmp_path)
  vocab_dir = str(tmp_path / 'vocab')
  pipeline = factory.create_transform_pipeline(
    config,
    vocabulary_dir=vocab_dir,
    pipeline_root=str(tmp_path / 'root'),
    beam_pipeline_args=['--x'],
  )
  nodes = _by_id(pipeline)
  assert set(nodes) == {
    contract.EXAMPLE_GEN_ID,
    contract.SCHEMA_GEN_ID,
    contract.VOCABULARY_IMPORTER_ID,
    contract.TRANSFORM_ID,
  }
  transform = nodes[contract.TRANSFORM_ID]
  producers = {key: channel.producer_component_id for key, channel in transform.inputs.items()}
  assert producers == {
    'examples': contract.EXAMPLE_GEN_ID,
    'schema': contract.SCHEMA_GEN_ID,
    'vocabulary': contract.VOCABULARY_IMPORTER_ID,
  }
  assert nodes[contract.VOCABULARY_IMPORTER_ID].exec_properties['artifact_uri'] == vocab_dir
  assert pipeline.beam_pipeline_args == ['--x']


def test_the_data_stages_match_those_of_the_whole_pipeline(tmp_path):
  """Same ExampleGen, schema import and Transform settings as create_pipeline's, compression
  included: the wiring lives in one place."""
  config = _config(tmp_path, intermediate_compression=contract.GZIP)
  root = str(tmp_path / 'root')
  part = _by_id(factory.create_transform_pipeline(config, vocabulary_dir='v', pipeline_root=root))
  whole = _by_id(factory.create_pipeline(config, pipeline_root=root))
  for component_id in (contract.EXAMPLE_GEN_ID, contract.SCHEMA_GEN_ID, contract.TRANSFORM_ID):
    assert part[component_id].exec_properties == whole[component_id].exec_properties
  assert contract.GZIP in str(part[contract.EXAMPLE_GEN_ID].exec_properties)
