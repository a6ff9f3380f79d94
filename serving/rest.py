"""The REST front end: TF Serving's HTTP/JSON API, health and Prometheus metrics."""

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format

from serving import codec, core, errors
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

METRICS_PATH = '/monitoring/prometheus/metrics'
HEALTH_PATH = '/healthz'
TLS_HANDSHAKE_SECONDS = 10
IDLE_CONNECTION_SECONDS = 300
_MODEL_PATH = re.compile(
    r'^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
    r'(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$')


class RestServer(ThreadingHTTPServer):
  """A threaded HTTP(S) server that drains in-flight requests on shutdown.

  Args:
    address: (host, port); port 0 picks a free port.
    manager: manager.ModelManager.
    metrics: metrics.Metrics or None.
    max_request_bytes: larger bodies are refused with 413.
    ssl_context: an ssl.SSLContext for HTTPS, or None.
    timeout_seconds: how long a predict or classify call may run before it is answered 504;
      None: no limit.
  """

  daemon_threads = True  # idle keep-alive connections must not hold up exit; drain() waits.
  allow_reuse_address = True

  def __init__(self, address, manager, metrics=None, max_request_bytes=64 << 20,
               ssl_context=None, timeout_seconds=None):
    self.manager = manager
    self.timeout_seconds = timeout_seconds
    self.metrics = metrics
    self.max_request_bytes = max_request_bytes
    self.draining = False
    self.handlers = set()
    self.handlers_lock = threading.Lock()
    self._ssl_context = ssl_context
    if ':' in address[0]:
      self.address_family = socket.AF_INET6
    super().__init__(address, _Handler)

  def finish_request(self, request, client_address):
    """Runs in the connection's own thread, so a slow TLS handshake blocks no one else."""
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
      request.settimeout(None)
      super().finish_request(request, client_address)
    finally:
      request.close()

  @property
  def port(self):
    return self.server_address[1]

  def drain(self, grace_seconds):
    """Stops accepting, closes idle connections, waits up to `grace_seconds` for busy ones."""
    self.draining = True
    self.shutdown()
    deadline = time.monotonic() + grace_seconds
    while True:
      with self.handlers_lock:
        for handler in self.handlers:
          if not handler.busy:
            handler.close_idle()
        busy = [h for h in self.handlers if h.busy]
      if not busy or time.monotonic() > deadline:
        break
      time.sleep(0.02)
    self.server_close()


class _Handler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  server_version = 'tfx-lm-serving'
  # Buffered, flushed once per response: headers and body leave in one segment rather than
  # two small writes, which would wait on the client's delayed ACK (~40 ms).
  wbufsize = 64 << 10
  timeout = IDLE_CONNECTION_SECONDS  # closes idle keep-alive connections and stalled reads
  busy = False

  def setup(self):
    super().setup()
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with self.server.handlers_lock:
      self.server.handlers.add(self)

  def finish(self):
    with self.server.handlers_lock:
      self.server.handlers.discard(self)
    super().finish()

  def parse_request(self):
    # The request line is in: from here on, drain() must let this request finish.
    self.busy = True
    return super().parse_request()

  def close_idle(self):
    try:
      self.connection.shutdown(socket.SHUT_RDWR)
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
    labels = ['', '', 'other']
    try:
      status, body, content_type = self._route(http_method, labels)
    except errors.ServingError as e:
      status, body, content_type = e.http_status, {'error': e.message}, None
      labels.append(e.code.name)
    except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection.
      log.exception('REST %s %s failed', http_method, self.path)
      status, body, content_type = 500, {'error': f'internal error: {e!r}'}, None
      labels.append('INTERNAL')
    else:
      labels.append('OK')
    if self.server.draining:
      self.close_connection = True
    try:
      self._reply(status, body, content_type)
    finally:
      self.busy = False
    if self.server.metrics is not None and labels[2] != 'other':
      self.server.metrics.observe_request(labels[0], labels[1], labels[2], 'rest', labels[3],
                                          time.perf_counter() - start)

  def _reply(self, status, body, content_type=None):
    if isinstance(body, (dict, list)):
      data = json.dumps(body, separators=(',', ':')).encode()
      content_type = 'application/json'
    else:
      data = body.encode()
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(data)))
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    self.wfile.write(data)
    self.wfile.flush()

  def _read_json(self):
    length = self.headers.get('Content-Length')
    if length is None or not length.isdigit():
      self.close_connection = True
      raise errors.ServingError(errors.grpc.StatusCode.INVALID_ARGUMENT,
                                'POST needs a Content-Length header (chunked bodies are not'
                                ' supported)')
    length = int(length)
    if length > self.server.max_request_bytes:
      self.close_connection = True  # the body is left unread
      raise errors.ServingError(errors.grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f'request body of {length} bytes exceeds the limit of'
                                f' {self.server.max_request_bytes} bytes', http_status=413)
    raw = self.rfile.read(length)
    try:
      body = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as e:
      raise errors.invalid_argument(f'request body is not valid UTF-8: {e}') from None
    except json.JSONDecodeError as e:
      raise errors.invalid_argument(f'JSON Parse error: {e}') from None
    if not isinstance(body, dict):
      raise errors.invalid_argument('request body must be a JSON object')
    return body

  def _route(self, http_method, labels):
    path = self.path.split('?', 1)[0]
    server = self.server
    if path == HEALTH_PATH and http_method == 'GET':
      ready = server.manager.ready() and not server.draining
      return (200 if ready else 503), {'status': 'ok' if ready else 'unavailable',
                                       'models': server.manager.model_names()}, None
    if path == METRICS_PATH and http_method == 'GET':
      body = server.metrics.render() if server.metrics is not None else ''
      return 200, body, METRICS_CONTENT_TYPE
    match = _MODEL_PATH.match(path)
    if match is None:
      if path.startswith('/v1/'):
        raise errors.invalid_argument(f'Malformed request: {http_method} {path}')
      raise errors.not_found(f'no such path: {http_method} {path}')
    name, version, label = match['name'], match['version'], match['label']
    labels[0] = name
    if version is not None:
      if not version.isdigit():
        raise errors.invalid_argument(f'Malformed request: version "{version}" is not a number')
      version = int(version)
    verb = match['verb']
    if verb is None:
      if http_method != 'GET':
        raise errors.invalid_argument(f'Malformed request: {http_method} {path} (use GET)')
      if match['metadata']:
        labels[2] = 'metadata'
        servable = server.manager.resolve(name, version, label)
        request = core.get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[core.SIGNATURE_DEF_FIELD])
        response = core.metadata(servable, request)
        signature_defs = core.get_model_metadata_pb2.SignatureDefMap()
        response.metadata[core.SIGNATURE_DEF_FIELD].Unpack(signature_defs)
        # TF Serving's REST API shows the unpacked map, without the Any's "@type".
        return 200, {'model_spec': _message_dict(response.model_spec),
                     'metadata': {core.SIGNATURE_DEF_FIELD: _message_dict(signature_defs)}}, None
      labels[2] = 'status'
      return 200, _message_dict(core.status_response(
          server.manager.status(name, version, label))), None
    if http_method != 'POST':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path} (use POST)')
    if verb not in ('predict', 'classify'):
      raise errors.ServingError(errors.grpc.StatusCode.UNIMPLEMENTED,
                                f'"{verb}" is not supported; use predict or classify')
    labels[2] = verb
    body = self._read_json()
    signature_name = body.get('signature_name', '')
    if not isinstance(signature_name, str):
      raise errors.invalid_argument('"signature_name" must be a string')
    labels[1] = signature_name or DEFAULT_SIGNATURE
    servable = server.manager.resolve(name, version, label)
    deadline = (None if server.timeout_seconds is None
                else time.monotonic() + server.timeout_seconds)
    if verb == 'predict':
      return 200, _predict(servable, signature_name, body, deadline), None
    return 200, _classify(servable, signature_name, body, deadline), None


