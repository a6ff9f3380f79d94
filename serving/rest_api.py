"""TF Serving's REST API without the HTTP: routes, JSON bodies and the predict / classify codecs.

Pure functions of a method, a path and a body's bytes, so they are tested without a socket;
`serving/rest.py` is the HTTP server that calls them. Error cases raise errors.ServingError,
which the server answers with TF Serving's status and `{"error": ...}` body.
"""

import dataclasses
import json
import math
import re
import sys
import time
import urllib.parse
import zlib

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from serving import codec, core, errors
from serving.config import NEGATIVE_VERSION
from serving.servable import Servable
from tfxlm import contract

METRICS_PATH = contract.METRICS_PATH
HEALTH_PATH = contract.HEALTH_PATH
VERBS = ('predict', 'classify', 'regress')
# Literal parts match in any case, as TF Serving's `(?i)` route patterns do (/V1/MODELS/m:PREDICT);
# the model name and label keep theirs.
_MODEL_PATH = re.compile(
  r'^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
  r'(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$',
  re.IGNORECASE,
)
# JSON strings are found in chunks of this many bytes, in numpy passes that carry what one chunk
# ends in (inside a string or not, a run of backslashes) to the next: memory bounded whatever
# the body, and linear (a regular expression's substitution made an object per string: 1.1 GB
# for a 32 MiB body of two-letter strings; one search made a body of escaped quotes quadratic).
_SCAN_CHUNK = 1 << 20
_QUOTE, _BACKSLASH = ord('"'), ord('\\')
# Python objects json.loads makes, measured on CPython 3.13 (bytes, rounded up): an array
# before its elements, an object before its members, a member (its slot, and its key's string
# when keys differ: a repeated key is shared), and each value (a number or a string's object;
# a string's characters come on top, at 1, 2 or 4 bytes each: _char_bytes).
_PARSED_ARRAY_BYTES = 64
_PARSED_OBJECT_BYTES = 192
_PARSED_MEMBER_BYTES = 104
_PARSED_VALUE_BYTES = 64
# Every byte but the brackets, deleted by bytes.translate (a regex substitution made an object
# per run between brackets: 2.8 GB for a 32 MiB body of one-element arrays).
_NOT_BRACKET = bytes(b for b in range(256) if b not in b'[]{}')
# A number that may be too big for a double has an exponent of 3 digits or more, or 300 digits
# in a row. With every digit written 0, E written e and + dropped, that is `e000` or 300 zeros:
# two literal searches, 0.1 s on a 19 MiB body of floats (a regex for a run of digits took 2 s).
_DIGITS_AS_ZERO = bytes.maketrans(b'123456789E', b'000000000e')
_BIG_EXPONENT = re.compile(rb'e000')
_LONG_DIGITS = b'0' * 300
_DEPTH_CHUNK = 1 << 20  # brackets counted at a time: bounded memory whatever the body
# Decompressed bytes produced at a time: a bomb costs the limit, never its expanded size.
_INFLATE_STEP = 1 << 20
# An answer's JSON is made this many rows (and at most about _ENCODE_ELEMENTS tensor elements)
# at a time: the Python objects of one slice live at once, never those of the whole answer.
_ENCODE_ROWS = 4096
_ENCODE_ELEMENTS = 1 << 16
# A /versions/ path segment: ASCII digits (r'\d' also takes '٣'), a sign caught to say so.
_SIGNED_DIGITS = re.compile(r'([+-]?)([0-9]+)')
_INT64_MAX = 2**63 - 1  # ModelSpec.version is an int64


