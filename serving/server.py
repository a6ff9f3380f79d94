"""The model server: model manager + gRPC + REST, started and drained together.

Both front ends run on one asyncio event loop in a thread of their own (grpc.aio and aiohttp),
and share one Admission queue: the model work of every Predict, Classify and Regress, from either
protocol, runs on its bounded pool of threads in arrival order.
"""

import asyncio
import dataclasses
import logging
import ssl
import threading
from collections.abc import Sequence

import grpc

from serving import codec, grpc_service, loop_errors, memory, rest
from serving.admission import Admission
from serving.auth import read_token
from serving.batching import BatchingOptions
from serving.config import ModelConfig
from serving.manager import ModelManager
from serving.metrics import Metrics
from tfxlm import contract

log = logging.getLogger(__name__)

# After the drain time, how long gRPC still waits for the UNAVAILABLE answers of what was ended
# (a chunk loop stops within one chunk) before it cancels the rest.
ABORT_MARGIN_SECONDS = 1.0
# Calls received that the event loop has not taken yet (gRPC's server.max_pending_requests).
PENDING_RPCS = 16384


def host_port(host: str, port) -> str:
  """HOST:PORT, an IPv6 address in brackets ([::1]:8500), as grpc and URLs read it."""
  return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """How the server listens, whom it lets in and what it accepts.

  Attributes:
    host: interface to bind; 127.0.0.1 keeps the server local, 0.0.0.0 exposes it.
    grpc_port: gRPC port (0 picks a free one).
    rest_port: REST port (0 picks a free one), or None for no REST server.
    request_threads: threads that run requests' model work (Predict, Classify and Regress, both
      protocols); further requests wait in the queue.
    max_queued_requests: requests that may wait for a thread; beyond, RESOURCE_EXHAUSTED
      (REST 503).
    grpc_max_concurrent_rpcs: a cap on RPCs in the gRPC server, from when a call opens
      (beyond, RESOURCE_EXHAUSTED); 0: none, as TF Serving (max_queued_requests bounds the model
      work; a cap also counts calls whose message has not arrived, which any client can hold).
    grpc_max_connections: open gRPC connections; beyond, gRPC closes new ones; 0: no cap, as
      TF Serving (a cap lets whoever holds that many idle connections shut others out).
    grpc_request_timeout_seconds: time a gRPC call's request message, and the end of its
      stream, have to arrive after the call opens; beyond, DEADLINE_EXCEEDED.
    max_request_bytes: largest gRPC message or REST body accepted.
    limits: codec.Limits: tensor elements and string bytes one request may carry.
    rest_options: rest.RestOptions but for max_request_bytes, limits and auth_token, which are
      taken from here.
    ssl_certfile: PEM certificate chain; with ssl_keyfile, serves gRPC over TLS and REST over
      HTTPS.
    ssl_keyfile: PEM private key.
    ssl_client_ca_file: PEM CA certificates; when set, clients must present a certificate it
      signed (mutual TLS) on both ports.
    auth_token_file: a file holding a bearer token every call but REST health must carry.
    enable_model_management: serve HandleReloadConfigRequest (off: PERMISSION_DENIED).
    drain_seconds: how long shutdown waits for in-flight requests.
    rest_timeout_seconds: a REST predict, classify or regress call still running after this long is
      answered 504 (DEADLINE_EXCEEDED), as a gRPC call past its deadline is; None: no limit.
  """

  host: str = '127.0.0.1'
  grpc_port: int = contract.GRPC_PORT
  rest_port: int | None = contract.REST_PORT
  request_threads: int = 32
  max_queued_requests: int = 1024
  grpc_max_concurrent_rpcs: int = 0
  grpc_max_connections: int = 0
  grpc_request_timeout_seconds: float = 60.0
  max_request_bytes: int = 64 << 20
  limits: codec.Limits = codec.DEFAULT_LIMITS
  rest_options: rest.RestOptions = rest.RestOptions()
  ssl_certfile: str | None = None
  ssl_keyfile: str | None = None
  ssl_client_ca_file: str | None = None
  auth_token_file: str | None = None
  enable_model_management: bool = False
  drain_seconds: float = 30.0
  rest_timeout_seconds: float | None = 120.0

  def __post_init__(self):
    if self.rest_timeout_seconds is not None and self.rest_timeout_seconds <= 0:
      raise ValueError(
        f'rest_timeout_seconds must be > 0 (or None), got {self.rest_timeout_seconds}'
      )
    if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
      raise ValueError('TLS needs both a certificate file and a key file')
    if self.ssl_client_ca_file and not self.ssl_certfile:
      raise ValueError(
        'client certificates (--ssl_client_ca_file) need TLS: give'
        ' --ssl_certfile and --ssl_keyfile too'
      )
    if self.request_threads < 1 or self.max_queued_requests < 0:
      raise ValueError(
        f'request_threads must be >= 1 and max_queued_requests >= 0, got'
        f' {self.request_threads} and {self.max_queued_requests}'
      )
    if self.grpc_max_concurrent_rpcs < 0:
      raise ValueError(
        f'grpc_max_concurrent_rpcs must be >= 0, got {self.grpc_max_concurrent_rpcs}'
      )
    if self.grpc_max_connections < 0:
      raise ValueError(f'grpc_max_connections must be >= 0, got {self.grpc_max_connections}')
    if not self.grpc_request_timeout_seconds > 0:
      raise ValueError(
        f'grpc_request_timeout_seconds must be > 0, got {self.grpc_request_timeout_seconds}'
      )


