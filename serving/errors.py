"""Errors that carry a gRPC status code, and their HTTP equivalents for the REST API."""

import re

import grpc

# The HTTP status TF Serving's REST API answers for each canonical code.
_HTTP_STATUS = {
  grpc.StatusCode.OK: 200,
  grpc.StatusCode.CANCELLED: 499,
  grpc.StatusCode.UNKNOWN: 500,
  grpc.StatusCode.INVALID_ARGUMENT: 400,
  grpc.StatusCode.DEADLINE_EXCEEDED: 504,
  grpc.StatusCode.NOT_FOUND: 404,
  grpc.StatusCode.ALREADY_EXISTS: 409,
  grpc.StatusCode.PERMISSION_DENIED: 403,
  grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
  grpc.StatusCode.FAILED_PRECONDITION: 400,
  grpc.StatusCode.ABORTED: 409,
  grpc.StatusCode.OUT_OF_RANGE: 400,
  grpc.StatusCode.UNIMPLEMENTED: 501,
  grpc.StatusCode.INTERNAL: 500,
  grpc.StatusCode.UNAVAILABLE: 503,
  grpc.StatusCode.DATA_LOSS: 500,
  grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# A message's most characters and UTF-8 bytes: a message quoting a request's names (a signature,
# an input key, an output filter) must stay well under gRPC's 8 KiB of status metadata (it is
# percent-encoded there, up to 3 characters a byte), or the client gets RESOURCE_EXHAUSTED
# 'Stream removed' instead of it; a REST client sent a 20 MB name got a 20 MB body back.
MAX_MESSAGE_CHARS = 1000
_MAX_MESSAGE_BYTES = 2000


def bounded(message: str) -> str:
  """`message`, cut to MAX_MESSAGE_CHARS characters and _MAX_MESSAGE_BYTES bytes of UTF-8."""
  encoded = message.encode('utf-8', 'replace')
  if len(message) <= MAX_MESSAGE_CHARS and len(encoded) <= _MAX_MESSAGE_BYTES:
    return message
  cut = encoded[:_MAX_MESSAGE_BYTES].decode('utf-8', 'ignore')[:MAX_MESSAGE_CHARS]
  return f'{cut}... (cut from {len(message)} characters)'


class ServingError(Exception):
  """A request failed with a canonical status code and a message for the caller.

  Attributes:
    code: the grpc.StatusCode.
    message: what went wrong, naming the model, signature or input concerned.
  """

  def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
    message = bounded(message)
    super().__init__(message)
    self.code = code
    self.message = message
    self._http_status = http_status

  @property
  def http_status(self) -> int:
    """The REST status: TF Serving's mapping of the code, unless the error set its own."""
    return self._http_status or _HTTP_STATUS[self.code]


def quoted(text: str, limit: int = 80) -> str:
  """`text` in double quotes for a message, with what would not show escaped.

  Quotes, backslashes and characters that do not print (controls, spaces other than ' ', format
  marks such as U+200B) become escapes, so 'stable ' shows its trailing space and a name from a
  request cannot break or forge a log line; past `limit` characters the text is cut with '...'.
  """
  shown = ''.join(
    '\\' + c if c in '"\\' else c if c.isprintable() else c.encode('unicode_escape').decode()
    for c in text[:limit]
  )
  return f'"{shown}"' + ('...' if len(text) > limit else '')


def invalid_argument(message: str, http_status: int | None = None) -> ServingError:
  """An INVALID_ARGUMENT error (HTTP 400 unless `http_status` says otherwise)."""
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message, http_status)


def not_found(message: str) -> ServingError:
  """A NOT_FOUND error (HTTP 404)."""
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def unauthenticated(message: str) -> ServingError:
  """An UNAUTHENTICATED error (HTTP 401)."""
  return ServingError(grpc.StatusCode.UNAUTHENTICATED, message)


def code_from_number(number: int) -> grpc.StatusCode:
  """The grpc.StatusCode whose canonical number is `number` (TF errors use the same numbers)."""
  return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def from_tf_error(error: Exception, where: str) -> ServingError:
  """Turns a tf.errors.OpError raised by a signature call into a ServingError."""
  return ServingError(code_from_number(error.error_code), f'{where}: {_clean(error.message)}')


def from_undecodable_tf_error(error: UnicodeDecodeError, where: str) -> ServingError:
  """A ServingError for a TF error whose message held non-UTF-8 bytes (echoed from the input).

  TensorFlow fails to decode such a message and raises UnicodeDecodeError instead of its
  OpError; the code is lost, but the bytes came from the request, so the input is at fault.
  """
  message = (
    error.object.decode('utf-8', 'backslashreplace')
    if isinstance(error.object, bytes)
    else str(error)
  )
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'{where}: {_clean(message)}')


# A frame of a Python stack: TensorFlow appends the stack that defined a node (for a TF1
# SavedModel, the server's own stack when it loaded the model) to the node's errors.
_FRAME = re.compile(r'^\s*File ".*", line \d+')


def _clean(message):
  """Keeps the lines of a TensorFlow message that say what failed, not graph boilerplate nor
  the Python stack (file paths, source lines) TensorFlow may append to it."""
  lines = []
  in_frame = False
  for line in str(message).splitlines():
    if _FRAME.match(line):
      in_frame = True
      continue
    if in_frame and line[:1].isspace() and line.strip():
      continue  # the frame's source line
    in_frame = False
    line = re.sub(r'\s*\[\[.*?\]\]', '', line)
    line = re.sub(r'\s*\[Op:[^\]]*\]', '', line)
    line = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', line).strip()
    # A tf.debugging.Assert whose one datum is the message: "assertion failed: [message]".
    line = re.sub(r'^assertion failed: \[([^\[\]]+)\]$', r'\1', line)
    if line and not line.startswith(
      ('Graph execution error', 'Detected at node', '<stack traces', 'Traceback (most recent')
    ):
      lines.append(line)
  return '; '.join(lines) or 'TensorFlow gave no message'
