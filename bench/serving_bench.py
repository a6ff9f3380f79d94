"""Serving latency and throughput: gRPC and REST against the in-process signature call.

    ./dev python bench/serving_bench.py [--quick] [--requests 500] [--seconds 10]

1. Exports a transformer-ish classifier in the Pusher layout (tests/serving/toy_model.py at
   bench size: hashed tokens into a 2,000 x 64 embedding, 12 single-head self-attention +
   feed-forward blocks of width 64, 32 tokens, mean pool, softmax over 3 classes; raw text in,
   so tokenization runs inside the graph as it does for the trainer's models). Deep and narrow
   on purpose: a call's cost is mostly per-op dispatch, fixed whatever the batch size, which is
   the case batching is for (a wide model's cost grows with the rows and batching gains less).
2. Latency at batch 1, sequential requests, p50 / p99: the in-process `predict_text` call
   (loaded SavedModel, this process), then the same call through `python -m serving` running
   as a separate process, over gRPC (official TF Serving stubs) and over REST (JSON, keep-alive).
3. Throughput: 16 client threads sending batch-1 gRPC requests as fast as answers come back,
   for `--seconds`, against the server with batching off, then on (`--enable_batching` with a
   BatchingParameters file).

Everything, clients included, shares this machine's cores, so client overhead is part of every
server-side figure; the in-process figure has none. Prints the figures and the two ratios the
serving issue sets targets for (gRPC p50 / in-process p50 <= 1.5; batching on / off >= 3), and
writes them to bench/results/serving.json. Latency paths are interleaved request by request, and
the two throughput settings alternate in short windows, so that load from other processes on
the machine falls on both sides of each ratio alike.

TensorFlow's default intra-op thread pool (one thread per core) makes a small call pay for
waking its threads, a fixed cost batching amortizes; `--intra_op_threads 1` removes most of it,
which speeds up batch-1 calls in and out of the server and shrinks both ratios' headroom. Run
both to see which regime a model is in.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Before TensorFlow loads: keep its C++ start-up lines out of the figures.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from tests.serving import toy_model  # noqa: E402
from tfxlm import contract  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = 'bench'
SIZES = dict(vocab_size=2000, hidden=64, num_layers=12, seq_len=32)
TEXT = (
  'the plot was thin and the pacing slow, but the lead actor carried every scene with a'
  ' warmth that made the ending land'
)
CLIENTS = 16


def _percentiles(seconds):
  ms = np.array(seconds) * 1e3
  return {
    'p50_ms': float(np.percentile(ms, 50)),
    'p99_ms': float(np.percentile(ms, 99)),
    'n': len(ms),
  }


def _time(call, n, warmup=10):
  for _ in range(warmup):
    call()
  out = []
  for _ in range(n):
    start = time.perf_counter()
    call()
    out.append(time.perf_counter() - start)
  return _percentiles(out)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class ServerProcess:
  """`python -m serving` on free loopback ports, until stop()."""

  def __init__(self, base, extra=()):
    self.grpc_port, self.rest_port = _free_port(), _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO)
    self.proc = subprocess.Popen(
      [
        sys.executable,
        '-m',
        'serving',
        f'--port={self.grpc_port}',
        f'--rest_api_port={self.rest_port}',
        f'--model_name={MODEL}',
        f'--model_base_path={os.path.join(base, MODEL)}',
        '--file_system_poll_wait_seconds=0',
        '--log_level=WARNING',
        *extra,
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
      cwd=REPO,
      env=env,
    )
    line = self.proc.stdout.readline()
    if not line.startswith('SERVING'):
      self.proc.kill()
      raise RuntimeError(f'server did not start: {line!r}')

  def stop(self):
    self.proc.terminate()
    self.proc.wait(timeout=60)


def _grpc_caller(port):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(
    grpc.insecure_channel(f'127.0.0.1:{port}')
  )
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs[contract.TEXT_INPUT].CopyFrom(tf.make_tensor_proto([TEXT]))
  return lambda: stub.Predict(request, timeout=60)


def _rest_caller(port):
  connection = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
  body = json.dumps({'signature_name': 'predict_text', 'instances': [TEXT]})

  def call():
    connection.request(
      'POST', f'/v1/models/{MODEL}:predict', body, {'Content-Type': 'application/json'}
    )
    response = connection.getresponse()
    response.read()
    if response.status != 200:
      raise RuntimeError(f'HTTP {response.status}')

  return call


def _throughput(callers, seconds):
  """Requests that len(callers) client threads, each waiting for its answer, get through."""
  counts, errors = [0] * len(callers), []
  start_line = threading.Barrier(len(callers) + 1)
  stop_at = [float('inf')]

  def client(i):
    start_line.wait()
    while time.perf_counter() < stop_at[0]:
      try:
        callers[i]()
        counts[i] += 1
      except grpc.RpcError as e:
        errors.append(e.code().name)

  threads = [threading.Thread(target=client, args=(i,)) for i in range(len(callers))]
  for thread in threads:
    thread.start()
  start_line.wait()
  begin = time.perf_counter()
  stop_at[0] = begin + seconds
  for thread in threads:
    thread.join()
  return sum(counts), len(errors), time.perf_counter() - begin


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a smoke run: few requests')
  parser.add_argument('--requests', type=int, default=600, help='latency samples per path')
  parser.add_argument(
    '--seconds',
    type=float,
    default=24.0,
    help='throughput run time per setting, in alternating windows',
  )
  parser.add_argument('--window', type=float, default=3.0, help='seconds per window')
  parser.add_argument('--max_batch_size', type=int, default=16)
  parser.add_argument('--batch_timeout_micros', type=int, default=3000)
  parser.add_argument('--num_batch_threads', type=int, default=2)
  parser.add_argument(
    '--intra_op_threads',
    type=int,
    default=0,
    help='TensorFlow intra-op threads, in process and in the servers (0: TensorFlow chooses)',
  )
  for key, value in SIZES.items():
    parser.add_argument(f'--{key}', type=int, default=value)
  args = parser.parse_args()
  threads = []
  if args.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    threads = [f'--tensorflow_intra_op_parallelism={args.intra_op_threads}']
  if args.quick:
    args.requests, args.seconds, args.window = 60, 4.0, 1.0
  sizes = {key: getattr(args, key) for key in SIZES}

  base = tempfile.mkdtemp(prefix='serving_bench_')
  servers = []
  try:
    path = toy_model.export(base, MODEL, 1, seed=1, **sizes)
    signature = tf.saved_model.load(path).signatures['predict_text']
    parameters = os.path.join(base, 'batching.config')
    with open(parameters, 'w') as f:
      f.write(
        f'max_batch_size {{ value: {args.max_batch_size} }}\n'
        f'batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n'
        f'num_batch_threads {{ value: {args.num_batch_threads} }}\n'
      )
    servers.append(ServerProcess(base, threads))
    servers.append(
      ServerProcess(
        base, threads + ['--enable_batching', f'--batching_parameters_file={parameters}']
      )
    )
    off, on = servers
    results = {
      'model': sizes,
      'cpus': os.cpu_count(),
      'clients': CLIENTS,
      'intra_op_threads': args.intra_op_threads or 'default',
      'batching': {
        k: getattr(args, k) for k in ('max_batch_size', 'batch_timeout_micros', 'num_batch_threads')
      },
    }

    # Latency: the three paths interleaved, so load from other processes hits them alike.
    text = tf.constant([TEXT])
    paths = {
      'in_process': lambda: signature(text=text),
      'grpc': _grpc_caller(off.grpc_port),
      'rest': _rest_caller(off.rest_port),
    }
    samples = {key: [] for key in paths}
    for i in range(args.requests + 30):
      for key in list(paths) if i % 2 else list(paths)[::-1]:
        start = time.perf_counter()
        paths[key]()
        if i >= 30:
          samples[key].append(time.perf_counter() - start)
    for key, values in samples.items():
      results[key] = _percentiles(values)
    batch16 = tf.constant([TEXT] * CLIENTS)
    results['in_process_batch16'] = _time(lambda: signature(text=batch16), args.requests // 4)

    # Throughput: batching off and on in alternating windows, for the same reason.
    callers = {
      name: [_grpc_caller(server.grpc_port) for _ in range(CLIENTS)]
      for name, server in (('off', off), ('on', on))
    }
    for batch in callers.values():
      for call in batch:
        call()
    totals = {name: [0, 0, 0.0] for name in callers}
    for _ in range(max(1, round(args.seconds / args.window))):
      for name, batch in callers.items():
        done, errors, elapsed = _throughput(batch, args.window)
        totals[name][0] += done
        totals[name][1] += errors
        totals[name][2] += elapsed
    for name, (done, errors, elapsed) in totals.items():
      results[f'throughput_batching_{name}'] = {
        'requests_per_s': done / elapsed,
        'requests': done,
        'errors': errors,
        'seconds': elapsed,
      }
  finally:
    for server in servers:
      server.stop()
    shutil.rmtree(base, ignore_errors=True)

  results['ratio_grpc_p50_vs_in_process'] = (
    results['grpc']['p50_ms'] / results['in_process']['p50_ms']
  )
  results['ratio_rest_p50_vs_in_process'] = (
    results['rest']['p50_ms'] / results['in_process']['p50_ms']
  )
  results['ratio_throughput_batching_on_vs_off'] = (
    results['throughput_batching_on']['requests_per_s']
    / results['throughput_batching_off']['requests_per_s']
  )

  print(
    f'model: {results["model"]}, TensorFlow intra-op threads:'
    f' {results["intra_op_threads"]}, {os.cpu_count()} CPUs shared by servers and clients'
  )
  print(f'{"latency, batch 1":<32}{"p50 ms":>10}{"p99 ms":>10}')
  for key, label in [
    ('in_process', 'in-process signature call'),
    ('grpc', 'gRPC (server)'),
    ('rest', 'REST (server)'),
    ('in_process_batch16', 'in-process, batch of 16'),
  ]:
    print(f'{label:<32}{results[key]["p50_ms"]:>10.2f}{results[key]["p99_ms"]:>10.2f}')
  for key in ('throughput_batching_off', 'throughput_batching_on'):
    r = results[key]
    print(
      f'{key.replace("_", " ")} ({CLIENTS} clients): {r["requests_per_s"]:.0f} req/s'
      f' ({r["requests"]} requests, {r["errors"]} errors)'
    )
  print(
    f'ratio gRPC p50 / in-process p50:   {results["ratio_grpc_p50_vs_in_process"]:.2f}'
    ' (target <= 1.5)'
  )
  print(f'ratio REST p50 / in-process p50:   {results["ratio_rest_p50_vs_in_process"]:.2f}')
  print(
    f'ratio throughput batching on/off:  {results["ratio_throughput_batching_on_vs_off"]:.2f}'
    ' (target >= 3)'
  )
  out_dir = os.path.join(REPO, 'bench', 'results')
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'serving.json'), 'w') as f:
    json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
