"""A hostile client: declared-shape bombs, bad bytes, smuggling, slow and greedy clients, auth."""

import json
import os
import re
import select
import socket
import threading
import time
import zlib

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
)

from serving import client, memory, rest
from serving.batching import BatchingOptions
from serving.config import ModelConfig
from serving.rest import RestOptions, RestServer
from tests.serving import rest_util
from tests.serving.conftest import MODEL, start_server, toy_server
from tests.serving.hostile_util import RawHttp, post, rss_bytes

PREDICT_PATH = f'/v1/models/{MODEL}:predict'
GOOD_BODY = json.dumps({'signature_name': 'predict_text', 'instances': ['fine film']}).encode()


def _bomb(dtype, dims, **values):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  proto = request.inputs['text']
  proto.dtype = dtype.as_datatype_enum
  for size in dims:
    proto.tensor_shape.dim.add(size=size)
  for field, value in values.items():
    if field == 'tensor_content':
      proto.tensor_content = value
    else:
      getattr(proto, field).extend(value)
  return request


BOMBS = {
  'string declared 2**31': (
    _bomb(tf.string, [2**31], string_val=[b'x']),
    'needs 2147483648 values but it carries 1',
  ),
  'string declared 2**62 (2-D)': (_bomb(tf.string, [2**31, 2**31], string_val=[b'x']), 'carries 1'),
  'string declared with no values': (_bomb(tf.string, [2**31]), 'carries 0'),
  'float32 declared 2**31, 4 bytes of content': (
    _bomb(tf.float32, [2**31], tensor_content=b'\0' * 4),
    'needs 8589934592 bytes',
  ),
  'int64 declared 2**40 by one int64_val': (_bomb(tf.int64, [2**40], int64_val=[1]), 'carries 1'),
  'half declared 2**31 by one half_val': (_bomb(tf.float16, [2**31], half_val=[1]), 'carries 1'),
  'string of 1 MB broadcast 1024 times': (
    _bomb(tf.string, [1024], string_val=[b'x' * 2**20]),
    'bytes of strings, more than the limit',
  ),
  'negative dimension': (_bomb(tf.string, [-5], string_val=[b'x']), 'negative dimension'),
  'resource dtype': (_bomb(tf.resource, [1]), 'DT_RESOURCE is not supported'),
}


@pytest.mark.parametrize('case', sorted(BOMBS))
def test_declared_shapes_are_refused_fast_and_without_memory(served, case):
  request, message = BOMBS[case]
  before = rss_bytes()
  started = time.monotonic()
  with pytest.raises(grpc.RpcError) as raised:
    served.predictions.Predict(request, timeout=30)
  assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
  assert message in raised.value.details()
  assert time.monotonic() - started < 5
  assert rss_bytes() - before < 64 << 20


