"""HTTP statuses of the REST front end's framing errors: a body too slow to arrive (408), an
HTTP version other than 1.0 and 1.1 (505), a request line without a version (400)."""

import json
import time

import pytest

from serving.rest import RestOptions
from tests.serving.conftest import MODEL, toy_server
from tests.serving.hostile_util import RawHttp, post

PREDICT_PATH = f'/v1/models/{MODEL}:predict'
GOOD_BODY = json.dumps({'signature_name': 'predict_text', 'instances': ['a film']}).encode()


@pytest.fixture(scope='module')
def quick(toy_base):
  running = toy_server(toy_base, rest_options=RestOptions(header_timeout=2.0, body_timeout=0.5))
  yield running
  running.close()


def _answer(port, data):
  connection = RawHttp(port, timeout=10)
  try:
    connection.send(data)
    status, _, body = connection.response()
    return status, json.loads(body)
  finally:
    connection.close()


def test_a_body_too_slow_to_arrive_is_408(quick):
  connection = RawHttp(quick.server.rest_port, timeout=10)
  try:
    connection.send(post(PREDICT_PATH, GOOD_BODY)[:-5])  # the rest never comes
    started = time.monotonic()
    status, _, body = connection.response()
    assert status == 408
    assert 'the body took longer than 0.5 s to arrive' in json.loads(body)['error']
    assert time.monotonic() - started < 3
  finally:
    connection.close()


@pytest.mark.parametrize('version', [b'HTTP/2.0', b'HTTP/3.0', b'HTTP/1.2'])
def test_an_http_version_other_than_1_0_and_1_1_is_505(quick, version):
  status, body = _answer(
    quick.server.rest_port, b'GET /healthz ' + version + b'\r\nHost: x\r\n\r\n'
  )
  assert status == 505, body
  assert 'HTTP/1.1' in body['error']


def test_a_request_line_without_a_version_is_400(quick):
  status, body = _answer(quick.server.rest_port, b'GET /healthz\r\nHost: x\r\n\r\n')
  assert status == 400, body
  assert 'no HTTP version' in body['error']


@pytest.mark.parametrize('version', [b'HTTP/1.0', b'HTTP/1.1'])
def test_http_1_0_and_1_1_are_served(quick, version):
  status, body = _answer(
    quick.server.rest_port, b'GET /healthz ' + version + b'\r\nHost: x\r\n\r\n'
  )
  assert status == 200, body


@pytest.mark.parametrize(
  'upgrade',
  [
    # What `curl --http2 http://...` sends.
    b'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAA\r\n',
    b'Connection: Upgrade\r\nUpgrade: websocket\r\n',
  ],
)
def test_an_upgrade_request_is_answered_in_http_1_1_and_the_connection_closed(quick, upgrade):
  """The parser takes what follows an upgrade request as the new protocol's bytes: a request
  pipelined after one (or sent on the kept-alive connection) once went unanswered until the
  client gave up. Now the answer says Connection: close and the connection closes."""
  connection = RawHttp(quick.server.rest_port, timeout=10)
  try:
    head = b'GET /v1/models/' + MODEL.encode() + b' HTTP/1.1\r\nHost: x\r\n'
    connection.send(head + upgrade + b'\r\n' + head + b'\r\n')
    started = time.monotonic()
    status, headers, body = connection.response()
    assert status == 200, body
    assert json.loads(body)['model_version_status']
    assert headers.get('connection', '').lower() == 'close'
    assert connection.buffer == b'' and connection.closed()  # not left waiting
    assert time.monotonic() - started < 5
  finally:
    connection.close()