class Server:
  """Serves the models of a ModelManager over gRPC and REST.

  Args:
    manager: a manager.ModelManager (started by start()).
    options: ServerOptions.
    metrics: the metrics.Metrics the manager also reports to (a new one if None).
  """

  def __init__(
    self,
    manager: ModelManager,
    options: ServerOptions = ServerOptions(),
    metrics: Metrics | None = None,
  ):
    self.manager = manager
    self.options = options
    self.metrics = metrics or Metrics()
    self.grpc_port = None
    self.rest_port = None
    self.admission = None
    self._grpc = None
    self._rest = None
    self._loop = None
    self._loop_thread = None

  def start(self) -> 'Server':
    """Loads the models, then listens; returns once both front ends accept connections.

    Raises:
      RuntimeError: when a port cannot be bound.
      OSError, ValueError: when a certificate, key or token file cannot be read.
    """
    options = self.options
    token = read_token(options.auth_token_file) if options.auth_token_file else None
    self.manager.start()
    self._loop = asyncio.new_event_loop()
    self._loop.set_exception_handler(loop_errors.AcceptErrorLog())
    self._loop_thread = threading.Thread(
      target=self._loop.run_forever, daemon=True, name='serving-loop'
    )
    self._loop_thread.start()
    try:
      asyncio.run_coroutine_threadsafe(self._start(token), self._loop).result()
    except BaseException:
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._loop_thread.join()
      self.manager.stop()
      raise
    log.info(
      'serving gRPC on %s and REST on %s',
      host_port(options.host, self.grpc_port),
      host_port(options.host, self.rest_port) if self.rest_port else 'nothing',
    )
    return self

  async def _start(self, token):
    options = self.options
    self.admission = Admission(options.request_threads, options.max_queued_requests)
    self.grpc_port = await self._start_grpc(token)
    if options.rest_port is not None:
      context = None
      if options.ssl_certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.ssl_certfile, options.ssl_keyfile)
        if options.ssl_client_ca_file:
          context.load_verify_locations(options.ssl_client_ca_file)
          context.verify_mode = ssl.CERT_REQUIRED
      rest_options = dataclasses.replace(
        options.rest_options,
        max_request_bytes=options.max_request_bytes,
        limits=options.limits,
        auth_token=token,
        timeout_seconds=options.rest_timeout_seconds,
      )
      self._rest = rest.RestServer(
        (options.host, options.rest_port),
        self.manager,
        self.admission,
        self.metrics,
        rest_options,
        context,
      )
      await self._rest.start()
      self.rest_port = self._rest.port

  async def _start_grpc(self, token):
    options = self.options
    limit = options.max_request_bytes
    interceptors = [grpc_service.TokenAuthInterceptor(token)] if token else []
    self._grpc = grpc.aio.server(
      interceptors=interceptors,
      options=[
        ('grpc.max_receive_message_length', limit),
        # --max_request_bytes bounds requests only: as TF Serving (INT32_MAX), an answer larger
        # is sent rather than failed after its work.
        ('grpc.max_send_message_length', -1),
        ('grpc.so_reuseport', 0),
        # Calls gRPC has received but the event loop has not yet taken: beyond its default
        # (1,000, and randomly up to 3,000) a burst's calls were CANCELLED, never seen here.
        ('grpc.server.max_pending_requests', PENDING_RPCS),
        ('grpc.server.max_pending_requests_hard_limit', PENDING_RPCS),
      ]
      + (
        [('grpc.max_allowed_incoming_connections', options.grpc_max_connections)]
        if options.grpc_max_connections
        else []
      ),
      maximum_concurrent_rpcs=options.grpc_max_concurrent_rpcs or None,
    )
    services = grpc_service.Services(
      self.manager, self.metrics, options.limits, options.enable_model_management
    )
    self._grpc.add_generic_rpc_handlers(
      services.handlers(self.admission, options.grpc_request_timeout_seconds)
    )
    address = host_port(options.host, options.grpc_port)
    if options.ssl_certfile:
      with open(options.ssl_keyfile, 'rb') as k, open(options.ssl_certfile, 'rb') as c:
        key_pair = (k.read(), c.read())
      client_ca = None
      if options.ssl_client_ca_file:
        with open(options.ssl_client_ca_file, 'rb') as f:
          client_ca = f.read()
      credentials = grpc.ssl_server_credentials(
        [key_pair], root_certificates=client_ca, require_client_auth=client_ca is not None
      )
      port = self._grpc.add_secure_port(address, credentials)
    else:
      port = self._grpc.add_insecure_port(address)
    if not port:
      raise RuntimeError(f'cannot bind gRPC to {address}')
    await self._grpc.start()
    return port

  def stop(self, grace_seconds: float | None = None) -> None:
    """Stops accepting requests, lets in-flight ones finish, then unloads the models."""
    grace = self.options.drain_seconds if grace_seconds is None else grace_seconds
    if self._loop is not None:
      asyncio.run_coroutine_threadsafe(self._stop(grace), self._loop).result()
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._loop_thread.join()
      self._loop.close()
      self._loop = None
    self.manager.stop()

  async def _stop(self, grace):
    # At the deadline, what still runs or waits on the admission queue is ended with
    # UNAVAILABLE (a status clients retry elsewhere) rather than waited for: aiohttp would give a
    # busy REST request the grace period a second time, and gRPC would cancel (CANCELLED) what it
    # is still waiting for; it is given ABORT_MARGIN_SECONDS more, to send those answers.
    margin = ABORT_MARGIN_SECONDS if self.admission is not None else 0.0
    stopping = []
    if self._grpc is not None:
      stopping.append(self._grpc.stop(grace + margin))
    if self._rest is not None:
      stopping.append(self._rest.drain(grace))
    drained = asyncio.gather(*stopping, return_exceptions=True)
    if self.admission is not None:
      done, _ = await asyncio.wait([drained], timeout=grace)
      if not done:
        self.admission.abort()
    await drained
    if self.admission is not None:
      self.admission.shutdown()

  def __enter__(self) -> 'Server':
    return self.start()

  def __exit__(self, *exc):
    self.stop()


def build(
  models: Sequence[ModelConfig] = (),
  discover_root: str | None = None,
  batching: BatchingOptions | None = None,
  poll_wait_seconds: float = 1.0,
  options: ServerOptions = ServerOptions(),
  max_request_rows: int | None = None,
  execution: memory.ExecutionOptions = memory.DEFAULT_EXECUTION,
) -> Server:
  """A Server with a fresh ModelManager and Metrics (not yet started)."""
  metrics = Metrics()
  manager = ModelManager(
    models, discover_root, batching, poll_wait_seconds, metrics, max_request_rows, execution
  )
  return Server(manager, options, metrics)