def test_the_20_byte_request_of_the_issue(served):
  request = BOMBS['string declared 2**31'][0]
  assert len(request.inputs['text'].SerializeToString()) <= 20
  before = rss_bytes()
  for _ in range(20):
    with pytest.raises(grpc.RpcError) as raised:
      served.predictions.Predict(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert rss_bytes() - before < 32 << 20


def test_random_bytes_as_a_message_are_invalid_argument(served):
  raw = served.channel.unary_unary('/tensorflow.serving.PredictionService/Predict')
  for garbage in (b'\xff' * 7, b'\x0a\x05\x0a\x03toy\x12', b'\x08' + b'\xff' * 11):
    with pytest.raises(grpc.RpcError) as raised:
      raw(garbage, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert 'not a valid PredictRequest' in raised.value.details()


def test_deeply_nested_json_is_400(served):
  for depth in (65, 100_000):
    body = b'{"instances": ' + b'[' * depth + b']' * depth + b'}'
    status, answer = rest_util.rest_json(served.rest_url, PREDICT_PATH, body)
    assert status == 400 and 'nests arrays and objects' in answer['error']
  # Brackets inside strings do not count.
  status, _ = rest_util.rest_json(
    served.rest_url, PREDICT_PATH, {'signature_name': 'predict_text', 'instances': ['[' * 500]}
  )
  assert status == 200


def _healthy_next(connection):
  connection.send(b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  status, _, body = connection.response()
  assert status == 200 and json.loads(body)['status'] == 'ok'


SMUGGLED = b'GET /v1/models/toy/versions/7 HTTP/1.1\r\nHost: x\r\n\r\n'


@pytest.mark.parametrize(
  'request_bytes,status',
  [
    (post('/v1/models/nope:predict', SMUGGLED), 404),
    (post('/v1/models/toy:explain', SMUGGLED), 501),
    (post('/v1/models/toy', SMUGGLED), 400),
    (post('/nowhere', SMUGGLED), 404),
    (
      b'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % len(SMUGGLED) + SMUGGLED,
      200,
    ),
  ],
  ids=['unknown model', 'unknown verb', 'POST on status', 'unknown path', 'GET with a body'],
)
def test_an_unread_body_is_never_taken_for_a_request(served, request_bytes, status):
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(request_bytes)
    assert connection.response()[0] == status
    _healthy_next(connection)  # the next answer is ours, not the smuggled request's
  finally:
    connection.close()


@pytest.mark.parametrize(
  'request_bytes,status',
  [
    (
      b'PUT /v1/models/toy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % len(SMUGGLED)
      + SMUGGLED,
      501,
    ),
    (post(PREDICT_PATH, SMUGGLED, 'Transfer-Encoding: chunked\r\n'), 400),
    (
      b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'
      % PREDICT_PATH.encode(),
      501,
    ),
    (b'POST %s HTTP/1.1\r\nHost: x\r\n\r\n' % PREDICT_PATH.encode() + SMUGGLED, 411),
    (post(PREDICT_PATH, b'{}').replace(b'Content-Length: 2', b'Content-Length: 2, 3'), 400),
    (post(PREDICT_PATH, b'x' * 8, 'Content-Length: 9\r\n'), 400),
    (
      b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'
      % PREDICT_PATH.encode(),
      400,
    ),
    (
      b'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n' % PREDICT_PATH.encode(),
      413,
    ),
  ],
  ids=[
    'unknown method',
    'Transfer-Encoding and Content-Length',
    'gzip transfer coding',
    'no length',
    'two Content-Lengths',
    'conflicting Content-Length headers',
    'bad chunk size',
    'oversize Content-Length',
  ],
)
def test_framing_errors_close_the_connection(served, request_bytes, status):
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(request_bytes)
    got, headers, _ = connection.response()
    assert got == status
    assert headers.get('connection') == 'close'
    assert connection.closed()
  finally:
    connection.close()


def test_chunked_bodies_and_any_content_type_are_served(served):
  connection = RawHttp(served.server.rest_port)
  try:
    half = len(GOOD_BODY) // 2
    chunks = b'%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n' % (
      half,
      GOOD_BODY[:half],
      len(GOOD_BODY) - half,
      GOOD_BODY[half:],
    )
    for extra in (b'Transfer-Encoding: chunked\r\n', b'Transfer-Encoding: Chunked\r\n'):
      connection.send(
        b'POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n' % (PREDICT_PATH.encode(), extra) + chunks
      )
      status, _, body = connection.response()
      assert status == 200 and len(json.loads(body)['predictions']) == 1
    # TF Serving reads the body as JSON whatever the Content-Type says (curl -d sends a form).
    connection.send(
      post(PREDICT_PATH, GOOD_BODY, 'Content-Type: application/x-www-form-urlencoded\r\n')
    )
    assert connection.response()[0] == 200
  finally:
    connection.close()


def _head(path, length, headers=''):
  """A POST request's line and headers, without its body."""
  return f'POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{headers}\r\n'.encode()


def test_expect_100_continue_is_answered_before_the_body(served):
  # curl sends the header for bodies over 1 MiB and holds the body back for a second.
  connection = RawHttp(served.server.rest_port, timeout=5)
  try:
    for _ in range(2):  # and again on the same connection
      connection.send(_head(PREDICT_PATH, len(GOOD_BODY), 'Expect: 100-continue\r\n'))
      assert connection.response() == (100, {}, b'')
      connection.send(GOOD_BODY)
      status, _, body = connection.response()
      assert status == 200 and len(json.loads(body)['predictions']) == 1
  finally:
    connection.close()


@pytest.mark.parametrize(
  'path,length,status',
  [(PREDICT_PATH, 99999999999, 413), ('/v1/models/nope:predict', 100, 404)],
  ids=['oversize Content-Length', 'unknown model'],
)
def test_a_refused_request_waiting_for_100_continue_is_closed(served, path, length, status):
  # No 100, and the body it may never send is not waited for.
  connection = RawHttp(served.server.rest_port, timeout=5)
  try:
    connection.send(_head(path, length, 'Expect: 100-continue\r\n'))
    got, headers, _ = connection.response()
    assert got == status and headers.get('connection') == 'close'
    assert connection.closed()
  finally:
    connection.close()


def test_an_unknown_expectation_is_417(served):
  connection = RawHttp(served.server.rest_port, timeout=5)
  try:
    connection.send(post(PREDICT_PATH, GOOD_BODY, 'Expect: x-fancy\r\n'))
    status, _, body = connection.response()
    assert status == 417 and 'Expect: x-fancy is not supported' in json.loads(body)['error']
    _healthy_next(connection)  # the body that came anyway was dropped
  finally:
    connection.close()


def _chunked(body):
  return b'%x\r\n%s\r\n0\r\n\r\n' % (len(body), body)


def _compress(data, wbits):
  compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
  return compressor.compress(data) + compressor.flush()


GZIP, ZLIB, RAW_DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS


@pytest.mark.parametrize(
  'coding,wbits',
  [('gzip', GZIP), ('x-gzip', GZIP), ('deflate', ZLIB), ('deflate', RAW_DEFLATE)],
  ids=['gzip', 'x-gzip', 'deflate (zlib)', 'deflate (raw)'],
)
def test_compressed_bodies_are_served_like_plain_ones(served, coding, wbits):
  # The wire length is the compressed one, with a Content-Length or chunked.
  packed = _compress(GOOD_BODY, wbits)
  encoding = f'Content-Encoding: {coding}\r\n'
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(post(PREDICT_PATH, GOOD_BODY))
    plain = connection.response()
    connection.send(post(PREDICT_PATH, packed, encoding))
    assert connection.response()[::2] == plain[::2]
    connection.send(
      f'POST {PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
      f'{encoding}\r\n'.encode()
      + _chunked(packed)
    )
    assert connection.response()[::2] == plain[::2]
  finally:
    connection.close()


@pytest.mark.parametrize(
  'encoding,body,status,message',
  [
    ('br', GOOD_BODY, 415, 'Content-Encoding br is not supported; send the body uncompressed'),
    ('gzip, gzip', GOOD_BODY, 415, 'Content-Encoding gzip, gzip is not supported'),
    ('gzip', GOOD_BODY, 400, 'the gzip body is corrupt'),
    ('gzip', _compress(GOOD_BODY, GZIP)[:-9], 400, 'the gzip body is truncated'),
    ('deflate', _compress(GOOD_BODY, ZLIB) + b'junk', 400, 'has 4 bytes after the end'),
  ],
  ids=['br', 'two codings', 'not gzip', 'truncated', 'trailing bytes'],
)
def test_bad_content_encodings(served, encoding, body, status, message):
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(post(PREDICT_PATH, body, f'Content-Encoding: {encoding}\r\n'))
    got, _, answer = connection.response()
    assert got == status and message in json.loads(answer)['error']
    _healthy_next(connection)
  finally:
    connection.close()


def _server_with_body_limit(toy_base, limit):
  return start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'max_request_bytes': limit},
  )


def test_a_gzip_bomb_is_413_within_bounded_memory(toy_base):
  running = _server_with_body_limit(toy_base, 1 << 20)
  compressor = zlib.compressobj(9, zlib.DEFLATED, GZIP)
  zeros = b'0' * (1 << 20)
  bomb = b''.join(compressor.compress(zeros) for _ in range(512)) + compressor.flush()
  assert len(bomb) < 1 << 20  # 512 MiB once decompressed
  connection = RawHttp(running.server.rest_port)
  try:
    before = rss_bytes()
    connection.send(post(PREDICT_PATH, bomb, 'Content-Encoding: gzip\r\n'))
    status, _, answer = connection.response()
    assert status == 413
    assert (
      'the body decompresses to more than the limit of 1048576 bytes' in json.loads(answer)['error']
    )
    assert rss_bytes() - before < 64 << 20
    _healthy_next(connection)
  finally:
    connection.close()
    running.close()


def test_oversize_chunked_body_is_413(toy_base):
  running = _server_with_body_limit(toy_base, 1000)
  connection = RawHttp(running.server.rest_port)
  try:
    connection.send(
      b'POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' % PREDICT_PATH.encode()
      + b'300\r\n'
      + b'x' * 0x300
      + b'\r\n'
      + b'300\r\n'
      + b'x' * 0x300
    )
    status, headers, _ = connection.response()
    assert status == 413 and headers['connection'] == 'close'
  finally:
    connection.close()
    running.close()


def test_made_up_names_do_not_become_metric_series(toy_base):
  served = start_server(
    toy_base, [ModelConfig(MODEL, os.path.join(toy_base, MODEL))], poll_wait_seconds=0
  )
  try:
    for i in range(150):
      rest_util.rest_json(served.rest_url, f'/v1/models/made-up-{i}:predict', {'instances': ['a']})
      request = predict_pb2.PredictRequest()
      request.model_spec.name = f'grpc-made-up-{i}'
      with pytest.raises(grpc.RpcError):
        served.predictions.Predict(request, timeout=30)
    rest_util.rest_json(
      served.rest_url, PREDICT_PATH, {'signature_name': 'made-up-signature', 'instances': ['a']}
    )
    text = rest_util.rest_text(served.rest_url, '/monitoring/prometheus/metrics')
  finally:
    served.close()
  assert 'made-up' not in text
  assert (
    'serving_request_errors_total{model="unknown",signature="",method="predict",'
    'protocol="rest",code="NOT_FOUND"} 150'
  ) in text
  assert (
    'serving_request_errors_total{model="unknown",signature="unknown",method="predict",'
    'protocol="grpc",code="NOT_FOUND"} 150'
  ) in text
  assert (
    'serving_request_errors_total{model="toy",signature="unknown",method="predict",'
    'protocol="rest",code="FAILED_PRECONDITION"} 1'
  ) in text
  assert len(text.splitlines()) < 150


def test_a_rest_request_is_counted_before_its_answer_is_sent(toy_base, monkeypatch):
  """A client that reads the metrics right after its answer finds its request there."""
  seen = []
  send = rest._Handler._send

  def recording_send(handler, reply):
    seen.append(handler.server.metrics.render())
    send(handler, reply)

  monkeypatch.setattr(rest._Handler, '_send', recording_send)
  served = start_server(
    toy_base, [ModelConfig(MODEL, os.path.join(toy_base, MODEL))], poll_wait_seconds=0
  )
  try:
    rest_util.rest_json(served.rest_url, '/v1/models/nothing-here:predict', {'instances': ['a']})
  finally:
    served.close()
  assert (
    'serving_request_errors_total{model="unknown",signature="",method="predict",'
    'protocol="rest",code="NOT_FOUND"} 1'
  ) in seen[-1]


@pytest.fixture
def authed(toy_base, tmp_path):
  token_file = tmp_path / 'token'
  token_file.write_text('s3cret-token\n')
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'auth_token_file': str(token_file)},
  )
  yield running, str(token_file)
  running.close()


