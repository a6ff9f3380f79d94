"""The REST front end's HTTP server: TF Serving's HTTP/JSON API, health and metrics, on aiohttp.

aiohttp's low-level server does HTTP/1.1 (parsing with llhttp, keep-alive, pipelining, chunked
bodies, TLS through asyncio) on the server's event loop, so an open connection, idle or slow,
costs no thread. TF Serving's REST mapping (routes, the JSON bodies and codecs) is
`serving/rest_api.py`; this module is the HTTP side and its limits: a cap on open connections
(503 beyond), a deadline for a request's head once the connection is idle (aiohttp's
keep-alive timer, which also runs from the connection's start) and for its body, the body size
(413), strict framing (a body with both Transfer-Encoding and Content-Length, or a coding other
than chunked, or no length, is refused and the connection closed), error bodies as JSON, and a
body an early error left unread is read and dropped when small, else the connection is closed,
so it is never taken for the next request; `Expect: 100-continue` is answered just before the
body is read. Predict and classify run on the Admission queue's threads (decompressing a gzip or
deflate body, JSON decoding and encoding included), so the loop stays free.
"""

import asyncio
import dataclasses
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse

import grpc
from aiohttp import http_exceptions, web, web_protocol, web_server
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11

from serving import auth, codec, errors, rest_api
from serving.admission import Admission
from serving.manager import ModelManager
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import Metrics
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

TLS_HANDSHAKE_SECONDS = 10
SERVER_NAME = 'tfx-lm-serving'
# A body an early error left unread is read and dropped up to this size; beyond, the
# connection is closed instead.
DISCARD_LIMIT_BYTES = 1 << 20
# Request line and header limits (those of Python's http.server, which served REST before).
MAX_LINE_BYTES = 65536
MAX_HEADERS = 100
_CONTENT_LENGTH = re.compile(r'[0-9]{1,18}')
UNSUPPORTED_VERSION = 'HTTP version not supported: send HTTP/1.1 (or HTTP/1.0)'
# After a refusal that closes the connection with the client's bytes unread (its body, a
# request sent before it was refused), those bytes are read and dropped for up to this long
# and this many before the socket closes (see _Drain).
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 << 20
# asyncio's `backlog` is both the listen queue and how many accept()s it tries per wake-up;
# out of file descriptors, it reports and schedules a retry for every one of them (thousands
# a second with SOMAXCONN). It gets this many; the kernel's queue is set to SOMAXCONN apart.
ACCEPT_BATCH = 100
# A client that half-closes (FIN after its request: `nc -N`, socat, some proxies) is answered.
# A FIN is also what a client that closed altogether sends; to tell them apart, a request still
# running this long after the FIN gets one interim `100 Continue` (HTTP/1.1 clients skip it), which
# a closed client's kernel answers with a reset, looked for every PROBE_POLL_SECONDS.
PROBE_AFTER_SECONDS = 1.0
PROBE_POLL_SECONDS = 0.25
PROBE = b'HTTP/1.1 100 Continue\r\n\r\n'


@dataclasses.dataclass(frozen=True)
class RestOptions:
  """Limits of the REST front end.

  Attributes:
    max_request_bytes: larger bodies are refused with 413.
    max_connections: open connections (each costs a socket and a few KiB, no thread); more
      get 503 and are closed.
    header_timeout: seconds a connection may take, once idle, to send a request's line and
      headers (also the keep-alive idle limit).
    body_timeout: seconds a request's body may take to arrive, and its answer to be read.
    max_json_depth: deepest nesting of arrays and objects in a body.
    limits: codec.Limits of one request's tensors.
    auth_token: every call but health needs `Authorization: Bearer <token>` (None: open).
    timeout_seconds: how long a predict, classify or regress call may take, queue included, before it
      is answered 504; None: no limit.
    metrics_path: where GET serves the Prometheus metrics (None: nowhere).
  """

  max_request_bytes: int = 64 << 20
  max_connections: int = 4096
  header_timeout: float = 30.0
  body_timeout: float = 60.0
  max_json_depth: int = 64
  limits: codec.Limits = codec.DEFAULT_LIMITS
  auth_token: str | None = None
  timeout_seconds: float | None = None
  metrics_path: str | None = rest_api.METRICS_PATH

  def __post_init__(self):
    for name in (
      'max_request_bytes',
      'max_connections',
      'header_timeout',
      'body_timeout',
      'max_json_depth',
    ):
      if getattr(self, name) <= 0:
        raise ValueError(f'REST option {name} must be positive, got {getattr(self, name)}')