def _outside_strings(raw: bytes) -> bytes:
  """The bytes of a JSON body outside its strings (quotes removed too); an unterminated string
  runs to the end. Backslashes escape the byte after them (outside a string JSON has none)."""
  pieces = []
  inside, backslashes = 0, 0  # carried over from the chunk before
  for start in range(0, len(raw), _SCAN_CHUNK):
    chunk = np.frombuffer(raw, np.uint8, min(_SCAN_CHUNK, len(raw) - start), start)
    quotes = chunk == _QUOTE
    is_backslash = chunk == _BACKSLASH
    if backslashes or is_backslash.any():
      positions = np.arange(chunk.size, dtype=np.int32)
      # The last byte at or before each position that is not a backslash (-1: none yet).
      last_other = np.maximum.accumulate(np.where(is_backslash, np.int32(-1), positions))
      before = np.empty_like(last_other)  # the same, for the byte before each position
      before[0], before[1:] = -1, last_other[:-1]
      run = positions - 1 - before + np.where(before < 0, np.int32(backslashes), np.int32(0))
      quotes &= (run & 1) == 0  # the quotes no backslash escapes
      ends_other = int(last_other[-1])
      backslashes = chunk.size - 1 - ends_other + (backslashes if ends_other < 0 else 0)
    if not quotes.any():
      if not inside:
        pieces.append(chunk.tobytes())
      continue
    parity = np.cumsum(quotes, dtype=np.int32)
    parity += inside
    parity &= 1
    pieces.append(chunk[(parity == 0) & ~quotes].tobytes())
    inside = int(parity[-1])
  return b''.join(pieces)


def _char_bytes(raw: bytes) -> int:
  """The bytes a character of `raw` decoded may take in a Python str: 4 when it holds a
  character past U+FFFF (a UTF-8 lead byte from 0xF0), 2 past U+00FF (one from 0xC4), else 1."""
  if not raw:
    return 1
  top = int(np.frombuffer(raw, np.uint8).max())
  return 4 if top >= 0xF0 else 2 if top >= 0xC4 else 1


def _max_depth(brackets: bytes) -> int:
  """The deepest nesting of a string of brackets (`[]{}` only), in C-speed chunks."""
  depth = deepest = 0
  for start in range(0, len(brackets), _DEPTH_CHUNK):
    steps = np.frombuffer(brackets[start : start + _DEPTH_CHUNK], dtype=np.int8)
    running = np.cumsum(np.where((steps == ord('[')) | (steps == ord('{')), 1, -1), dtype=np.int64)
    deepest = max(deepest, depth + int(running.max()))
    depth += int(running[-1])
  return deepest


def _finite_float(text: str) -> float:
  """A JSON number as a float, refused when it overflows a double (json would make it inf)."""
  value = float(text)
  if math.isinf(value):
    raise errors.invalid_argument(
      f'JSON Parse error: the number {text:.40}{"..." * (len(text) > 40)} is too big to be'
      ' stored in a double'
    )
  return value


def _first_of_each_key(pairs):
  """A JSON object whose repeated keys keep their first value, as TF Serving reads them
  (rapidjson's FindMember); json.loads alone keeps the last."""
  obj = dict(pairs)
  if len(obj) != len(pairs):
    obj = dict(reversed(pairs))
    obj = {key: obj[key] for key, _ in pairs}  # in first-seen order
  return obj


