"""The model server: model manager + gRPC + REST, started and drained together."""

import dataclasses
import logging
import ssl
import threading
from concurrent import futures

import grpc

from serving import grpc_service, rest
from serving.manager import ModelManager
from serving.metrics import Metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """How the server listens and what it accepts.

  Attributes:
    host: interface to bind; 127.0.0.1 keeps the server local, 0.0.0.0 exposes it.
    grpc_port: gRPC port (0 picks a free one).
    rest_port: REST port (0 picks a free one), or None for no REST server.
    grpc_threads: worker threads of the gRPC server (requests handled at once).
    max_request_bytes: largest gRPC message or REST body accepted.
    ssl_certfile: PEM certificate chain; with ssl_keyfile, serves gRPC over TLS and REST over
      HTTPS.
    ssl_keyfile: PEM private key.
    drain_seconds: how long shutdown waits for in-flight requests.
    rest_timeout_seconds: a REST predict or classify call still running after this long is
      answered 504 (DEADLINE_EXCEEDED), as a gRPC call past its deadline is; None: no limit.
  """
  host: str = '127.0.0.1'
  grpc_port: int = 8500
  rest_port: int | None = 8501
  grpc_threads: int = 32
  max_request_bytes: int = 64 << 20
  ssl_certfile: str | None = None
  ssl_keyfile: str | None = None
  drain_seconds: float = 30.0
  rest_timeout_seconds: float | None = 120.0

  def __post_init__(self):
    if self.rest_timeout_seconds is not None and self.rest_timeout_seconds <= 0:
      raise ValueError(f'rest_timeout_seconds must be > 0 (or None), got '
                       f'{self.rest_timeout_seconds}')
    if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
      raise ValueError('TLS needs both a certificate file and a key file')


class Server:
  """Serves the models of a ModelManager over gRPC and REST.

  Args:
    manager: a manager.ModelManager (started by start()).
    options: ServerOptions.
    metrics: the metrics.Metrics the manager also reports to (a new one if None).
  """

  def __init__(self, manager, options=ServerOptions(), metrics=None):
    self.manager = manager
    self.options = options
    self.metrics = metrics or Metrics()
    self.grpc_port = None
    self.rest_port = None
    self._grpc = None
    self._rest = None
    self._rest_thread = None

  def start(self):
    """Loads the models, then listens; returns once both front ends accept connections.

    Raises:
      RuntimeError: when a port cannot be bound.
    """
    options = self.options
    self.manager.start()
    limit = options.max_request_bytes
    self._grpc = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.grpc_threads, thread_name_prefix='grpc'),
        options=[('grpc.max_receive_message_length', limit),
                 ('grpc.max_send_message_length', limit), ('grpc.so_reuseport', 0)])
    grpc_service.add_services(self._grpc, self.manager, self.metrics)
    address = f'{options.host}:{options.grpc_port}'
    if options.ssl_certfile:
      with open(options.ssl_keyfile, 'rb') as k, open(options.ssl_certfile, 'rb') as c:
        credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
      self.grpc_port = self._grpc.add_secure_port(address, credentials)
    else:
      self.grpc_port = self._grpc.add_insecure_port(address)
    if not self.grpc_port:
      raise RuntimeError(f'cannot bind gRPC to {address}')
    self._grpc.start()
    if options.rest_port is not None:
      context = None
      if options.ssl_certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.ssl_certfile, options.ssl_keyfile)
      self._rest = rest.RestServer((options.host, options.rest_port), self.manager, self.metrics,
                                   options.max_request_bytes, context,
                                   timeout_seconds=options.rest_timeout_seconds)
      self.rest_port = self._rest.port
      self._rest_thread = threading.Thread(target=self._rest.serve_forever, daemon=True,
                                           name='rest')
      self._rest_thread.start()
    log.info('serving gRPC on %s:%s and REST on %s', options.host, self.grpc_port,
             f'{options.host}:{self.rest_port}' if self.rest_port else 'nothing')
    return self

  def stop(self, grace_seconds=None):
    """Stops accepting requests, lets in-flight ones finish, then unloads the models."""
    grace = self.options.drain_seconds if grace_seconds is None else grace_seconds
    stopped = self._grpc.stop(grace) if self._grpc is not None else None
    if self._rest is not None:
      self._rest.drain(grace)
      self._rest_thread.join()
    if stopped is not None:
      stopped.wait()
    self.manager.stop()

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()


def build(models=(), discover_root=None, batching=None, poll_wait_seconds=1.0,
          options=ServerOptions(), max_request_rows=None):
  """A Server with a fresh ModelManager and Metrics (not yet started)."""
  metrics = Metrics()
  manager = ModelManager(models, discover_root, batching, poll_wait_seconds, metrics,
                         max_request_rows)
  return Server(manager, options, metrics)
