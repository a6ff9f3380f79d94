"""Requests pipelined up to one with `Connection: close`, kept when the client sent more after it.

llhttp (aiohttp's parser) refuses any byte after a `Connection: close` request ("Data after
`Connection: close`"), and aiohttp then answers 400 alone, dropping the valid requests of the
same read. ClosingParser parses such a read again up to the end of the closing request, so
they are answered before the connection closes. Written for aiohttp 3.14
(tests/serving/test_pipelining.py checks the parser behaviour it relies on).
"""

from aiohttp import http_exceptions

# A read holding a `Connection: close` request and more is parsed again up to that request's
# end when at most this long; longer, it is refused as a whole.
CLOSE_REPARSE_BYTES = 1 << 16
# What llhttp's error says about bytes after a `Connection: close` request.
AFTER_CLOSE = 'after `Connection: close`'


class Unread:
  """The protocol of a parser that only measures where a message ends: its payloads' flow
  control goes nowhere."""

  _reading_paused = False
  connected = True

  def pause_reading(self):
    pass

  def resume_reading(self, resume_parser=True):
    pass


class ClosingParser:
  """aiohttp's request parser, with the requests before a `Connection: close` one and that one
  kept when the client sent more after it.

  The end of the closing request is found by parsing prefixes of the read with new parsers
  (for reads up to CLOSE_REPARSE_BYTES); what follows it is dropped.

  Args:
    parser: the connection's parser.
    make: a function of a protocol that returns a new parser like `parser`.
  """

  def __init__(self, parser, make):
    self._parser = parser
    self._make = make
    self._dropping = False

  def __getattr__(self, name):
    return getattr(self._parser, name)

  def feed_data(self, data):
    if self._dropping:
      return (), False, b''
    try:
      return self._parser.feed_data(data)
    except http_exceptions.BadHttpMessage as e:
      if AFTER_CLOSE not in str(e) or len(data) > CLOSE_REPARSE_BYTES:
        raise
      end = self._closing_end(data)
      if end is None:
        raise
      self._parser = self._make(None)  # a parser for the connection's protocol
      messages, _, _ = self._parser.feed_data(data[:end])
      self._dropping = True
      return messages, False, b''

  def _closing_end(self, data):
    """Where the closing request ends in `data`, or None when a new parser does not see it
    there (the read continued a request begun before)."""

    def refused(size):
      try:
        self._make(Unread()).feed_data(data[:size])
      except http_exceptions.BadHttpMessage as e:
        return AFTER_CLOSE in str(e)
      return False

    if not refused(len(data)):
      return None
    low, high = 0, len(data)  # low is accepted, high refused
    while high - low > 1:
      middle = (low + high) // 2
      if refused(middle):
        high = middle
      else:
        low = middle
    return low
