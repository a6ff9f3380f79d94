"""Queries a TF Serving-compatible server (this one or tensorflow/serving) with text.

  python -m serving.client --grpc localhost:8500 --model_name imdb --text "a great film"
  python -m serving.client --rest http://localhost:8501 --model_name imdb --text "dull" \\
      --signature predict_text
  python -m serving.client --grpc localhost:8500 --model_name imdb --text "fine" --classify
  python -m serving.client --rest http://localhost:8501 --model_name lm --generate \\
      --prompt "the film" --max_new_tokens 20 --temperature 0.8 --top_p 0.9 --seed 7

The signature's metadata decides the encoding: a signature whose one input is `examples` (or
`inputs`) gets serialized tf.Examples with a `text` feature, any other gets the raw strings.
Prints one JSON object: {"model_spec": ..., "outputs": {...}} or, with --classify,
{"model_spec": ..., "results": [[[label, score], ...], ...]} (the model's `classification`
signature unless --signature names another). A --text or --prompt whose bytes are not UTF-8 is
sent as those bytes (over REST as {"b64": ...}). float32 numbers print with their shortest digits
(0.3), as TF Serving's REST API writes them, over both protocols. --generate calls a causal LM's
`generate` signature with every --prompt (the same controls on each row) and prints
{"model_spec": ..., "outputs": {"text": [continuation, ...]}}.
"""

import argparse
import base64
import http.client
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

# An error body that is not TF Serving's JSON (a proxy's HTML page) is printed up to this size.
_ERROR_TEXT_MAX = 500


def _error_text(body: bytes) -> str:
  """TF Serving's {"error": "..."} message, or the body's text (cut) when it is something else."""
  text = body.decode('utf-8', 'replace')
  try:
    message = json.loads(text)['error']
  except (ValueError, TypeError, KeyError):
    message = None
  if isinstance(message, str):
    return message
  text = ' '.join(text.split())
  return text if len(text) <= _ERROR_TEXT_MAX else text[:_ERROR_TEXT_MAX] + ' ...'


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows each flag's default, except the empty ones ('(default: None)' says nothing)."""

  def _get_help_string(self, action):
    # By identity: 0 == False, and a default of 0 is worth showing.
    if any(action.default is empty for empty in (None, False, '')) or action.help is None:
      return action.help
    return super()._get_help_string(action)


# Sampling controls: without --temperature > 0 (greedy decoding) they change nothing.
_SAMPLING_FLAGS = ('seed', 'top_k', 'top_p')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog='python -m serving.client',
    description=__doc__.split('\n')[0],
    formatter_class=_HelpFormatter,
  )
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--grpc', help='host:port of the gRPC API')
  where.add_argument('--rest', help='base URL of the REST API, e.g. http://localhost:8501')
  parser.add_argument('--model_name', required=True)
  parser.add_argument('--text', action='append', help='a text to send (repeat for a batch)')
  parser.add_argument(
    '--signature',
    default='',
    help="signature name (default serving_default; with --classify, the model's classification"
    ' signature when it has one)',
  )
  version = parser.add_mutually_exclusive_group()
  version.add_argument('--version', type=int, help='a specific model version')
  version.add_argument('--label', help='a version label')
  parser.add_argument('--classify', action='store_true', help='use the Classify API')
  parser.add_argument(
    '--generate', action='store_true', help="call a causal LM's generate signature on --prompt"
  )
  parser.add_argument('--prompt', action='append', help='a prompt (repeat for a batch)')
  # Below a small model's window: its limit is seq_len - 1 (the end token takes one).
  parser.add_argument('--max_new_tokens', type=int, default=16, help='tokens to generate per row')
  parser.add_argument(
    '--temperature',
    type=float,
    default=0.0,
    help='0: greedy decoding (--seed, --top_k, --top_p have no effect); above 0: sampling',
  )
  parser.add_argument(
    '--top_k', type=int, default=0, help='sample among the k likeliest tokens; 0: all of them'
  )
  parser.add_argument(
    '--top_p', type=float, default=1.0, help='nucleus sampling mass; 1: no nucleus cut'
  )
  parser.add_argument(
    '--seed',
    type=int,
    default=0,
    help='sampling seed (the same seed gives the same text); only matters with --temperature > 0',
  )
  parser.add_argument('--timeout', type=float, default=30.0, help='seconds (the gRPC deadline)')
  parser.add_argument('--root_cert', help='CA certificate (PEM) for TLS / HTTPS')
  parser.add_argument('--auth_token_file', help='file holding the bearer token to send')
  return parser