def test_bearer_token_guards_every_call_but_health(authed, capsys):
  running, token_file = authed
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(['x']))
  for metadata in (
    None,
    (('authorization', 'Bearer wrong'),),
    (('authorization', 's3cret-token'),),
    (('authorization', 'bearer S3CRET-TOKEN'),),
    (('authorization', 'Basic s3cret-token'),),
    (('authorization', 'Bearers3cret-token'),),
  ):
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=30, metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
  # As over REST, the scheme matches in any case.
  for scheme in ('Bearer', 'bearer', 'BEARER'):
    ok = running.predictions.Predict(
      request, timeout=30, metadata=(('authorization', f'{scheme} s3cret-token'),)
    )
    assert ok.model_spec.version.value == 2
  connection = RawHttp(running.server.rest_port)
  try:
    for path in (f'/v1/models/{MODEL}', '/monitoring/prometheus/metrics'):
      connection.send(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
      status, headers, _ = connection.response()
      assert status == 401 and headers['www-authenticate'] == 'Bearer'
    connection.send(post(PREDICT_PATH, GOOD_BODY, 'Authorization: Bearer nope\r\n'))
    assert connection.response()[0] == 401
    _healthy_next(connection)  # open, and the refused body was not taken for a request
    connection.send(post(PREDICT_PATH, GOOD_BODY, 'Authorization: Bearer s3cret-token\r\n'))
    assert connection.response()[0] == 200
    # The scheme is case-insensitive (RFC 7235); the token is not.
    connection.send(post(PREDICT_PATH, GOOD_BODY, 'Authorization: bearer s3cret-token\r\n'))
    assert connection.response()[0] == 200
    for wrong in ('bearer S3CRET-TOKEN', 'Basic s3cret-token', 'Bearers3cret-token'):
      connection.send(post(PREDICT_PATH, GOOD_BODY, f'Authorization: {wrong}\r\n'))
      assert connection.response()[0] == 401, wrong
  finally:
    connection.close()
  for where in (['--grpc', running.grpc_target], ['--rest', running.rest_url]):
    assert (
      client.main(where + ['--model_name', MODEL, '--text', 'x', '--auth_token_file', token_file])
      == 0
    )
    assert json.loads(capsys.readouterr().out)['outputs']


def test_a_call_without_the_token_is_refused_before_its_message(authed):
  """UNAUTHENTICATED at once, whether the message comes or not: the refusal used to wait for
  it, with no time limit, so a call that never sent one stayed open."""
  running, _ = authed
  stop = threading.Event()
  try:
    (stalled,) = _stalled(running.channel, 1, stop)
    half_closed = running.channel.stream_unary('/tensorflow.serving.PredictionService/Predict')
    for error in (stalled.exception(10), half_closed.future(iter(())).exception(10)):
      assert error.code() == grpc.StatusCode.UNAUTHENTICATED
  finally:
    stop.set()


def test_grpc_beyond_max_concurrent_rpcs_is_resource_exhausted(toy_base):
  # A 2 s batch window keeps the first two requests in flight.
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    batching=BatchingOptions(
      max_batch_size=64, batch_timeout_micros=2_000_000, num_batch_threads=1
    ),
    options={'grpc_max_concurrent_rpcs': 2},
  )
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(['x']))
  try:
    in_flight = [running.predictions.Predict.future(request, timeout=30) for _ in range(2)]
    time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert all(f.result().model_spec.version.value == 2 for f in in_flight)
    # With those two ended, a call is taken again (one the batch window does not hold).
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = MODEL
    assert running.models.GetModelStatus(status, timeout=30).model_version_status
  finally:
    running.close()


