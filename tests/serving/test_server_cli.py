"""`python -m serving` as a process: TF Serving's flags, the query client, SIGTERM draining."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving import client
from tests.serving.conftest import MODEL, push

BATCH_WAIT_SECONDS = 1.0


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def process(tmp_path_factory):
  """The server process, with a model config file, batching and a slow batch timeout, and TF
  Serving's monitoring config serving the metrics at /metrics."""
  base = tmp_path_factory.mktemp('cli')
  push(str(base), MODEL, 4, seed=4)
  (base / 'models.config').write_text(
    f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base / MODEL}" '
    f'version_labels {{ key: "stable" value: 4 }} }} }}'
  )
  # A long batch timeout keeps requests of one row in flight long enough to send SIGTERM
  # meanwhile; requests of two rows fill a batch and run at once.
  (base / 'batching.config').write_text(
    f'max_batch_size {{ value: 2 }} batch_timeout_micros {{ value: '
    f'{int(BATCH_WAIT_SECONDS * 1e6)} }} num_batch_threads {{ value: 1 }}'
  )
  (base / 'monitoring.config').write_text('prometheus_config { enable: true path: "/metrics" }')
  grpc_port, rest_port = _free_port(), _free_port()
  proc = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'serving',
      f'--port={grpc_port}',
      f'--rest_api_port={rest_port}',
      f'--model_config_file={base / "models.config"}',
      '--enable_batching',
      f'--batching_parameters_file={base / "batching.config"}',
      '--file_system_poll_wait_seconds=0',
      '--drain_seconds=20',
      f'--monitoring_config_file={base / "monitoring.config"}',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=os.getcwd(),
  )
  line = proc.stdout.readline()
  if not line.startswith('SERVING'):
    proc.kill()
    pytest.fail(f'server did not start: {line}{proc.stderr.read()}')
  yield proc, f'127.0.0.1:{grpc_port}', f'http://127.0.0.1:{rest_port}'
  if proc.poll() is None:
    proc.kill()
  proc.wait()


def test_query_client_over_grpc_and_rest(process, capsys):
  _, grpc_target, rest_url = process
  answers = []
  for where in (['--grpc', grpc_target], ['--rest', rest_url]):
    for extra in ([], ['--signature', 'predict_text', '--label', 'stable'], ['--classify']):
      code = client.main(
        where + ['--model_name', MODEL, '--text', 'great film', '--text', 'bad film'] + extra
      )
      out = capsys.readouterr().out
      assert code == 0, out
      answers.append(json.loads(out))
  grpc_default, grpc_text, grpc_classify, rest_default, rest_text, rest_classify = answers
  assert grpc_default['model_spec']['version'] == '4'
  assert grpc_default['outputs']['labels'] == rest_default['outputs']['labels']
  assert grpc_text['outputs']['labels'] == rest_text['outputs']['labels']
  assert len(grpc_default['outputs']['probabilities']) == 2
  # The same numbers, printed alike: float32's shortest digits over both protocols.
  assert grpc_default['outputs']['probabilities'] == rest_default['outputs']['probabilities']
  for row in grpc_default['outputs']['probabilities']:
    assert [repr(p) for p in row] == [str(np.float32(p)) for p in row]
  assert grpc_text['outputs']['probabilities'] == rest_text['outputs']['probabilities']
  assert [[c[0] for c in row] for row in grpc_classify['results']] == [['0', '1', '2']] * 2
  assert grpc_classify['results'] == rest_classify['results']


def test_query_client_sends_text_that_is_not_utf8_for_the_model_to_judge(process, capsys):
  """`--text $'caf\\xe9'`: the bytes reach the model, whose tokenizer refuses them, over both
  protocols (the client failed to encode them)."""
  _, grpc_target, rest_url = process
  text = b'caf\xe9'.decode('utf-8', 'surrogateescape')  # as Python reads it from a command line
  for where, error in (
    (['--grpc', grpc_target], 'error: INVALID_ARGUMENT: '),
    (['--rest', rest_url], 'error: HTTP 400: '),
  ):
    for extra in ([], ['--signature', 'predict_text'], ['--classify']):
      # Two texts: a full batch of this server's (max_batch_size 2), run at once.
      args = ['--model_name', MODEL, '--text', 'fine', '--text', text]
      assert client.main(where + args + extra) == 1
      err = capsys.readouterr().err
      assert err.startswith(error) and 'Invalid formatting on input string' in err, err
      assert '{"error"' not in err  # TF Serving's message, as gRPC's errors print theirs


