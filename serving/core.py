"""The request logic shared by the gRPC and REST front ends (and by warm-up replay)."""

import threading
from collections.abc import Iterable, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  get_model_status_pb2,
  input_pb2,
  model_pb2,
  predict_pb2,
)

from serving import codec, errors
from serving.servable import Servable, Signature
from tfxlm import contract

# The one metadata field TF Serving knows.
SIGNATURE_DEF_FIELD = 'signature_def'
# Classify's input: this project's `examples`, or `inputs` as TF Serving's classification
# signatures name it.
CLASSIFY_INPUT_KEYS = (contract.EXAMPLES_INPUT, 'inputs')


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


def classification_signature(servable: Servable, signature_name: str) -> tuple[Signature, str]:
  """The signature Classify uses, and its input key.

  Classify feeds serialized tf.Examples to a signature with one string input named `examples`
  (this project's contract) or `inputs` (TF Serving's classification signatures). It reads
  TF Serving's standard `classes` / `scores` outputs when present, else `probabilities`
  (class i is then named by line i of the model's label vocabulary, or "i" without one).

  Raises:
    ServingError: INVALID_ARGUMENT when the signature cannot classify.
  """
  signature = servable.signature(signature_name)
  keys = list(signature.inputs)
  if (
    len(keys) != 1
    or keys[0] not in CLASSIFY_INPUT_KEYS
    or signature.inputs[keys[0]].dtype.name != 'string'
  ):
    raise errors.invalid_argument(
      f'signature "{signature.name}" cannot serve Classify: it needs one string input named'
      f' "examples" or "inputs" (serialized tf.Example), it has {keys}'
    )
  if 'scores' not in signature.outputs and contract.PROBABILITIES not in signature.outputs:
    raise errors.invalid_argument(
      f'signature "{signature.name}" cannot serve Classify: it needs a "scores" or'
      f' "probabilities" output, it has {sorted(signature.outputs)}'
    )
  return signature, keys[0]


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
  serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
  outputs = servable.run(signature, {key: serialized}, deadline, stop)
  scores = outputs.get('scores', outputs.get(contract.PROBABILITIES))
  if scores.ndim != 2:
    raise errors.ServingError(
      grpc.StatusCode.INTERNAL,
      f'signature "{signature.name}": scores must be [batch, classes],'
      f' got shape {list(scores.shape)}',
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


def examples_from_input(input_proto: input_pb2.Input) -> list[example_pb2.Example]:
  """The tf.Examples of an Input proto, with the shared context merged into each."""
  kind = input_proto.WhichOneof('kind')
  if kind == 'example_list':
    return list(input_proto.example_list.examples)
  if kind == 'example_list_with_context':
    with_context = input_proto.example_list_with_context
    return [codec.merge_context(with_context.context, e) for e in with_context.examples]
  raise errors.invalid_argument(
    'empty batch: the Classify input has no examples (neither'
    ' example_list nor example_list_with_context is set)'
  )


def classify(
  servable: Servable,
  request: classification_pb2.ClassificationRequest,
  deadline: float | None = None,
  stop: threading.Event | None = None,
) -> classification_pb2.ClassificationResponse:
  """Serves a ClassificationRequest on a resolved servable; returns a ClassificationResponse."""
  examples = examples_from_input(request.input)
  if not examples:
    raise errors.invalid_argument('empty batch: the Classify input has no examples')
  signature, results = classify_examples(
    servable, request.model_spec.signature_name, examples, deadline, stop
  )
  response = classification_pb2.ClassificationResponse()
  response.model_spec.CopyFrom(spec_proto(servable, signature.name))
  for row in results:
    classifications = response.result.classifications.add()
    for label, score in row:
      classifications.classes.add(label=label.decode('utf-8', 'replace'), score=score)
  return response


def metadata(
  servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """Serves a GetModelMetadataRequest; only the `signature_def` field exists, as in TF Serving."""
  fields = list(request.metadata_field)
  if not fields:
    raise errors.invalid_argument(
      'GetModelMetadataRequest must specify at least one metadata_field'
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