def parse_json(raw: bytes, max_depth: int, memory_budget: int | None = None) -> object:
  """Parses a JSON body whose arrays and objects nest at most `max_depth` deep, and whose
  Python objects would take at most about `memory_budget` bytes (None: no limit).

  Both are measured before parsing, in linear C-speed passes of bounded memory (strings
  removed, then brackets and commas counted), so a deeply nested body costs no recursion and a
  body of many tiny values (`[[0],[0],...]`: 110 bytes of objects for each 4 bytes of JSON) is
  refused before it is parsed.

  Raises:
    ServingError: INVALID_ARGUMENT for a body that is not UTF-8, not JSON, or too deep;
      RESOURCE_EXHAUSTED when its objects would take more than `memory_budget`.
  """
  unquoted = _outside_strings(raw)
  brackets = unquoted.translate(None, _NOT_BRACKET)
  depth = _max_depth(brackets)
  if depth > max_depth:
    raise errors.invalid_argument(
      f'JSON Parse error: the body nests arrays and objects'
      f' {depth} deep, more than the limit of {max_depth}'
    )
  if memory_budget is not None:
    arrays, objects = brackets.count(b'['), brackets.count(b'{')
    members, values = unquoted.count(b':'), unquoted.count(b',') + 1
    width = _char_bytes(raw)
    # The body's text as a str, the objects, and the strings' characters.
    parsed = (
      len(raw) * width
      + arrays * _PARSED_ARRAY_BYTES
      + objects * _PARSED_OBJECT_BYTES
      + members * _PARSED_MEMBER_BYTES
      + values * _PARSED_VALUE_BYTES
      + (len(raw) - len(unquoted)) * width
    )
    if parsed > memory_budget:
      raise errors.ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'the JSON body ({len(raw) >> 20} MiB: {arrays} arrays, {objects} objects, about'
        f' {values} values) would take about {parsed >> 20} MiB to parse, more than the'
        f' {memory_budget >> 20} MiB a request may hold (--request_memory_budget_mb); send'
        ' fewer rows per request',
      )
  del brackets
  # Only a body with a number that may overflow a double pays for checking each float.
  digits = unquoted.translate(_DIGITS_AS_ZERO, b'+')
  del unquoted
  huge = _BIG_EXPONENT.search(digits) is not None or _LONG_DIGITS in digits
  checked = {'parse_float': _finite_float} if huge else {}
  del digits
  try:
    return json.loads(raw.decode('utf-8'), object_pairs_hook=_first_of_each_key, **checked)
  except UnicodeDecodeError as e:
    raise errors.invalid_argument(f'request body is not valid UTF-8: {e}') from None
  except json.JSONDecodeError as e:
    raise errors.invalid_argument(f'JSON Parse error: {e}') from None
  except RecursionError:
    raise errors.invalid_argument('JSON Parse error: the body nests too deep') from None
  except ValueError as e:  # Python's limit on the digits of an integer literal
    if 'integer string conversion' not in str(e):
      raise
    raise errors.invalid_argument(
      f'JSON Parse error: a number has more than {sys.get_int_max_str_digits()} digits'
    ) from None


def decompress(raw: bytes, coding: str | None, limit: int) -> bytes:
  """A body decoded from its Content-Encoding (None, 'gzip', or 'deflate': zlib or raw).

  At most `limit` bytes are produced, in bounded steps, whatever the compression ratio.

  Raises:
    ServingError: RESOURCE_EXHAUSTED (413) when the body decompresses to more than `limit`
      bytes; INVALID_ARGUMENT when it is corrupt, truncated or followed by other bytes.
  """
  if coding is None:
    return raw
  # Deflate is meant to be the zlib format, but some clients send raw deflate.
  tries = (16 + zlib.MAX_WBITS,) if coding == 'gzip' else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
  for i, wbits in enumerate(tries):
    parts, total, data = [], 0, raw
    try:
      while True:  # a gzip body may be several members one after another (`gzip -c a b`)
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
          part = inflater.decompress(data, min(_INFLATE_STEP, limit + 1 - total))
          data = inflater.unconsumed_tail
          if not part and not data:
            break  # all input consumed before the stream's end
          total += len(part)
          if total > limit:
            raise errors.ServingError(
              grpc.StatusCode.RESOURCE_EXHAUSTED,
              f'the body decompresses to more than the limit of {limit} bytes'
              ' (--max_request_bytes); send fewer rows per request',
              http_status=413,
            )
          parts.append(part)
        if not (inflater.eof and inflater.unused_data and coding == 'gzip'):
          break
        data = inflater.unused_data
    except zlib.error as e:
      if not total and i + 1 < len(tries):
        continue
      raise errors.invalid_argument(f'the {coding} body is corrupt: {e}') from None
    if not inflater.eof:
      raise errors.invalid_argument(f'the {coding} body is truncated: its stream does not end')
    if inflater.unused_data:
      raise errors.invalid_argument(
        f'the {coding} body has {len(inflater.unused_data)} bytes after the end of its stream'
      )
    return b''.join(parts)
  raise AssertionError('unreachable')