def _flags(argv: list[str] | None):
  parser = _parser()
  flags = parser.parse_args(argv)
  if flags.generate != bool(flags.prompt) or flags.generate == bool(flags.text):
    parser.error('give --text (to predict or --classify) or --generate with --prompt')
  if flags.grpc == '' or flags.rest == '':
    parser.error('--grpc or --rest is empty; give the server as --grpc HOST:PORT or --rest URL')
  return flags


if __name__ == '__main__':
  # The flags first: --help and a usage error answer before TensorFlow's import (seconds).
  _flags(sys.argv[1:])
  # Before TensorFlow is imported: its C++ start-up lines go to a log, not the console.
  from tfxlm import console

  console.route_native_stderr(console.default_log_path('client'))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
  classification_pb2,
  get_model_metadata_pb2,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from serving.codec import text_example, to_json  # noqa: E402
from tfxlm import contract  # noqa: E402

EXAMPLE_INPUT_KEYS = (contract.EXAMPLES_INPUT, 'inputs')
SIGNATURE_DEF_FIELD = 'signature_def'


def generation_rows(prompts, max_new_tokens=32, temperature=0.0, top_k=0, top_p=1.0, seed=0):
  """The `generate` signature's inputs, one dict per prompt with the same controls."""
  return [
    {
      contract.PROMPT_INPUT: p,
      contract.MAX_NEW_TOKENS_INPUT: max_new_tokens,
      contract.TEMPERATURE_INPUT: temperature,
      contract.TOP_K_INPUT: top_k,
      contract.TOP_P_INPUT: top_p,
      contract.SEED_INPUT: seed,
    }
    for p in prompts
  ]


_GENERATION_DTYPES = {
  contract.PROMPT_INPUT: tf.string,
  contract.MAX_NEW_TOKENS_INPUT: tf.int32,
  contract.TEMPERATURE_INPUT: tf.float32,
  contract.TOP_K_INPUT: tf.int32,
  contract.TOP_P_INPUT: tf.float32,
  contract.SEED_INPUT: tf.int32,
}


def _check_int32(key, values):
  """Refuses what int32 cannot hold: tf.make_tensor_proto would wrap it to another number."""
  low, high = np.iinfo(np.int32).min, np.iinfo(np.int32).max
  for row, value in enumerate(values):
    if not low <= value <= high:
      raise ValueError(
        f'{key} of row {row} is {value}, outside int32 ({low} to {high}), the type of the'
        f" generate signature's input"
      )


def text_bytes(text: str) -> bytes:
  """A text as the bytes to send: UTF-8, and bytes a command line held that are not UTF-8 (which
  Python reads as surrogate escapes, '\\udcff' for 0xff) as they were; TF Serving's strings are
  bytes, and the model decides what it takes."""
  return text.encode('utf-8', 'surrogateescape')


def json_text(text: str) -> str | dict:
  """A text as a JSON value: itself, or {"b64": ...} (TF Serving's JSON for bytes) when its bytes
  are not UTF-8, which a JSON string cannot carry."""
  try:
    text.encode('utf-8')
  except UnicodeEncodeError:
    return {'b64': base64.b64encode(text_bytes(text)).decode('ascii')}
  return text


def _spec(model_spec, name, signature='', version=None, label=None):
  model_spec.name = name
  model_spec.signature_name = signature
  if version is not None:
    model_spec.version.value = version
  elif label:
    model_spec.version_label = label


def _check_target(target: str) -> None:
  """ValueError for a target written as a URL (grpc://HOST:PORT, http://...), which grpc
  resolves as a host name ('Misformatted domain name'); its own forms (dns:///HOST:PORT,
  ipv4:, unix:) pass."""
  scheme = target.partition('://')[0].lower()
  if scheme in ('grpc', 'grpcs', 'http', 'https'):
    raise ValueError(
      f'invalid gRPC target {target}: give the server as HOST:PORT, without {scheme}://'
      ' (for TLS add --root_cert)'
    )


