"""Beam's execution for local runs: in this process for small inputs, worker processes above."""

from pipeline import config as config_lib
from pipeline import local_runner

LOCAL = [f'--runner={local_runner.FN_API_RUNNER}', f'--setup_file={local_runner.SETUP_FILE}']
IN_MEMORY = LOCAL + ['--direct_running_mode=in_memory', '--direct_num_workers=1']
MULTI = LOCAL + ['--direct_running_mode=multi_processing']


def _config(data_dir, file_pattern='', **beam):
  return config_lib.from_dict(
    {
      'data': {'format': 'csv', 'input_base': str(data_dir), 'file_pattern': file_pattern},
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
      'beam': beam,
    }
  )


def _file(path, size):
  with open(path, 'wb') as f:
    f.truncate(size)  # sparse: no disk written


def test_small_input_runs_in_process(tmp_path):
  _file(tmp_path / 'a.csv', 1 << 20)
  assert local_runner.beam_args(_config(tmp_path)) == IN_MEMORY


def test_large_input_runs_one_worker_process_per_core(tmp_path):
  _file(tmp_path / 'a.csv', local_runner.IN_PROCESS_MAX_BYTES // 2)
  _file(tmp_path / 'b.csv', local_runner.IN_PROCESS_MAX_BYTES // 2 + 1)
  assert local_runner.beam_args(_config(tmp_path), num_cpus=3) == MULTI + ['--direct_num_workers=3']


def test_compressed_input_counts_as_its_text(tmp_path):
  size = local_runner.IN_PROCESS_MAX_BYTES // 3
  _file(tmp_path / 'a.csv.gz', size)
  config = _config(tmp_path, file_pattern='*.csv.gz')
  assert local_runner.input_bytes(config) > local_runner.IN_PROCESS_MAX_BYTES
  assert local_runner.beam_args(config)[:3] == MULTI
  # Files the pattern does not match are not read, so they do not count.
  _file(tmp_path / 'notes.md', local_runner.IN_PROCESS_MAX_BYTES * 2)
  assert local_runner.input_bytes(config) == size * 5


def test_explicit_settings_win_over_the_size(tmp_path):
  _file(tmp_path / 'a.csv', 10)
  assert local_runner.beam_args(_config(tmp_path, direct_num_workers=2)) == MULTI + [
    '--direct_num_workers=2'
  ]
  # A runner or running mode named by the config is kept; the project's setup.py is named as
  # the workers' dependencies unless the config names them. A running mode without a runner
  # gets the in-process portable runner, not DirectRunner (which would try to download Prism).
  setup = f'--setup_file={local_runner.SETUP_FILE}'
  explicit = ['--direct_running_mode=multi_threading', '--direct_num_workers=4']
  assert local_runner.beam_args(_config(tmp_path, args=explicit)) == [
    f'--runner={local_runner.FN_API_RUNNER}',
    *explicit,
    setup,
  ]
  dataflow = ['--runner=DataflowRunner', '--region=europe-west1']
  assert local_runner.beam_args(_config(tmp_path, args=dataflow)) == dataflow + [setup]
  own = [*dataflow, '--requirements_file=req.txt']
  assert local_runner.beam_args(_config(tmp_path, args=own)) == own
  _file(tmp_path / 'big.csv', local_runner.IN_PROCESS_MAX_BYTES + 1)
  assert local_runner.beam_args(_config(tmp_path, direct_num_workers=1)) == IN_MEMORY


def test_remote_input_runs_worker_processes():
  config = config_lib.from_dict(
    {
      'data': {'format': 'csv', 'input_base': 'gs://bucket/data'},
      'train': {'task': 'classify', 'train_steps': 2, 'eval_steps': 1},
    }
  )
  assert local_runner.input_bytes(config) is None
  assert local_runner.beam_args(config, num_cpus=2)[:3] == MULTI


def test_a_running_mode_without_a_runner_runs_in_process_and_leaves_nothing(
  tmp_path, monkeypatch, caplog
):
  # DirectRunner, which Beam picks when no runner is named, first tries to download and start
  # Prism (a GitHub download; offline it fails and leaves a beam-temp folder in /tmp).
  import logging
  import tempfile

  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to

  _file(tmp_path / 'a.csv', 10)
  mode = ['--direct_running_mode=multi_threading', '--direct_num_workers=2']
  args = local_runner.beam_args(_config(tmp_path, args=mode))
  temp = tmp_path / 'tmp'
  temp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(temp))
  with caplog.at_level(logging.INFO, logger='apache_beam'):
    with beam.Pipeline(argv=args) as p:
      assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
  assert not any('prism' in r.getMessage().lower() for r in caplog.records)
  assert [f.name for f in temp.iterdir()] == []