@dataclasses.dataclass(frozen=True)
class Route:
  """What a request path asks for.

  Attributes:
    kind: 'health', 'metrics', 'status', 'metadata' or a verb ('predict', 'classify').
    name: the model name (None for health and metrics).
    version: the version in the path, or None.
    label: the version label in the path, or None.
  """

  kind: str
  name: str | None = None
  version: int | None = None
  label: str | None = None

  @property
  def has_body(self) -> bool:
    return self.kind in VERBS


def parse_route(http_method: str, path: str, metrics_path: str | None = METRICS_PATH) -> Route:
  """Maps a method and path (without query) to a Route, as TF Serving's REST API does; the
  Prometheus metrics are at `metrics_path` (None: nowhere).

  Raises:
    ServingError: INVALID_ARGUMENT for a malformed /v1/ path or the wrong method, NOT_FOUND for
      any other path, UNIMPLEMENTED for a verb other than predict, classify and regress.
  """
  if path == HEALTH_PATH and http_method == 'GET':
    return Route('health')
  if path == metrics_path and http_method == 'GET':
    return Route('metrics')
  match = _MODEL_PATH.match(path)
  if match is None:
    if path[:4].lower() == '/v1/':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200}')
    raise errors.not_found(f'no such path: {http_method} {path:.200}')
  version = match['version']
  if version is not None:
    version = _version_number(version)
  verb = match['verb'] and match['verb'].lower()
  if verb is None:
    if http_method != 'GET':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200} (use GET)')
    kind = 'metadata' if match['metadata'] else 'status'
  else:
    if http_method != 'POST':
      raise errors.invalid_argument(f'Malformed request: {http_method} {path:.200} (use POST)')
    if verb not in VERBS:
      raise errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f'"{verb:.40}" is not supported; use predict, classify or regress',
      )
    kind = verb
  return Route(
    kind, _path_arg(match['name'], 'model name'), version, _path_arg(match['label'], 'label')
  )


def _path_arg(text: str | None, what: str) -> str | None:
  """A model name or version label from the path, percent-decoded as TF Serving decodes them
  (curl_easy_unescape: each %XX becomes its byte, '+' stays '+')."""
  if text is None or '%' not in text:
    return text
  try:
    return urllib.parse.unquote_to_bytes(text).decode('utf-8')
  except UnicodeDecodeError:
    raise errors.invalid_argument(
      f'Malformed request: the {what} {errors.quoted(text)} is not UTF-8 once percent-decoded'
    ) from None


def _version_number(text: str) -> int:
  """The version a /versions/ path segment names: digits that fit ModelSpec's int64.

  TF Serving matches the segment with `\\d+` and converts it with SimpleAtoi into an int64, so a
  sign or a number past int64 is a malformed request (400) there too; this says which.
  """
  shown = errors.quoted(text, 40)
  match = _SIGNED_DIGITS.fullmatch(text)
  if match is None:
    raise errors.invalid_argument(
      f'Malformed request: version {shown} is not a number: write the version in digits,'
      ' e.g. /versions/1'
    )
  sign, digits = match.groups()
  digits = digits.lstrip('0') or '0'
  # Compared as text: int() of a path-long run of digits would pass Python's digit limit.
  number = int(digits) if len(digits) <= len(str(_INT64_MAX)) else _INT64_MAX + 1
  if sign == '-' and number:
    raise errors.invalid_argument(
      f'Malformed request: version {shown} is negative: {NEGATIVE_VERSION}'
    )
  if number > _INT64_MAX:
    raise errors.invalid_argument(
      f'Malformed request: version {shown} is out of range: a version is at most'
      f' {_INT64_MAX} (int64)'
    )
  if sign:
    raise errors.invalid_argument(
      f'Malformed request: version {shown} has a sign: write the version in digits only,'
      f' /versions/{number}'
    )
  return number