class _Drain(asyncio.Protocol):
  """A closing connection whose answer is out and whose write side is shut (FIN): what the
  client still sends is read and dropped until it closes, LINGER_BYTES have come or
  LINGER_SECONDS have passed; then the socket closes. Closed on unread bytes instead, the
  connection is reset, and a client still sending its body fails before it reads the answer.

  Args:
    transport: the connection's transport.
    then: the protocol the connection had, told of its end (or None).
  """

  def __init__(self, transport, then=None):
    self._transport = transport
    self._then = then
    self._left = LINGER_BYTES
    self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

  def data_received(self, data):
    self._left -= len(data)
    if self._left < 0:
      self._transport.close()

  def eof_received(self):
    return False  # the client is done too: close

  def connection_lost(self, exc):
    self._timer.cancel()
    if self._then is not None:
      self._then.connection_lost(exc)


def _close_after_answer(transport, protocol=None):
  """Closes `transport` once its answer is out, draining the client's bytes meanwhile
  (_Drain); a TLS connection, which cannot half-close, closes as it is."""
  if transport.is_closing() or not transport.can_write_eof():
    transport.close()
    return
  try:
    transport.write_eof()  # once the answer is written
  except OSError:  # the peer is already gone (ENOTCONN): nothing to drain or deliver
    transport.abort()
    return
  transport.set_protocol(_Drain(transport, protocol))
  transport.resume_reading()  # a large body may have paused it


class _LingeringTransport:
  """An aiohttp connection's transport whose close() drains first (_close_after_answer) when
  its protocol's `linger` is set; everything else is the transport's own."""

  def __init__(self, transport, protocol):
    self._transport = transport
    self._protocol = protocol

  def __getattr__(self, name):
    return getattr(self._transport, name)

  def close(self):
    if self._protocol.linger:
      self._protocol.linger = False
      _close_after_answer(self._transport, self._protocol)
    else:
      self._transport.close()


class _PeerClosed(ConnectionError):
  """The client closed its sending side before a request's body ended."""


