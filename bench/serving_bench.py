"""Serving under many clients, slow clients and huge requests, next to the previous server.

    ./dev python bench/serving_bench.py [--quick] [--model_path DIR] [--only burst,slow,...]

The model: a transformer-ish classifier exported in the Pusher layout (tests/serving/toy_model.py
at bench size: hashed tokens into a 2,000 x 64 embedding, 12 single-head self-attention +
feed-forward blocks of width 64, 32 tokens, raw text in), or any pushed model given with
`--model_path` (a folder of numbered versions, e.g. pipeline_outputs/demo/serving/sentiment, or one
version folder): its `predict_text` signature when it has one (raw strings), else
`serving_default` (serialized tf.Examples with a `text` feature). `--demo_shaped` builds one of
the demo's next model's shape (all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, 1,536
intermediate; `--demo_seq_len` 128 tokens) with the pipeline's own trainer code.

Two servers run side by side as separate processes with default flags: this tree's
`python -m serving` ("new") and the server of commit 17fd654 ("old", the hand-written
thread-per-connection REST server and the thread-pool gRPC server), extracted with
`git archive` (`--baseline_ref`; `--no_baseline` to skip it). The scenarios (issue 24):

1. latency: batch-1 requests one at a time, p50 / p99, interleaved request by request: the
   in-process signature call (this process), gRPC and REST to each server. Target: new gRPC
   p50 <= 1.1x the in-process p50.
2. burst: 300 concurrent batch-1 clients (one connection each, asyncio clients) on REST, then
   on gRPC, to each server: share answered OK, p50 / p99. Target: >= 99% OK (new).
3. slow: 400 connections that send a request head and part of its body and then stall, then
   five normal REST predicts, one after the other: their status and median time. Target: 200
   in < 1 s (new).
4. huge: one gRPC Predict of 200,000 rows (and, for the memory bound at two sizes, 20,000),
   deadline 120 s, to the new server: outcome, time, the server's peak RSS above idle (Linux
   VmHWM after clear_refs), then /healthz. Target: answered or refused within the deadline,
   peak within --request_memory_budget_mb (1 GiB), healthy after. Not run against the old
   server (the issue measured it: past its deadline, RSS 1.2 -> 21.6 GB).
5. throughput (only with --throughput): 16 client threads, batching off and on, new server.

The model, its requests, the server processes and the batch-1 callers are
bench/serving_setup.py's; the scenarios and the verdicts are here. Everything, clients included,
shares this machine's cores. Prints the figures and PASS/FAIL per
target and writes bench/results/serving.json.
"""

import argparse
import asyncio
import http.client
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time

# Before TensorFlow loads: keep its C++ start-up lines out of the figures.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401 - the project's models use its ops
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from bench import serving_setup as setup  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENTS = 16
BASELINE_REF = '17fd654'
BURST = 300
SLOW = 400
NORMAL_TRIES = 5
HUGE_ROWS = (20_000, 200_000)
HUGE_DEADLINE = 120.0
MEMORY_BUDGET = 1 << 30