class GrpcClient:
  """A client of TF Serving's gRPC API.

  Args:
    target: host:port.
    root_cert: PEM file of the CA that signed the server's certificate, for TLS; None for
      plaintext.
    timeout: seconds before a call fails with DEADLINE_EXCEEDED.
    token: a bearer token sent as `authorization` metadata, for a server that wants one.
  """

  def __init__(
    self, target: str, root_cert: str | None = None, timeout: float = 30.0, token: str | None = None
  ):
    _check_target(target)
    if root_cert:
      with open(root_cert, 'rb') as f:
        self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(f.read()))
    else:
      self.channel = grpc.insecure_channel(target)
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.timeout = timeout
    self.metadata = (('authorization', f'Bearer {token}'),) if token else None

  def signature_defs(
    self, model: str, version: int | None = None, label: str | None = None
  ) -> tuple[dict, int | None]:
    """The model's signatures (name -> SignatureDef) and the version that answered."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
    _spec(request.model_spec, model, version=version, label=label)
    response = self.stub.GetModelMetadata(request, timeout=self.timeout, metadata=self.metadata)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_defs)
    served = response.model_spec.version.value if response.model_spec.HasField('version') else None
    return signature_defs.signature_def, served

  def input_key(
    self, model: str, signature: str = '', version: int | None = None, label: str | None = None
  ) -> str:
    """The one input key of a signature, read from the model's metadata."""
    signature_defs, served = self.signature_defs(model, version, label)
    return _one_input(signature_defs, signature, model, served)

  def predict(
    self,
    model: str,
    texts: Sequence[str],
    signature: str = '',
    version: int | None = None,
    label: str | None = None,
    input_key: str | None = None,
  ) -> tuple[dict, dict[str, np.ndarray]]:
    """Predicts on texts; returns (model_spec dict, output key -> np.ndarray)."""
    key = input_key or self.input_key(model, signature, version, label)
    request = predict_pb2.PredictRequest()
    _spec(request.model_spec, model, signature, version, label)
    values = (
      [text_example(text_bytes(t)).SerializeToString() for t in texts]
      if key in EXAMPLE_INPUT_KEYS
      else [text_bytes(t) for t in texts]
    )
    request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    response = self.stub.Predict(request, timeout=self.timeout, metadata=self.metadata)
    return (
      json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
      {k: tf.make_ndarray(v) for k, v in response.outputs.items()},
    )

  def generate(self, model, rows, version=None, label=None):
    """Calls `generate` on `generation_rows`; returns (model_spec dict, {'text': np.ndarray})."""
    request = predict_pb2.PredictRequest()
    _spec(request.model_spec, model, contract.GENERATE, version, label)
    for key, dtype in _GENERATION_DTYPES.items():
      values = [text_bytes(r[key]) if dtype == tf.string else r[key] for r in rows]
      if dtype == tf.int32:
        _check_int32(key, values)
      request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
    response = self.stub.Predict(request, timeout=self.timeout, metadata=self.metadata)
    return (
      json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
      {k: tf.make_ndarray(v) for k, v in response.outputs.items()},
    )

  def classify(
    self,
    model: str,
    texts: Sequence[str],
    signature: str = '',
    version: int | None = None,
    label: str | None = None,
  ) -> tuple[dict, list[list[tuple[str, float]]]]:
    """Classifies texts as tf.Examples; returns (model_spec dict, [[(label, score), ...]]), each
    score the float of its float32's shortest digits (0.3, not 0.30000001192092896), as REST's.

    Without `signature`: the model's `classification` signature when it has one (TF Serving's
    Classify runs no other kind), else the server's default.
    """
    if not signature:
      signature = _classify_signature(self.signature_defs(model, version, label)[0])
    request = classification_pb2.ClassificationRequest()
    _spec(request.model_spec, model, signature, version, label)
    for text in texts:
      request.input.example_list.examples.add().CopyFrom(text_example(text_bytes(text)))
    response = self.stub.Classify(request, timeout=self.timeout, metadata=self.metadata)
    return (
      json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
      [
        [(c.label, float(str(np.float32(c.score)))) for c in row.classes]
        for row in response.result.classifications
      ],
    )


def _checked_url(url: str) -> str:
  """`url` if it is http(s)://HOST[:PORT][/PATH]; else ValueError naming it. Without a scheme
  (`localhost:8501`, as curl takes it) urllib read the host as one ('unknown url type:
  localhost'), and a port past 65535 was taken modulo 65536, another port."""
  try:
    parts = urllib.parse.urlsplit(url)
    parts.port  # noqa: B018 - raises ValueError for a port that is not one
  except ValueError as e:
    raise ValueError(f'invalid URL {url}: {e}; give the server as http://HOST:PORT') from None
  if parts.scheme not in ('http', 'https') or not parts.hostname:
    raise ValueError(
      f'invalid URL {url}: not an http:// or https:// URL with a host; give the server as'
      ' http://HOST:PORT'
    )
  return url


