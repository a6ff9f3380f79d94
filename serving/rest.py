"""The REST front end: TF Serving's HTTP/JSON API, health and Prometheus metrics.

Connections are served by a bounded pool of worker threads, one per open connection, up to
`max_connections`; a connection beyond the cap is answered 503 and closed. A reaper thread
closes connections that do not deliver a request's head within `header_timeout` seconds of
going idle, or its body within `body_timeout` seconds. Bodies come with a Content-Length or
chunked (HTTP/1.1); a body left unread by an early error is read and dropped when small, else
the connection is closed, so it is never taken for the next request.
"""

import dataclasses
import hmac
import json
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from serving import codec, core, errors
from serving.manager import ModelManager
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import Metrics
from serving.servable import DEFAULT_SIGNATURE, Servable

log = logging.getLogger(__name__)

METRICS_PATH = '/monitoring/prometheus/metrics'
HEALTH_PATH = '/healthz'
TLS_HANDSHAKE_SECONDS = 10
REAPER_PERIOD_SECONDS = 0.25
# A body an early error left unread is read and dropped up to this size; beyond, the
# connection is closed instead.
DISCARD_LIMIT_BYTES = 1 << 20
MAX_CHUNK_LINE_BYTES = 1024
MAX_TRAILER_LINES = 32
_MODEL_PATH = re.compile(
  r'^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
  r'(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$'
)
_CONTENT_LENGTH = re.compile(r'[0-9]{1,18}')
_CHUNK_SIZE = re.compile(rb'([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n')
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb'[^\[\]{}]+')


@dataclasses.dataclass(frozen=True)
class RestOptions:
  """Limits of the REST front end.

  Attributes:
    max_request_bytes: larger bodies are refused with 413.
    max_connections: open connections (each has a worker thread); more get 503.
    header_timeout: seconds a connection may take, once idle, to send a request's line and
      headers (also the keep-alive idle limit).
    body_timeout: seconds a request's body may take to arrive.
    max_json_depth: deepest nesting of arrays and objects in a body.
    limits: codec.Limits of one request's tensors.
    auth_token: every call but health needs `Authorization: Bearer <token>` (None: open).
    timeout_seconds: how long a predict or classify call may run before it is answered 504;
      None: no limit.
  """

  max_request_bytes: int = 64 << 20
  max_connections: int = 64
  header_timeout: float = 30.0
  body_timeout: float = 60.0
  max_json_depth: int = 64
  limits: codec.Limits = codec.DEFAULT_LIMITS
  auth_token: str | None = None
  timeout_seconds: float | None = None

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


def parse_json(raw: bytes, max_depth: int) -> object:
  """Parses a JSON body whose arrays and objects nest at most `max_depth` deep.

  The depth is measured before parsing, in C-speed passes (strings removed, then brackets
  counted), so a deeply nested body costs no recursion.

  Raises:
    ServingError: INVALID_ARGUMENT for a body that is not UTF-8, not JSON, or too deep.
  """
  brackets = _NOT_BRACKET.sub(b'', _JSON_STRING.sub(b'', raw))
  if brackets:
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord('[')) | (steps == ord('{')), 1, -1)).max()
    if depth > max_depth:
      raise errors.invalid_argument(
        f'JSON Parse error: the body nests arrays and objects'
        f' {depth} deep, more than the limit of {max_depth}'
      )
  try:
    return json.loads(raw.decode('utf-8'))
  except UnicodeDecodeError as e:
    raise errors.invalid_argument(f'request body is not valid UTF-8: {e}') from None
  except json.JSONDecodeError as e:
    raise errors.invalid_argument(f'JSON Parse error: {e}') from None
  except RecursionError:
    raise errors.invalid_argument('JSON Parse error: the body nests too deep') from None


@dataclasses.dataclass(frozen=True)
class Route:
  """What a request path asks for.

  Attributes:
    kind: 'health', 'metrics', 'status', 'metadata' or a verb ('predict', 'classify').
    name: the model name (None for health and metrics).
    version: the version in the path, or None.
    label: the version label in the path, or None.
  """

  kind: str
  name: str | None = None
  version: int | None = None
  label: str | None = None

  @property
  def has_body(self) -> bool:
    return self.kind in ('predict', 'classify')