async def _burst(server, payload, clients):
  """`clients` concurrent batch-1 requests, one connection each: REST, then gRPC."""
  out = {}
  body = payload.json_body()
  url = f'http://127.0.0.1:{server.rest_port}/v1/models/{setup.MODEL}:predict'
  async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

    async def rest_call():
      started = time.perf_counter()
      try:
        async with session.post(url, data=body, timeout=aiohttp.ClientTimeout(60)) as response:
          await response.read()
          code = str(response.status)
      except (aiohttp.ClientError, TimeoutError) as e:
        code = type(e).__name__
      return code, time.perf_counter() - started

    out['rest'] = await asyncio.gather(*(rest_call() for _ in range(clients)))
  channels = [grpc.aio.insecure_channel(f'127.0.0.1:{server.grpc_port}') for _ in range(clients)]
  request = payload.request(1)

  async def grpc_call(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    started = time.perf_counter()
    try:
      await stub.Predict(request, timeout=60)
      code = 'OK'
    except grpc.aio.AioRpcError as e:
      code = e.code().name
    return code, time.perf_counter() - started

  try:
    await asyncio.gather(*(c.channel_ready() for c in channels))
    out['grpc'] = await asyncio.gather(*(grpc_call(c) for c in channels))
  finally:
    await asyncio.gather(*(c.close() for c in channels))
  summary = {}
  for protocol, results in out.items():
    codes = {}
    for code, _ in results:
      codes[code] = codes.get(code, 0) + 1
    ok = codes.get('200', 0) + codes.get('OK', 0)
    summary[protocol] = {
      'ok_share': ok / clients,
      'codes': codes,
      **setup.percentiles([seconds for _, seconds in results]),
    }
  return summary


def _slow_clients(server, payload, n):
  """n connections stall inside a request body; then one normal REST predict."""
  body = payload.json_body()
  head = (
    f'POST /v1/models/{setup.MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n'
    '{"instances": ['
  ).encode()
  held = []
  try:
    for _ in range(n):
      try:
        sock = socket.create_connection(('127.0.0.1', server.rest_port), timeout=10)
        sock.sendall(head)
        held.append(sock)
      except OSError:
        break
    time.sleep(1.0)
    statuses, times = [], []
    for _ in range(NORMAL_TRIES):  # the median of a few: this machine is shared
      started = time.perf_counter()
      try:
        connection = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=60)
        connection.request('POST', f'/v1/models/{setup.MODEL}:predict', body)
        statuses.append(str(connection.getresponse().status))
        connection.close()
      except OSError as e:
        statuses.append(type(e).__name__)
      times.append(time.perf_counter() - started)
    return {
      'held': len(held),
      'status': statuses[0] if len(set(statuses)) == 1 else ','.join(statuses),
      'seconds': float(np.median(times)),
      'all_seconds': times,
    }
  finally:
    for sock in held:
      sock.close()


def _huge(server, payload, rows, deadline):
  """One gRPC Predict of `rows` rows: outcome, time, the server's peak RSS above idle."""
  request = payload.request(rows, text='a fine film ' * 4)
  channel = grpc.insecure_channel(
    f'127.0.0.1:{server.grpc_port}',
    options=[('grpc.max_send_message_length', -1), ('grpc.max_receive_message_length', -1)],
  )
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  time.sleep(1.0)
  idle = server.status_kib('VmRSS')
  server.reset_peak()
  started = time.perf_counter()
  try:
    stub.Predict(request, timeout=deadline)
    code = 'OK'
  except grpc.RpcError as e:
    code = e.code().name
  seconds = time.perf_counter() - started
  peak = server.status_kib('VmHWM')
  channel.close()
  return {
    'rows': rows,
    'request_mb': request.ByteSize() / 1e6,
    'code': code,
    'seconds': seconds,
    'idle_rss_mb': idle / 1024,
    'peak_rss_mb': peak / 1024,
    'peak_above_idle_mb': (peak - idle) / 1024,
    'healthy_after': server.healthy(),
  }


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