class RestClient:
  """A client of TF Serving's REST API.

  Args:
    url: the server's base URL, e.g. http://localhost:8501.
    cafile: PEM file of the CA for an https:// URL with a private certificate.
    timeout: seconds before giving up.
    token: a bearer token sent in the `Authorization` header, for a server that wants one.
  """

  def __init__(
    self, url: str, cafile: str | None = None, timeout: float = 30.0, token: str | None = None
  ):
    self.url = _checked_url(url).rstrip('/')
    self.context = ssl.create_default_context(cafile=cafile) if cafile else None
    self.timeout = timeout
    self.headers = {'Content-Type': 'application/json'}
    if token:
      self.headers['Authorization'] = f'Bearer {token}'

  def _path(self, model, version=None, label=None):
    # Percent-encoded whole ('/' and ' ' too): the server decodes the name and label back.
    path = f'{self.url}/v1/models/{urllib.parse.quote(model, safe="")}'
    if version is not None:
      return f'{path}/versions/{version}'
    return f'{path}/labels/{urllib.parse.quote(label, safe="")}' if label else path

  def request(self, url: str, body: dict | None = None) -> dict:
    """GETs (or POSTs the JSON `body` to) `url`; returns the decoded JSON answer.

    Raises:
      RuntimeError: with the HTTP status and TF Serving's {"error": ...} message.
      OSError: naming `url`, when the server cannot be reached (refused, no such host, TLS).
      ValueError: naming `url`, when it is not a URL (a port that is not a number).
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=self.headers)
    try:
      with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as r:
        return json.loads(r.read())
    except urllib.error.HTTPError as e:
      raise RuntimeError(f'HTTP {e.code}: {_error_text(e.read())}') from None
    except urllib.error.URLError as e:
      hint = ''
      if isinstance(e.reason, ssl.SSLError) and 'WRONG_VERSION_NUMBER' in str(e.reason):
        hint = ' (the server answered without TLS: give http://, or start it with TLS)'
      raise OSError(f'cannot reach {url}: {e.reason}{hint}') from None
    except http.client.InvalidURL as e:  # not a ValueError, unlike urllib's other URL errors
      raise ValueError(f'invalid URL {url}: {e}; give the server as http://HOST:PORT') from None

  def signature_defs(
    self, model: str, version: int | None = None, label: str | None = None
  ) -> tuple[dict, str | None]:
    """The model's signatures (name -> SignatureDef as JSON) and the version that answered."""
    metadata = self.request(self._path(model, version, label) + '/metadata')
    signature_defs = metadata['metadata'][SIGNATURE_DEF_FIELD][SIGNATURE_DEF_FIELD]
    return signature_defs, metadata.get('model_spec', {}).get('version')

  def input_key(
    self, model: str, signature: str = '', version: int | None = None, label: str | None = None
  ) -> str:
    """The one input key of a signature, read from the model's metadata."""
    signature_defs, served = self.signature_defs(model, version, label)
    return _one_input(signature_defs, signature, model, served)

  def predict(
    self,
    model: str,
    texts: Sequence[str],
    signature: str = '',
    version: int | None = None,
    label: str | None = None,
    input_key: str | None = None,
  ) -> dict:
    """Predicts on texts; returns the outputs (output key -> list), columnar."""
    key = input_key or self.input_key(model, signature, version, label)
    values = (
      [
        {'b64': base64.b64encode(text_example(text_bytes(t)).SerializeToString()).decode()}
        for t in texts
      ]
      if key in EXAMPLE_INPUT_KEYS
      else [json_text(t) for t in texts]
    )
    body = {'signature_name': signature, 'inputs': {key: values}}
    return self.request(self._path(model, version, label) + ':predict', body)['outputs']

  def generate(self, model, rows, version=None, label=None):
    """Calls `generate` on `generation_rows` in the row format; returns {'text': [...]}."""
    rows = [{**r, contract.PROMPT_INPUT: json_text(r[contract.PROMPT_INPUT])} for r in rows]
    body = {'signature_name': contract.GENERATE, 'instances': rows}
    answer = self.request(self._path(model, version, label) + ':predict', body)
    return {contract.GENERATED_TEXT: answer['predictions']}

  def classify(
    self,
    model: str,
    texts: Sequence[str],
    signature: str = '',
    version: int | None = None,
    label: str | None = None,
  ) -> list:
    """Classifies texts; returns [[[label, score], ...], ...], one list per text.

    Without `signature`: the model's `classification` signature when it has one, as GrpcClient.
    """
    if not signature:
      signature = _classify_signature(self.signature_defs(model, version, label)[0])
    examples = [{contract.TEXT_KEY: json_text(t)} for t in texts]
    body = {'signature_name': signature, 'examples': examples}
    return self.request(self._path(model, version, label) + ':classify', body)['results']


def _classify_signature(signature_defs) -> str:
  """`classification` if the model has it (this project's classifiers), else '' (the default)."""
  return contract.CLASSIFICATION if contract.CLASSIFICATION in signature_defs else ''


