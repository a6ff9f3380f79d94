"""The query client: what it sends, and its output, JSON whose text reads as written, on any
stdout."""

import base64
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2

from serving import client

ANSWER = {'model_spec': {'name': 'lm'}, 'outputs': {'text': ['子供 le café 🙂']}}


def test_output_shows_non_ascii_text_as_written():
  # It printed "\u5b50\u4f9b le caf\u00e9".
  stream = io.TextIOWrapper(io.BytesIO(), encoding='utf-8')
  client.print_json(ANSWER, stream)
  stream.seek(0)
  line = stream.read()
  assert '子供 le café 🙂' in line and json.loads(line) == ANSWER


@pytest.mark.parametrize('encoding', ['ascii', 'latin-1'])
def test_output_to_a_stdout_that_cannot_encode_the_text_is_escaped_json(encoding):
  stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
  client.print_json(ANSWER, stream)  # no UnicodeEncodeError
  stream.seek(0)
  assert json.loads(stream.read()) == ANSWER


# What Python makes of the command-line bytes b'caf\xe9 \xff' (not UTF-8): surrogate escapes.
RAW_BYTES = b'caf\xe9 \xff'
RAW_TEXT = RAW_BYTES.decode('utf-8', 'surrogateescape')


class _Recorder:
  """A PredictionService stub that keeps the requests and answers each method with its response
  in `answers` (method name -> response), else an empty one."""

  def __init__(self, **answers):
    self.requests = []
    self._answers = answers

  def __getattr__(self, name):
    empty = {
      'Predict': predict_pb2.PredictResponse,
      'Classify': classification_pb2.ClassificationResponse,
    }

    def call(request, **kwargs):
      self.requests.append(request)
      return self._answers[name] if name in self._answers else empty[name]()

    return call


def _text_of(serialized):
  return example_pb2.Example.FromString(serialized).features.feature['text'].bytes_list.value[0]


def test_grpc_sends_text_that_is_not_utf8_as_its_bytes():
  grpc_client = client.GrpcClient('127.0.0.1:1')
  grpc_client.stub = stub = _Recorder()
  grpc_client.predict('m', [RAW_TEXT, 'café'], input_key='text')
  grpc_client.predict('m', [RAW_TEXT], input_key='examples')
  grpc_client.classify('m', [RAW_TEXT], signature='classification')
  grpc_client.generate('m', client.generation_rows([RAW_TEXT]))
  raw, examples, classify, generate = stub.requests
  assert raw.inputs['text'].string_val == [RAW_BYTES, 'café'.encode()]
  assert _text_of(examples.inputs['examples'].string_val[0]) == RAW_BYTES
  example = classify.input.example_list.examples[0]
  assert example.features.feature['text'].bytes_list.value == [RAW_BYTES]
  assert generate.inputs['prompt'].string_val == [RAW_BYTES]


def test_rest_sends_text_that_is_not_utf8_as_b64(monkeypatch):
  bodies = []

  def request(self, url, body=None):
    bodies.append(body)
    return {'outputs': {}, 'results': [], 'predictions': []}

  monkeypatch.setattr(client.RestClient, 'request', request)
  rest_client = client.RestClient('http://h')
  rest_client.predict('m', [RAW_TEXT, 'café'], input_key='text')
  rest_client.predict('m', [RAW_TEXT], input_key='examples')
  rest_client.classify('m', [RAW_TEXT], signature='classification')
  rest_client.generate('m', client.generation_rows([RAW_TEXT]))
  raw, examples, classify, generate = bodies
  as_b64 = {'b64': base64.b64encode(RAW_BYTES).decode()}
  assert raw['inputs']['text'] == [as_b64, 'café']
  assert _text_of(base64.b64decode(examples['inputs']['examples'][0]['b64'])) == RAW_BYTES
  assert classify['examples'] == [{'text': as_b64}]
  assert generate['instances'][0]['prompt'] == as_b64
  json.dumps(bodies)  # each body is JSON


