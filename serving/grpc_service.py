"""The gRPC front end: TF Serving's PredictionService and ModelService.

The methods are registered by hand rather than with the generated `add_*_to_server`, so that a
message that does not parse is answered INVALID_ARGUMENT (grpc's own deserializer failure
answers INTERNAL), and so that administration can be switched off.
"""

import hmac
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

from serving import codec, config, core, errors
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
  """Runs one RPC: answers its ServingError with its code, any other failure INTERNAL, and
  counts it in the metrics under the labels `labels(request)` gives."""

  def __init__(self, metrics, method, labels, fn):
    self._metrics = metrics
    self._method = method
    self._labels = labels
    self._fn = fn

  def __call__(self, request, context):
    start = time.perf_counter()
    code = 'OK'
    try:
      _check_decoded(request)
      return self._fn(request, context)
    except errors.ServingError as e:
      code = e.code.name
      context.abort(e.code, e.message)
    except Exception as e:  # noqa: BLE001 - report, never drop the connection on a bug.
      code = 'INTERNAL'
      log.exception('%s failed', self._method)
      context.abort(grpc.StatusCode.INTERNAL, f'{self._method} failed: {e!r}')
    finally:
      if self._metrics is not None:
        model, signature = ('', '') if isinstance(request, _Undecodable) else self._labels(request)
        self._metrics.observe_request(
          model, signature, self._method, 'grpc', code, time.perf_counter() - start
        )


def _model_labels(request):
  return request.model_spec.name, ''


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
    spec = request.model_spec
    if not spec.name:
      raise errors.invalid_argument('model_spec.name is missing')
    version, label = _version_choice(spec)
    return self._manager.resolve(spec.name, version, label)

  def predict(
    self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
  ) -> predict_pb2.PredictResponse:
    """PredictionService/Predict."""
    return core.predict(self._resolve(request), request, _deadline(context), self._limits)

  def classify(
    self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
  ) -> classification_pb2.ClassificationResponse:
    """PredictionService/Classify."""
    return core.classify(self._resolve(request), request, _deadline(context))

  def metadata(
    self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
  ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """PredictionService/GetModelMetadata."""
    return core.metadata(self._resolve(request), request)

  def status(
    self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
  ) -> get_model_status_pb2.GetModelStatusResponse:
    """ModelService/GetModelStatus."""
    version, label = _version_choice(request.model_spec)
    return core.status_response(self._manager.status(request.model_spec.name, version, label))

  def reload_config(
    self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
  ) -> model_management_pb2.ReloadConfigResponse:
    """ModelService/HandleReloadConfigRequest, when model management is enabled.

    Raises:
      ServingError: PERMISSION_DENIED when management is off; INVALID_ARGUMENT for a bad
        config, or one that lists no model (it would unload everything).
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

  def handlers(self) -> list[grpc.GenericRpcHandler]:
    """The generic handlers of both services, to pass to grpc.Server.add_generic_rpc_handlers."""

    def unimplemented(name):
      def fn(request, context):
        raise errors.ServingError(grpc.StatusCode.UNIMPLEMENTED, f'{name} is not supported')

      return fn

    def method(name, fn, request_class, response_class, labels):
      observed = _Observed(self._metrics, name, labels, fn)
      return grpc.unary_unary_rpc_method_handler(
        observed,
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
        unimplemented('Regress'),
        regression_pb2.RegressionRequest,
        regression_pb2.RegressionResponse,
        _model_labels,
      ),
      'MultiInference': method(
        'multi_inference',
        unimplemented('MultiInference'),
        inference_pb2.MultiInferenceRequest,
        inference_pb2.MultiInferenceResponse,
        lambda request: ('', ''),
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
  def fn(request, context):
    context.abort(code, message)

  return grpc.unary_unary_rpc_method_handler(fn)


class TokenAuthInterceptor(grpc.ServerInterceptor):
  """Lets an RPC through only with metadata `authorization: Bearer <token>`.

  Args:
    token: the shared secret.
  """

  def __init__(self, token: str):
    self._expected = f'Bearer {token}'.encode()
    self._refusal = _refuse(
      grpc.StatusCode.UNAUTHENTICATED,
      'missing or wrong bearer token: send metadata "authorization: Bearer <token>"',
    )

  def intercept_service(
    self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
  ) -> grpc.RpcMethodHandler:
    """Passes the call on when its metadata carries the token, else refuses it."""
    for key, value in handler_call_details.invocation_metadata or ():
      if key == AUTHORIZATION_KEY:
        given = value.encode() if isinstance(value, str) else value
        if hmac.compare_digest(given, self._expected):
          return continuation(handler_call_details)
    return self._refusal