def _message_dict(message):
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   always_print_fields_with_no_presence=True)


def _predict(servable, signature_name, body, deadline=None):
  has_rows, has_columns = 'instances' in body, 'inputs' in body
  if has_rows == has_columns:
    raise errors.invalid_argument('the request needs exactly one of "instances" (row format) or'
                                  ' "inputs" (columnar format)')
  signature = servable.signature(signature_name)
  specs = signature.inputs
  if has_rows:
    instances = body['instances']
    if not isinstance(instances, list):
      raise errors.invalid_argument('"instances" must be a list')
    if not instances:
      raise errors.invalid_argument('empty batch: "instances" is an empty list')
    if _named(instances[0], specs):
      for i, instance in enumerate(instances):
        if not _named(instance, specs) or set(instance) != set(instances[0]):
          raise errors.invalid_argument(
              f'instances[{i}] must name the same inputs as instances[0]:'
              f' {sorted(instances[0])}')
      columns = {k: [instance[k] for instance in instances] for k in instances[0]}
    elif len(specs) == 1:
      columns = {next(iter(specs)): instances}
    else:
      raise errors.invalid_argument(
          f'signature "{signature.name}" has inputs {sorted(specs)}: each instance must be an'
          ' object naming them')
  else:
    columns = body['inputs']
    if not _named(columns, specs):
      if len(specs) != 1:
        raise errors.invalid_argument(
            f'signature "{signature.name}" has inputs {sorted(specs)}: "inputs" must be an'
            ' object naming them')
      columns = {next(iter(specs)): columns}
  inputs = {}
  for key, value in columns.items():
    if key not in specs:
      raise errors.invalid_argument(f'input "{key}" is not an input of signature'
                                    f' "{signature.name}": {sorted(specs)}')
    inputs[key] = codec.from_json(key, value, specs[key].dtype)
  _, outputs = core.predict_arrays(servable, signature.name, inputs, deadline=deadline)
  converted = {k: codec.to_json(k, v) for k, v in outputs.items()}
  if has_columns:
    return {'outputs': next(iter(converted.values())) if len(converted) == 1 else converted}
  batch = len(instances)
  short = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != batch]
  if short:
    raise errors.invalid_argument(f'outputs {short} do not have the batch size {batch} as their'
                                  ' first dimension; use the columnar "inputs" format')
  if len(converted) == 1:
    return {'predictions': next(iter(converted.values()))}
  return {'predictions': [{k: converted[k][i] for k in converted} for i in range(batch)]}


def _named(value, specs):
  """True for an object whose keys are input names (not a {"b64": ...} value)."""
  return isinstance(value, dict) and not (set(value) == {'b64'} and 'b64' not in specs)


def _classify(servable, signature_name, body, deadline=None):
  examples = body.get('examples')
  if not isinstance(examples, list):
    raise errors.invalid_argument('classify needs "examples": a list of objects of features')
  if not examples:
    raise errors.invalid_argument('empty batch: "examples" is an empty list')
  context = body.get('context')
  context = codec.example_from_json('context', context) if context is not None else None
  protos = [codec.merge_context(context, codec.example_from_json(i, e))
            for i, e in enumerate(examples)]
  _, results = core.classify_examples(servable, signature_name, protos, deadline)
  return {'results': [[[label.decode('utf-8', 'replace'), score] for label, score in row]
                      for row in results]}