def _stalled(channel, n, stop):
  """n Predict calls on `channel` that open and never send their message (until `stop`)."""

  def never():
    stop.wait()
    yield from ()

  method = channel.stream_unary('/tensorflow.serving.PredictionService/Predict')
  return [method.future(never()) for _ in range(n)]


def _predict_request():
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['text'].CopyFrom(tf.make_tensor_proto(['x']))
  return request


def test_grpc_calls_whose_message_never_comes_lock_nobody_out_and_are_ended(toy_base):
  """A client opening calls (one HTTP/2 frame each) and never sending their message: others
  are still served (they used to fill the RPC cap, then every call was RESOURCE_EXHAUSTED), and
  each is ended after --grpc_request_timeout_seconds."""
  running = toy_server(
    toy_base, request_threads=2, max_queued_requests=16, grpc_request_timeout_seconds=3
  )
  stop = threading.Event()
  # Separate connections (a channel of its own each): 4 x 100 calls open on the server.
  channels = [
    grpc.insecure_channel(running.grpc_target, options=[('grpc.use_local_subchannel_pool', 1)])
    for _ in range(4)
  ]
  try:
    started = time.monotonic()
    stalled = [f for channel in channels for f in _stalled(channel, 100, stop)]

    def one_then_never():
      yield _predict_request().SerializeToString()
      stop.wait()

    # A call that sends its message and never ends its stream is ended at the same time.
    unended = (
      channels[0]
      .stream_unary('/tensorflow.serving.PredictionService/Predict')
      .future(one_then_never())
    )
    # A second into the calls none is ended (none refused at once). Checked only while well
    # inside the 3 s timeout: opening 400 calls on a loaded machine can take most of it.
    time.sleep(max(0.0, started + 1.0 - time.monotonic()))
    if time.monotonic() - started < 2.5:
      ended = [f.exception() for f in stalled + [unended] if f.done()]
      assert not ended, [(e.code(), e.details()) for e in ended[:3]]
    answer = running.predictions.Predict(_predict_request(), timeout=30)
    assert answer.model_spec.version.value == 2
    codes = {(f.exception().code(), f.exception().details()) for f in stalled if f.exception(10)}
    assert codes == {
      (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        'the request message did not arrive within 3 s of the call'
        ' (--grpc_request_timeout_seconds)',
      )
    }
    assert all(f.done() for f in stalled)
    assert unended.exception(10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert unended.exception().details() == (
      'the request stream did not end within 3 s of the call (--grpc_request_timeout_seconds)'
    )
    # A call half-closed without a message is refused as such.
    with pytest.raises(grpc.RpcError) as raised:
      channels[0].stream_unary('/tensorflow.serving.PredictionService/Predict')(
        iter(()), timeout=10
      )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == 'the call ended without a request message'
  finally:
    stop.set()
    for channel in channels:
      channel.close()
    running.close()


@pytest.mark.parametrize('count', [2, 3])
@pytest.mark.parametrize(
  'path,message',
  [
    ('/tensorflow.serving.PredictionService/Predict', _predict_request()),
    (
      '/tensorflow.serving.ModelService/GetModelStatus',
      get_model_status_pb2.GetModelStatusRequest(model_spec={'name': MODEL}),
    ),
  ],
)
def test_a_unary_call_sending_more_than_one_message_is_refused(served, path, message, count):
  """Answered as an error rather than served on its first message (a unary method's call
  carries one)."""
  call = served.channel.stream_unary(path)
  with pytest.raises(grpc.RpcError) as raised:
    call(iter([message.SerializeToString()] * count), timeout=30)
  assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert raised.value.details() == (
    'the call sent a second request message: the method is unary, send one message per call'
  )
  assert call(iter([message.SerializeToString()]), timeout=30)


def test_grpc_connections_beyond_the_cap_are_closed_and_freed_ones_reused(toy_base):
  running = toy_server(toy_base, grpc_max_connections=2)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  channels = []

  def status():
    channel = grpc.insecure_channel(
      running.grpc_target, options=[('grpc.use_local_subchannel_pool', 1)]
    )
    channels.append(channel)
    return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)

  try:
    assert status().model_version_status and status().model_version_status
    with pytest.raises(grpc.RpcError) as raised:
      status()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    channels[0].close()
    time.sleep(0.5)
    assert status().model_version_status
  finally:
    for channel in channels:
      channel.close()
    running.close()