def signature_name(body: dict) -> str:
  """The body's "signature_name" ('' when absent: the default signature)."""
  name = body.get('signature_name', '')
  if not isinstance(name, str):
    raise errors.invalid_argument('"signature_name" must be a string')
  return name


def message_dict(message: Message) -> dict:
  return json_format.MessageToDict(
    message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
  )


def status_body(status) -> dict:
  """The GET /v1/models/NAME answer for a manager's version status list."""
  return message_dict(core.status_response(status))


def metadata_body(servable: Servable) -> dict:
  """The GET .../metadata answer: the signature map shown unpacked, without the Any's "@type"."""
  request = core.get_model_metadata_pb2.GetModelMetadataRequest(
    metadata_field=[core.SIGNATURE_DEF_FIELD]
  )
  response = core.metadata(servable, request)
  signature_defs = core.get_model_metadata_pb2.SignatureDefMap()
  response.metadata[core.SIGNATURE_DEF_FIELD].Unpack(signature_defs)
  return {
    'model_spec': message_dict(response.model_spec),
    'metadata': {core.SIGNATURE_DEF_FIELD: message_dict(signature_defs)},
  }


def _columns(signature, body):
  """The inputs of a predict body as input key -> JSON value, from rows or columns."""
  specs = signature.inputs
  has_rows, has_columns = 'instances' in body, 'inputs' in body
  if has_rows == has_columns:
    raise errors.invalid_argument(
      'the request needs exactly one of "instances" (row format) or "inputs" (columnar format)'
    )
  if has_columns:
    columns = body['inputs']
    if _named(columns, specs):
      return columns
    if len(specs) != 1:
      raise errors.invalid_argument(
        f'signature "{signature.name}" has inputs {sorted(specs)}: "inputs" must be an'
        ' object naming them'
      )
    return {next(iter(specs)): columns}
  instances = body['instances']
  if not isinstance(instances, list):
    raise errors.invalid_argument('"instances" must be a list')
  if not instances:
    raise errors.invalid_argument('empty batch: "instances" is an empty list')
  if _named(instances[0], specs):
    for i, instance in enumerate(instances):
      if not _named(instance, specs) or set(instance) != set(instances[0]):
        raise errors.invalid_argument(
          f'instances[{i}] must name the same inputs as instances[0]: {sorted(instances[0])}'
        )
    return {k: [instance[k] for instance in instances] for k in instances[0]}
  if len(specs) == 1:
    return {next(iter(specs)): instances}
  raise errors.invalid_argument(
    f'signature "{signature.name}" has inputs {sorted(specs)}: each instance must be an'
    ' object naming them'
  )


def predict(
  servable: Servable,
  signature_name: str,
  body: dict,
  budget: codec.Budget,
  deadline: float | None = None,
  stop=None,
) -> bytes:
  """Runs a predict body ("instances" rows or "inputs" columns) and returns the answer's JSON.

  `budget` bounds the tensors decoded from the body; `deadline` (time.monotonic) and `stop`
  (a threading.Event) end the signature call, and the answer's encoding, early. Once decoded,
  "instances" / "inputs" are removed from `body`, so the parsed JSON (millions of objects for
  a large batch) is freed before the model runs. The answer is made in slices of rows and
  refused (RESOURCE_EXHAUSTED) when its first slice shows it would exceed the servable's
  output_budget_bytes.
  """
  signature = servable.signature(signature_name)
  rows = 'instances' in body
  inputs = _decode_inputs(signature, body, budget)
  batch = len(body['instances']) if rows else None
  body.pop('instances', None)
  body.pop('inputs', None)
  _, outputs = core.predict_arrays(servable, signature.name, inputs, deadline=deadline, stop=stop)
  del inputs
  if rows:
    short = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != batch]
    if short:
      raise errors.invalid_argument(
        f'outputs {short} do not have the batch size {batch} as their'
        ' first dimension; use the columnar "inputs" format'
      )
  if not outputs:  # a signature without outputs
    return _dumps({'predictions': [{}] * batch} if rows else {'outputs': {}}).encode()
  return _encode(servable, signature.name, outputs, rows, deadline, stop)


