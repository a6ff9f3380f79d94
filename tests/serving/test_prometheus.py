"""The Prometheus page: this server's own series and TF Serving's, under TF Serving's names."""

import re

import pytest

from serving.metrics import TFS_LATENCY_BUCKETS, Metrics

SERVED = {('toy', ''), ('toy', 'serving_default')}


def _metrics():
  metrics = Metrics()
  metrics.track_served(lambda model, signature: (model, signature) in SERVED)
  return metrics


def _samples(text, name):
  """{labels text: value} of the lines of metric `name` (a histogram's `name_bucket` etc.)."""
  found = {}
  for line in text.splitlines():
    if line.startswith(name + '{'):
      labels, value = line[len(name) + 1 :].rsplit('} ', 1)
      found[labels] = float(value)
  return found


def test_tf_serving_counts_every_call_by_status_and_times_the_answered_ones():
  metrics = _metrics()
  metrics.observe_request('toy', 'serving_default', 'predict', 'grpc', 'OK', 0.002)
  metrics.observe_request('toy', 'serving_default', 'predict', 'grpc', 'OK', 0.5)
  metrics.observe_request('toy', 'serving_default', 'predict', 'grpc', 'INVALID_ARGUMENT', 0.001)
  metrics.observe_request('toy', 'serving_default', 'classify', 'rest', 'OK', 0.004)
  metrics.observe_request('toy', '', 'status', 'rest', 'OK', 0.0001)
  # TF Serving's gRPC service counts only Predict, Classify and Regress.
  metrics.observe_request('toy', '', 'metadata', 'grpc', 'OK', 0.0001)
  metrics.observe_request('toy', '', 'multi_inference', 'grpc', 'OK', 0.0001)
  text = metrics.render()

  assert '# TYPE :tensorflow:serving:request_count counter' in text
  assert _samples(text, ':tensorflow:serving:request_count') == {
    'model_name="toy",status="INVALID_ARGUMENT"': 1,
    'model_name="toy",status="OK"': 4,
  }
  assert '# TYPE :tensorflow:serving:request_latency histogram' in text
  counts = _samples(text, ':tensorflow:serving:request_latency_count')
  assert counts == {
    'model_name="toy",API="Predict",entrypoint="GRPC"': 2,
    'model_name="toy",API="classify",entrypoint="REST"': 1,
    'model_name="toy",API="",entrypoint="REST"': 1,
  }
  # Microseconds: 2,000 + 500,000.
  sums = _samples(text, ':tensorflow:serving:request_latency_sum')
  assert sums['model_name="toy",API="Predict",entrypoint="GRPC"'] == pytest.approx(502000)
  buckets = _samples(text, ':tensorflow:serving:request_latency_bucket')
  grpc = {
    label.rsplit('le="', 1)[1].rstrip('"'): value
    for label, value in buckets.items()
    if 'API="Predict"' in label
  }
  assert len(grpc) == 34 and list(grpc)[-1] == '+Inf' and grpc['+Inf'] == 2
  limits = [float(le) for le in list(grpc)[:-1]]
  assert limits == pytest.approx(TFS_LATENCY_BUCKETS, rel=1e-5)
  assert limits[:3] == [10, 18, 32.4] and limits[-1] == pytest.approx(10 * 1.8**32, rel=1e-5)
  # Cumulative: nothing under 2 ms, one under 0.5 s, both by the last bound.
  assert grpc['1983.59'] == 0 and grpc['3570.47'] == 1
  assert grpc['393464'] == 1 and grpc['708235'] == 2 and grpc['1.47476e+09'] == 2
  # The server's own series are still there.
  assert (
    'serving_requests_total{model="toy",signature="serving_default",method="predict",'
    'protocol="grpc",code="OK"} 2'
  ) in text


def test_tf_serving_series_never_name_a_model_the_server_does_not_serve():
  metrics = _metrics()
  for i in range(50):
    metrics.observe_request(f'made-up-{i}', '', 'predict', 'grpc', 'NOT_FOUND', 0.001)
  text = metrics.render()
  assert 'made-up' not in text
  assert _samples(text, ':tensorflow:serving:request_count') == {
    'model_name="unknown",status="NOT_FOUND"': 50
  }
  assert not _samples(text, ':tensorflow:serving:request_latency_count')


def test_every_line_is_prometheus_text_format():
  metrics = _metrics()
  metrics.observe_request('toy', 'serving_default', 'predict', 'grpc', 'OK', 0.01)
  metrics.observe_request('toy', '', 'regress', 'rest', 'OK', 0.01)
  metrics.observe_batch('toy', 'serving_default', 3)
  sample = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="[^"\\]*",?)*\})? \S+')
  comment = re.compile(r'# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+')
  lines = metrics.render().splitlines()
  assert lines and all(sample.fullmatch(line) or comment.fullmatch(line) for line in lines)
  types = [line.split()[2] for line in lines if line.startswith('# TYPE')]
  assert len(types) == len(set(types))
