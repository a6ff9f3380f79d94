"""Refusals sent just before the connection closes reach the client: the server shuts its side
after the answer and drains what the client still sends for a while, rather than close on
unread bytes, which resets the connection: the client's send fails, and it never reads the
answer."""

import socket
import time

import pytest

from serving import rest
from serving.rest import RestOptions
from tests.serving.conftest import MODEL, toy_server

PREDICT_PATH = f'/v1/models/{MODEL}:predict'
LIMIT = 1 << 20


@pytest.fixture(scope='module')
def capped(toy_base):
  running = toy_server(
    toy_base, max_request_bytes=LIMIT, rest_options=RestOptions(max_connections=2)
  )
  yield running
  running.close()


def _post_and_read(port, length, sent):
  """Sends a POST head declaring `length` bytes and `sent` bytes of body, as a plain client
  does (all of it, then the answer); returns the answer, or how the exchange failed."""
  head = f'POST {PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n'
  with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
    try:
      sock.sendall(head.encode() + b'x' * sent)
      answer = b''
      while data := sock.recv(65536):
        answer += data
      return answer
    except OSError as e:
      return repr(e).encode()


def test_an_oversize_body_gets_its_413(capped):
  answer = _post_and_read(capped.server.rest_port, 4 * LIMIT, 4 * LIMIT)
  assert answer.startswith(b'HTTP/1.1 413'), answer[:200]
  assert b'exceeds the limit' in answer


def test_a_connection_over_the_cap_gets_its_503(capped):
  held = [socket.create_connection(('127.0.0.1', capped.server.rest_port)) for _ in range(2)]
  time.sleep(0.2)  # both accepted: the cap is reached
  try:
    answer = _post_and_read(capped.server.rest_port, LIMIT, LIMIT)
    assert answer.startswith(b'HTTP/1.1 503'), answer[:200]
  finally:
    for sock in held:
      sock.close()


class _GoneTransport:
  """A transport whose peer has gone: shutting down its write side fails (ENOTCONN)."""

  def __init__(self):
    self.aborted = False

  def is_closing(self):
    return False

  def can_write_eof(self):
    return True

  def write_eof(self):
    raise OSError(107, 'Transport endpoint is not connected')

  def abort(self):
    self.aborted = True


def test_closing_after_an_answer_to_a_client_already_gone_just_closes():
  # It raised in aiohttp's connection task ("Task exception was never retrieved", a traceback
  # in the log for each such client of a burst).
  transport = _GoneTransport()
  rest._close_after_answer(transport)
  assert transport.aborted