def test_metrics_are_at_the_monitoring_configs_path_under_tf_servings_names(process, capsys):
  _, grpc_target, rest_url = process
  for where in (['--grpc', grpc_target], ['--rest', rest_url]):
    assert client.main(where + ['--model_name', MODEL, '--text', 'good', '--text', 'film']) == 0
  capsys.readouterr()
  with urllib.request.urlopen(f'{rest_url}/metrics', timeout=10) as response:
    assert response.headers['Content-Type'].startswith('text/plain; version=0.0.4')
    text = response.read().decode()
  lines = text.splitlines()
  for series in (
    f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}} ',
    f':tensorflow:serving:request_latency_count{{model_name="{MODEL}",API="Predict",'
    'entrypoint="GRPC"} ',
    f':tensorflow:serving:request_latency_count{{model_name="{MODEL}",API="predict",'
    'entrypoint="REST"} ',
  ):
    assert any(line.startswith(series) and int(line.split()[-1]) >= 1 for line in lines), series
  assert 'serving_requests_total{' in text
  # Only where the config says, as in TF Serving.
  with pytest.raises(urllib.error.HTTPError) as raised:
    urllib.request.urlopen(f'{rest_url}/monitoring/prometheus/metrics', timeout=10)
  assert raised.value.code == 404


def test_query_client_reports_errors(process, capsys):
  _, grpc_target, _ = process
  assert client.main(['--grpc', grpc_target, '--model_name', 'nope', '--text', 'x']) == 1
  assert 'NOT_FOUND' in capsys.readouterr().err


def test_query_client_words_a_missing_signature_as_the_server_does(process, capsys):
  # The client checks the metadata first; its message must be the server's FAILED_PRECONDITION
  # (status name, callable signatures only), not a list with __saved_model_init_op.
  _, grpc_target, rest_url = process
  request = urllib.request.Request(
    f'{rest_url}/v1/models/{MODEL}:predict',
    data=json.dumps({'signature_name': 'predict', 'instances': ['x']}).encode(),
  )
  with pytest.raises(urllib.error.HTTPError) as raised:
    urllib.request.urlopen(request, timeout=10)
  server = json.loads(raised.value.read())['error']
  assert server.startswith('Serving signature key "predict" not found'), server
  for where in (['--grpc', grpc_target], ['--rest', rest_url]):
    args = where + ['--model_name', MODEL, '--signature', 'predict', '--text', 'x']
    assert client.main(args) == 1
    assert capsys.readouterr().err == f'error: FAILED_PRECONDITION: {server}\n'


def test_rest_client_percent_encodes_the_model_name_and_label(monkeypatch):
  urls = []

  def request(self, url, body=None):
    urls.append(url)
    return {'outputs': {}}

  monkeypatch.setattr(client.RestClient, 'request', request)
  client.RestClient('http://h').predict('my lm', ['a'], label='stable /2', input_key='text')
  assert urls == ['http://h/v1/models/my%20lm/labels/stable%20%2F2:predict']


@pytest.mark.parametrize(
  'url,why',
  [
    ('http://127.0.0.1:85x1', "Port could not be cast to integer value as '85x1'"),
    # Taken modulo 65536: the client asked port 34463.
    ('http://127.0.0.1:99999', 'Port out of range 0-65535'),
    # 'unknown url type: localhost' (curl takes it, as http://).
    ('localhost:8501', 'not an http:// or https:// URL with a host'),
    ('ftp://127.0.0.1:8501', 'not an http:// or https:// URL with a host'),
    ('http://:8501', 'not an http:// or https:// URL with a host'),
  ],
)
def test_query_client_names_a_rest_url_that_is_not_one(url, why, capsys):
  assert client.main(['--rest', url, '--model_name', 'm', '--text', 'x']) == 1
  assert capsys.readouterr().err == (
    f'error: invalid URL {url}: {why}; give the server as http://HOST:PORT\n'
  )


@pytest.mark.parametrize('scheme', ['grpc', 'https'])
def test_query_client_names_a_grpc_target_written_as_a_url(scheme, capsys):
  # grpc resolved it as a host name: 'UNAVAILABLE: ... Misformatted domain name'.
  target = f'{scheme}://127.0.0.1:8500'
  assert client.main(['--grpc', target, '--model_name', 'm', '--text', 'x']) == 1
  assert capsys.readouterr().err == (
    f'error: invalid gRPC target {target}: give the server as HOST:PORT, without {scheme}://'
    ' (for TLS add --root_cert)\n'
  )


def test_query_client_names_a_rest_server_it_cannot_reach(capsys):
  with socket.socket() as s:  # a port nothing listens on once closed
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  assert client.main(['--rest', url, '--model_name', 'm', '--text', 'x']) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: cannot reach {url}/v1/models/m'), err
  assert 'refused' in err and 'Traceback' not in err


def _dead_rest_url():
  with socket.socket() as s:  # a port nothing listens on once closed
    s.bind(('127.0.0.1', 0))
    return f'http://127.0.0.1:{s.getsockname()[1]}'


