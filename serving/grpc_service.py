"""The gRPC front end: TF Serving's PredictionService and ModelService, on grpc.aio.

The methods are registered by hand rather than with the generated `add_*_to_server`, so that a
message that does not parse is answered INVALID_ARGUMENT (grpc's own deserializer failure
answers INTERNAL), and so that administration can be switched off. Handlers are coroutines on
the server's event loop; Predict, Classify, Regress and MultiInference run their model work
through the Admission queue (a bounded pool of threads), the cheap calls (metadata, status) on
the loop itself.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  get_model_status_pb2,
  inference_pb2,
  model_management_pb2,
  predict_pb2,
  regression_pb2,
)

from serving import auth, codec, config, core, errors
from serving.admission import Admission
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

PREDICTION_SERVICE = 'tensorflow.serving.PredictionService'
MODEL_SERVICE = 'tensorflow.serving.ModelService'
AUTHORIZATION_KEY = 'authorization'


class _Undecodable:
  """What the deserializer returns for bytes that are not the expected message."""

  def __init__(self, message_name, error):
    self.message_name = message_name
    self.error = error


def _deserializer(message_class):
  def deserialize(data):
    try:
      return message_class.FromString(data)
    except Exception as e:  # noqa: BLE001 - DecodeError, RecursionError, ...: the bytes are bad.
      return _Undecodable(message_class.DESCRIPTOR.name, e)

  return deserialize


def _check_decoded(request):
  if isinstance(request, _Undecodable):
    raise errors.invalid_argument(
      f'the request is not a valid {request.message_name} message: {request.error}'
    )


def _version_choice(spec):
  choice = spec.WhichOneof('version_choice')
  if choice == 'version':
    return spec.version.value, None
  if choice == 'version_label':
    return None, spec.version_label
  return None, None


def _deadline(context):
  remaining = context.time_remaining()
  return None if remaining is None else time.monotonic() + remaining


class _Observed:
  """Runs one RPC: reads its request, answers its ServingError with its code, any other failure
  INTERNAL, and counts it in the metrics under the labels `labels(request)` gives.

  `fn(request, deadline, stop)` is the blocking work; with an `admission` it runs on one of
  its threads (queued when all are busy), without one on the event loop (cheap calls only).

  The methods are unary, but registered as client-streaming (the same bytes on the wire, and
  to any client) so that the call is held here before its message arrives: registered as
  unary, grpc.aio reads the message itself, with no time limit, and a client opening calls that
  never send one (a stalled stream costs it one HTTP/2 frame) kept each as long as it liked.
  A message, and the end of the client's stream, not there `request_timeout` seconds after the
  call opened is DEADLINE_EXCEEDED (a unary client sends the two together); a call half-closed
  without a message, or sending a second (grpc's own unary handling serves it on its first),
  INVALID_ARGUMENT.
  """

  def __init__(self, metrics, method, labels, fn, admission=None, request_timeout=None):
    self._metrics = metrics
    self._method = method
    self._labels = labels
    self._fn = fn
    self._admission = admission
    self._request_timeout = request_timeout

  async def _receive(self, context):
    request = None
    try:
      async with asyncio.timeout(self._request_timeout):
        request = await context.read()
        if request is grpc.aio.EOF:
          raise errors.invalid_argument('the call ended without a request message')
        _check_decoded(request)
        if await context.read() is not grpc.aio.EOF:
          raise errors.invalid_argument(
            'the call sent a second request message: the method is unary, send one message per call'
          )
    except TimeoutError:
      what = (
        'the request message did not arrive'
        if request is None
        else 'the request stream did not end'
      )
      raise errors.ServingError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f'{what} within {self._request_timeout:g} s of the call (--grpc_request_timeout_seconds)',
      ) from None
    return request

  async def __call__(self, request_iterator, context):
    start = time.perf_counter()
    code = 'OK'
    deadline = _deadline(context)
    request = None
    try:
      request = await self._receive(context)
      if self._admission is None:
        return self._fn(request, None, None)
      return await self._admission.run(lambda stop: self._fn(request, deadline, stop), deadline)
    except errors.ServingError as e:
      code, status = e.code.name, (e.code, e.message)
    except asyncio.CancelledError:  # the client cancelled or went away, or the deadline passed
      expired = deadline is not None and time.monotonic() >= deadline - 0.05
      code = 'DEADLINE_EXCEEDED' if expired else 'CANCELLED'
      raise
    except Exception as e:  # noqa: BLE001 - report, never drop the connection on a bug.
      code = 'INTERNAL'
      log.exception('%s failed', self._method)
      status = (grpc.StatusCode.INTERNAL, f'{self._method} failed: {e!r}')
    finally:
      if self._metrics is not None:
        unlabelled = request is None or isinstance(request, _Undecodable)
        model, signature = ('', '') if unlabelled else self._labels(request)
        self._metrics.observe_request(
          model, signature, self._method, 'grpc', code, time.perf_counter() - start
        )
    # Aborted outside the `except`, with the request let go: grpc keeps the AbortError in a
    # reference cycle of its own, and raised in the `except` it would carry the error (and
    # through its traceback the request) as its context; the frame below is in its traceback.
    request = None
    await context.abort(status[0], errors.bounded(status[1]))


def _model_labels(request):
  return request.model_spec.name, ''


def _task_labels(request):
  return (request.tasks[0].model_spec.name, '') if request.tasks else ('', '')


def _signature_labels(request):
  spec = request.model_spec
  return spec.name, spec.signature_name or DEFAULT_SIGNATURE


class Services:
  """The RPCs of PredictionService and ModelService over a ModelManager.

  Args:
    manager: the ModelManager.
    metrics: Metrics or None.
    limits: codec.Limits for Predict's tensors.
    enable_model_management: allow HandleReloadConfigRequest (off: PERMISSION_DENIED).
  """

  def __init__(
    self,
    manager: ModelManager,
    metrics: Metrics | None = None,
    limits: codec.Limits = codec.DEFAULT_LIMITS,
    enable_model_management: bool = False,
  ):
    self._manager = manager
    self._metrics = metrics
    self._limits = limits
    self._management = enable_model_management

  def _resolve(self, request):
    return self._resolve_spec(request.model_spec)

  def _resolve_spec(self, spec):
    if not spec.name:
      raise errors.invalid_argument('model_spec.name is missing')
    version, label = _version_choice(spec)
    return self._manager.resolve(spec.name, version, label)

  def predict(
    self, request: predict_pb2.PredictRequest, deadline=None, stop=None
  ) -> predict_pb2.PredictResponse:
    """PredictionService/Predict (blocking: runs on an admission thread)."""
    return core.predict(self._resolve(request), request, deadline, self._limits, stop)

  def classify(
    self, request: classification_pb2.ClassificationRequest, deadline=None, stop=None
  ) -> classification_pb2.ClassificationResponse:
    """PredictionService/Classify (blocking: runs on an admission thread)."""
    return core.classify(self._resolve(request), request, deadline, stop)

  def regress(
    self, request: regression_pb2.RegressionRequest, deadline=None, stop=None
  ) -> regression_pb2.RegressionResponse:
    """PredictionService/Regress (blocking: runs on an admission thread)."""
    return core.regress(self._resolve(request), request, deadline, stop)

  def multi_inference(
    self, request: inference_pb2.MultiInferenceRequest, deadline=None, stop=None
  ) -> inference_pb2.MultiInferenceResponse:
    """PredictionService/MultiInference (blocking: runs on an admission thread)."""
    return core.multi_inference(request, self._resolve_spec, deadline, stop)

  def metadata(
    self, request: get_model_metadata_pb2.GetModelMetadataRequest, deadline=None, stop=None
  ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """PredictionService/GetModelMetadata."""
    return core.metadata(self._resolve(request), request)

  def status(
    self, request: get_model_status_pb2.GetModelStatusRequest, deadline=None, stop=None
  ) -> get_model_status_pb2.GetModelStatusResponse:
    """ModelService/GetModelStatus."""
    if not request.model_spec.name:  # TF Serving: INVALID_ARGUMENT "Missing ModelSpec"
      raise errors.invalid_argument('model_spec.name is missing: name the model')
    version, label = _version_choice(request.model_spec)
    return core.status_response(self._manager.status(request.model_spec.name, version, label))

  def reload_config(
    self, request: model_management_pb2.ReloadConfigRequest, deadline=None, stop=None
  ) -> model_management_pb2.ReloadConfigResponse:
    """ModelService/HandleReloadConfigRequest, when model management is enabled.

    Raises:
      ServingError: PERMISSION_DENIED when management is off; INVALID_ARGUMENT for a bad
        config, or one that lists no model (it would unload everything); FAILED_PRECONDITION
        when a model of the config cannot serve (then nothing changed: ModelManager.reload).
    """
    if not self._management:
      raise errors.ServingError(
        grpc.StatusCode.PERMISSION_DENIED,
        'model management is disabled: HandleReloadConfigRequest needs a server started with'
        ' --enable_model_management',
      )
    try:
      models = config.models_from_proto(request.config, where='ReloadConfigRequest')
    except ValueError as e:
      raise errors.invalid_argument(str(e)) from None
    if not models:
      raise errors.invalid_argument(
        'ReloadConfigRequest lists no model; it would unload every'
        ' model (list the models to keep serving)'
      )
    self._manager.reload(models)
    return model_management_pb2.ReloadConfigResponse()

  def handlers(
    self, admission: Admission, request_timeout: float | None = None
  ) -> list[grpc.GenericRpcHandler]:
    """The generic handlers of both services, for grpc.aio.Server.add_generic_rpc_handlers.

    Predict, Classify, Regress, MultiInference and HandleReloadConfigRequest (which loads
    models) run on `admission`'s threads; the other calls on the event loop. A call whose
    request message, and the end of its stream, have not arrived `request_timeout` seconds after
    it opened is ended (_Observed).
    """
    heavy = ('predict', 'classify', 'regress', 'multi_inference', 'reload_config')

    def method(name, fn, request_class, response_class, labels):
      observed = _Observed(
        self._metrics, name, labels, fn, admission if name in heavy else None, request_timeout
      )
      return grpc.stream_unary_rpc_method_handler(
        observed.__call__,  # a coroutine function, as grpc.aio needs
        request_deserializer=_deserializer(request_class),
        response_serializer=response_class.SerializeToString,
      )

    prediction = {
      'Predict': method(
        'predict',
        self.predict,
        predict_pb2.PredictRequest,
        predict_pb2.PredictResponse,
        _signature_labels,
      ),
      'Classify': method(
        'classify',
        self.classify,
        classification_pb2.ClassificationRequest,
        classification_pb2.ClassificationResponse,
        _signature_labels,
      ),
      'GetModelMetadata': method(
        'metadata',
        self.metadata,
        get_model_metadata_pb2.GetModelMetadataRequest,
        get_model_metadata_pb2.GetModelMetadataResponse,
        _model_labels,
      ),
      'Regress': method(
        'regress',
        self.regress,
        regression_pb2.RegressionRequest,
        regression_pb2.RegressionResponse,
        _signature_labels,
      ),
      'MultiInference': method(
        'multi_inference',
        self.multi_inference,
        inference_pb2.MultiInferenceRequest,
        inference_pb2.MultiInferenceResponse,
        _task_labels,
      ),
    }
    model = {
      'GetModelStatus': method(
        'status',
        self.status,
        get_model_status_pb2.GetModelStatusRequest,
        get_model_status_pb2.GetModelStatusResponse,
        _model_labels,
      ),
      'HandleReloadConfigRequest': method(
        'reload_config',
        self.reload_config,
        model_management_pb2.ReloadConfigRequest,
        model_management_pb2.ReloadConfigResponse,
        lambda request: ('', ''),
      ),
    }
    return [
      grpc.method_handlers_generic_handler(PREDICTION_SERVICE, prediction),
      grpc.method_handlers_generic_handler(MODEL_SERVICE, model),
    ]


def _refuse(code, message):
  """A handler that answers `code` at once, without waiting for the request message.

  Client-streaming, as the methods are (_Observed): a unary handler's message is read by
  grpc.aio first, with no time limit, so a call that never sent one (or half-closed without
  one) stayed open unanswered, past --grpc_request_timeout_seconds.
  """

  async def fn(request_iterator, context):
    await context.abort(code, message)

  return grpc.stream_unary_rpc_method_handler(fn)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
  """Lets an RPC through only with metadata `authorization: Bearer <token>` (the scheme in any
  case, as over REST).

  Args:
    token: the shared secret.
  """

  def __init__(self, token: str):
    self._token = token
    self._refusal = _refuse(
      grpc.StatusCode.UNAUTHENTICATED,
      'missing or wrong bearer token: send metadata "authorization: Bearer <token>"',
    )

  async def intercept_service(
    self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
  ) -> grpc.RpcMethodHandler:
    """Passes the call on when its metadata carries the token, else refuses it."""
    for key, value in handler_call_details.invocation_metadata or ():
      if key == AUTHORIZATION_KEY:
        if auth.bearer_matches(value, self._token):
          return await continuation(handler_call_details)
    return self._refusal
