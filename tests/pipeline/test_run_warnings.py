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


def test_a_beam_worker_processs_warnings_are_collected_by_the_file_it_names():
  """Large inputs run on Beam worker processes, whose records reach the pipeline's process
  through Beam's logging service (portable runs and the FnApiRunner log them differently)."""
  from apache_beam.portability.api import beam_fn_api_pb2
  from apache_beam.runners.portability import local_job_service
  from apache_beam.runners.portability.fn_api_runner import worker_handlers

  def entry(path, message, severity=beam_fn_api_pb2.LogEntry.Severity.WARN):
    return beam_fn_api_pb2.LogEntry(
      severity=severity, message=message, log_location=f'{path}:42', thread='Thread-3'
    )

  ours = os.path.join(REPO, 'components', 'read_examples.py')
  skipped = 'big.csv: skipped 3 empty documents (lines "7", 9)\nand a second line é'
  entries = beam_fn_api_pb2.LogEntry.List(
    log_entries=[
      entry(ours, skipped),
      entry('/opt/venv/lib/python3.13/site-packages/apache_beam/x.py', 'No semi_persistent_dir'),
      entry(ours, 'read 900 rows', beam_fn_api_pb2.LogEntry.Severity.INFO),
      entry(os.path.join(REPO, 'components', 'vocabulary.py'), 'Vocabulary: learned 81 tokens'),
    ]
  )
  collector = local_runner.WarningCollector(lambda: 'CsvExampleGen')
  root = logging.getLogger()
  root.addHandler(collector)
  try:
    list(local_job_service.BeamFnLoggingServicer().Logging([entries]))
    list(worker_handlers.BasicLoggingService().Logging([entries]))
    unreadable = f'Worker: log_location: "{ours}:1" message: "unterminated'
    collector.handle(_record(local_job_service.__file__, unreadable))
  finally:
    root.removeHandler(collector)
  assert collector.messages == [skipped, 'Vocabulary: learned 81 tokens']
  assert collector.by_component == {'CsvExampleGen': collector.messages}
