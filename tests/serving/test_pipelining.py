"""serving/pipelining.py against aiohttp's own parser (written for aiohttp 3.14): no socket."""

import asyncio

import aiohttp
import pytest
from aiohttp import http_exceptions, http_parser, web_protocol

from serving import pipelining

GET = b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'
CLOSING = b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}'


def _parser(protocol):
  return http_parser.HttpRequestParser(
    protocol or pipelining.Unread(),
    asyncio.new_event_loop(),
    1 << 16,
    max_line_size=8190,
    max_field_size=8190,
    max_headers=100,
    payload_exception=web_protocol.RequestPayloadError,
    auto_decompress=False,
  )


def test_aiohttp_refuses_bytes_after_a_closing_request_as_the_adapter_expects():
  # The adapter's premise: if this fails, aiohttp changed (it was written for 3.14).
  with pytest.raises(http_exceptions.BadHttpMessage, match=pipelining.AFTER_CLOSE):
    _parser(pipelining.Unread()).feed_data(GET + CLOSING + GET)
  assert aiohttp.__version__.split('.')[:1] == ['3']


@pytest.mark.parametrize('after', [GET, b'xyz', b''], ids=['a request', 'junk', 'nothing'])
def test_the_requests_up_to_the_closing_one_are_kept(after):
  parser = pipelining.ClosingParser(_parser(pipelining.Unread()), _parser)
  messages, upgraded, tail = parser.feed_data(GET + CLOSING + after)
  assert [message.path for message, _ in messages] == ['/healthz', '/v1/models/m:predict']
  assert not upgraded and tail == b''
  assert messages[1][1].is_eof()  # the closing request's body is whole
  if after:
    assert parser.feed_data(GET)[0] == ()  # what comes after the closing request is dropped


def test_a_read_that_continues_an_earlier_request_is_refused_as_before():
  parser = pipelining.ClosingParser(_parser(pipelining.Unread()), _parser)
  parser.feed_data(CLOSING[:-1])  # the body's last byte comes in the next read, with junk
  with pytest.raises(http_exceptions.BadHttpMessage, match=pipelining.AFTER_CLOSE):
    parser.feed_data(b'}' + GET)
