"""serving/rest_api.py on its own: routes and JSON bodies, no server, no socket."""

import gzip
import json
import re
import time
import tracemalloc

import grpc
import pytest

from serving import errors, rest_api


@pytest.mark.parametrize(
  'method, path, expected',
  [
    ('GET', '/healthz', rest_api.Route('health')),
    ('GET', '/monitoring/prometheus/metrics', rest_api.Route('metrics')),
    ('GET', '/v1/models/lm', rest_api.Route('status', 'lm')),
    ('GET', '/v1/models/lm/versions/3', rest_api.Route('status', 'lm', 3)),
    (
      'GET',
      '/v1/models/lm/labels/stable/metadata',
      rest_api.Route('metadata', 'lm', None, 'stable'),
    ),
    ('POST', '/v1/models/lm:predict', rest_api.Route('predict', 'lm')),
    ('POST', '/v1/models/lm/versions/7:classify', rest_api.Route('classify', 'lm', 7)),
    # TF Serving's route patterns are (?i): the literal parts match in any case, names keep theirs.
    ('POST', '/V1/MODELS/LM:PREDICT', rest_api.Route('predict', 'LM')),
    (
      'GET',
      '/v1/Models/lm/Labels/Stable/METADATA',
      rest_api.Route('metadata', 'lm', None, 'Stable'),
    ),
    ('GET', '/V1/models/lm/VERSIONS/3', rest_api.Route('status', 'lm', 3)),
  ],
)
def test_routes_of_tf_serving_paths(method, path, expected):
  route = rest_api.parse_route(method, path)
  assert route == expected
  assert route.has_body == (expected.kind in ('predict', 'classify'))


def test_the_metrics_are_where_the_monitoring_config_puts_them():
  assert rest_api.parse_route('GET', '/metrics', '/metrics') == rest_api.Route('metrics')
  for path, metrics_path in (
    ('/monitoring/prometheus/metrics', '/metrics'),
    ('/monitoring/prometheus/metrics', None),
  ):
    with pytest.raises(errors.ServingError, match='no such path') as raised:
      rest_api.parse_route('GET', path, metrics_path)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
  'method, path, code, words',
  [
    ('POST', '/v1/models/lm', grpc.StatusCode.INVALID_ARGUMENT, 'use GET'),
    ('GET', '/v1/models/lm:predict', grpc.StatusCode.INVALID_ARGUMENT, 'use POST'),
    ('GET', '/v1/models/lm/versions/x1', grpc.StatusCode.INVALID_ARGUMENT, 'not a number'),
    ('GET', '/v1/nothing/here', grpc.StatusCode.INVALID_ARGUMENT, 'Malformed request'),
    ('GET', '/V1/nothing/here', grpc.StatusCode.INVALID_ARGUMENT, 'Malformed request'),
    ('GET', '/favicon.ico', grpc.StatusCode.NOT_FOUND, 'no such path'),
    ('POST', '/v1/models/lm:explain', grpc.StatusCode.UNIMPLEMENTED, 'use predict, classify or'),
  ],
)
def test_bad_routes_name_what_is_wrong(method, path, code, words):
  with pytest.raises(errors.ServingError, match=words) as raised:
    rest_api.parse_route(method, path)
  assert raised.value.code == code


@pytest.mark.parametrize(
  'segment, words',
  [
    ('-1', 'version "-1" is negative: versions are numbered from 0 up'),
    ('+1796557199', 'version "\\+1796557199" has a sign: .* /versions/1796557199'),
    ('99999999999999999999999', 'out of range: a version is at most 9223372036854775807'),
    ('9' * 5000, 'out of range'),  # past Python's limit on the digits int() converts
    ('１', 'is not a number'),  # a fullwidth digit
  ],
)
def test_versions_tf_serving_refuses_say_why(segment, words):
  # TF Serving matches the segment with \d+ and converts it into an int64: a sign or a number past
  # int64 is a malformed request (400). These once all said 'version "-1" is not a number'.
  with pytest.raises(errors.ServingError, match=words) as raised:
    rest_api.parse_route('GET', f'/v1/models/lm/versions/{segment}')
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize('segment, version', [('0', 0), ('007', 7), (str(2**63 - 1), 2**63 - 1)])
def test_every_int64_version_is_a_route(segment, version):
  assert rest_api.parse_route('GET', f'/v1/models/lm/versions/{segment}').version == version