def parse_route(http_method: str, path: str) -> Route:
  """Maps a method and path (without query) to a Route, as TF Serving's REST API does.

  Raises:
    ServingError: INVALID_ARGUMENT for a malformed /v1/ path or the wrong method, NOT_FOUND for
      any other path, UNIMPLEMENTED for a verb other than predict and classify.
  """
  if path == HEALTH_PATH and http_method == 'GET':
    return Route('health')
  if path == METRICS_PATH and http_method == 'GET':
    return Route('metrics')
  match = _MODEL_PATH.match(path)
  if match is None:
    if path.startswith('/v1/'):
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200}')
    raise errors.not_found(f'no such path: {http_method} {path:.200}')
  version = match['version']
  if version is not None:
    if not re.fullmatch(r'[0-9]{1,18}', version):
      raise errors.invalid_argument(f'Malformed request: version "{version:.40}" is not a number')
    version = int(version)
  verb = match['verb']
  if verb is None:
    if http_method != 'GET':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200} (use GET)')
    kind = 'metadata' if match['metadata'] else 'status'
  else:
    if http_method != 'POST':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200} (use POST)')
    if verb not in ('predict', 'classify'):
      raise errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED, f'"{verb:.40}" is not supported; use predict or classify'
      )
    kind = verb
  return Route(kind, match['name'], version, match['label'])


class RestServer(socketserver.TCPServer):
  """An HTTP(S) server with a bounded worker pool that drains in-flight requests on shutdown.

  Args:
    address: (host, port); port 0 picks a free port.
    manager: manager.ModelManager.
    metrics: metrics.Metrics or None.
    options: RestOptions.
    ssl_context: an ssl.SSLContext for HTTPS, or None.
  """

  allow_reuse_address = True
  request_queue_size = socket.SOMAXCONN  # the listen backlog (socketserver's default is 5)

  def __init__(
    self,
    address: tuple[str, int],
    manager: ModelManager,
    metrics: Metrics | None = None,
    options: RestOptions = RestOptions(),
    ssl_context: ssl.SSLContext | None = None,
  ):
    self.manager = manager
    self.metrics = metrics
    self.options = options
    self.draining = False
    self.handlers = set()
    self.handlers_lock = threading.Lock()
    self._ssl_context = ssl_context
    self._connections = 0
    self._pool = futures.ThreadPoolExecutor(
      max_workers=options.max_connections, thread_name_prefix='rest'
    )
    self._stop_reaper = threading.Event()
    if ':' in address[0]:
      self.address_family = socket.AF_INET6
    super().__init__(address, _Handler)
    self._reaper = threading.Thread(target=self._reap, daemon=True, name='rest-reaper')
    self._reaper.start()

  @property
  def port(self) -> int:
    return self.server_address[1]

  def process_request(self, request: socket.socket, client_address: tuple) -> None:
    """Hands the connection to a worker, or answers 503 when every worker is taken."""
    with self.handlers_lock:
      full = self._connections >= self.options.max_connections
      if not full:
        self._connections += 1
    if full:
      self._refuse(request)
      return
    self._pool.submit(self._serve_connection, request, client_address)

  def _refuse(self, request):
    body = b'{"error":"too many connections; retry later"}'
    try:
      if self._ssl_context is None:  # over TLS, a handshake would be needed first: just close
        request.settimeout(0.5)
        request.sendall(
          b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n'
          b'Connection: close\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body)
        )
    except OSError:
      pass
    self.shutdown_request(request)

  def _serve_connection(self, request, client_address):
    try:
      self.finish_request(request, client_address)
    except Exception:  # noqa: BLE001 - one connection's failure must not end the worker.
      log.debug('REST connection from %s failed', client_address, exc_info=True)
    finally:
      self.shutdown_request(request)
      with self.handlers_lock:
        self._connections -= 1

  def finish_request(self, request: socket.socket, client_address: tuple) -> None:
    """Runs in the connection's worker, so a slow TLS handshake blocks no one else."""
    if self._ssl_context is None:
      super().finish_request(request, client_address)
      return
    request.settimeout(TLS_HANDSHAKE_SECONDS)
    try:
      request = self._ssl_context.wrap_socket(request, server_side=True)
    except OSError as e:  # ssl.SSLError included: plain HTTP, bad client certificate, ...
      log.debug('TLS handshake with %s failed: %s', client_address, e)
      return
    try:
      super().finish_request(request, client_address)
    finally:
      request.close()

  def _reap(self):
    """Closes connections that overran their header or body deadline."""
    while not self._stop_reaper.wait(REAPER_PERIOD_SECONDS):
      now = time.monotonic()
      with self.handlers_lock:
        late = [h for h in self.handlers if h.deadline is not None and h.deadline < now]
      for handler in late:
        log.debug('closing a connection from %s that was too slow', handler.client_address)
        handler.close_socket()

  def drain(self, grace_seconds: float) -> None:
    """Stops accepting, closes idle connections, waits up to `grace_seconds` for busy ones."""
    self.draining = True
    self.shutdown()
    deadline = time.monotonic() + grace_seconds
    while True:
      with self.handlers_lock:
        idle = [h for h in self.handlers if not h.busy]
        busy = [h for h in self.handlers if h.busy]
      for handler in idle:
        handler.close_socket()
      if not busy or time.monotonic() > deadline:
        break
      time.sleep(0.02)
    self._stop_reaper.set()
    self.server_close()
    self._pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class _Reply:
  status: int
  body: object
  content_type: str | None = None
  headers: tuple = ()


