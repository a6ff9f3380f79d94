"""The request logic shared by the gRPC and REST front ends (and by warm-up replay)."""

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  get_model_status_pb2,
  inference_pb2,
  input_pb2,
  model_pb2,
  predict_pb2,
  regression_pb2,
)

from serving import codec, errors
from serving.servable import DEFAULT_SIGNATURE, Servable, Signature
from tfxlm import contract

# The one metadata field TF Serving knows.
SIGNATURE_DEF_FIELD = 'signature_def'
# The serialized tf.Example input of Classify and Regress: this project's `examples`, or
# `inputs` as TF Serving's classification and regression signatures name it.
EXAMPLES_INPUT_KEYS = (contract.EXAMPLES_INPUT, contract.CLASSIFY_INPUTS)
# The method names of TF Serving's classification and regression signatures (and tasks of a
# MultiInferenceRequest), and the one output of a regression signature.
CLASSIFY_METHOD = contract.CLASSIFY_METHOD
REGRESS_METHOD = 'tensorflow/serving/regress'
REGRESS_OUTPUT = 'outputs'


def predict_arrays(
  servable: Servable,
  signature_name: str,
  inputs: Mapping[str, np.ndarray],
  output_filter: Sequence[str] = (),
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> tuple[Signature, dict[str, np.ndarray]]:
  """Runs a signature on numpy inputs.

  Args:
    servable: the servable.Servable to call.
    signature_name: the signature key ('' for serving_default).
    inputs: input key -> np.ndarray.
    output_filter: output keys to return (all when empty).
    deadline: time.monotonic() deadline or None.
    stop: set when the client has gone (a large request then stops between chunks).

  Returns:
    (signature, outputs): the Signature used and output key -> np.ndarray.

  Raises:
    ServingError: for an unknown signature, bad inputs or unknown output keys.
  """
  signature = servable.signature(signature_name)
  unknown = [k for k in output_filter if k not in signature.outputs]
  if unknown:
    raise errors.invalid_argument(
      f'output_filter {unknown} not in the outputs of signature "{signature.name}":'
      f' {sorted(signature.outputs)}'
    )
  repeated = sorted(k for k, n in collections.Counter(output_filter).items() if n > 1)
  if repeated:  # as TF Serving refuses it
    raise errors.invalid_argument(f'duplicate output tensor alias: {", ".join(repeated)}')
  outputs = servable.run(signature, inputs, deadline, stop)
  if output_filter:
    outputs = {k: outputs[k] for k in output_filter}
  return signature, outputs


def spec_proto(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
  """The ModelSpec TF Serving returns: name, resolved version and signature name."""
  spec = predict_pb2.PredictRequest().model_spec
  spec.name = servable.name
  spec.version.value = servable.version
  spec.signature_name = signature_name
  return spec


def predict(
  servable: Servable,
  request: predict_pb2.PredictRequest,
  deadline: float | None = None,
  limits: codec.Limits = codec.DEFAULT_LIMITS,
  stop: threading.Event | None = None,
) -> predict_pb2.PredictResponse:
  """Serves a PredictRequest on a resolved servable; returns a PredictResponse.

  Raises:
    ServingError: for inputs that do not decode within `limits`, or as predict_arrays.
  """
  budget = limits.budget()
  # The names first: a request of millions of unknown inputs is refused before any is decoded.
  servable.signature(request.model_spec.signature_name).check_names(request.inputs)
  check_string_count(request, servable.request_budget_bytes)
  inputs = {
    key: codec.from_tensor_proto(key, proto, budget) for key, proto in request.inputs.items()
  }
  signature, outputs = predict_arrays(
    servable,
    request.model_spec.signature_name,
    inputs,
    list(request.output_filter),
    deadline,
    stop,
  )
  response = predict_pb2.PredictResponse()
  response.model_spec.CopyFrom(spec_proto(servable, signature.name))
  for key, array in outputs.items():
    response.outputs[key].CopyFrom(codec.to_tensor_proto(array))
  return response


# Most metadata_field entries a GetModelMetadataRequest may list (there is one field).
_MAX_METADATA_FIELDS = 100
# Memory one example of a Classify, Regress or MultiInference request may take through it (its
# serialized copy, its answer's Python objects and message), rounded up from measurements: the
# request budget over this is the most examples one request may carry (1M in 1 GiB).
EXAMPLE_BYTES = 1024
_EXAMPLE_CHUNK = 4096  # examples serialized at a time
# Memory a string value of a Predict request takes once decoded, beside its bytes (its Python
# object and its slot in the array; measured: 16M empty strings, +773 MiB).
STRING_BYTES = 56


def _examples_signature(servable: Servable, signature_name: str, api: str) -> tuple[Signature, str]:
  """The signature `api` (Classify, Regress) feeds serialized tf.Examples to, and its input key.

  Raises:
    ServingError: FAILED_PRECONDITION for an unknown signature; INVALID_ARGUMENT when it does
      not have one string input named `examples` or `inputs`.
  """
  signature = servable.signature(signature_name)
  keys = list(signature.inputs)
  if (
    len(keys) != 1
    or keys[0] not in EXAMPLES_INPUT_KEYS
    or signature.inputs[keys[0]].dtype.name != 'string'
  ):
    raise errors.invalid_argument(
      f'signature "{signature.name}" cannot serve {api}: it needs one string input named'
      f' "examples" or "inputs" (serialized tf.Example), it has {keys}'
    )
  return signature, keys[0]


def _run_examples(servable, signature, key, examples, deadline, stop):
  """Runs `signature` on `examples` (serialized: serialize_examples); returns its outputs."""
  if not isinstance(examples, np.ndarray):
    examples = serialize_examples(examples, deadline=deadline, stop=stop)
  return servable.run(signature, {key: examples}, deadline, stop)


def check_example_count(count: int, api: str, budget_bytes: int | None) -> None:
  """Refuses, before any of them is read, more examples than the request budget holds.

  Raises:
    ServingError: RESOURCE_EXHAUSTED naming the count, the most and what to do.
  """
  if budget_bytes is None or count * EXAMPLE_BYTES <= budget_bytes:
    return
  raise errors.ServingError(
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    f'the {api} input has {count} examples, more than the {budget_bytes // EXAMPLE_BYTES} a'
    f' request may carry within --request_memory_budget_mb ({budget_bytes >> 20} MiB, about'
    f' {EXAMPLE_BYTES} bytes an example); send fewer examples per request',
  )


def check_string_count(request: predict_pb2.PredictRequest, budget_bytes: int | None) -> None:
  """Refuses, before any is decoded, string inputs whose values would take more than the
  request budget as Python objects (STRING_BYTES each, and their bytes).

  Raises:
    ServingError: RESOURCE_EXHAUSTED naming the count and what to do.
  """
  if budget_bytes is None:
    return
  protos = [p for p in request.inputs.values() if p.dtype == types_pb2.DT_STRING]
  count = sum(len(p.string_val) for p in protos)
  needed = count * STRING_BYTES + sum(p.ByteSize() for p in protos)
  if needed > budget_bytes:
    raise errors.ServingError(
      grpc.StatusCode.RESOURCE_EXHAUSTED,
      f"the request's {count} strings would take about {needed >> 20} MiB once decoded, more"
      f' than the {budget_bytes >> 20} MiB a request may hold (--request_memory_budget_mb);'
      ' send fewer rows per request',
    )


def check_live(deadline: float | None, stop, done: int, total: int) -> None:
  """Raises CANCELLED once the client has gone, DEADLINE_EXCEEDED past the deadline, while
  the examples are read (`done` of `total`)."""
  if stop is not None and stop.is_set():
    raise errors.ServingError(
      grpc.StatusCode.CANCELLED,
      f'the client went away; reading the examples stopped after {done} of {total}',
    )
  if deadline is not None and time.monotonic() >= deadline:
    raise errors.ServingError(
      grpc.StatusCode.DEADLINE_EXCEEDED,
      f'deadline exceeded while the examples were read: {done} of {total} done; send fewer'
      ' examples per request or allow more time',
    )


def serialize_examples(
  examples: Sequence[example_pb2.Example],
  context: bytes = b'',
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> np.ndarray:
  """The examples serialized, each after `context` (a serialized tf.Example: parsed, the
  concatenation is the context with the example's own features over it, TF Serving's merge),
  as an object array.

  A chunk of examples at a time, the deadline and the client checked in between: a repeated
  field's examples are not all made Python objects at once (3M empty examples, a 6 MB request,
  once held the server's interpreter for 77 s).
  """
  out = np.empty(len(examples), dtype=object)
  for start in range(0, len(examples), _EXAMPLE_CHUNK):
    check_live(deadline, stop, start, len(examples))
    chunk = examples[start : start + _EXAMPLE_CHUNK]
    out[start : start + len(chunk)] = [context + e.SerializeToString() for e in chunk]
  return out


def classification_signature(servable: Servable, signature_name: str) -> tuple[Signature, str]:
  """The signature Classify uses, and its input key.

  Classify feeds serialized tf.Examples to a signature with one string input named `examples`
  (this project's contract) or `inputs` (TF Serving's classification signatures). It reads
  TF Serving's standard `classes` / `scores` outputs when present, else `probabilities`
  (class i is then named by line i of the model's label vocabulary, or "i" without one).

  Raises:
    ServingError: INVALID_ARGUMENT when the signature cannot classify.
  """
  signature, key = _examples_signature(servable, signature_name, 'Classify')
  if 'scores' not in signature.outputs and contract.PROBABILITIES not in signature.outputs:
    raise errors.invalid_argument(
      f'signature "{signature.name}" cannot serve Classify: it needs a "scores" or'
      f' "probabilities" output, it has {sorted(signature.outputs)}'
    )
  return signature, key


def regression_signature(servable: Servable, signature_name: str) -> tuple[Signature, str]:
  """The signature Regress uses, and its input key.

  As TF Serving's regressor: a regression signature (method_name tensorflow/serving/regress)
  with one input of serialized tf.Examples (named `inputs`, or `examples` as this project's
  signatures) and one float output named `outputs`.

  Raises:
    ServingError: FAILED_PRECONDITION for an unknown signature; INVALID_ARGUMENT when it is
      not a regression signature.
  """
  signature = servable.signature(signature_name)
  signature_def = servable.signature_defs.get(signature.name)
  method = signature_def.method_name if signature_def is not None else ''
  if method != REGRESS_METHOD:
    raise errors.invalid_argument(
      f'Expected regression signature method_name to be {REGRESS_METHOD}. Was: {method}'
      f' (signature "{signature.name}" of model "{servable.name}"); Regress needs a signature'
      ' exported as tf.compat.v1.saved_model.regression_signature_def, use Predict otherwise'
    )
  signature, key = _examples_signature(servable, signature_name, 'Regress')
  outputs = signature.outputs
  if list(outputs) != [REGRESS_OUTPUT] or outputs[REGRESS_OUTPUT].dtype.name != 'float32':
    raise errors.invalid_argument(
      f'signature "{signature.name}" cannot serve Regress: it needs one float output named'
      f' "{REGRESS_OUTPUT}", it has'
      f' {sorted((k, v.dtype.name) for k, v in outputs.items())}'
    )
  return signature, key


def classify_examples(
  servable: Servable,
  signature_name: str,
  examples: Iterable[example_pb2.Example],
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> tuple[Signature, list[list[tuple[bytes, float]]]]:
  """Classifies tf.Example protos.

  Returns:
    (signature, results): results[i] is a list of (label bytes, score) for example i.
  """
  signature, key = classification_signature(servable, signature_name)
  outputs = _run_examples(servable, signature, key, examples, deadline, stop)
  scores = outputs.get('scores', outputs.get(contract.PROBABILITIES))
  if scores.ndim != 2:  # the signature's, not the server's, fault: TF Serving's code too
    raise errors.invalid_argument(
      f'signature "{signature.name}": scores must be [batch, classes],'
      f' got shape {list(scores.shape)}'
    )
  classes = outputs.get('classes')
  if classes is None:
    names = servable.class_names
    if names is None or len(names) != scores.shape[1]:
      names = [str(i).encode() for i in range(scores.shape[1])]
    classes = np.broadcast_to(np.array(names, dtype=object), scores.shape)
  results = [
    [(bytes(label), float(score)) for label, score in zip(row_labels, row_scores)]
    for row_labels, row_scores in zip(classes, scores)
  ]
  return signature, results


def regress_examples(
  servable: Servable,
  signature_name: str,
  examples: Sequence[example_pb2.Example],
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> tuple[Signature, list[float]]:
  """Runs a regression signature on tf.Example protos.

  Returns:
    (signature, values): values[i] is the regression of example i.

  Raises:
    ServingError: as regression_signature, or INVALID_ARGUMENT when the output is not one
      value per example (shape [batch] or [batch, 1]).
  """
  signature, key = regression_signature(servable, signature_name)
  values = _run_examples(servable, signature, key, examples, deadline, stop)[REGRESS_OUTPUT]
  if values.ndim == 2 and values.shape[1] == 1:
    values = values[:, 0]
  if values.ndim != 1 or values.shape[0] != len(examples):
    raise errors.invalid_argument(
      f'signature "{signature.name}": expected output "{REGRESS_OUTPUT}" of shape'
      f' [{len(examples)}] or [{len(examples)}, 1] (one value per example), got'
      f' {list(values.shape)}'
    )
  return signature, [float(v) for v in values]


def examples_from_input(
  input_proto: input_pb2.Input,
  api: str = 'Classify',
  budget_bytes: int | None = None,
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> np.ndarray:
  """The tf.Examples of an Input proto, serialized, the shared context merged into each
  (serialize_examples), within `budget_bytes` (check_example_count).

  Raises:
    ServingError: INVALID_ARGUMENT when the input holds no example; as check_example_count
      and serialize_examples.
  """
  kind = input_proto.WhichOneof('kind')
  examples, context = (), b''
  if kind == 'example_list':
    examples = input_proto.example_list.examples
  elif kind == 'example_list_with_context':
    with_context = input_proto.example_list_with_context
    examples = with_context.examples
    context = with_context.context.SerializeToString()
  if not len(examples):
    raise errors.invalid_argument(
      f'empty batch: the {api} input has no examples (set example_list or'
      ' example_list_with_context, with at least one example)'
    )
  check_example_count(len(examples), api, budget_bytes)
  return serialize_examples(examples, context, deadline, stop)


def _add_classifications(result: classification_pb2.ClassificationResult, rows) -> None:
  for row in rows:
    classifications = result.classifications.add()
    for label, score in row:
      classifications.classes.add(label=label.decode('utf-8', 'replace'), score=score)


def classify(
  servable: Servable,
  request: classification_pb2.ClassificationRequest,
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> classification_pb2.ClassificationResponse:
  """Serves a ClassificationRequest on a resolved servable; returns a ClassificationResponse."""
  examples = examples_from_input(
    request.input, 'Classify', servable.request_budget_bytes, deadline, stop
  )
  signature, results = classify_examples(
    servable, request.model_spec.signature_name, examples, deadline, stop
  )
  response = classification_pb2.ClassificationResponse()
  response.model_spec.CopyFrom(spec_proto(servable, signature.name))
  _add_classifications(response.result, results)
  return response


def regress(
  servable: Servable,
  request: regression_pb2.RegressionRequest,
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> regression_pb2.RegressionResponse:
  """Serves a RegressionRequest on a resolved servable; returns a RegressionResponse with one
  regression per example, as TF Serving's Regress.

  Raises:
    ServingError: INVALID_ARGUMENT for an input without examples or a signature that is not a
      regression signature (regression_signature), FAILED_PRECONDITION for an unknown one.
  """
  examples = examples_from_input(
    request.input, 'Regress', servable.request_budget_bytes, deadline, stop
  )
  signature, values = regress_examples(
    servable, request.model_spec.signature_name, examples, deadline, stop
  )
  response = regression_pb2.RegressionResponse()
  response.model_spec.CopyFrom(spec_proto(servable, signature.name))
  response.result.regressions.extend(regression_pb2.Regression(value=v) for v in values)
  return response


def multi_inference(
  request: inference_pb2.MultiInferenceRequest,
  resolve: Callable[[model_pb2.ModelSpec], Servable],
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> inference_pb2.MultiInferenceResponse:
  """Serves a MultiInferenceRequest: Classify and Regress tasks on one input, as TF Serving.

  As there, every task names the same model (the first task's version is used) and a
  distinct signature, and each task's method_name is tensorflow/serving/classify or
  tensorflow/serving/regress. Each task runs its signature on the examples in turn.

  Args:
    request: the MultiInferenceRequest.
    resolve: ModelSpec -> the Servable it names (called once the tasks are checked).
    deadline: time.monotonic() deadline or None.
    stop: set when the client has gone.

  Raises:
    ServingError: INVALID_ARGUMENT for no task, tasks naming different models or one
      signature twice, an unsupported method_name, or as classify and regress.
  """
  tasks = request.tasks
  if not tasks:
    raise errors.invalid_argument(
      'MultiInferenceRequest has no tasks: add one per signature (method_name'
      f' {CLASSIFY_METHOD} or {REGRESS_METHOD})'
    )
  models = sorted({task.model_spec.name for task in tasks})
  if len(models) != 1:
    raise errors.invalid_argument(
      'All ModelSpecs in a MultiInferenceRequest must access the same model name; the tasks'
      f' name {models}'
    )
  seen = set()
  for i, task in enumerate(tasks):
    if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
      raise errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f'Unsupported signature method_name: "{task.method_name}" (task {i}); use'
        f' {CLASSIFY_METHOD} or {REGRESS_METHOD}',
      )
    name = task.model_spec.signature_name or DEFAULT_SIGNATURE
    if name in seen:
      raise errors.invalid_argument(f'Duplicate evaluation of signature: {name} (task {i})')
    seen.add(name)
  servable = resolve(tasks[0].model_spec)
  _check_tasks(servable, tasks)
  examples = examples_from_input(
    request.input, 'MultiInference', servable.request_budget_bytes, deadline, stop
  )
  response = inference_pb2.MultiInferenceResponse()
  for task in tasks:
    name = task.model_spec.signature_name
    result = response.results.add()
    if task.method_name == CLASSIFY_METHOD:
      signature, rows = classify_examples(servable, name, examples, deadline, stop)
      _add_classifications(result.classification_result, rows)
    else:
      signature, values = regress_examples(servable, name, examples, deadline, stop)
      result.regression_result.regressions.extend(
        regression_pb2.Regression(value=v) for v in values
      )
    result.model_spec.CopyFrom(spec_proto(servable, signature.name))
  return response


def _check_tasks(servable: Servable, tasks) -> None:
  """As TF Serving checks a MultiInferenceRequest's signatures: each exists, a classify task's
  is a classification signature, and all read one input tensor (the graph runs once for all).

  Raises:
    ServingError: INVALID_ARGUMENT with TF Serving's words.
  """
  input_tensor = None
  for task in tasks:
    name = task.model_spec.signature_name or DEFAULT_SIGNATURE
    signature_def = servable.signature_defs.get(name)
    if signature_def is None or name.startswith('__'):
      raise errors.invalid_argument(f'Requested signature not found in model graph: {name}')
    if task.method_name == CLASSIFY_METHOD and signature_def.method_name != CLASSIFY_METHOD:
      raise errors.invalid_argument(
        f'Expected classification signature method_name to be {CLASSIFY_METHOD}. Was:'
        f' {signature_def.method_name} (signature "{name}"; this project\'s classifiers'
        f' export "{contract.CLASSIFICATION}")'
      )
    tensors = sorted(info.name for info in signature_def.inputs.values())
    if input_tensor is None:
      input_tensor = tensors
    elif tensors != input_tensor:
      raise errors.invalid_argument('Input tensor must be the same for all Signatures.')


def metadata(
  servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """Serves a GetModelMetadataRequest; only the `signature_def` field exists, as in TF Serving."""
  fields = request.metadata_field
  if not fields:
    raise errors.invalid_argument(
      'GetModelMetadataRequest must specify at least one metadata_field'
    )
  if len(fields) > _MAX_METADATA_FIELDS:  # read on the event loop: not millions of them
    raise errors.invalid_argument(
      f'GetModelMetadataRequest has {len(fields)} metadata_field entries; the only field is'
      f' "{SIGNATURE_DEF_FIELD}"'
    )
  unknown = [f for f in fields if f != SIGNATURE_DEF_FIELD]
  if unknown:
    raise errors.invalid_argument(
      f'Metadata field(s) {unknown} not supported; the only one is "{SIGNATURE_DEF_FIELD}"'
    )
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.CopyFrom(spec_proto(servable, ''))
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  for key, signature_def in servable.signature_defs.items():
    signature_defs.signature_def[key].CopyFrom(signature_def)
  response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
  return response


def status_response(
  statuses: Iterable[tuple[int, str, grpc.StatusCode, str]],
) -> get_model_status_pb2.GetModelStatusResponse:
  """A GetModelStatusResponse from manager.ModelManager.status() tuples."""
  response = get_model_status_pb2.GetModelStatusResponse()
  for version, state, code, message in statuses:
    status = response.model_version_status.add(version=version)
    status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
    status.status.error_code = code.value[0]
    status.status.error_message = message
  return response