def test_client_help_shows_defaults_and_when_the_seed_matters():
  result = subprocess.run(
    [sys.executable, '-m', 'serving.client', '--help'], capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr
  text = ' '.join(result.stdout.split())  # argparse wraps lines
  for default in ('tokens to generate per row (default: 16)', 'sampling (default: 0.0)'):
    assert default in text
  assert 'only matters with --temperature > 0 (default: 0)' in text
  assert '(default: None)' not in text


def test_client_notes_sampling_flags_that_greedy_decoding_ignores(capsys):
  # --seed alone used to give greedy text with nothing saying why the seed changed nothing.
  generate = ['--rest', _dead_rest_url(), '--model_name', 'lm', '--generate', '--prompt', 'x']
  for extra, note in (
    (['--seed', '7'], 'note: --seed has no effect under greedy decoding (--temperature 0)'),
    (['--seed', '0', '--top_p=0.9'], 'note: --seed, --top_p have no effect under greedy'),
    (['--top_k', '5', '--temperature', '0.8'], None),
    ([], None),
  ):
    assert client.main(generate + extra) == 1  # nothing listens: the note comes first
    err = capsys.readouterr().err
    if note is None:
      assert 'note:' not in err, err
    else:
      assert err.startswith(note) and err.count('\n') == 2, err


def test_sigterm_drains_in_flight_requests(process):
  proc, grpc_target, rest_url = process
  results = {}

  def grpc_call():
    results['grpc'] = client.GrpcClient(grpc_target).predict(
      MODEL, ['in flight'], 'predict_text', input_key='text'
    )[1]['labels']

  def rest_call():  # on the other signature: the two one-row requests are not one full batch
    results['rest'] = client.RestClient(rest_url).predict(MODEL, ['in flight'])['labels']

  threads = [threading.Thread(target=grpc_call), threading.Thread(target=rest_call)]
  started = time.monotonic()
  for thread in threads:
    thread.start()
  time.sleep(BATCH_WAIT_SECONDS / 3)  # both requests are now waiting in the batch queue
  proc.send_signal(signal.SIGTERM)
  for thread in threads:
    thread.join(timeout=30)
  assert proc.wait(timeout=30) == 0
  # Both finished after SIGTERM (they had to wait out the batch timeout), and succeeded.
  assert time.monotonic() - started >= BATCH_WAIT_SECONDS
  assert len(results['grpc']) == len(results['rest']) == 1
  with pytest.raises(OSError):
    urllib.request.urlopen(rest_url + '/healthz', timeout=5)


def test_bad_flags_are_refused():
  result = subprocess.run(
    [sys.executable, '-m', 'serving', '--model_base_path=/x', '--model_config_file=/y'],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 2
  assert 'exactly one of --model_base_path' in result.stderr


def test_a_bad_monitoring_config_file_is_a_usage_error(tmp_path, capsys):
  from serving.__main__ import main

  monitoring = tmp_path / 'monitoring.config'
  for text, message in (
    ('prometheus_config { enable: true path: "metrics" }', 'must start with "/"'),
    ('prometheus_config { on: true }', 'not a MonitoringConfig text proto'),
  ):
    monitoring.write_text(text)
    with pytest.raises(SystemExit) as exited:
      main([f'--model_base_path={tmp_path}', f'--monitoring_config_file={monitoring}'])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f'error: --monitoring_config_file: {monitoring}: ' in err and message in err, err


@pytest.mark.parametrize(
  'flag', ['model_config_file', 'monitoring_config_file', 'batching_parameters_file']
)
def test_a_config_file_that_cannot_be_read_names_its_flag(tmp_path, capsys, flag):
  from serving.__main__ import main

  missing = tmp_path / 'missing.config'
  argv = [f'--{flag}={missing}', '--enable_batching']
  if flag != 'model_config_file':
    argv.append(f'--model_base_path={tmp_path}')
  with pytest.raises(SystemExit) as exited:
    main(argv)
  assert exited.value.code == 2
  err = capsys.readouterr().err
  assert f'error: --{flag}={missing}: cannot read it: No such file or directory' in err, err


def test_a_bad_token_file_is_a_usage_error(tmp_path):
  empty = tmp_path / 'token'
  empty.write_text('  \n')
  for token_file, message in (
    (tmp_path / 'missing', 'No such file'),
    (empty, 'token file is empty'),
  ):
    result = subprocess.run(
      [
        sys.executable,
        '-m',
        'serving',
        f'--model_base_path={tmp_path}',
        f'--auth_token_file={token_file}',
      ],
      capture_output=True,
      text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr


def _parse(argv):
  from serving.__main__ import _flags

  return _flags(argv)[1]


@pytest.mark.parametrize(
  'argv,batching,management',
  [
    ([], False, False),
    (['--enable_batching', '--enable_model_management'], True, True),
    (['--enable_batching=true', '--enable_model_management=false'], True, False),
    (['--enable_batching=1', '--enable_model_management=0'], True, False),
    (['--enable_batching=False'], False, False),
  ],
)
def test_boolean_flags_take_tensorflow_model_servers_forms(argv, batching, management):
  flags = _parse(argv)
  assert (flags.enable_batching, flags.enable_model_management) == (batching, management)


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--rest_time=5'], 'unrecognized arguments: --rest_time=5'),  # no abbreviations
    (['--enable_batching=maybe'], "'maybe' is not a boolean: write true, false, 1 or 0"),
    (['--ssl_config_file=ssl.config'], '--ssl_config_file=ssl.config (tensorflow_model_server)'),
    (
      ['--rest_api_timeout_in_ms=1', '--rest_timeout_seconds=2'],
      '--rest_timeout_seconds=2 and --rest_api_timeout_in_ms=1 name one setting with different'
      ' values',
    ),
    (
      ['--request_threads=4', '--grpc_max_threads=8'],
      '--request_threads=4 and --grpc_max_threads=8 name one setting with different values',
    ),
    (['--use_alts_credentials'], '--use_alts_credentials (tensorflow_model_server) is not'),
    (['--use_alts_credentials=true'], '--use_alts_credentials=true (tensorflow_model_server)'),
    (['--saved_model_tags=serve,gpu'], '--saved_model_tags=serve,gpu (tensorflow_model_server)'),
    (['--ssl_config_file'], '--ssl_config_file (tensorflow_model_server) is not'),
    (['--rest_api_timeout_in_ms=-5'], '--rest_api_timeout_in_ms must be >= 0, got -5'),
    (['--rest_timeout_seconds=-0.5'], '--rest_timeout_seconds must be >= 0, got -0.5'),
    (['--grpc_max_threads=0'], '--grpc_max_threads must be >= 1, got 0'),
    (['--grpc_threads=0'], '--grpc_threads must be >= 1, got 0'),
    (['--max_queued_requests=-1'], '--max_queued_requests must be >= 0, got -1'),
    (['--rest_body_timeout_seconds=0'], '--rest_body_timeout_seconds must be > 0, got 0'),
  ],
)
def test_flags_that_would_mislead_are_usage_errors(argv, message, capsys):
  with pytest.raises(SystemExit) as exited:
    _parse(argv)
  assert exited.value.code == 2
  assert message in capsys.readouterr().err


def test_tensorflow_model_server_flags_are_aliases_or_ignored_with_a_warning():
  from serving.__main__ import ignored_flag_warnings

  flags = _parse(
    [
      '--rest_api_timeout_in_ms=5000',
      '--grpc_max_threads=4',
      '--num_load_threads=4',
      '--rest_api_num_threads',
      '8',
      '--enable_model_warmup=false',
    ]
  )
  assert flags.rest_timeout_seconds == 5.0 and flags.request_threads == 4
  warnings = ignored_flag_warnings(flags)
  assert [line.split()[0] for line in warnings] == [
    '--rest_api_num_threads',
    '--num_load_threads',
    '--enable_model_warmup=false',
  ]
  assert all(' is ignored: ' in line for line in warnings)
  assert _parse([]).rest_timeout_seconds == 120.0 and not ignored_flag_warnings(_parse([]))


@pytest.mark.parametrize(
  'argv',
  [
    ['--use_alts_credentials=false'],
    ['--rest_api_enable_cors_support=false', '--prefer_tflite_model=0'],
    ['--saved_model_tags=serve'],
    ['--ssl_config_file=', '--grpc_socket_path=', '--platform_config_file='],
  ],
)
def test_refused_flags_at_the_value_that_changes_nothing_are_accepted(argv):
  from serving.__main__ import ignored_flag_warnings

  assert _parse(argv).request_threads == 32
  assert not ignored_flag_warnings(_parse(argv))


def test_flags_naming_one_setting_may_be_given_together_with_one_value():
  flags = _parse(['--request_threads=4', '--grpc_max_threads=4', '--grpc_threads=4'])
  assert flags.request_threads == 4
  flags = _parse(['--rest_timeout_seconds=5', '--rest_api_timeout_in_ms=5000'])
  assert flags.rest_timeout_seconds == 5.0
  assert _parse(['--rest_api_timeout_in_ms=0']).rest_timeout_seconds == 0  # no limit


def test_the_serving_line_names_both_ports_and_says_off_for_no_rest():
  from serving.__main__ import serving_line

  assert serving_line('127.0.0.1', 8500, 8501) == 'SERVING grpc=127.0.0.1:8500 rest=127.0.0.1:8501'
  assert serving_line('::1', 8500, 8501) == 'SERVING grpc=[::1]:8500 rest=[::1]:8501'
  assert serving_line('0.0.0.0', 8500, None) == 'SERVING grpc=0.0.0.0:8500 rest=off'