def _budget_server(toy_base, budget_bytes):
  """A server of MODEL whose requests may each take `budget_bytes` (--request_memory_budget_mb)."""
  return start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    execution=memory.ExecutionOptions(memory_budget_bytes=budget_bytes),
  )


def test_a_rest_body_whose_json_would_not_fit_the_budget_is_refused_before_parsing(toy_base):
  running = _budget_server(toy_base, 64 << 20)
  try:
    rows = b'{"instances": [' + b'[0],' * (2 << 20) + b'[0]]}'  # 8 MiB, 240 MB parsed
    before = rss_bytes()
    status, answer = rest_util.rest_json(running.rest_url, f'/v1/models/{MODEL}:predict', rows)
    assert status == 429, answer
    assert 'would take about' in answer['error'] and 'send fewer rows' in answer['error']
    assert rss_bytes() - before < 96 << 20
    # An ordinary request is answered.
    status, answer = rest_util.rest_json(
      running.rest_url,
      f'/v1/models/{MODEL}:predict',
      {'signature_name': 'predict_text', 'instances': ['a fine film']},
    )
    assert status == 200, answer
  finally:
    running.close()


def test_a_classify_of_a_million_tiny_examples_leaves_the_server_answering(served):
  # 2 MB on the wire: one million empty tf.Examples. Made Python objects all at once, they
  # held the interpreter, and every other client (REST /healthz here) waited 5 s; 3M, 77 s.
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  request.input.example_list.ParseFromString(b'\x0a\x00' * 1_000_000)
  answer = {}

  def classify():
    try:
      served.predictions.Classify(request, timeout=60)
    except grpc.RpcError as e:
      answer['code'] = e.code()

  worker = threading.Thread(target=classify)
  worker.start()
  slowest = 0.0
  while worker.is_alive():
    started = time.monotonic()
    status, _ = rest_util.rest_json(served.rest_url, '/healthz')
    assert status == 200
    slowest = max(slowest, time.monotonic() - started)
    time.sleep(0.05)
  worker.join()
  assert answer['code'] == grpc.StatusCode.INVALID_ARGUMENT  # no `text` feature
  assert slowest < 1.0, slowest
  # Three million are more than the default budget carries: refused before they are read.
  request.input.example_list.ParseFromString(b'\x0a\x00' * 3_000_000)
  with pytest.raises(grpc.RpcError) as raised:
    served.predictions.Classify(request, timeout=60)
  assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert 'the Classify input has 3000000 examples, more than the 1048576' in raised.value.details()


