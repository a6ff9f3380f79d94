"""Label filtering: classification reads the listed labels; pretraining still reads every row."""

import json
import os
import re

import apache_beam as beam
import pytest
from tfx.utils import proto_utils

from components import example_gen
from pipeline import config as config_lib
from pipeline import factory as pipeline_lib
from pipeline import local_runner
from tfxlm import contract
from trainer import preprocessing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pipeline(tmp_path, label_values, pretrain=True, schema='rotten_tomatoes'):
  (tmp_path / 'data').mkdir(exist_ok=True)
  (tmp_path / 'data' / 'rt.csv').write_text('category,text\nfresh,good\nplot,a story\n')
  data = {
    'input_base': str(tmp_path / 'data'),
    'label_column': 'category',
    'label_values': label_values,
    'schema_dir': os.path.join(REPO, 'schemas', schema),  # an absolute `schema` as it is
  }
  config = config_lib.from_dict(
    {
      'data': data,
      'pretrain': {'task': 'mlm', 'train_steps': 2, 'eval_steps': 1} if pretrain else None,
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  pipeline = pipeline_lib.create_pipeline(config, pipeline_root=str(tmp_path / 'root'))
  return {c.id: c for c in pipeline.components}


def _source(component, key='examples'):
  return component.inputs[key].producer_component_id


def test_pretraining_and_vocabulary_read_all_rows_classification_the_listed_labels(tmp_path):
  components = _pipeline(tmp_path, ['fresh', 'rotten'])
  assert _source(components[contract.VOCABULARY_ID]) == contract.CORPUS_EXAMPLE_GEN_ID
  assert _source(components[contract.PRETRAIN_TRANSFORM_ID]) == contract.CORPUS_EXAMPLE_GEN_ID
  assert (
    _source(components[contract.PRETRAIN_TRANSFORM_ID], 'schema') == contract.CORPUS_SCHEMA_GEN_ID
  )
  for name in (contract.STATISTICS_GEN_ID, contract.TRANSFORM_ID, contract.EVALUATOR_ID):
    assert _source(components[name]) == 'TextExampleGen'
  labeled, corpus = components['TextExampleGen'], components[contract.CORPUS_EXAMPLE_GEN_ID]
  assert labeled.exec_properties['label_column'] == 'category'
  assert corpus.exec_properties['label_column'] is None
  assert corpus.exec_properties['label_values'] is None
  assert corpus.exec_properties['label_domain'] is None
  assert corpus.exec_properties['require_label'] is None
  assert corpus.exec_properties['input_config'] == labeled.exec_properties['input_config']


def test_label_values_are_the_models_labels_without_a_schema_domain(tmp_path):
  # As a schema's label domain would: each listed label gets an output (trained on or not) and
  # its per-label metrics, and Transform reads the label counts to warn of untrained ones.
  (tmp_path / 'schema').mkdir()
  (tmp_path / 'schema' / 'schema.pbtxt').write_text(
    'feature { name: "text" type: BYTES presence { min_fraction: 1.0 } }\n'
    'feature { name: "label" type: BYTES presence { min_fraction: 1.0 } }\n'
  )
  labels = ['rotten', 'fresh', 'plot']
  components = _pipeline(tmp_path, labels, pretrain=False, schema=str(tmp_path / 'schema'))
  transform = components[contract.TRANSFORM_ID]
  custom_config = json.loads(transform.exec_properties['custom_config'])
  assert custom_config[preprocessing.LABEL_DOMAIN_KEY] == labels
  assert _source(transform, 'statistics') == contract.STATISTICS_GEN_ID
  eval_config = json.loads(components[contract.EVALUATOR_ID].exec_properties['eval_config'])
  per_label = [spec['binarize'] for spec in eval_config['metrics_specs'] if 'binarize' in spec]
  assert per_label == [{'class_ids': {'values': [0, 1, 2]}}]


@pytest.mark.parametrize('label_values,pretrain', [([], True), (['fresh', 'rotten'], False)])
def test_one_example_gen_when_nothing_needs_a_second(tmp_path, label_values, pretrain):
  components = _pipeline(tmp_path, label_values, pretrain)
  assert contract.CORPUS_EXAMPLE_GEN_ID not in components
  assert _source(components[contract.VOCABULARY_ID]) == 'TextExampleGen'
  assert components['TextExampleGen'].exec_properties['label_column'] == 'category'


def _run(component):
  """Runs an ExampleGen's reading as its executor does."""
  exec_properties = {
    key: proto_utils.proto_to_json(value) if hasattr(value, 'DESCRIPTOR') else value
    for key, value in component.exec_properties.items()
  }
  with beam.Pipeline(runner=local_runner.FN_API_RUNNER) as pipeline:
    example_gen.Executor().GenerateExamplesByBeam(pipeline, exec_properties)


@pytest.mark.parametrize(
  'schema, rows, error',
  [
    (
      'rotten_tomatoes',
      'fresh,good\nplot,a story\n',
      "line 3: label 'plot' is not in the schema's",
    ),
    ('labeled', '1,good\n,no label\n0,bad\n', "line 3: no label (column 'category' is empty)"),
  ],
)
def test_a_row_the_schemas_labels_refuse_stops_example_gen_at_its_file_and_line(
  tmp_path, schema, rows, error
):
  labeled = _pipeline(tmp_path, [], pretrain=False, schema=schema)['TextExampleGen']
  domain = {'rotten_tomatoes': ['fresh', 'rotten'], 'labeled': ['0', '1']}[schema]
  assert json.loads(labeled.exec_properties['label_domain']) == domain
  assert labeled.exec_properties['require_label'] == 1
  path = tmp_path / 'data' / 'rt.csv'
  path.write_text('category,text\n' + rows)
  with pytest.raises(Exception, match=re.escape(f'{path}, {error}')):
    _run(labeled)