class _Protocol(web_protocol.RequestHandler):
  """aiohttp's connection handler, with errors of the HTTP parser answered as JSON, a
  connection closed after a refusal with the client's bytes unread drained first (`linger`),
  and requests of a client that half-closed answered (eof_received)."""

  linger = False
  peer_eof = False  # the client has sent its FIN
  answer_timeout: float | None = None  # seconds an answer may go without a byte taken
  _answer_watch: list | None = None  # the timer of the answer being written

  def connection_made(self, transport):
    super().connection_made(_LingeringTransport(transport, self))

  def eof_received(self):
    """Keeps the connection open to answer the requests the client sent before its FIN.

    aiohttp (handler_cancellation) takes a FIN for a client gone and cancels its request, so a
    half-closing client got no answer. Now its requests are answered and the connection then
    closes (_handle_request); a body cut short by the FIN fails its read. Idle, or over TLS
    (which has no half-close), the connection closes as before.
    """
    transport = self.transport
    busy = self._request_in_progress or self._messages
    if not busy or transport is None or transport.get_extra_info('ssl_object') is not None:
      return None
    self.peer_eof = True
    self.linger = False  # all the client sent has been read
    payloads = [payload for _, payload in self._messages]
    if self._current_request is not None:
      payloads.append(self._current_request.content)
    for payload in payloads:
      if not payload.is_eof():
        payload.set_exception(
          _PeerClosed('the client closed its side of the connection before the body ended')
        )
    self._loop.call_later(PROBE_AFTER_SECONDS, self._probe)
    return True

  def _probe(self):
    """Sends the interim answer that tells a client gone from one that half-closed, then
    polls the socket for the reset a gone client's kernel sends back."""
    request, transport = self._current_request, self.transport
    if request is None or transport is None or transport.is_closing():
      return
    if request.version != HttpVersion11:
      return  # HTTP/1.0 has no interim answers: its request runs to the end
    transport.write(PROBE)
    self._loop.call_later(PROBE_POLL_SECONDS, self._poll, request)

  def _poll(self, request):
    transport = self.transport
    if request is not self._current_request or transport is None or transport.is_closing():
      return
    sock = transport.get_extra_info('socket')
    if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
      transport.abort()  # connection_lost cancels the request's work
      return
    self._loop.call_later(PROBE_POLL_SECONDS, self._poll, request)

  async def _handle_request(self, request, start_time, request_handler):
    try:
      answered = await super()._handle_request(request, start_time, request_handler)
    except asyncio.InvalidStateError:
      waiter = self._handler_waiter
      if waiter is None or not waiter.cancelled():
        raise
      # The server's shutdown gave up waiting for this request (its drain time ran out) just as
      # the request finished: aiohttp then sets the result of the cancelled waiter, which raised
      # here and was logged as an unhandled exception. The answer is out; the connection ends.
      return None, True
    if self.peer_eof and not self._messages:
      self.close()  # the client sends no more: close once this answer is out
    return answered

  async def finish_response(self, request, resp, start_time):
    """Writes the answer out, closing the connection when the client takes none of it for
    `answer_timeout` seconds: a client that stops reading would otherwise hold its connection,
    and the answer's memory, for good (the header and body timeouts only cover what it sends).
    A slow reader that keeps taking bytes is not cut off."""
    if self.answer_timeout is None:
      return await super().finish_response(request, resp, start_time)
    # A timer, not a task: most answers are written at once and it is only cancelled.
    watch = [self._loop.call_later(self.answer_timeout, self._watch_answer, request, None)]
    self._answer_watch = watch
    try:
      return await super().finish_response(request, resp, start_time)
    finally:
      watch[0].cancel()

  def _watch_answer(self, request, pending):
    """Every `answer_timeout` while an answer is being written: aborts the connection if the
    bytes waiting to go out did not go down since the last look."""
    transport = self.transport
    if transport is None or transport.is_closing():
      return
    left = transport.get_write_buffer_size()
    if pending is not None and left >= pending:
      log.info(
        'REST answer to %s: the client took none of it for %g s '
        '(--rest_body_timeout_seconds): connection closed',
        request.remote,
        self.answer_timeout,
      )
      transport.abort()  # the write fails: finish_response returns, the connection ends
      return
    self._answer_watch[0] = self._loop.call_later(
      self.answer_timeout, self._watch_answer, request, left
    )

  def handle_error(self, request, status=500, exc=None, message=None):
    self.linger = True
    if isinstance(exc, http_exceptions.LineTooLong):
      # The request line's URL (from llhttp's URL callback) or a header line.
      line = bytes(exc.args[0][:1]) if exc.args and exc.args[0] else b''
      status = 414 if line in (b'/', b'h') else 431
    elif isinstance(exc, http_exceptions.BadHttpMessage) and 'headers' in str(exc).lower():
      status = 431 if 'too many' in str(exc).lower() else status
    elif isinstance(exc, http_exceptions.BadStatusLine) and 'HTTP version' in str(exc):
      status, message = 505, UNSUPPORTED_VERSION
    if status == 500:
      log.error('REST request from %s failed', request.remote, exc_info=exc)
    else:
      log.debug('bad HTTP from %s: %s', request.remote, exc)
    text = message or (exc.message if isinstance(exc, http_exceptions.HttpProcessingError) else '')
    response = _json_response(status, {'error': text or 'bad request'}, (('Connection', 'close'),))
    response.force_close()
    return response


class _WebServer(web_server.Server):
  answer_timeout: float | None = None

  def __call__(self):
    protocol = _Protocol(self, loop=self._loop, **self._kwargs)
    protocol.answer_timeout = self.answer_timeout
    return protocol


