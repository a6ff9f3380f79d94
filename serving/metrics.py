"""Prometheus metrics in the text exposition format (prometheus_client is not a dependency)."""

import bisect
import threading
from collections.abc import Callable

# The label a request gets for a model or signature the server does not serve, so made-up
# names cannot grow the number of series.
UNKNOWN = 'unknown'

LATENCY_BUCKETS = (
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1.0,
  2.5,
  5.0,
  10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# TF Serving's own series, under the names its Prometheus exporter gives them (a metric
# "/tensorflow/serving/request_count" is exported as ":tensorflow:serving:request_count"), so
# dashboards and alerts written for tensorflow_model_server read this server too. Its request
# latency is in microseconds, in 33 buckets from 10 growing by 1.8 (about 20 minutes).
TFS_REQUEST_COUNT = ':tensorflow:serving:request_count'
TFS_REQUEST_LATENCY = ':tensorflow:serving:request_latency'
TFS_LATENCY_BUCKETS = tuple(10 * 1.8**i for i in range(33))
# The `API` label TF Serving gives the calls it times: gRPC's by method, REST's by the verb in
# the path ('' for a model's status and metadata, which REST counts and gRPC does not).
_TFS_GRPC_API = {'predict': 'Predict', 'classify': 'Classify', 'regress': 'Regress'}
_TFS_REST_API = {'predict': 'predict', 'classify': 'classify', 'regress': 'regress'}
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


def _labels(names, values):
  def escape(v):
    return str(v).replace('\\', r'\\').replace('"', r'\"').replace('\n', r'\n')

  return ','.join(f'{n}="{escape(v)}"' for n, v in zip(names, values))


class _Histogram:
  def __init__(self, buckets, bound_text=repr):
    self.buckets = buckets
    self.bound_text = bound_text
    self.counts = [0] * (len(buckets) + 1)
    self.total = 0.0

  def observe(self, value):
    self.counts[bisect.bisect_left(self.buckets, value)] += 1
    self.total += value

  def lines(self, name, labels):
    out, cumulative = [], 0
    prefix = f'{labels},' if labels else ''
    for bound, count in zip(self.buckets + (float('inf'),), self.counts):
      cumulative += count
      le = '+Inf' if bound == float('inf') else self.bound_text(bound)
      out.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
    out.append(f'{name}_sum{{{labels}}} {self.total!r}')
    out.append(f'{name}_count{{{labels}}} {cumulative}')
    return out


class Metrics:
  """Request counts, error counts, latency and batch size histograms, and loaded versions;
  and TF Serving's request count and latency under its names.

  Requests are labelled with their model and signature only when the server serves them
  (`track_served`); any other name is counted under `unknown` (TF Serving labels any name a
  client sends: here made-up names cannot grow the number of series).
  """

  _REQUEST_LABELS = ('model', 'signature', 'method', 'protocol', 'code')
  _LATENCY_LABELS = ('model', 'signature', 'method', 'protocol')

  def __init__(self):
    self._lock = threading.Lock()
    self._requests = {}
    self._errors = {}
    self._latency = {}
    self._batch_sizes = {}
    self._tfs_requests = {}
    self._tfs_latency = {}
    self._versions = lambda: []
    self._served = lambda model, signature: False

  def observe_request(
    self, model: str, signature: str, method: str, protocol: str, code: str, seconds: float
  ) -> None:
    """Counts one finished request.

    Args:
      model: the model name asked for ('' if none).
      signature: the signature key used ('' for status and metadata calls).
      method: 'predict', 'classify', 'regress', 'multi_inference', 'metadata' or 'status'.
      protocol: 'grpc' or 'rest'.
      code: the grpc.StatusCode name it ended with ('OK' on success).
      seconds: wall time spent serving it.
    """
    if model and not self._served(model, ''):
      model, signature = UNKNOWN, (UNKNOWN if signature else '')
    elif signature and not self._served(model, signature):
      signature = UNKNOWN
    key = (model, signature, method, protocol)
    with self._lock:
      self._requests[key + (code,)] = self._requests.get(key + (code,), 0) + 1
      if code != 'OK':
        self._errors[key + (code,)] = self._errors.get(key + (code,), 0) + 1
      if key not in self._latency:
        self._latency[key] = _Histogram(LATENCY_BUCKETS)
      self._latency[key].observe(seconds)
      api = _TFS_GRPC_API.get(method) if protocol == 'grpc' else _TFS_REST_API.get(method, '')
      if api is not None:
        # As TF Serving does: every call counted by its status, only answered ones timed.
        self._tfs_requests[model, code] = self._tfs_requests.get((model, code), 0) + 1
        if code == 'OK':
          tfs_key = (model, api, protocol.upper())
          if tfs_key not in self._tfs_latency:
            self._tfs_latency[tfs_key] = _Histogram(TFS_LATENCY_BUCKETS, '{:.6g}'.format)
          self._tfs_latency[tfs_key].observe(seconds * 1e6)

  def observe_batch(self, model: str, signature: str, rows: int) -> None:
    """Counts one executed batch of `rows` rows (only served signatures are batched)."""
    with self._lock:
      key = (model, signature)
      if key not in self._batch_sizes:
        self._batch_sizes[key] = _Histogram(BATCH_BUCKETS)
      self._batch_sizes[key].observe(rows)

  def track_versions(self, versions: Callable[[], list[tuple[str, int, str]]]) -> None:
    """Sets the callable that lists (model, version, state) for the model-version gauge."""
    self._versions = versions

  def track_served(self, served: Callable[[str, str], bool]) -> None:
    """Sets the callable that says whether a model (signature '') or a signature of it is
    served, and so may be a label value."""
    self._served = served

  def render(self) -> str:
    """The metrics in Prometheus text exposition format 0.0.4."""
    with self._lock:
      out = [
        '# HELP serving_requests_total Requests served, by final status code.',
        '# TYPE serving_requests_total counter',
      ]
      out += [
        f'serving_requests_total{{{_labels(self._REQUEST_LABELS, k)}}} {v}'
        for k, v in sorted(self._requests.items())
      ]
      out += [
        '# HELP serving_request_errors_total Requests that ended with an error.',
        '# TYPE serving_request_errors_total counter',
      ]
      out += [
        f'serving_request_errors_total{{{_labels(self._REQUEST_LABELS, k)}}} {v}'
        for k, v in sorted(self._errors.items())
      ]
      out += [
        '# HELP serving_request_latency_seconds Time to serve a request.',
        '# TYPE serving_request_latency_seconds histogram',
      ]
      for key, histogram in sorted(self._latency.items()):
        out += histogram.lines(
          'serving_request_latency_seconds', _labels(self._LATENCY_LABELS, key)
        )
      out += [
        '# HELP serving_batch_size Rows per batched signature call.',
        '# TYPE serving_batch_size histogram',
      ]
      for key, histogram in sorted(self._batch_sizes.items()):
        out += histogram.lines('serving_batch_size', _labels(('model', 'signature'), key))
      out.append(f'# TYPE {TFS_REQUEST_COUNT} counter')
      out += [
        f'{TFS_REQUEST_COUNT}{{{_labels(("model_name", "status"), k)}}} {v}'
        for k, v in sorted(self._tfs_requests.items())
      ]
      out.append(f'# TYPE {TFS_REQUEST_LATENCY} histogram')
      for key, histogram in sorted(self._tfs_latency.items()):
        out += histogram.lines(
          TFS_REQUEST_LATENCY, _labels(('model_name', 'API', 'entrypoint'), key)
        )
    out += [
      '# HELP serving_model_version_available 1 for each version being served.',
      '# TYPE serving_model_version_available gauge',
    ]
    out += [
      f'serving_model_version_available{{{_labels(("model", "version"), (m, v))}}}'
      f' {1 if state == "AVAILABLE" else 0}'
      for m, v, state in self._versions()
    ]
    return '\n'.join(out) + '\n'