def test_string_inputs_that_would_not_fit_the_budget_once_decoded_are_refused_first(toy_base):
  # 16M empty strings (a 32 MB request, within --max_request_elements) once took +773 MiB on a
  # server whose budget was 256 MiB before anything checked memory.
  running = _budget_server(toy_base, 64 << 20)
  request = _predict_request()
  request.inputs['text'].string_val.extend([b''] * (2 << 20))
  request.inputs['text'].tensor_shape.dim[0].size = (2 << 20) + 1
  try:
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details() == (
      "the request's 2097153 strings would take about 116 MiB once decoded, more than the 64"
      ' MiB a request may hold (--request_memory_budget_mb); send fewer rows per request'
    )
    assert running.predictions.Predict(_predict_request(), timeout=60).outputs
  finally:
    running.close()


@pytest.fixture
def tight_rest(toy_base):
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'rest_options': RestOptions(max_connections=3, header_timeout=1.0, body_timeout=1.0)},
  )
  yield running
  running.close()


def test_rest_connections_beyond_the_cap_get_503(tight_rest):
  held = [RawHttp(tight_rest.server.rest_port) for _ in range(3)]
  try:
    time.sleep(0.2)
    extra = RawHttp(tight_rest.server.rest_port)
    extra.send(b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
    assert extra.response()[0] == 503
    extra.close()
    _healthy_next(held[0])  # the held ones are served
  finally:
    for connection in held:
      connection.close()
  time.sleep(0.3)
  status, _ = rest_util.rest_json(tight_rest.rest_url, '/healthz')
  assert status == 200


@pytest.mark.parametrize(
  'trickle',
  [
    [b'GET /healthz HTTP/1.1\r\n', b'Host: x\r\n'] + [b'X-Slow: 1\r\n'] * 10,
    [post(PREDICT_PATH, GOOD_BODY)[:-10]] + [b' '] * 10,
    [],
  ],
  ids=['slow headers', 'slow body', 'idle'],
)
def test_slow_clients_are_cut_off(tight_rest, trickle):
  connection = RawHttp(tight_rest.server.rest_port, timeout=10)
  started = time.monotonic()
  try:
    closed = False
    for piece in trickle:
      try:
        connection.send(piece)
      except OSError:
        closed = True
        break
      if select.select([connection.sock], [], [], 0.4)[0]:
        break  # the server answered or closed: the trickle stops, as a client's would
    while not closed:  # reads whatever answer comes, until the server closes
      closed = connection.sock.recv(65536) in (b'',)
    assert time.monotonic() - started < 4.0  # the limit is 1 s; the trickle would take 4.8
  except ConnectionResetError:
    pass
  finally:
    connection.close()


def test_rest_listen_backlog_is_not_5(served):
  # Connections opened at once all get answers (socketserver's default backlog is 5).
  sockets = [
    socket.create_connection(('127.0.0.1', served.server.rest_port), timeout=10) for _ in range(40)
  ]
  try:
    threads = []
    statuses = []

    def ask(sock):
      sock.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
      statuses.append(sock.recv(64).split()[1])

    for sock in sockets:
      threads.append(threading.Thread(target=ask, args=(sock,)))
      threads[-1].start()
    for thread in threads:
      thread.join(30)
    assert statuses.count(b'200') + statuses.count(b'503') == 40
    assert RestServer.request_queue_size >= 128
  finally:
    for sock in sockets:
      sock.close()


@pytest.mark.parametrize(
  'request_bytes,statuses',
  [
    (post(PREDICT_PATH, GOOD_BODY), [200]),
    (post(PREDICT_PATH, b'{"instances": ['), [400]),
    (post(PREDICT_PATH, GOOD_BODY) + post(PREDICT_PATH, GOOD_BODY), [200, 200]),
    (post(PREDICT_PATH, GOOD_BODY)[:-5], [400]),
  ],
  ids=['predict', 'malformed JSON', 'two pipelined', 'body cut short'],
)
def test_a_client_that_half_closes_after_its_request_is_answered(served, request_bytes, statuses):
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(request_bytes)
    connection.sock.shutdown(socket.SHUT_WR)  # as `nc -N` and socat do
    got = [connection.response() for _ in statuses]
    assert [status for status, _, _ in got] == statuses, got
    assert connection.closed()
  finally:
    connection.close()


@pytest.mark.parametrize(
  'path', ['/healthz', f'/v1/models/{MODEL}', f'/v1/models/{MODEL}/metadata']
)
def test_head_is_answered_as_get_without_the_body(served, path):
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
    status, headers, _ = connection.response()
    assert status == 200
    connection.send(f'HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
    while b'\r\n\r\n' not in connection.buffer:
      connection._fill()
    head, connection.buffer = connection.buffer.split(b'\r\n\r\n', 1)
    assert head.startswith(b'HTTP/1.1 200 ')
    assert f'content-length: {headers["content-length"]}'.encode() in head.lower()
    _healthy_next(connection)  # no body came after the HEAD's headers
  finally:
    connection.close()


def test_an_absolute_form_target_is_served_as_its_path(served):
  # RFC 9112 3.2.2: a server must accept a request target of the absolute form.
  connection = RawHttp(served.server.rest_port)
  try:
    connection.send(f'GET http://x:8501/v1/models/{MODEL}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
    status, _, body = connection.response()
    assert status == 200 and json.loads(body)['model_version_status']
    connection.send(post(f'HTTP://x{PREDICT_PATH}', GOOD_BODY))
    assert connection.response()[0] == 200
  finally:
    connection.close()


def test_a_client_that_never_reads_its_answer_is_cut_off(tight_rest):
  """The header and body timeouts cover what a client sends; one that sent a request and never
  read its (large) answer held its connection and the answer's memory with no limit. Now the
  answer has the body timeout (1 s here) to be taken, then the connection is closed."""
  body = json.dumps({'signature_name': 'predict_text', 'instances': ['fine film'] * 100_000})
  sock = socket.socket()
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
  sock.settimeout(30)
  sock.connect(('127.0.0.1', tight_rest.server.rest_port))
  try:
    sock.sendall(post(PREDICT_PATH, body.encode()))
    # The answer is computed, then stalls (the client reads nothing) until the server drops it.
    web = tight_rest.server._rest._web
    deadline = time.monotonic() + 30
    for state in ('accepted', 'dropped'):  # the server may take it after sendall returns
      while bool(web.connections) != (state == 'accepted') and time.monotonic() < deadline:
        time.sleep(0.05)
      assert bool(web.connections) == (state == 'accepted'), f'connection not {state} in 30 s'
    received = b''
    try:
      while chunk := sock.recv(1 << 20):
        received += chunk
    except ConnectionResetError:
      pass
    head, _, answer = received.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 200'), head[:200]
    length = int(re.search(rb'(?i)content-length: *(\d+)', head).group(1))
    assert length > 4 << 20  # more than the socket buffers hold
    assert len(answer) < length  # cut off, not sent whole
  finally:
    sock.close()
  status, _ = rest_util.rest_json(tight_rest.rest_url, '/healthz')
  assert status == 200