class _Refuse(asyncio.Protocol):
  """A connection beyond the cap: answered 503 and closed."""

  BODY = b'{"error":"too many connections; retry later"}'

  def connection_made(self, transport):
    transport.write(
      b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n'
      b'Connection: close\r\nContent-Length: %d\r\n\r\n%s' % (len(self.BODY), self.BODY)
    )
    _close_after_answer(transport)  # the client may have sent its request already


class RestServer:
  """An HTTP(S) server on the running asyncio loop that drains in-flight requests on stop.

  Create and use it on the loop: `await start()`, then `await drain(grace)`.

  Args:
    address: (host, port); port 0 picks a free port.
    manager: manager.ModelManager.
    admission: the Admission queue predict, classify and regress run on.
    metrics: metrics.Metrics or None.
    options: RestOptions.
    ssl_context: an ssl.SSLContext for HTTPS, or None.
  """

  request_queue_size = socket.SOMAXCONN  # the listen backlog

  def __init__(
    self,
    address: tuple[str, int],
    manager: ModelManager,
    admission: Admission,
    metrics: Metrics | None = None,
    options: RestOptions = RestOptions(),
    ssl_context: ssl.SSLContext | None = None,
  ):
    self.address = address
    self.manager = manager
    self.admission = admission
    self.metrics = metrics
    self.options = options
    self.draining = False
    self.port = None
    self._ssl_context = ssl_context
    self._web = None
    self._listener = None

  async def start(self) -> None:
    """Binds and listens."""
    self._web = _WebServer(
      self._handle,
      handler_cancellation=True,  # a client that goes away cancels its request's work
      keepalive_timeout=self.options.header_timeout,
      lingering_time=0,  # unread bodies are handled by _Handler._finish_body
      max_line_size=MAX_LINE_BYTES,
      max_field_size=MAX_LINE_BYTES,
      max_headers=MAX_HEADERS,
      # Content-Encoding is decoded by rest_api.decompress on an admission thread, within
      # --max_request_bytes of output; aiohttp's parser would compare it with the wire length.
      auto_decompress=False,
      access_log=None,
    )
    self._web.answer_timeout = self.options.body_timeout
    loop = asyncio.get_running_loop()
    self._listener = await loop.create_server(
      self._connection,
      self.address[0],
      self.address[1],
      backlog=ACCEPT_BATCH,
      ssl=self._ssl_context,
      ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS if self._ssl_context else None,
      reuse_address=True,
    )
    for sock in self._listener.sockets:  # the kernel's queue: listen() again, on a duplicate
      with sock.dup() as listening:
        listening.listen(self.request_queue_size)
    self.port = self._listener.sockets[0].getsockname()[1]

  def _connection(self):
    if len(self._web.connections) >= self.options.max_connections or self.draining:
      return _Refuse()
    return self._web()  # aiohttp sets TCP_NODELAY: answers never wait on a delayed ACK

  async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
    handler = _Handler(self, request)
    await handler.serve()
    return handler.response

  async def drain(self, grace_seconds: float) -> None:
    """Stops accepting, closes idle connections, waits up to `grace_seconds` for busy ones."""
    self.draining = True
    if self._listener is not None:
      self._listener.close()
    if self._web is not None:
      await self._web.shutdown(grace_seconds)
    if self._listener is not None:
      await self._listener.wait_closed()


@dataclasses.dataclass
class _Reply:
  status: int
  body: object
  content_type: str | None = None
  headers: tuple = ()


def _json_response(status, body, headers=()):
  data = json.dumps(body, separators=(',', ':')).encode()
  return web.Response(
    status=status,
    body=data,
    headers={'Content-Type': 'application/json', 'Server': SERVER_NAME, **dict(headers)},
  )


def _content_coding(values):
  """The coding of a body from its Content-Encoding headers: None, 'gzip' or 'deflate'."""
  codings = [c.strip().lower() for value in values for c in value.split(',')]
  codings = [c for c in codings if c and c != 'identity']
  if not codings:
    return None
  if len(codings) == 1 and codings[0] in ('gzip', 'x-gzip', 'deflate'):
    return 'deflate' if codings[0] == 'deflate' else 'gzip'
  raise errors.invalid_argument(
    f'Content-Encoding {", ".join(codings):.80} is not supported; send the body uncompressed,'
    ' gzip or deflate',
    http_status=415,
  )