class _Handler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  server_version = 'tfx-lm-serving'
  # Buffered, flushed once per response: headers and body leave in one segment rather than
  # two small writes, which would wait on the client's delayed ACK (~40 ms).
  wbufsize = 64 << 10
  busy = False
  deadline = None  # time.monotonic() by which the current read must finish, or None

  def setup(self):
    self.timeout = self.server.options.header_timeout  # also bounds each blocking read
    super().setup()
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with self.server.handlers_lock:
      self.server.handlers.add(self)

  def finish(self):
    with self.server.handlers_lock:
      self.server.handlers.discard(self)
    try:
      super().finish()
    except OSError:
      pass  # the reaper or drain closed the socket under us

  def handle_one_request(self):
    self.deadline = time.monotonic() + self.server.options.header_timeout
    self._body_state = 'none'
    try:
      super().handle_one_request()
    except OSError:
      self.close_connection = True
    finally:
      self.deadline = None

  def parse_request(self):
    # The request line is in: from here on, drain() must let this request finish.
    self.busy = True
    ok = super().parse_request()
    self.deadline = None
    return ok

  def close_socket(self):
    try:
      self.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass

  def send_error(self, code, message=None, explain=None):
    """The base class's errors (bad request line, oversize headers, unknown method) as JSON,
    on a connection that is then closed: whatever body the request had is never read."""
    self.close_connection = True
    try:
      self._send(_Reply(code, {'error': message or explain or 'bad request'}))
    except OSError:
      pass

  def log_message(self, format, *args):  # noqa: A002 - the base class's name.
    log.debug('%s %s', self.address_string(), format % args)

  def do_GET(self):
    self._serve('GET')

  def do_POST(self):
    self._serve('POST')

  def _serve(self, http_method):
    self.busy = True
    start = time.perf_counter()
    self._body_state = 'unread' if self._declares_body() else 'none'
    labels, code = None, 'OK'
    try:
      path = self.path.split('?', 1)[0]
      if path != HEALTH_PATH:
        self._authenticate()
      route = parse_route(http_method, path)
      if route.kind in ('health', 'metrics'):
        reply = self._health() if route.kind == 'health' else self._metrics()
      else:
        labels = (route.name, '', route.kind)
        if route.has_body:
          # Resolved first: a body for a model that is not served is not worth reading.
          servable = self.server.manager.resolve(route.name, route.version, route.label)
          body = self._read_json()
          signature_name = _signature_name(body)
          labels = (route.name, signature_name or DEFAULT_SIGNATURE, route.kind)
          reply = self._post(route.kind, servable, signature_name, body)
        else:
          reply = self._get(route)
    except errors.ServingError as e:
      code = e.code.name
      headers = (('WWW-Authenticate', 'Bearer'),) if e.http_status == 401 else ()
      reply = _Reply(e.http_status, {'error': e.message}, headers=headers)
    except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection.
      code = 'INTERNAL'
      log.exception('REST %s %.200s failed', http_method, self.path)
      reply = _Reply(500, {'error': f'internal error: {e!r}'})
    self._finish_body()
    if self.server.draining:
      self.close_connection = True
    if self.server.metrics is not None and labels is not None:
      # Before the reply goes out, as gRPC's are: a client that reads the metrics after its
      # answer finds its request counted.
      self.server.metrics.observe_request(*labels, 'rest', code, time.perf_counter() - start)
    try:
      self._send(reply)
    finally:
      self.busy = False

  def _authenticate(self):
    token = self.server.options.auth_token
    if token is None:
      return
    given = (self.headers.get('Authorization') or '').encode('utf-8', 'replace')
    if not hmac.compare_digest(given, f'Bearer {token}'.encode()):
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
        200,
        _message_dict(core.status_response(manager.status(route.name, route.version, route.label))),
      )
    servable = manager.resolve(route.name, route.version, route.label)
    request = core.get_model_metadata_pb2.GetModelMetadataRequest(
      metadata_field=[core.SIGNATURE_DEF_FIELD]
    )
    response = core.metadata(servable, request)
    signature_defs = core.get_model_metadata_pb2.SignatureDefMap()
    response.metadata[core.SIGNATURE_DEF_FIELD].Unpack(signature_defs)
    # TF Serving's REST API shows the unpacked map, without the Any's "@type".
    return _Reply(
      200,
      {
        'model_spec': _message_dict(response.model_spec),
        'metadata': {core.SIGNATURE_DEF_FIELD: _message_dict(signature_defs)},
      },
    )

  def _post(self, verb, servable, signature_name, body):
    options = self.server.options
    deadline = (
      None if options.timeout_seconds is None else (time.monotonic() + options.timeout_seconds)
    )
    if verb == 'predict':
      budget = options.limits.budget()
      return _Reply(200, _predict(servable, signature_name, body, budget, deadline))
    return _Reply(200, _classify(servable, signature_name, body, deadline))

  def _send(self, reply):
    if isinstance(reply.body, (dict, list)):
      data = json.dumps(reply.body, separators=(',', ':')).encode()
      content_type = 'application/json'
    else:
      data = reply.body.encode()
      content_type = reply.content_type
    self.send_response(reply.status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(data)))
    for name, value in reply.headers:
      self.send_header(name, value)
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    self.wfile.write(data)
    self.wfile.flush()

  # Bodies.

  def _declares_body(self):
    length = self.headers.get('Content-Length')
    return 'Transfer-Encoding' in self.headers or (length is not None and length.strip() != '0')

  def _fail(self, status, code, message):
    """An error after which the body's end is unknown: the connection closes."""
    self.close_connection = True
    self._body_state = 'broken'
    return errors.ServingError(code, message, http_status=status)

  def _read_body(self):
    """The request body, from a Content-Length or chunked transfer coding, within limits."""
    headers = self.headers
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    encodings = headers.get_all('Transfer-Encoding')
    lengths = headers.get_all('Content-Length')
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
      if self.request_version != 'HTTP/1.1':
        raise self._fail(
          400, invalid, f'chunked bodies need HTTP/1.1, not {self.request_version:.20}'
        )
      return self._read_chunked()
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
    limit = self.server.options.max_request_bytes
    if length > limit:
      raise self._fail(
        413,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'request body of {length} bytes exceeds the limit of {limit} bytes',
      )
    data = self._read_exactly(length)
    self._body_state = 'read'
    return data

  def _read_exactly(self, length):
    self.deadline = time.monotonic() + self.server.options.body_timeout
    try:
      data = self.rfile.read(length)
    except OSError:
      data = b''
    finally:
      self.deadline = None
    if len(data) != length:
      raise self._fail(
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        f'the body ended after {len(data)} of {length} bytes (or took longer'
        f' than {self.server.options.body_timeout:g} s)',
      )
    return data

  def _read_line(self, what):
    self.deadline = time.monotonic() + self.server.options.body_timeout
    try:
      line = self.rfile.readline(MAX_CHUNK_LINE_BYTES + 1)
    except OSError:
      line = b''
    finally:
      self.deadline = None
    if not line.endswith(b'\n') or len(line) > MAX_CHUNK_LINE_BYTES:
      raise self._fail(400, grpc.StatusCode.INVALID_ARGUMENT, f'malformed chunked body: {what}')
    return line

  def _read_chunked(self):
    limit = self.server.options.max_request_bytes
    parts, total = [], 0
    while True:
      match = _CHUNK_SIZE.fullmatch(self._read_line('bad chunk size line'))
      if match is None:
        raise self._fail(
          400, grpc.StatusCode.INVALID_ARGUMENT, 'malformed chunked body: bad chunk size line'
        )
      size = int(match[1], 16)
      if size == 0:
        break
      total += size
      if total > limit:
        raise self._fail(
          413,
          grpc.StatusCode.RESOURCE_EXHAUSTED,
          f'chunked request body exceeds the limit of {limit} bytes',
        )
      parts.append(self._read_exactly(size))
      if self._read_line('chunk not followed by CRLF') not in (b'\r\n', b'\n'):
        raise self._fail(
          400,
          grpc.StatusCode.INVALID_ARGUMENT,
          'malformed chunked body: chunk longer than its size',
        )
    for _ in range(MAX_TRAILER_LINES):
      if self._read_line('bad trailer') in (b'\r\n', b'\n'):
        self._body_state = 'read'
        return b''.join(parts)
    raise self._fail(
      400,
      grpc.StatusCode.INVALID_ARGUMENT,
      f'malformed chunked body: more than {MAX_TRAILER_LINES} trailer lines',
    )

  def _finish_body(self):
    """After an early error: drops a small unread body, or closes the connection."""
    if self._body_state != 'unread':
      return
    self._body_state = 'broken'
    length = (self.headers.get('Content-Length') or '').strip()
    if (
      'Transfer-Encoding' in self.headers
      or not _CONTENT_LENGTH.fullmatch(length)
      or int(length) > DISCARD_LIMIT_BYTES
    ):
      self.close_connection = True
      return
    try:
      self._read_exactly(int(length))
      self._body_state = 'read'
    except errors.ServingError:
      self.close_connection = True

  def _read_json(self):
    body = parse_json(self._read_body(), self.server.options.max_json_depth)
    if not isinstance(body, dict):
      raise errors.invalid_argument('request body must be a JSON object')
    return body


