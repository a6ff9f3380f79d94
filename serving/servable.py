"""One loaded SavedModel version: its signatures, their input checks, and the calls into them."""

import functools
import heapq
import os
import threading
import time
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

# Registers the tensorflow-text ops that the trainer's exported models use.
import tensorflow_text  # noqa: F401
from tensorflow.core.protobuf import saved_model_pb2

from serving import batching, errors, memory
from tfxlm import contract

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT
SAVED_MODEL_FILE = 'saved_model.pb'
# Rows of one signature call when nothing else says (memory not measurable, no batching).
DEFAULT_EXECUTION_ROWS = 64


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

  def check_names(self, keys: Iterable[str]) -> None:
    """Checks that `keys` are the signature's inputs, before any is decoded.

    Raises:
      ServingError: INVALID_ARGUMENT naming the extra and missing inputs (the first few of
        them: a request may send millions of names).
    """
    expected = self.inputs
    sent = keys if isinstance(keys, (set, dict)) else set(keys)
    if len(sent) == len(expected) and all(k in expected for k in sent):
      return
    extra = [k for k in sent if k not in expected]
    missing = sorted(k for k in expected if k not in sent)
    shown = heapq.nsmallest(_NAMES_SHOWN, extra)
    more = f' and {len(extra) - len(shown)} more' if len(extra) > len(shown) else ''
    got = f'{len(sent)} inputs' if len(sent) > _NAMES_SHOWN else f'{sorted(sent)}'
    raise errors.invalid_argument(
      f'signature "{self.name}" expects inputs {sorted(expected)} but got {got}'
      f' (extra: {shown}{more}, missing: {missing})'
    )

  def check(self, inputs: Mapping[str, np.ndarray]) -> int | None:
    """Checks that `inputs` (key -> np.ndarray) match the signature.

    Returns:
      The number of rows in the batch (None for a signature that is not batchable).

    Raises:
      ServingError: INVALID_ARGUMENT naming the missing, extra or mismatched input.
    """
    self.check_names(inputs)
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
    return {k: _numpy(v) for k, v in outputs.items()}


def _numpy(tensor: tf.Tensor) -> np.ndarray:
  # A rank-0 string tensor's numpy() is bytes, not an array.
  value = tensor.numpy()
  return np.array(value, dtype=object) if isinstance(value, bytes) else value


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


# Most class names read from a model's label vocabulary (a bigger file is not a class list).
_MAX_CLASS_NAMES = 100_000
# Extra input names an error shows (a request may send millions).
_NAMES_SHOWN = 10


def _class_names(path: str) -> tuple[bytes, ...] | None:
  """The class names of a classifier this pipeline exported, line i naming class i: its label
  vocabulary asset (`assets/label_vocab`, contract.LABEL_VOCAB_NAME), as Classify's `classes`
  when the signature has no such output; None without one (another model: classes "0", "1", ...).
  """
  try:
    with open(os.path.join(path, 'assets', contract.LABEL_VOCAB_NAME), 'rb') as f:
      names = tuple(line.rstrip(b'\r\n') for _, line in zip(range(_MAX_CLASS_NAMES + 1), f))
  except OSError:
    return None
  return names if 0 < len(names) <= _MAX_CLASS_NAMES else None