def _decode_inputs(signature, body, budget):
  inputs = {}
  for key, value in _columns(signature, body).items():
    if key not in signature.inputs:
      raise errors.invalid_argument(
        f'input "{key:.80}" is not an input of signature'
        f' "{signature.name}": {sorted(signature.inputs)}'
      )
    inputs[key] = codec.from_json(key, value, signature.inputs[key].dtype, budget)
  return inputs


def _dumps(value):
  return json.dumps(value, separators=(',', ':'))


def _slicer(outputs):
  """(rows, encode): encode(a, b) is the JSON list of rows a to b of all of `outputs` (one
  output: its values; several: an object per row, TF Serving's row format)."""
  keys = list(outputs)
  rows = next(iter(outputs.values())).shape[0]
  if len(keys) == 1:
    key, value = keys[0], outputs[keys[0]]
    return rows, lambda a, b: _dumps(codec.to_json(key, value[a:b]))

  def encode(a, b):
    columns = [codec.to_json(k, outputs[k][a:b]) for k in keys]
    return _dumps([dict(zip(keys, row)) for row in zip(*columns)])

  return rows, encode


def _encode(servable, name, outputs, rows, deadline, stop):
  """The answer's JSON, byte for byte json.dumps of TF Serving's answer object, made in slices.

  Between slices a set `stop` or a passed deadline ends it (CANCELLED, DEADLINE_EXCEEDED).
  """
  # Literal text, and (rows, encode) items whose rows are encoded a slice at a time.
  if rows:
    parts = ['{"predictions":', _slicer(outputs), '}']
  else:
    columns = {}
    for key, value in outputs.items():
      if value.ndim == 0 or value.shape[0] == 0:
        columns[key] = _dumps(codec.to_json(key, value))
      else:
        columns[key] = _slicer({key: value})
    if len(columns) == 1:
      parts = ['{"outputs":', next(iter(columns.values())), '}']
    else:
      parts = ['{"outputs":{']
      for i, (key, column) in enumerate(columns.items()):
        parts += [',' * bool(i) + _dumps(key) + ':', column]
      parts.append('}}')
  items = [part for part in parts if not isinstance(part, str)]
  width = sum(v.size // max(1, v.shape[0]) for v in outputs.values() if v.ndim) or 1
  step = max(1, min(_ENCODE_ROWS, _ENCODE_ELEMENTS // width))
  total = sum(n for n, _ in items)
  budget = servable.output_budget_bytes
  most_rows = max((n for n, _ in items), default=1)
  if budget is not None and width > _ENCODE_ELEMENTS:
    # A row wider than a slice is encoded whole, its Python objects 8 times its array and more:
    # its size is estimated first from a sample of each output's values.
    projected = sum(_sampled_json_bytes(key, value) for key, value in outputs.items())
    _check_answer_size(name, most_rows, projected, budget)
  # The first slice of each item, and from it the whole answer's size.
  first = [encode(0, min(step, n)) for n, encode in items]
  projected = sum(len(p) for p in parts if isinstance(p, str)) + sum(
    len(text) * n // min(step, n) for (n, _), text in zip(items, first)
  )
  if budget is not None:
    _check_answer_size(name, most_rows, projected, budget)
  out, done = [], 0
  firsts = iter(first)
  for part in parts:
    if isinstance(part, str):
      out.append(part.encode())
      continue
    n, encode = part
    out.append(next(firsts)[:-1].encode())  # '[' and the first slice's rows
    for a in range(step, n, step):
      _check_live(deadline, stop, name, done + a, total)
      out.append(b',' + encode(a, min(a + step, n))[1:-1].encode())
    out.append(b']')
    done += n
  return b''.join(out)


def _sampled_json_bytes(key, value):
  """About how many bytes of JSON `value` makes, from its first _ENCODE_ELEMENTS values."""
  flat = value.reshape(-1)
  sample = flat[:_ENCODE_ELEMENTS]
  if not sample.size:
    return 2
  return len(_dumps(codec.to_json(key, sample))) * flat.size // sample.size


def _check_answer_size(name, rows, projected, budget):
  if projected > budget:
    raise errors.ServingError(
      grpc.StatusCode.RESOURCE_EXHAUSTED,
      f'the answer to {rows} rows of signature "{name}" would take about'
      f' {projected >> 20} MiB of JSON, more than the {budget >> 20} MiB a request may hold'
      ' (--request_memory_budget_mb); send fewer rows per request',
    )


def _check_live(deadline, stop, name, done, total):
  if stop is not None and stop.is_set():
    raise errors.ServingError(
      grpc.StatusCode.CANCELLED,
      f'the client went away; the answer of signature "{name}" stopped after {done} of'
      f' {total} rows were encoded',
    )
  if deadline is not None and time.monotonic() >= deadline:
    raise errors.ServingError(
      grpc.StatusCode.DEADLINE_EXCEEDED,
      f'deadline exceeded while the answer of signature "{name}" was encoded: {done} of'
      f' {total} rows done; send fewer rows per request or allow more time',
    )


def _named(value, specs):
  """True for an object whose keys are input names (not a {"b64": ...} value)."""
  return isinstance(value, dict) and not (set(value) == {'b64'} and 'b64' not in specs)


def _examples(body: dict, verb: str, budget_bytes=None, deadline=None, stop=None) -> np.ndarray:
  """The tf.Examples of a classify or regress body, serialized: "examples", each after the
  optional "context" (core.serialize_examples), within `budget_bytes`. The body's "examples"
  are let go once converted."""
  examples = body.get('examples')
  if not isinstance(examples, list):
    raise errors.invalid_argument(f'{verb} needs "examples": a list of objects of features')
  if not examples:
    raise errors.invalid_argument('empty batch: "examples" is an empty list')
  core.check_example_count(len(examples), verb, budget_bytes)
  context = body.get('context')
  context = b'' if context is None else codec.example_from_json('context', context)
  context = context and context.SerializeToString()
  out = np.empty(len(examples), dtype=object)
  for i, example in enumerate(examples):
    if not i % _ENCODE_ROWS:
      core.check_live(deadline, stop, i, len(examples))
    out[i] = context + codec.example_from_json(i, example).SerializeToString()
  body.pop('examples')
  return out


def classify(
  servable: Servable,
  signature_name: str,
  body: dict,
  deadline: float | None = None,
  stop=None,
) -> dict:
  """Runs a classify body ("examples", optional "context") and returns the answer's JSON."""
  protos = _examples(body, 'classify', servable.request_budget_bytes, deadline, stop)
  _, results = core.classify_examples(servable, signature_name, protos, deadline, stop)
  # Scores are floats (float32) in ClassificationResult: written with float32's shortest digits.
  scores = codec.shortest_floats(
    np.array([[score for _, score in row] for row in results], np.float32)
  ).tolist()
  return {
    'results': [
      [[label.decode('utf-8', 'replace'), score] for (label, _), score in zip(row, row_scores)]
      for row, row_scores in zip(results, scores)
    ]
  }


def regress(
  servable: Servable,
  signature_name: str,
  body: dict,
  deadline: float | None = None,
  stop=None,
) -> dict:
  """Runs a regress body ("examples", optional "context") on a regression signature and returns
  TF Serving's answer: {"results": [one float per example]}."""
  protos = _examples(body, 'regress', servable.request_budget_bytes, deadline, stop)
  _, values = core.regress_examples(servable, signature_name, protos, deadline, stop)
  # Regressions are floats (float32) in RegressionResult: float32's shortest digits.
  return {'results': codec.shortest_floats(np.asarray(values, np.float32)).tolist()}