def _verdict(ok):
  return 'PASS' if ok else 'FAIL'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a smoke run: fewer samples')
  parser.add_argument('--requests', type=int, default=400, help='latency samples per path')
  parser.add_argument('--model_path', default='', help='a pushed model instead of the toy')
  parser.add_argument(
    '--demo_shaped',
    action='store_true',
    help="build (once, kept in bench/results/) and serve a classifier of the demo model's"
    ' shape (6 layers, hidden 384)',
  )
  parser.add_argument('--demo_seq_len', type=int, default=128, help='its tokens per text')
  parser.add_argument('--baseline_ref', default=BASELINE_REF, help="the old server's commit")
  parser.add_argument('--no_baseline', action='store_true', help='only the new server')
  parser.add_argument(
    '--only',
    default='latency,burst,slow,huge',
    help='comma-separated scenarios: latency, burst, slow, huge',
  )
  parser.add_argument('--huge_rows', default=','.join(map(str, HUGE_ROWS)))
  parser.add_argument('--huge_deadline', type=float, default=HUGE_DEADLINE)
  parser.add_argument(
    '--server_flags',
    default='',
    help='extra flags for this tree\'s server, e.g. "--max_execution_batch_size=244"',
  )
  parser.add_argument('--throughput', action='store_true', help='also batching on/off')
  parser.add_argument('--seconds', type=float, default=24.0, help='throughput time per setting')
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
  for key, value in setup.SIZES.items():
    parser.add_argument(f'--{key}', type=int, default=value)
  args = parser.parse_args()
  only = set(args.only.split(','))
  threads = []
  if args.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    threads = [f'--tensorflow_intra_op_parallelism={args.intra_op_threads}']
  if args.quick:
    args.requests, args.seconds, args.window = 60, 4.0, 1.0
    args.huge_rows = '2000,200000'  # the second still shows the deadline and memory bound
  work = tempfile.mkdtemp(prefix='serving_bench_')
  servers = {}
  results = {
    'cpus': os.cpu_count(),
    'load_average': os.getloadavg(),
    'intra_op_threads': args.intra_op_threads or 'default',
    'baseline_ref': None if args.no_baseline else args.baseline_ref,
  }
  verdicts = []
  try:
    base, version = setup.model_base(args, work)
    if args.demo_shaped:
      results['model'] = {'demo_shaped': setup.MINILM, 'seq_len': args.demo_seq_len}
    else:
      results['model'] = args.model_path or {key: getattr(args, key) for key in setup.SIZES}
    payload = setup.Payload(version)
    results['signature'] = payload.signature_name
    servers['new'] = setup.ServerProcess(base, work, threads + shlex.split(args.server_flags))
    results['rows_per_call'] = servers['new'].sizing()
    if not args.no_baseline:
      tree = setup.baseline_tree(args.baseline_ref, work)
      servers['old'] = setup.ServerProcess(base, work, threads, tree=tree, name='old')

    if 'latency' in only:
      paths = {'in_process': payload.in_process()}
      for name, server in servers.items():
        paths[f'grpc_{name}'] = setup.grpc_caller(server.grpc_port, payload)
        paths[f'rest_{name}'] = setup.rest_caller(server.rest_port, payload)
      samples = {key: [] for key in paths}
      for i in range(args.requests + 30):
        for key in list(paths) if i % 2 else list(paths)[::-1]:
          start = time.perf_counter()
          paths[key]()
          if i >= 30:
            samples[key].append(time.perf_counter() - start)
      latency = {key: setup.percentiles(values) for key, values in samples.items()}
      base_p50 = latency['in_process']['p50_ms']
      for key in list(latency):
        if key != 'in_process':
          latency[key]['vs_in_process'] = latency[key]['p50_ms'] / base_p50
      results['latency'] = latency
      ratio = latency['grpc_new']['vs_in_process']
      verdicts.append(('batch-1 gRPC p50 / in-process p50 <= 1.1', ratio, ratio <= 1.1))

    if 'burst' in only:
      results['burst'] = {
        name: asyncio.run(_burst(server, payload, BURST)) for name, server in servers.items()
      }
      for protocol in ('rest', 'grpc'):
        share = results['burst']['new'][protocol]['ok_share']
        verdicts.append((f'{BURST} clients, {protocol}: OK share >= 0.99', share, share >= 0.99))

    if 'slow' in only:
      results['slow'] = {
        name: _slow_clients(server, payload, SLOW) for name, server in servers.items()
      }
      new = results['slow']['new']
      verdicts.append(
        (
          f'{SLOW} slow connections: normal client 200 in < 1 s (median)',
          new['seconds'],
          new['status'] == '200' and new['seconds'] < 1.0 and new['held'] == SLOW,
        )
      )

    if 'huge' in only:
      results['huge'] = [
        _huge(servers['new'], payload, int(rows), args.huge_deadline)
        for rows in args.huge_rows.split(',')
      ]
      first_idle = results['huge'][0]['idle_rss_mb']
      for run in results['huge']:
        # Above the idle server before the first huge request (memory a request leaves in the
        # allocator counts against the next one).
        run['peak_above_idle_mb'] = run['peak_rss_mb'] - first_idle
        ok = (
          run['code'] in ('OK', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'INVALID_ARGUMENT')
          and run['seconds'] <= args.huge_deadline + 1
          and run['peak_above_idle_mb'] <= MEMORY_BUDGET / (1 << 20)
          and run['healthy_after']
        )
        verdicts.append(
          (
            f'{run["rows"]}-row request: within deadline and 1 GiB, healthy after',
            run['peak_above_idle_mb'],
            ok,
          )
        )

    if args.throughput:
      parameters = os.path.join(work, 'batching.config')
      with open(parameters, 'w') as f:
        f.write(
          f'max_batch_size {{ value: {args.max_batch_size} }}\n'
          f'batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n'
          f'num_batch_threads {{ value: {args.num_batch_threads} }}\n'
        )
      servers['batching'] = setup.ServerProcess(
        base,
        work,
        threads + ['--enable_batching', f'--batching_parameters_file={parameters}'],
        name='batching',
      )
      callers = {
        name: [setup.grpc_caller(servers[key].grpc_port, payload) for _ in range(CLIENTS)]
        for name, key in (('off', 'new'), ('on', 'batching'))
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
        }
  finally:
    for server in servers.values():
      server.stop()
    shutil.rmtree(work, ignore_errors=True)

  print(
    f'model: {results["model"]} ({results["signature"]}), TensorFlow intra-op threads:'
    f' {results["intra_op_threads"]}, {os.cpu_count()} CPUs shared by servers and clients,'
    f' load average at start {results["load_average"][0]:.1f}'
  )
  for line in results['rows_per_call']:
    print(f'new server: {line}')
  if 'latency' in results:
    print(f'{"latency, batch 1":<28}{"p50 ms":>10}{"p99 ms":>10}{"x in-process":>14}')
    for key, value in results['latency'].items():
      print(
        f'{key:<28}{value["p50_ms"]:>10.2f}{value["p99_ms"]:>10.2f}'
        f'{value.get("vs_in_process", 1.0):>14.2f}'
      )
  if 'burst' in results:
    print(f'{BURST} concurrent batch-1 clients: OK share, p50 / p99 ms, answers')
    for name, by_protocol in results['burst'].items():
      for protocol, value in by_protocol.items():
        print(
          f'  {name} {protocol:<5} {value["ok_share"]:>6.1%}'
          f'  {value["p50_ms"]:>8.0f} / {value["p99_ms"]:<8.0f} {value["codes"]}'
        )
  if 'slow' in results:
    for name, value in results['slow'].items():
      print(
        f'{value["held"]} slow connections, then a normal client ({name}):'
        f' {value["status"]}, median {value["seconds"]:.3f} s of {len(value["all_seconds"])}'
        f' (max {max(value["all_seconds"]):.3f} s)'
      )
  for run in results.get('huge', []):
    print(
      f'{run["rows"]} rows ({run["request_mb"]:.0f} MB): {run["code"]} in'
      f' {run["seconds"]:.1f} s, server peak RSS {run["peak_above_idle_mb"]:.0f} MB above idle'
      f' ({run["idle_rss_mb"]:.0f} MB), healthy after: {run["healthy_after"]}'
    )
  for name in ('off', 'on'):
    if f'throughput_batching_{name}' in results:
      r = results[f'throughput_batching_{name}']
      print(
        f'throughput, batching {name} ({CLIENTS} clients): {r["requests_per_s"]:.0f} req/s'
        f' ({r["errors"]} errors)'
      )
  results['verdicts'] = []
  for label, value, ok in verdicts:
    print(f'{_verdict(ok)}  {label}: {value:.3g}')
    results['verdicts'].append({'target': label, 'value': value, 'pass': ok})
  out_dir = os.path.join(REPO, 'bench', 'results')
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'serving.json'), 'w') as f:
    json.dump(results, f, indent=2)
  if args.quick:
    return 0  # a smoke run: its figures are not the targets' (few samples, the toy model)
  return 0 if all(ok for _, _, ok in verdicts) else 1


if __name__ == '__main__':
  sys.exit(main())