def _one_input(signature_defs, signature, model='', version=None):
  name = signature or contract.SERVING_DEFAULT
  if name not in signature_defs:
    # Worded as the server's answer to a Predict on it; the metadata also lists the internal
    # __saved_model_init_op, which no request can call.
    callable_names = sorted(n for n in signature_defs if not n.startswith('__'))
    where = f'model "{model}"' + (f' version {version}' if version is not None else '')
    raise ValueError(
      f'FAILED_PRECONDITION: Serving signature key "{name}" not found in {where};'
      f' it has {callable_names}'
    )
  inputs = (
    signature_defs[name].inputs
    if hasattr(signature_defs[name], 'inputs')
    else signature_defs[name]['inputs']
  )
  if len(inputs) != 1:
    raise ValueError(
      f'signature "{name}" has inputs {sorted(inputs)}; this client sends one text input'
    )
  return next(iter(inputs))


def _jsonable(value):
  if isinstance(value, np.ndarray):
    if value.dtype != object and value.dtype.kind != 'S':
      # Numbers as TF Serving's REST API writes them: float32 with its shortest digits (0.3, not
      # the double's 0.30000001192092896), as this server's REST answers print.
      return to_json('', value)
    return _jsonable(value.tolist())
  if isinstance(value, list):
    return [_jsonable(v) for v in value]
  if isinstance(value, bytes):
    return value.decode('utf-8', 'replace')
  return value


def print_json(value, stream=None) -> None:
  """Prints `value` as one line of JSON, its text as written ("子", not "\\u5b50"). Where the
  stream cannot encode a character (a C or Latin-1 locale), the whole line is written with JSON
  escapes instead, still valid JSON, rather than failing with UnicodeEncodeError."""
  stream = stream or sys.stdout
  line = json.dumps(value, ensure_ascii=False)
  try:
    line.encode(getattr(stream, 'encoding', None) or 'utf-8')
  except UnicodeEncodeError:
    line = json.dumps(value)
  print(line, file=stream)


def _ignored_sampling_flags(argv: list[str] | None, flags) -> list[str]:
  """The sampling flags given on the command line although decoding is greedy."""
  if not flags.generate or flags.temperature > 0:  # NaN is greedy too, as on the server
    return []
  # Parsed again with no defaults, so that a flag given at its default value counts too.
  probe = _parser()
  probe.set_defaults(**dict.fromkeys(_SAMPLING_FLAGS))
  given = probe.parse_args(argv)
  return [f'--{name}' for name in _SAMPLING_FLAGS if getattr(given, name) is not None]


def main(argv: list[str] | None = None) -> int:
  flags = _flags(argv)
  ignored = _ignored_sampling_flags(argv, flags)
  if ignored:
    print(
      f'note: {", ".join(ignored)} {"has" if len(ignored) == 1 else "have"} no effect under'
      f' greedy decoding (--temperature'
      f' {flags.temperature:g}); give --temperature > 0 to sample',
      file=sys.stderr,
    )
  args = (flags.model_name, flags.text, flags.signature, flags.version, flags.label)
  try:
    token = None
    if flags.auth_token_file:
      with open(flags.auth_token_file, encoding='utf-8') as f:
        token = f.read().strip()
    if flags.generate:
      rows = generation_rows(
        flags.prompt, flags.max_new_tokens, flags.temperature, flags.top_k, flags.top_p, flags.seed
      )
      if flags.grpc:
        client = GrpcClient(flags.grpc, flags.root_cert, flags.timeout, token)
        spec, answer = client.generate(flags.model_name, rows, flags.version, flags.label)
      else:
        client = RestClient(flags.rest, flags.root_cert, flags.timeout, token)
        spec = {'name': flags.model_name}
        answer = client.generate(flags.model_name, rows, flags.version, flags.label)
    elif flags.grpc:
      client = GrpcClient(flags.grpc, flags.root_cert, flags.timeout, token)
      spec, answer = client.classify(*args) if flags.classify else client.predict(*args)
    else:
      client = RestClient(flags.rest, flags.root_cert, flags.timeout, token)
      spec = {'name': flags.model_name}
      answer = client.classify(*args) if flags.classify else client.predict(*args)
  except grpc.RpcError as e:
    print(f'error: {e.code().name}: {e.details()}', file=sys.stderr)
    return 1
  except (RuntimeError, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  key = 'results' if flags.classify else 'outputs'
  if isinstance(answer, dict):
    answer = {k: _jsonable(v) for k, v in answer.items()}
  print_json({'model_spec': spec, key: _jsonable(answer)})
  return 0


if __name__ == '__main__':
  sys.exit(main())