class Servable:
  """A SavedModel version loaded for serving.

  Attributes:
    name: the model name.
    version: the integer version.
    path: the version directory.
    signatures: signature key -> Signature.
    signature_defs: signature key -> SignatureDef proto, as stored in saved_model.pb (for
      GetModelMetadata).
    class_names: the classifier's class names, line i of its label vocabulary naming class i,
      or None (`_class_names`).
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
    # Set by the model manager: signature key -> rows of one call (from the memory budget).
    self.call_rows = {}
    # Larger requests: split into calls of execution_rows() (True) or refused (False).
    self.split_large = True
    # Most bytes one request may take above the idle server, and its outputs (None: no limit).
    self.request_budget_bytes = None
    self.output_budget_bytes = None
    # Set by the model manager: the working memory one call may take (None: no limit), which
    # also bounds the tokenizer's work on its strings, and the gate the string work of all
    # calls at once passes (None: none).
    self.call_budget_bytes = None
    self.string_gate = None
    self.class_names = _class_names(path)

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

  def execution_rows(self, signature: Signature) -> int:
    """Most rows one call of `signature` may take: its calibrated (or configured) size, and
    the batch queue's execution_batch_size when batching is on."""
    rows = self.call_rows.get(signature.name, DEFAULT_EXECUTION_ROWS)
    queue = self.batch_queues.get(signature.name)
    if queue is not None:
      rows = min(rows, queue.execution_batch_size)
    return max(1, rows)

  def run(
    self,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    deadline: float | None = None,
    stop: threading.Event | None = None,
  ) -> dict[str, np.ndarray]:
    """Checks `inputs`, then runs them (in chunks when large), through the batch queue when
    batching is on.

    With batching, a request of more rows than the queue's max_batch_size is refused, as TF
    Serving refuses it. A request of more rows than one call may take (execution_rows: the
    memory budget's size, and with batching the queue's execution_batch_size) is split into
    chunks run one after the other and its outputs concatenated, as TF Serving's large batch
    splitting does, or refused when `split_large` is off. Between chunks, a passed deadline or a set
    `stop` (the client went away) ends the request.

    Args:
      signature: a Signature of this servable.
      inputs: input key -> np.ndarray.
      deadline: time.monotonic() by which the caller gives up, or None.
      stop: set when the caller is gone, or None.

    Returns:
      output key -> np.ndarray.

    Raises:
      ServingError: INVALID_ARGUMENT for bad inputs, more rows than the batching's
        max_batch_size or (split_large off) more than one call takes;
        RESOURCE_EXHAUSTED when the outputs would exceed output_budget_bytes;
        DEADLINE_EXCEEDED or CANCELLED between chunks; the signature's own errors.
    """
    batch = signature.check(inputs)
    if batch is not None and self.max_rows is not None and batch > self.max_rows:
      raise errors.invalid_argument(
        f'batch of {batch} rows exceeds the limit of {self.max_rows} rows per request'
      )
    _check_live(deadline, stop, signature, 0, batch)
    queue = self.batch_queues.get(signature.name)
    if queue is not None and batch > queue.max_batch_size:
      raise batching.too_many_rows(
        batch, queue.max_batch_size, f'signature "{signature.name}" of model "{self.name}"'
      )
    row_bytes = _row_string_bytes(inputs, batch or 1)
    self._check_strings(signature, row_bytes)
    alive = functools.partial(_check_live, deadline, stop, signature, 0, batch)
    if batch is None:
      return self._call(signature, None, inputs, None, deadline, row_bytes, alive)
    step = self.execution_rows(signature)
    bounds = self._bounds(row_bytes, batch, step)
    if len(bounds) == 1:
      return self._call(signature, queue, inputs, batch, deadline, row_bytes, alive)
    if not self.split_large:
      raise errors.invalid_argument(
        f'batch of {batch} rows is more than the {step} rows one call of signature'
        f' "{signature.name}" of model "{self.name}" takes; send at most {step} rows per'
        ' request, or start the server with --large_batch_policy=split'
        if batch > step
        else f'the {batch} rows carry {int(row_bytes.sum())} bytes of strings, more than one'
        f' call of signature "{signature.name}" of model "{self.name}" may tokenize'
        f' ({self._string_limit()} bytes); send fewer or shorter texts per request, or start'
        ' the server with --large_batch_policy=split'
      )
    parts = []
    began = time.monotonic()
    for start, end in bounds:
      if start:
        _check_live(deadline, stop, signature, start, batch)
        _check_pace(deadline, signature, start, batch, time.monotonic() - began)
      rows = end - start
      chunk = {key: value[start:end] for key, value in inputs.items()}
      chunk_bytes = None if row_bytes is None else row_bytes[start:end]
      outputs = self._call(signature, queue, chunk, rows, deadline, chunk_bytes, alive)
      short = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != rows]
      if short:
        raise errors.invalid_argument(
          f'signature "{signature.name}" outputs {short} have no batch dimension, so a'
          f' request of {batch} rows cannot be split into calls of {step}: send at most'
          f' {step} rows'
        )
      if not start:
        answer = _nbytes(outputs) * batch // rows
        if self.output_budget_bytes is not None and answer > self.output_budget_bytes:
          raise errors.ServingError(
            errors.grpc.StatusCode.RESOURCE_EXHAUSTED,
            f'the answer to {batch} rows of signature "{signature.name}" would take about'
            f' {answer >> 20} MiB, more than the {self.output_budget_bytes >> 20} MiB a'
            ' request may hold (--request_memory_budget_mb); send fewer rows per request',
          )
      parts.append(outputs)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

  def _string_limit(self):
    """Most string bytes one call may tokenize (None: no limit)."""
    if self.call_budget_bytes is None:
      return None
    return self.call_budget_bytes // memory.STRING_BYTE_FACTOR

  def _check_strings(self, signature, row_bytes):
    """Refuses a request with a row whose strings alone would take more than a call may."""
    limit = self._string_limit()
    if limit is None or row_bytes is None or not row_bytes.size:
      return
    row = int(np.argmax(row_bytes))
    if row_bytes[row] > limit:
      size = int(row_bytes[row])
      raise errors.ServingError(
        errors.grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'row {row} of the request carries {size} bytes ({size / (1 << 20):.1f} MiB) of'
        f' strings: signature "{signature.name}" of model "{self.name}" would take about'
        f' {size * memory.STRING_BYTE_FACTOR >> 20} MiB to tokenize them, more than the'
        f' {self.call_budget_bytes >> 20} MiB one call may use (half of'
        f' --request_memory_budget_mb); send texts of at most {limit >> 10} KiB',
        http_status=413,
      )

  def _bounds(self, row_bytes, batch, step):
    """The [start, end) rows of each call: at most `step` rows, and no more string bytes than
    a call may tokenize."""
    limit = self._string_limit()
    if limit is None or row_bytes is None or row_bytes.sum() <= limit:
      return [(start, min(start + step, batch)) for start in range(0, batch, step)]
    ends = np.cumsum(row_bytes)
    bounds, start = [], 0
    while start < batch:
      before = ends[start - 1] if start else 0
      fits = int(np.searchsorted(ends, before + limit, side='right'))
      end = min(start + step, batch, max(fits, start + 1))
      bounds.append((start, end))
      start = end
    return bounds

  def _call(self, signature, queue, inputs, rows, deadline, row_bytes, alive):
    work = 0 if row_bytes is None else int(row_bytes.sum()) * memory.STRING_BYTE_FACTOR
    held = self.string_gate is not None and self.string_gate.acquire(work, alive)
    try:
      if queue is not None:
        return queue.run(inputs, rows, deadline)
      return signature(inputs)
    finally:
      if held:
        self.string_gate.release(work)


