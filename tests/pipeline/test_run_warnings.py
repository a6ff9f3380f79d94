"""The run's own warnings (lost data, a weak setup) reach the console, not only run.log."""

import logging
import os

from pipeline import local_runner

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