def test_model_names_and_labels_are_percent_decoded_as_tf_serving_does():
  # TF Serving unescapes both with curl (each %XX, '+' kept); the label was once kept as 'stable%20'.
  route = rest_api.parse_route('GET', '/v1/models/my%20lm/labels/stable%20')
  assert (route.name, route.label) == ('my lm', 'stable ')
  route = rest_api.parse_route('POST', '/v1/models/a%2Fb+c/labels/%E2%9C%93:predict')
  assert (route.name, route.label) == ('a/b+c', '\u2713')
  with pytest.raises(errors.ServingError, match='"%ff" is not UTF-8 once percent-decoded'):
    rest_api.parse_route('GET', '/v1/models/lm/labels/%ff')


def test_json_depth_is_measured_outside_strings():
  assert rest_api.parse_json(b'{"a": "[[[[[[[["}', max_depth=1) == {'a': '[[[[[[[['}
  assert rest_api.parse_json(b'[[1]]', max_depth=2) == [[1]]
  with pytest.raises(errors.ServingError, match='3 deep, more than the limit of 2'):
    rest_api.parse_json(b'[[[1]]]', max_depth=2)


def test_json_depth_counts_escapes_and_chunks_right():
  escaped = b'{"a": "\\\\", "b": "\\"[[[", "c": [[1]]}'  # an escaped backslash, an escaped quote
  assert rest_api.parse_json(escaped, max_depth=3) == {'a': '\\', 'b': '"[[[', 'c': [[1]]}
  with pytest.raises(errors.ServingError, match='3 deep, more than the limit of 2'):
    rest_api.parse_json(escaped, max_depth=2)
  # Nesting that rises and falls across the counting chunks: measured whole.
  wide = b'[' + b'[],' * rest_api._DEPTH_CHUNK + b'[[[1]]]]'
  with pytest.raises(errors.ServingError, match='4 deep, more than the limit of 3'):
    rest_api.parse_json(wide, max_depth=3)
  assert len(rest_api.parse_json(wide, max_depth=4)) == rest_api._DEPTH_CHUNK + 1


def test_a_repeated_key_keeps_its_first_value_as_tf_serving_reads_it():
  body = b'{"signature_name": "a", "x": {"k": 1, "j": 0, "k": 2}, "signature_name": "b"}'
  parsed = rest_api.parse_json(body, max_depth=4)
  assert parsed == {'signature_name': 'a', 'x': {'k': 1, 'j': 0}}
  assert list(parsed['x']) == ['k', 'j']


def test_strings_are_found_across_scan_chunks(monkeypatch):
  """The scan that removes strings works in chunks, carrying whether one ends inside a string
  and in how many backslashes: chunks of 3 bytes cut every string and escape somewhere."""
  monkeypatch.setattr(rest_api, '_SCAN_CHUNK', 3)
  values = ['', 'a', '[[[', ']]', '"', '\\', '\\"[', '{"}', 'é[', '\\\\', 'x\\"]]]]y']
  body = json.dumps({'s': values, 'n': [[1], {'k': [2]}]}).encode()
  assert rest_api.parse_json(body, max_depth=4) == {'s': values, 'n': [[1], {'k': [2]}]}
  with pytest.raises(errors.ServingError, match='4 deep, more than the limit of 3'):
    rest_api.parse_json(body, max_depth=3)
  for i in range(len(body)):
    assert rest_api._outside_strings(body[:i]) == _STRING.sub(b'', body[:i]), body[:i]


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)