def _signature_name(body):
  name = body.get('signature_name', '')
  if not isinstance(name, str):
    raise errors.invalid_argument('"signature_name" must be a string')
  return name


def _message_dict(message: Message) -> dict:
  return json_format.MessageToDict(
    message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
  )


def _columns(signature, body):
  """The inputs of a predict body as input key -> JSON value, from rows or columns."""
  specs = signature.inputs
  has_rows, has_columns = 'instances' in body, 'inputs' in body
  if has_rows == has_columns:
    raise errors.invalid_argument(
      'the request needs exactly one of "instances" (row format) or "inputs" (columnar format)'
    )
  if has_columns:
    columns = body['inputs']
    if _named(columns, specs):
      return columns
    if len(specs) != 1:
      raise errors.invalid_argument(
        f'signature "{signature.name}" has inputs {sorted(specs)}: "inputs" must be an'
        ' object naming them'
      )
    return {next(iter(specs)): columns}
  instances = body['instances']
  if not isinstance(instances, list):
    raise errors.invalid_argument('"instances" must be a list')
  if not instances:
    raise errors.invalid_argument('empty batch: "instances" is an empty list')
  if _named(instances[0], specs):
    for i, instance in enumerate(instances):
      if not _named(instance, specs) or set(instance) != set(instances[0]):
        raise errors.invalid_argument(
          f'instances[{i}] must name the same inputs as instances[0]: {sorted(instances[0])}'
        )
    return {k: [instance[k] for instance in instances] for k in instances[0]}
  if len(specs) == 1:
    return {next(iter(specs)): instances}
  raise errors.invalid_argument(
    f'signature "{signature.name}" has inputs {sorted(specs)}: each instance must be an'
    ' object naming them'
  )


