"""A port the server cannot listen on is one line naming the port and the flag to change."""

import socket

import pytest

from serving import __main__ as serve
from serving import client
from serving.config import ModelConfig
from tests.serving.conftest import MODEL, push, start_server


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  base = tmp_path_factory.mktemp('listen')
  push(str(base), MODEL, 1, seed=1)
  return base / MODEL


@pytest.fixture
def taken():
  """A port some other program listens on."""
  with socket.socket() as other:
    other.bind(('127.0.0.1', 0))
    other.listen()
    yield other.getsockname()[1]


@pytest.mark.parametrize('flag, name', [('--rest_api_port', 'REST'), ('--port', 'gRPC')])
def test_a_taken_port_is_one_line_naming_it_and_the_flag(base, taken, capsys, flag, name):
  ports = {'--port': '0', '--rest_api_port': '0', flag: str(taken)}
  argv = [f'--model_name={MODEL}', f'--model_base_path={base}', '--drain_seconds=0']
  code = serve.main(argv + [f'{key}={value}' for key, value in ports.items()])
  err = capsys.readouterr().err
  assert code == 1
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert lines == [lines[0]] and f'cannot serve {name} on 127.0.0.1:{taken}: ' in lines[0], err
  assert flag in lines[0] and 'Traceback' not in err


def test_an_address_not_of_this_machine_names_the_host_flag(base, capsys):
  argv = [f'--model_name={MODEL}', f'--model_base_path={base}', '--port=0', '--rest_api_port=0']
  code = serve.main(argv + ['--host=192.0.2.1', '--drain_seconds=0'])  # TEST-NET-1: not ours
  err = capsys.readouterr().err
  assert code == 1 and 'error: cannot serve ' in err and 'Traceback' not in err, err


def test_an_ipv6_host_is_served_on_both_ports(base, capsys):
  # --host=::1 was refused, 'cannot serve gRPC on ::1:0: the port is taken': grpc read '::1:0'
  # as a host without a port; an IPv6 address takes brackets, [::1]:0.
  running = start_server(
    str(base.parent), [ModelConfig(MODEL, str(base))], poll_wait_seconds=0, options={'host': '::1'}
  )
  try:
    server = running.server
    for where in (
      ['--grpc', f'[::1]:{server.grpc_port}'],
      ['--rest', f'http://[::1]:{server.rest_port}'],
    ):
      argv = where + ['--model_name', MODEL, '--signature', 'predict_text', '--text', 'x']
      assert client.main(argv) == 0, capsys.readouterr().err
  finally:
    running.close()
