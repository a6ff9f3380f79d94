"""The run's own warnings (lost data, a weak setup) reach the console, not only run.log."""

import json
import logging
import os

from pipeline import local_runner
from tests.pipeline import tiny_pipeline
from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _record(path, message, level=logging.WARNING):
  return logging.LogRecord('absl', level, path, 1, message, None, None)


def test_the_collector_keeps_the_projects_distinct_warnings_in_order_by_component():
  running = ['TextExampleGen']
  collector = local_runner.WarningCollector(lambda: running[0])
  ours = os.path.join(REPO, 'components', 'read_examples.py')
  for record in (
    _record(ours, 'r.csv: skipped 2 empty or whitespace-only documents (lines 3, 4)'),
    _record(os.path.join(REPO, 'components', 'vocabulary.py'), 'Vocabulary: learned 81 tokens'),
    _record(ours, 'r.csv: skipped 2 empty or whitespace-only documents (lines 3, 4)'),
    _record('/opt/venv/lib/python3.13/site-packages/tfx/x.py', 'property_predicate unsupported'),
    _record(os.path.join(REPO, 'tests', 'x.py'), 'a test of its own'),
  ):
    collector.handle(record)
  running[0] = 'Vocabulary'
  collector.handle(
    _record(ours, 'r.csv: skipped 2 empty or whitespace-only documents (lines 3, 4)')
  )
  logging.getLogger('t').addHandler(collector)  # the level: INFO lines are not warnings
  try:
    logging.getLogger('t').info('Vocabulary: 81 tokens written')
  finally:
    logging.getLogger('t').removeHandler(collector)
  assert collector.messages == [
    'r.csv: skipped 2 empty or whitespace-only documents (lines 3, 4)',
    'Vocabulary: learned 81 tokens',
  ]
  assert collector.by_component == {
    'TextExampleGen': collector.messages,
    'Vocabulary': [collector.messages[0]],
  }


def test_a_run_that_skipped_documents_says_so_at_its_end(tmp_path, capsys):
  data = tmp_path / 'data'
  data.mkdir()
  rows = [f'"a {"good" if i % 2 else "dull"} film number {i}",{i % 2}' for i in range(40)]
  (data / 'reviews.csv').write_text(
    'review,sentiment\n' + '\n'.join(rows[:20] + ['" ",1'] + rows[20:]) + '\n'
  )
  config = tiny_pipeline.classify_config(
    'warned', tmp_path / 'outputs', data, per_replica_batch_size=4, train_steps=2, eval_steps=1
  )
  config['evaluation'] = tiny_pipeline.BLESS_EVERY_MODEL
  path = tiny_pipeline.write(tmp_path / 'config.yaml', config)
  assert local_runner.main(['--config', str(path)]) == 0
  out = capsys.readouterr().out
  log = str(tmp_path / 'outputs' / 'run.log')
  block = out[out.index('Warnings (') :]
  assert f'(full log: {log}):' in block.splitlines()[0]
  assert 'skipped 1 empty or whitespace-only documents (lines 22)' in block
  written = json.loads((tmp_path / 'outputs' / contract.SUMMARY_FILE).read_text())
  assert any('skipped 1 empty' in w for w in written['warnings'])
  assert written['log_path'] == log
  assert 'skipped 1 empty' in (tmp_path / 'outputs' / contract.REPORT_FILE).read_text()
  # Run again: every component is reused from the cache, and so are its warnings (the first
  # run's log is gone, its data is still the data this run's model learned from).
  assert local_runner.main(['--config', str(path)]) == 0
  out = capsys.readouterr().out
  assert (
    'skipped 1 empty or whitespace-only documents (lines 22) (reused: TextExampleGen was cached)'
    in out[out.index('Warnings (') :]
  )