def _target_path(target: str) -> str:
  """The path of a request target without its query: origin-form (/v1/...) as it is, and
  absolute-form (http://host/v1/..., RFC 9112 3.2.2, what a client talking to a proxy sends)
  without its scheme and authority."""
  if not target.startswith('/'):
    parts = urllib.parse.urlsplit(target)
    if parts.scheme.lower() in ('http', 'https') and parts.netloc:
      return parts.path or '/'
  return target.split('?', 1)[0]


class _Handler:
  """Serves one request: route, auth, body, model work on the admission queue, answer."""

  def __init__(self, server: RestServer, request: web.BaseRequest):
    self.server = server
    self.request = request
    self.close_connection = False
    self.response = None
    self.labels = None  # (model, signature, method) for the metrics
    self._body_state = 'none'
    self._continued = False  # a 100 Continue went out
    self.coding = None  # the body's Content-Encoding: None, 'gzip' or 'deflate'

  async def serve(self):
    request = self.request
    http_method = request.method
    start = time.perf_counter()
    self._body_state = 'unread' if self._declares_body() else 'none'
    code = 'OK'
    try:
      self._check_version()
      if (
        request.headers.get('Upgrade')
        and 'upgrade' in request.headers.get('Connection', '').lower()
      ):
        # An upgrade (`curl --http2` asks for h2c) is answered in HTTP/1.1, as TF Serving does,
        # and the connection then closes: the parser takes what follows such a request as the
        # new protocol's bytes, so a request pipelined after it went unanswered.
        self.close_connection = True
      if http_method not in ('GET', 'HEAD', 'POST'):
        self.close_connection = True
        raise errors.ServingError(
          grpc.StatusCode.UNIMPLEMENTED,
          f'Unsupported method ({http_method:.20}): use GET or POST',
          http_status=501,
        )
      path = _target_path(request.raw_path)
      if path != rest_api.HEALTH_PATH:
        self._authenticate()
      # HEAD is answered as GET is, headers only (aiohttp leaves the body out).
      route = rest_api.parse_route(
        'GET' if http_method == 'HEAD' else http_method, path, self.server.options.metrics_path
      )
      if route.kind in ('health', 'metrics'):
        reply = self._health() if route.kind == 'health' else self._metrics()
      else:
        self.labels = (route.name, '', route.kind)
        if route.has_body:
          # Resolved first: a body for a model that is not served is not worth reading.
          servable = self.server.manager.resolve(route.name, route.version, route.label)
          raw = await self._read_body()
          reply = await self._post(route.kind, servable, raw)
        else:
          reply = self._get(route)
    except errors.ServingError as e:
      code = e.code.name
      headers = (('WWW-Authenticate', 'Bearer'),) if e.http_status == 401 else ()
      reply = _Reply(e.http_status, {'error': e.message}, headers=headers)
    except asyncio.CancelledError:
      code = 'CANCELLED'
      raise
    except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection.
      code = 'INTERNAL'
      log.exception('REST %s %.200s failed', http_method, request.raw_path)
      reply = _Reply(500, {'error': errors.bounded(f'internal error: {e!r}')})
    finally:
      if code == 'CANCELLED' and self.server.metrics is not None and self.labels is not None:
        self.server.metrics.observe_request(*self.labels, 'rest', code, time.perf_counter() - start)
    await self._finish_body()
    if self.server.draining:
      self.close_connection = True
    if self.server.metrics is not None and self.labels is not None:
      # Before the reply goes out, as gRPC's are: a client that reads the metrics after its
      # answer finds its request counted.
      self.server.metrics.observe_request(*self.labels, 'rest', code, time.perf_counter() - start)
    self._send(reply)

  def _check_version(self):
    """Refuses HTTP versions other than 1.0 and 1.1 (505), and a request line without one,
    which the parser reads as HTTP/0.9 (400); the connection then closes."""
    version = self.request.version
    if version in (HttpVersion10, HttpVersion11):
      return
    self.close_connection = True
    self._body_state = 'broken'
    if version == HttpVersion(0, 9):
      raise errors.invalid_argument(
        'the request line has no HTTP version: send "METHOD PATH HTTP/1.1"'
      )
    raise errors.ServingError(grpc.StatusCode.UNIMPLEMENTED, UNSUPPORTED_VERSION, http_status=505)

  def _authenticate(self):
    token = self.server.options.auth_token
    if token is None:
      return
    if not auth.bearer_matches(self.request.headers.get('Authorization') or '', token):
      raise errors.unauthenticated(
        'missing or wrong bearer token: send the header "Authorization: Bearer <token>"'
      )

  def _health(self):
    server = self.server
    ready = server.manager.ready() and not server.draining
    return _Reply(
      200 if ready else 503,
      {'status': 'ok' if ready else 'unavailable', 'models': server.manager.model_names()},
    )

  def _metrics(self):
    metrics = self.server.metrics
    return _Reply(200, metrics.render() if metrics is not None else '', METRICS_CONTENT_TYPE)

  def _get(self, route):
    manager = self.server.manager
    if route.kind == 'status':
      return _Reply(
        200, rest_api.status_body(manager.status(route.name, route.version, route.label))
      )
    servable = manager.resolve(route.name, route.version, route.label)
    return _Reply(200, rest_api.metadata_body(servable))

  async def _post(self, verb, servable, raw):
    """Decodes, runs and encodes on an admission thread; the deadline counts the queue."""
    options = self.server.options
    deadline = (
      None if options.timeout_seconds is None else (time.monotonic() + options.timeout_seconds)
    )
    name = self.labels[0]

    coding = self.coding

    def work(stop):
      text = rest_api.decompress(raw, coding, options.max_request_bytes)
      body = rest_api.parse_json(text, options.max_json_depth, servable.request_budget_bytes)
      del text  # up to --max_request_bytes, not needed once parsed
      if not isinstance(body, dict):
        raise errors.invalid_argument('request body must be a JSON object')
      signature_name = rest_api.signature_name(body)
      self.labels = (name, signature_name or DEFAULT_SIGNATURE, verb)
      if verb == 'predict':
        budget = options.limits.budget()
        answer = rest_api.predict(servable, signature_name, body, budget, deadline, stop)
      else:
        run = rest_api.classify if verb == 'classify' else rest_api.regress
        answer = run(servable, signature_name, body, deadline, stop)
        answer = json.dumps(answer, separators=(',', ':')).encode()
      return _Reply(200, answer, 'application/json')

    return await self.server.admission.run(work, deadline)

  def _send(self, reply):
    if isinstance(reply.body, (dict, list)):
      response = _json_response(reply.status, reply.body, reply.headers)
    else:
      data = reply.body if isinstance(reply.body, bytes) else reply.body.encode()
      response = web.Response(
        status=reply.status,
        body=data,
        headers={'Content-Type': reply.content_type, 'Server': SERVER_NAME, **dict(reply.headers)},
      )
    if self.close_connection:
      response.force_close()
      if self._body_state != 'read' and self._declares_body():
        self.request.protocol.linger = True  # its body may still be on the way
    self.response = response

  # Bodies.

  def _declares_body(self):
    headers = self.request.headers
    length = headers.get('Content-Length')
    return 'Transfer-Encoding' in headers or (length is not None and length.strip() != '0')

  def _fail(self, status, code, message):
    """An error after which the body's end is unknown: the connection closes."""
    self.close_connection = True
    self._body_state = 'broken'
    return errors.ServingError(code, message, http_status=status)

  async def _read_body(self):
    """The request body, from a Content-Length or chunked transfer coding, within limits."""
    request = self.request
    headers = request.headers
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    encodings = headers.getall('Transfer-Encoding', [])
    lengths = headers.getall('Content-Length', [])
    length = None
    limit = self.server.options.max_request_bytes
    if encodings:
      if lengths:
        raise self._fail(
          400, invalid, 'both Transfer-Encoding and Content-Length are set; send one'
        )
      codings = [c.strip().lower() for value in encodings for c in value.split(',')]
      if codings != ['chunked']:
        raise self._fail(
          501,
          grpc.StatusCode.UNIMPLEMENTED,
          f'Transfer-Encoding {", ".join(codings):.80} is not supported; send'
          ' the body chunked or with a Content-Length',
        )
      if request.version != HttpVersion11:
        raise self._fail(
          400,
          invalid,
          f'chunked bodies need HTTP/1.1, not HTTP/{request.version[0]}.{request.version[1]}',
        )
    else:
      if not lengths:
        raise self._fail(
          411,
          invalid,
          'POST needs a body with a Content-Length header (or Transfer-Encoding: chunked)',
        )
      values = {v.strip() for v in lengths}
      if len(values) != 1 or not _CONTENT_LENGTH.fullmatch(next(iter(values))):
        raise self._fail(400, invalid, f'invalid Content-Length {sorted(values)!r:.80}')
      length = int(values.pop())
      if length > limit:
        raise self._fail(
          413,
          grpc.StatusCode.RESOURCE_EXHAUSTED,
          f'request body of {length} bytes exceeds the limit of {limit} bytes',
        )
    self.coding = _content_coding(headers.getall('Content-Encoding', []))
    await self._continue()
    parts, total = [], 0
    timeout = self.server.options.body_timeout
    try:
      async with asyncio.timeout(timeout):
        while True:
          part = await request.content.readany()
          if not part:
            break
          total += len(part)
          if total > limit:
            raise self._fail(
              413,
              grpc.StatusCode.RESOURCE_EXHAUSTED,
              f'chunked request body exceeds the limit of {limit} bytes',
            )
          parts.append(part)
    except TimeoutError:
      raise self._fail(
        408,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f'the body took longer than {timeout:g} s to arrive ({total} bytes came)',
      ) from None
    except errors.ServingError:
      raise
    except _PeerClosed as e:
      raise self._fail(400, invalid, f'{e} ({total} bytes came)') from None
    except Exception as e:  # noqa: BLE001 - aiohttp's payload errors: a malformed body.
      raise self._fail(400, invalid, f'malformed request body: {e}') from None
    if length is not None and total != length:
      raise self._fail(400, invalid, f'the body ended after {total} of {length} bytes')
    self._body_state = 'read'
    return b''.join(parts)

  def _waits_for_continue(self):
    """True when the client may hold its body back until it gets a 100 Continue."""
    request = self.request
    return (
      request.version == HttpVersion11
      and (request.headers.get('Expect') or '').strip().lower() == '100-continue'
    )

  async def _continue(self):
    """Answers an HTTP/1.1 `Expect` just before the body is read, as aiohttp's full web
    application does: `100-continue` gets its 100 (curl otherwise waits a second before
    sending a body over 1 MiB), anything else 417."""
    request = self.request
    expect = request.headers.get('Expect')
    if expect is None or request.version != HttpVersion11:
      return
    if expect.strip().lower() != '100-continue':
      raise errors.invalid_argument(
        f'Expect: {expect.strip():.80} is not supported; send Expect: 100-continue or none',
        http_status=417,
      )
    await request.writer.write(b'HTTP/1.1 100 Continue\r\n\r\n')
    request.writer.output_size = 0  # the answer has not started (aiohttp resets it too)
    self._continued = True

  async def _finish_body(self):
    """After an early error: drops a small unread body, or closes the connection."""
    if self._body_state != 'unread':
      return
    self._body_state = 'broken'
    headers = self.request.headers
    length = (headers.get('Content-Length') or '').strip()
    if (
      'Transfer-Encoding' in headers
      # A client waiting for a 100 Continue that never came may never send its body.
      or (self._waits_for_continue() and not self._continued)
      or not _CONTENT_LENGTH.fullmatch(length)
      or int(length) > DISCARD_LIMIT_BYTES
    ):
      self.close_connection = True
      return
    try:
      async with asyncio.timeout(self.server.options.body_timeout):
        await self.request.content.readexactly(int(length))
      self._body_state = 'read'
    except Exception:  # noqa: BLE001 - short, slow or broken: close rather than guess.
      self.close_connection = True