def _metadata(input_key):
  """A GetModelMetadataResponse of one signature, serving_default, of the one input `input_key`."""
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  signature_defs.signature_def['serving_default'].inputs[input_key].name = input_key
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.metadata['signature_def'].Pack(signature_defs)
  return response


def test_grpc_output_prints_float32_with_its_shortest_digits(monkeypatch, capsys):
  """0.3 as TF Serving's REST (and this server's) writes it, not the double's 0.30000001192092896."""
  predicted = predict_pb2.PredictResponse()
  outputs = {
    'scores': np.array([[0.3, 1e-7, 3.4028235e38]], np.float32),
    'half': np.array([65504, 0.1], np.float16),
    'ids': np.array([7], np.int64),
  }
  for key, value in outputs.items():
    predicted.outputs[key].CopyFrom(tf.make_tensor_proto(value))
  classified = classification_pb2.ClassificationResponse()
  classified.result.classifications.add().classes.add(label='pos', score=0.3)
  stub = _Recorder(GetModelMetadata=_metadata('text'), Predict=predicted, Classify=classified)
  monkeypatch.setattr(client.prediction_service_pb2_grpc, 'PredictionServiceStub', lambda _: stub)
  where = ['--grpc', '127.0.0.1:1', '--model_name', 'm', '--text', 'x']
  assert client.main(where) == 0
  printed = capsys.readouterr().out
  assert '"scores": [[0.3, 1e-07, 3.4028235e+38]]' in printed
  assert '"half": [65504.0, 0.099975586]' in printed  # float16 as the float32 it widens to
  assert json.loads(printed)['outputs']['ids'] == [7]
  assert client.main(where + ['--classify', '--signature', 'classification']) == 0
  assert json.loads(capsys.readouterr().out)['results'] == [[['pos', 0.3]]]


@pytest.mark.parametrize('where', ['--grpc', '--rest'])
def test_an_empty_server_is_a_usage_error(where, capsys):
  # --grpc '' ended in a traceback (the REST client was made of --rest, None).
  with pytest.raises(SystemExit) as raised:
    client.main([where, '', '--model_name', 'm', '--text', 'x'])
  assert raised.value.code == 2
  assert capsys.readouterr().err.endswith(
    'error: --grpc or --rest is empty; give the server as --grpc HOST:PORT or --rest URL\n'
  )


@pytest.mark.parametrize(
  'body, printed',
  [
    (b'{"error": "Could not find model: nope"}', 'HTTP 404: Could not find model: nope'),
    (b'{"error": "caf\xc3\xa9 \\"quoted\\""}', 'HTTP 404: caf\u00e9 "quoted"'),
    # Not TF Serving's JSON (a proxy's page, another JSON): its text, on one line and cut.
    (
      b'<html>\n<body>Bad\n gateway</body></html>',
      'HTTP 404: <html> <body>Bad gateway</body></html>',
    ),
    (b'{"message": "no"}', 'HTTP 404: {"message": "no"}'),
    (b'{"error": {"code": 5}}', 'HTTP 404: {"error": {"code": 5}}'),
    (b'x' * 2000, 'HTTP 404: ' + 'x' * 500 + ' ...'),
  ],
)
def test_a_rest_error_prints_tf_servings_message_not_its_json(monkeypatch, body, printed):
  def refuse(request, timeout=None, context=None):
    raise client.urllib.error.HTTPError(request.full_url, 404, 'Not Found', {}, io.BytesIO(body))

  monkeypatch.setattr(client.urllib.request, 'urlopen', refuse)
  with pytest.raises(RuntimeError) as raised:
    client.RestClient('http://h').request('http://h/v1/models/nope')
  assert str(raised.value) == printed


def test_https_to_a_plain_http_server_says_to_give_http():
  import http.server
  import threading

  server = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = f'https://127.0.0.1:{server.server_port}'
    with pytest.raises(OSError) as raised:
      client.RestClient(url).request(url + '/v1/models/m')
  finally:
    server.shutdown()
    server.server_close()
  message = str(raised.value)
  assert message.startswith(f'cannot reach {url}/v1/models/m: ')
  assert message.endswith('(the server answered without TLS: give http://, or start it with TLS)')
