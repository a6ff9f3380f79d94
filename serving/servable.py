"""One loaded SavedModel version: its signatures, their input checks, and the calls into them."""

import os
import time
from collections.abc import Mapping
from concurrent import futures

import numpy as np
import tensorflow as tf

# Registers the tensorflow-text ops that the trainer's exported models use.
import tensorflow_text  # noqa: F401
from tensorflow.core.protobuf import saved_model_pb2

from serving import errors
from tfxlm import contract

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT
SAVED_MODEL_FILE = 'saved_model.pb'
# Calls with a deadline that do not go through a batch queue run on these threads, so the
# request's thread can give up at its deadline; a call that already started runs to its end
# (a model's own bounds, such as generate's max_new_tokens limit, bound it).
DEADLINE_WORKERS = 32
_deadline_pool = futures.ThreadPoolExecutor(DEADLINE_WORKERS, thread_name_prefix='signature')


class Signature:
  """A callable signature of a loaded model and the specs its inputs must meet.

  Attributes:
    name: the signature key.
    inputs: input key -> tf.TensorSpec.
    outputs: output key -> tf.TensorSpec.
    batchable: True when every input has an unknown leading (batch) dimension, so rows of
      several requests can be concatenated into one call.
  """

  def __init__(self, name: str, function: tf.types.experimental.ConcreteFunction):
    self.name = name
    self._function = function
    self.inputs = dict(function.structured_input_signature[1])
    self.outputs = dict(function.structured_outputs)
    self.batchable = bool(self.inputs) and all(
      spec.shape.rank is not None and spec.shape.rank >= 1 and spec.shape[0] is None
      for spec in self.inputs.values()
    )

  def check(self, inputs: Mapping[str, np.ndarray]) -> int | None:
    """Checks that `inputs` (key -> np.ndarray) match the signature.

    Returns:
      The number of rows in the batch (None for a signature that is not batchable).

    Raises:
      ServingError: INVALID_ARGUMENT naming the missing, extra or mismatched input.
    """
    sent, expected = set(inputs), set(self.inputs)
    if sent != expected:
      raise errors.invalid_argument(
        f'signature "{self.name}" expects inputs {sorted(expected)} but got {sorted(sent)}'
        f' (extra: {sorted(sent - expected)}, missing: {sorted(expected - sent)})'
      )
    rows = set()
    for key, array in inputs.items():
      spec = self.inputs[key]
      if not _dtype_matches(array, spec.dtype):
        raise errors.invalid_argument(
          f'input "{key}" of signature "{self.name}" expects dtype {spec.dtype.name} but got'
          f' {_dtype_name(array)}'
        )
      if not spec.shape.is_compatible_with(array.shape):
        raise errors.invalid_argument(
          f'input "{key}" of signature "{self.name}" expects shape {_shape(spec.shape)} but got'
          f' {list(array.shape)}'
        )
      if self.batchable:
        rows.add(array.shape[0])
    if not self.batchable:
      return None
    if len(rows) > 1:
      raise errors.invalid_argument(
        f'inputs of signature "{self.name}" disagree on the batch size: '
        + ', '.join(f'"{k}" has {v.shape[0]}' for k, v in sorted(inputs.items()))
      )
    batch = rows.pop()
    if batch == 0:
      raise errors.invalid_argument(
        f'empty batch: the inputs of signature "{self.name}" have 0 rows'
      )
    return batch

  def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs the signature on checked inputs.

    Returns:
      output key -> np.ndarray.

    Raises:
      ServingError: with the code TensorFlow reported (e.g. INVALID_ARGUMENT for text a
        tokenizer rejects).
    """
    tensors = {k: tf.constant(v, dtype=self.inputs[k].dtype) for k, v in inputs.items()}
    try:
      outputs = self._function(**tensors)
    except tf.errors.OpError as e:
      raise errors.from_tf_error(e, f'signature "{self.name}"') from None
    except UnicodeDecodeError as e:
      raise errors.from_undecodable_tf_error(e, f'signature "{self.name}"') from None
    return {k: v.numpy() for k, v in outputs.items()}


def _dtype_matches(array, dtype):
  if dtype == tf.string:
    return array.dtype == object or array.dtype.kind == 'S' or array.size == 0
  return array.dtype == dtype.as_numpy_dtype


def _dtype_name(array):
  if array.dtype == object or array.dtype.kind in 'SU':
    return 'string'
  return tf.as_dtype(array.dtype).name


def _shape(shape):
  return [-1 if d is None else d for d in shape.as_list()] if shape.rank is not None else '?'


class Servable:
  """A SavedModel version loaded for serving.

  Attributes:
    name: the model name.
    version: the integer version.
    path: the version directory.
    signatures: signature key -> Signature.
    signature_defs: signature key -> SignatureDef proto, as stored in saved_model.pb (for
      GetModelMetadata).
  """

  def __init__(self, name: str, version: int, path: str):
    self.name = name
    self.version = version
    self.path = path
    self._loaded = tf.saved_model.load(path)
    self.signatures = {key: Signature(key, fn) for key, fn in self._loaded.signatures.items()}
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), 'rb') as f:
      saved_model.ParseFromString(f.read())
    self.signature_defs = dict(saved_model.meta_graphs[0].signature_def)
    # Set by the model manager when batching is on: signature key -> BatchQueue.
    self.batch_queues = {}
    # Set by the model manager: most rows a request may carry (None: no limit).
    self.max_rows = None

  def signature(self, name: str) -> Signature:
    """The Signature called `name` ('' means serving_default), as TF Serving resolves it.

    Raises:
      ServingError: FAILED_PRECONDITION when the model has no such signature.
    """
    key = name or DEFAULT_SIGNATURE
    if key not in self.signatures:
      raise errors.ServingError(
        errors.grpc.StatusCode.FAILED_PRECONDITION,
        f'Serving signature key "{key}" not found in model "{self.name}" version'
        f' {self.version}; it has {sorted(self.signatures)}',
      )
    return self.signatures[key]

  def run(
    self, signature: Signature, inputs: Mapping[str, np.ndarray], deadline: float | None = None
  ) -> dict[str, np.ndarray]:
    """Checks `inputs`, then runs them, through the batch queue when batching is on.

    Args:
      signature: a Signature of this servable.
      inputs: input key -> np.ndarray.
      deadline: time.monotonic() by which the caller gives up, or None.

    Returns:
      output key -> np.ndarray.
    """
    batch = signature.check(inputs)
    if batch is not None and self.max_rows is not None and batch > self.max_rows:
      raise errors.invalid_argument(
        f'batch of {batch} rows exceeds the limit of {self.max_rows} rows per request'
      )
    queue = self.batch_queues.get(signature.name)
    if queue is not None and batch is not None:
      return queue.run(inputs, batch, deadline)
    if deadline is None:
      return signature(inputs)
    call = _deadline_pool.submit(signature, inputs)
    try:
      return call.result(timeout=max(0.0, deadline - time.monotonic()))
    except futures.TimeoutError:
      call.cancel()  # one still waiting for a thread never starts
      raise errors.ServingError(
        errors.grpc.StatusCode.DEADLINE_EXCEEDED,
        f'deadline exceeded while signature "{signature.name}" of model "{self.name}" ran',
      ) from None