def _row_string_bytes(inputs, batch):
  """Bytes of the string elements of each row (over all inputs), or None without strings."""
  total = None
  for value in inputs.values():
    if value.dtype == object:
      sizes = np.fromiter(
        (len(x) if isinstance(x, (bytes, str)) else 0 for x in value.flat), np.int64, value.size
      )
    elif value.dtype.kind == 'S':
      sizes = np.char.str_len(value).astype(np.int64)
    else:
      continue
    per_row = sizes.reshape(batch, -1).sum(axis=1) if value.ndim else sizes.reshape(1)
    total = per_row if total is None else total + per_row
  return total


def _check_live(deadline, stop, signature, done, batch):
  if stop is not None and stop.is_set():
    raise errors.ServingError(
      errors.grpc.StatusCode.CANCELLED,
      f'the client went away; signature "{signature.name}" stopped after {done} of {batch} rows',
    )
  if deadline is not None and time.monotonic() >= deadline:
    raise errors.ServingError(
      errors.grpc.StatusCode.DEADLINE_EXCEEDED,
      f'deadline exceeded while signature "{signature.name}" ran: {done} of {batch} rows'
      ' done; send fewer rows per request or allow more time',
    )


# A request whose remaining rows would take this many times the time left is ended at once
# rather than at its deadline.
HOPELESS_FACTOR = 2.0


def _check_pace(deadline, signature, done, batch, elapsed):
  """Ends a chunked request early when, at the pace of its first chunks, it cannot finish
  before its deadline (with a factor of slack): its answer would be DEADLINE_EXCEEDED anyway,
  and the thread is better spent on other requests."""
  if deadline is None:
    return
  needed = elapsed / done * (batch - done)
  left = deadline - time.monotonic()
  if needed > HOPELESS_FACTOR * left:
    raise errors.ServingError(
      errors.grpc.StatusCode.DEADLINE_EXCEEDED,
      f'signature "{signature.name}" would need about {needed:.0f} s more for the other'
      f' {batch - done} of {batch} rows, and the deadline is {max(left, 0):.0f} s away; send'
      ' fewer rows per request or allow more time',
    )


def _nbytes(outputs):
  """Bytes the arrays hold (string elements counted by their length)."""
  total = 0
  for value in outputs.values():
    total += value.nbytes
    if value.dtype == object:
      total += sum(len(x) for x in value.flat if isinstance(x, bytes))
  return total