def _predict(
  servable: Servable,
  signature_name: str,
  body: dict,
  budget: codec.Budget,
  deadline: float | None = None,
) -> dict:
  signature = servable.signature(signature_name)
  inputs = {}
  for key, value in _columns(signature, body).items():
    if key not in signature.inputs:
      raise errors.invalid_argument(
        f'input "{key:.80}" is not an input of signature'
        f' "{signature.name}": {sorted(signature.inputs)}'
      )
    inputs[key] = codec.from_json(key, value, signature.inputs[key].dtype, budget)
  _, outputs = core.predict_arrays(servable, signature.name, inputs, deadline=deadline)
  converted = {k: codec.to_json(k, v) for k, v in outputs.items()}
  if 'inputs' in body:
    return {'outputs': next(iter(converted.values())) if len(converted) == 1 else converted}
  batch = len(body['instances'])
  short = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != batch]
  if short:
    raise errors.invalid_argument(
      f'outputs {short} do not have the batch size {batch} as their'
      ' first dimension; use the columnar "inputs" format'
    )
  if len(converted) == 1:
    return {'predictions': next(iter(converted.values()))}
  return {'predictions': [{k: converted[k][i] for k in converted} for i in range(batch)]}


def _named(value, specs):
  """True for an object whose keys are input names (not a {"b64": ...} value)."""
  return isinstance(value, dict) and not (set(value) == {'b64'} and 'b64' not in specs)


def _classify(
  servable: Servable, signature_name: str, body: dict, deadline: float | None = None
) -> dict:
  examples = body.get('examples')
  if not isinstance(examples, list):
    raise errors.invalid_argument('classify needs "examples": a list of objects of features')
  if not examples:
    raise errors.invalid_argument('empty batch: "examples" is an empty list')
  context = body.get('context')
  context = codec.example_from_json('context', context) if context is not None else None
  protos = [
    codec.merge_context(context, codec.example_from_json(i, e)) for i, e in enumerate(examples)
  ]
  _, results = core.classify_examples(servable, signature_name, protos, deadline)
  return {
    'results': [
      [[label.decode('utf-8', 'replace'), score] for label, score in row] for row in results
    ]
  }
