"""The gRPC front end: TF Serving's PredictionService and ModelService."""

import logging
import time

import grpc
from tensorflow_serving.apis import (
  model_management_pb2,
  model_service_pb2_grpc,
  prediction_service_pb2_grpc,
)

from serving import config, core, errors
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)


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


class _Handler:
  """Resolves the model of a request, runs `fn`, maps errors to status codes, counts it."""

  def __init__(self, manager, metrics):
    self._manager = manager
    self._metrics = metrics

  def serve(self, method, request, context, fn, signature=True):
    start = time.perf_counter()
    spec = request.model_spec
    code = 'OK'
    try:
      version, label = _version_choice(spec)
      if not spec.name:
        raise errors.invalid_argument('model_spec.name is missing')
      servable = self._manager.resolve(spec.name, version, label)
      return fn(servable, request, _deadline(context))
    except errors.ServingError as e:
      code = e.code.name
      context.abort(e.code, e.message)
    except Exception as e:  # noqa: BLE001 - report, never drop the connection on a bug.
      code = 'INTERNAL'
      log.exception('%s failed', method)
      context.abort(grpc.StatusCode.INTERNAL, f'{method} failed: {e!r}')
    finally:
      if self._metrics is not None:
        self._metrics.observe_request(
            spec.name, (spec.signature_name or DEFAULT_SIGNATURE) if signature else '',
            method, 'grpc', code, time.perf_counter() - start)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict, Classify and GetModelMetadata (Regress and MultiInference stay UNIMPLEMENTED)."""

  def __init__(self, manager, metrics=None):
    self._handler = _Handler(manager, metrics)

  def Predict(self, request, context):
    return self._handler.serve('predict', request, context, core.predict)

  def Classify(self, request, context):
    return self._handler.serve('classify', request, context, core.classify)

  def GetModelMetadata(self, request, context):
    return self._handler.serve('metadata', request, context,
                               lambda servable, r, _: core.metadata(servable, r), signature=False)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, manager, metrics=None):
    self._manager = manager
    self._metrics = metrics

  def GetModelStatus(self, request, context):
    start = time.perf_counter()
    spec = request.model_spec
    code = 'OK'
    try:
      version, label = _version_choice(spec)
      return core.status_response(self._manager.status(spec.name, version, label))
    except errors.ServingError as e:
      code = e.code.name
      context.abort(e.code, e.message)
    finally:
      if self._metrics is not None:
        self._metrics.observe_request(spec.name, '', 'status', 'grpc', code,
                                      time.perf_counter() - start)


  def HandleReloadConfigRequest(self, request, context):
    start = time.perf_counter()
    code = 'OK'
    try:
      models = config.models_from_proto(request.config, where='ReloadConfigRequest')
      self._manager.reload(models)
      return model_management_pb2.ReloadConfigResponse()
    except ValueError as e:
      code = 'INVALID_ARGUMENT'
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    finally:
      if self._metrics is not None:
        self._metrics.observe_request('', '', 'reload_config', 'grpc', code,
                                      time.perf_counter() - start)


def add_services(server, manager, metrics=None):
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(manager, metrics), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager, metrics), server)