def _peak_above(fn):
  """fn's result and the resident memory its call peaked at above the start (Linux)."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  with open('/proc/self/status') as f:
    start = int(f.read().split('VmRSS:')[1].split()[0]) << 10
  result = fn()
  with open('/proc/self/status') as f:
    peak = int(f.read().split('VmHWM:')[1].split()[0]) << 10
  return result, peak - start


def test_the_checks_before_parsing_take_bounded_memory_and_refuse_what_parsing_would_not_fit():
  # 16 MiB of two-letter strings: the string search once took 560 MB (an object per string);
  # of one-element arrays: the bracket count 1.4 GB.
  texts = b'[' + b'"ab",' * (16 << 20 >> 2) + b'"ab"]'
  unquoted, peak = _peak_above(lambda: rest_api._outside_strings(texts))
  assert unquoted == b'[' + b',' * (16 << 20 >> 2) + b']'
  assert peak < 64 << 20, peak >> 20
  rows = b'{"instances": [' + b'[0],' * (16 << 20 >> 2) + b'[0]]}'
  with pytest.raises(errors.ServingError) as raised:
    _, peak = _peak_above(lambda: rest_api.parse_json(rows, 64, memory_budget=256 << 20))
  assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert raised.value.message.startswith(
    'the JSON body (16 MiB: 4194306 arrays, 1 objects, about 4194305 values) would take about'
  )
  assert raised.value.message.endswith(
    'more than the 256 MiB a request may hold (--request_memory_budget_mb); send fewer rows'
    ' per request'
  )
  # Parsed, such a body takes about what the estimate charges: its Python objects alone (as
  # tracemalloc counts them, without the allocator's rounding and arenas, which the resident
  # memory adds: 105-110 bytes a row measured) are 96 bytes a row, its text 4 more. (Resident
  # memory is no lower bound here: pages an earlier test freed are reused without growing it.)
  quarter = b'{"instances": [' + b'[0],' * (4 << 20 >> 2) + b'[0]]}'
  tracemalloc.start()
  try:
    rest_api.parse_json(quarter, 64)
    _, traced = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert traced > (1 << 20) * 96, traced >> 20
  # A body of ordinary size is parsed under the default budget.
  small = json.dumps({'instances': [{'text': 'a fine film'}] * 10_000}).encode()
  assert len(rest_api.parse_json(small, 64, memory_budget=1 << 30)['instances']) == 10_000


def test_the_parse_estimate_counts_wide_characters_and_object_members():
  # One character past U+FFFF makes the decoded body and its strings 4 bytes a character.
  ascii_body = ('["' + 'a' * (1 << 20) + '"]').encode()
  wide_body = ('["' + 'a' * (1 << 20) + '\U0001f600"]').encode()
  assert rest_api.parse_json(ascii_body, 4, memory_budget=4 << 20)
  with pytest.raises(errors.ServingError, match='would take about 8 MiB to parse'):
    rest_api.parse_json(wide_body, 4, memory_budget=4 << 20)
  # Objects of distinct keys: each key is a string of its own.
  keyed = ('[' + ','.join('{"k%07d":0}' % i for i in range(100_000)) + ']').encode()
  with pytest.raises(errors.ServingError, match='100000 objects') as raised:
    rest_api.parse_json(keyed, 4, memory_budget=16 << 20)
  assert 'would take about 36 MiB to parse' in raised.value.message  # measured: 31 MB


def test_a_body_of_escaped_quotes_costs_what_any_body_of_its_size_does():
  # An unterminated string of 24,000 escaped quotes (48 kB). The depth check once restarted its
  # string search at each of them, holding the GIL: 13 s of the server's event loop, and four
  # times that for each doubling of the body. Now one pass, like a plain string of that size.
  def seconds(raw):
    start = time.perf_counter()
    with pytest.raises(errors.ServingError, match='Unterminated string') as raised:
      rest_api.parse_json(raw, max_depth=8)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return time.perf_counter() - start

  plain = min(seconds(b'"' + b'ab' * 24_000) for _ in range(3))
  hostile = min(seconds(b'"' + b'\\"' * 24_000) for _ in range(3))
  assert hostile < 20 * plain + 0.05, (hostile, plain)


@pytest.mark.parametrize(
  'raw, words',
  [
    (b'\xff', 'not valid UTF-8'),
    (b'{"a": ', 'JSON Parse error'),
    (b'{"instances": [' + b'1' * 5000 + b']}', 'a number has more than 4300 digits'),
    (b'[1, "\\', 'Unterminated string'),
    (b'{"x": [1e400]}', 'the number 1e400 is too big to be stored in a double'),
    (b'[0.5, -1E+0400]', 'the number -1E\\+0400 is too big'),
    (b'[' + b'9' * 400 + b'.5]', 'the number 9{40}... is too big'),
  ],
)
def test_bad_json_is_invalid_argument(raw, words):
  with pytest.raises(errors.ServingError, match=words) as raised:
    rest_api.parse_json(raw, max_depth=8)
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_infinity_nan_and_large_finite_numbers_still_parse():
  body = rest_api.parse_json(b'[Infinity, -Infinity, 1e308, 1e-400, "1e999"]', max_depth=8)
  assert body == [float('inf'), float('-inf'), 1e308, 0.0, '1e999']


def test_signature_name_must_be_a_string():
  assert rest_api.signature_name({}) == ''
  with pytest.raises(errors.ServingError, match='"signature_name" must be a string'):
    rest_api.signature_name({'signature_name': 3})


def test_a_gzip_body_of_several_members_is_their_concatenation():
  body = gzip.compress(b'{"a": ') + gzip.compress(b'[1, 2]}')  # as `gzip -c a b` writes
  assert rest_api.decompress(body, 'gzip', 1 << 20) == b'{"a": [1, 2]}'
  with pytest.raises(errors.ServingError, match='decompresses to more than the limit of 10'):
    rest_api.decompress(gzip.compress(b'x' * 8) * 2, 'gzip', 10)  # the limit covers all members
  with pytest.raises(errors.ServingError, match='the gzip body is truncated'):
    rest_api.decompress(gzip.compress(b'{}') + gzip.compress(b'[]')[:-3], 'gzip', 1 << 20)
