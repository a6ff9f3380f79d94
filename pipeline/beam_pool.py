"""A warm Beam worker pool shared by the Beam components of one local run.

In Beam's multi-processing mode every component starts its own worker processes, and each one
imports TensorFlow, tensorflow-text and TF Transform before its first element: 5-10 s per
component. A `WorkerPool` starts one process per worker once per run instead; each imports
that stack up front and serves Beam's worker-pool API (`BeamFnExternalWorkerPool`, as Beam's
`worker_pool_main` does, with SDK harnesses as threads of the warm process). Components reach it
through `PooledFnApiRunner`, Beam's FnApiRunner with its subprocess workers replaced by an
EXTERNAL environment: a dispatcher in this process that hands each requested worker to the
pool's processes in turn, so a component's workers still spread over the cores.

    with beam_pool.WorkerPool() as pool:
      args = pool.pipeline_args(args)  # starts the processes if `args` want worker processes
      ...run the components with args...

Shutdown kills each process's whole process group; a process also exits by itself when this
one dies (its stdin, a pipe from here, reaches end of file), so no worker outlives the run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from concurrent import futures
from typing import Dict, List, Optional, Sequence

import grpc
from apache_beam.options import pipeline_options
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import (
  beam_fn_api_pb2,
  beam_fn_api_pb2_grpc,
  beam_runner_api_pb2,
  endpoints_pb2,
)
from apache_beam.runners.portability.fn_api_runner import fn_runner

from tfxlm import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the Beam components' workers need: imported by every pool process before it serves.
WORKER_IMPORTS = (
  'tensorflow',
  'tensorflow_text',
  'tensorflow_transform',
  'tensorflow_transform.beam',
  'tensorflow_data_validation',
  'tensorflow_model_analysis',
  'components.example_gen',
  'components.transform',
  'components.vocabulary',
  'components.metrics',
  'trainer.preprocessing',
)
RUNNER = f'{__name__}.PooledFnApiRunner'
# Seconds a pool process may take to import WORKER_IMPORTS and start serving (TensorFlow alone
# takes 3-5 s; several runs may share the cores).
READY_TIMEOUT = 300
# Seconds a pool process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5
_READY = 'READY '
_FAILED = 'FAILED '


class PoolError(RuntimeError):
  """A pool process could not start or serve a worker."""


def _rewrite_environments(pipeline_proto: beam_runner_api_pb2.Pipeline, address: str) -> None:
  """Points the pipeline's subprocess (multi-processing) environments at the pool `address`."""
  external = beam_runner_api_pb2.ExternalPayload(
    endpoint=endpoints_pb2.ApiServiceDescriptor(url=address)
  )
  for environment in pipeline_proto.components.environments.values():
    if environment.urn == python_urns.SUBPROCESS_SDK:
      environment.urn = common_urns.environments.EXTERNAL.urn
      environment.payload = external.SerializeToString()


class PooledFnApiRunner(fn_runner.FnApiRunner):
  """FnApiRunner whose multi-processing workers come from a pool named by the standard options
  `--environment_type=EXTERNAL --environment_config=HOST:PORT` (other modes are unchanged)."""

  def run_via_runner_api(self, pipeline_proto, options):
    portable = options.view_as(pipeline_options.PortableOptions)
    if (portable.environment_type or '').upper() == 'EXTERNAL' and portable.environment_config:
      _rewrite_environments(pipeline_proto, portable.environment_config)
    return super().run_via_runner_api(pipeline_proto, options)


class _Process:
  """One pool process: its Popen and, once it reported ready, its worker-pool address."""

  def __init__(self, imports: Sequence[str]):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
    self.popen = subprocess.Popen(
      [sys.executable, '-m', __name__, '--imports', ','.join(imports)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env=env,
      start_new_session=True,  # its own process group: shutdown kills the whole tree
    )
    self._address: Optional[str] = None
    self._lock = threading.Lock()
    self.stub = None

  def address(self) -> str:
    """The process's worker-pool address, waiting for it to finish its imports."""
    with self._lock:
      if self._address is None:
        line = _read_line(self.popen, READY_TIMEOUT)
        if not line.startswith(_READY):
          detail = line[len(_FAILED) :] if line.startswith(_FAILED) else 'no address reported'
          raise PoolError(
            f'Beam worker pool process {self.popen.pid} did not start: {detail.strip()} '
            '(its traceback is in the run log)'
          )
        self._address = line[len(_READY) :].strip()
        self.stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(
          grpc.insecure_channel(self._address)
        )
      return self._address

  def stop(self) -> None:
    """Kills the process's group (SIGTERM, then SIGKILL after STOP_TIMEOUT) and reaps it."""
    with contextlib.suppress(OSError):
      self.popen.stdin.close()
    _kill_group(self.popen.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
      self.popen.wait(STOP_TIMEOUT)
    _kill_group(self.popen.pid, signal.SIGKILL)  # if it hangs, and whatever it left in its group
    self.popen.wait()
    self.popen.stdout.close()


def _kill_group(pgid: int, sig: int) -> None:
  with contextlib.suppress(ProcessLookupError):
    os.killpg(pgid, sig)


def _read_line(popen: subprocess.Popen, timeout: float) -> str:
  """The next stdout line of `popen`, '' if it ends or says nothing for `timeout` seconds."""
  result: List[str] = []
  reader = threading.Thread(target=lambda: result.append(popen.stdout.readline()), daemon=True)
  reader.start()
  reader.join(timeout)
  return result[0] if result else ''


class _Dispatcher(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
  """The worker-pool API the runner calls: each StartWorker goes to the next pool process."""

  def __init__(self, processes: List[_Process]):
    self._processes = processes
    self._turn = itertools.cycle(range(len(processes)))
    self._lock = threading.Lock()
    self.started: Dict[str, int] = {}  # worker id -> index of the process that runs it

  def StartWorker(self, request, context):  # noqa: N802 - gRPC method name
    with self._lock:
      index = next(self._turn)
    process = self._processes[index]
    try:
      process.address()
      response = process.stub.StartWorker(request)
    except Exception:  # noqa: BLE001 - the runner raises it as "Error starting worker: ..."
      return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())
    if not response.error:
      self.started[request.worker_id] = index
    return response

  def StopWorker(self, request, context):  # noqa: N802 - gRPC method name
    return beam_fn_api_pb2.StopWorkerResponse()  # a harness ends with its control stream


def _flag(args: Sequence[str], name: str) -> Optional[str]:
  """The value of the last `--name=value` in `args`, None if absent."""
  values = [a.split('=', 1)[1] for a in args if a.startswith(f'--{name}=')]
  return values[-1] if values else None


def wants_worker_processes(args: Sequence[str]) -> bool:
  """Whether `args` run Beam's local FnApiRunner with worker processes (multi-processing)."""
  runner = _flag(args, 'runner')
  local = runner == fn_runner.__name__ + '.FnApiRunner' or runner == RUNNER
  return local and _flag(args, 'direct_running_mode') == 'multi_processing'


class WorkerPool:
  """Warm worker processes for every Beam component of one run; a context manager.

  Nothing starts until `pipeline_args` is given arguments that want worker processes. Leaving
  the context (also on an error, KeyboardInterrupt or SIGTERM) kills them.
  """

  def __init__(self, imports: Sequence[str] = WORKER_IMPORTS):
    self._imports = tuple(imports)
    self._processes: List[_Process] = []
    self._server: Optional[grpc.Server] = None
    self.dispatcher: Optional[_Dispatcher] = None
    self.address: Optional[str] = None
    self._previous_sigterm = None

  def pipeline_args(self, args: Sequence[str]) -> List[str]:
    """`args` served by this pool if they want local worker processes, else `args` unchanged.

    The first such call starts one process per worker (`--direct_num_workers`, 0 or unset: one
    per core); later calls share them.
    """
    args = list(args)
    if not wants_worker_processes(args):
      return args
    if self.address is None:
      workers = int(_flag(args, 'direct_num_workers') or 0) or os.cpu_count() or 1
      self.start(workers)
    kept = [
      a
      for a in args
      if not a.startswith(('--runner=', '--environment_type=', '--environment_config='))
    ]
    return [
      f'--runner={RUNNER}',
      *kept,
      '--environment_type=EXTERNAL',
      f'--environment_config={self.address}',
    ]

  def start(self, workers: int) -> str:
    """Starts `workers` pool processes and the dispatcher; returns the dispatcher's address."""
    if self.address is not None:
      raise PoolError('this worker pool is already started')
    try:
      self._processes = [_Process(self._imports) for _ in range(workers)]
      self.dispatcher = _Dispatcher(self._processes)
      self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(4, 2 * workers)))
      beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        self.dispatcher, self._server
      )
      port = self._server.add_insecure_port('127.0.0.1:0')
      self._server.start()
    except BaseException:
      self.close()
      raise
    self.address = f'127.0.0.1:{port}'
    return self.address

  @property
  def pids(self) -> List[int]:
    """Process ids of the pool's processes."""
    return [p.popen.pid for p in self._processes]

  def close(self) -> None:
    """Stops the dispatcher and kills every pool process with its children; idempotent."""
    if self._server is not None:
      self._server.stop(None)
      self._server = None
    processes, self._processes = self._processes, []
    for process in processes:
      process.stop()
    self.address = None

  def __enter__(self) -> 'WorkerPool':
    if threading.current_thread() is threading.main_thread():
      if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        # SIGTERM would end this process without unwinding: make it unwind, so `__exit__`
        # shuts the pool down; the exit code stays the one SIGTERM gives.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return self

  def __exit__(self, *exc_info) -> None:
    try:
      self.close()
    finally:
      if self._previous_sigterm is not None:
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None


def _exit_on_sigterm(signum, frame):
  raise SystemExit(128 + signum)


class _ForwardWarnings(logging.Handler):
  """In a pool process: the project's own WARNING (or worse) records go to the run's process
  as well as to stderr (the run log), through the logging endpoint of the harness running now,
  as Beam's own worker processes send every record: the run's summary lists them
  (pipeline/local_runner.py `WarningCollector`). A harness is a thread of a process that
  outlives it, so each one's connection opens and closes with it."""

  def __init__(self):
    super().__init__(logging.WARNING)
    self._senders: list = []  # the running harnesses' senders, the newest last
    self._senders_lock = threading.Lock()

  def emit(self, record):
    if not console.is_project_file(record.pathname):
      return
    with self._senders_lock:
      sender = self._senders[-1] if self._senders else None
    if sender is not None:
      sender.handle(record)

  def open(self, endpoint: endpoints_pb2.ApiServiceDescriptor):
    """A sender to `endpoint` for the harness starting now; None if it has no endpoint."""
    from apache_beam.runners.worker.log_handler import FnApiLogRecordHandler

    if not endpoint.url:
      return None
    try:
      sender = FnApiLogRecordHandler(endpoint)
    except Exception as e:  # noqa: BLE001 - the harness runs on; its warnings stay in the log
      print(f"cannot reach the run's logging endpoint {endpoint.url}: {e}", file=sys.stderr)
      return None
    with self._senders_lock:
      self._senders.append(sender)
    return sender

  def close_sender(self, sender) -> None:
    """Flushes and closes `sender` (from `open`) as its harness ends."""
    if sender is None:
      return
    with self._senders_lock:
      self._senders.remove(sender)
    sender.close()


_FORWARD = _ForwardWarnings()


class _HarnessThreads(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
  """Beam's worker-pool API in a pool process: each worker is an SDK harness thread, which ends
  (and is dropped, with the DoFns and models it cached) when its runner closes the control
  stream at the end of a component."""

  def StartWorker(self, request, context):  # noqa: N802 - gRPC method name
    from apache_beam.runners.worker import sdk_worker

    try:
      # The defaults of Beam's own subprocess workers (sdk_worker_main): no state cache, no
      # output buffering delay.
      harness = sdk_worker.SdkHarness(
        request.control_endpoint.url,
        worker_id=request.worker_id,
        state_cache_size=0,
        data_buffer_time_limit_ms=0,
      )
      sender = _FORWARD.open(request.logging_endpoint)
    except Exception:  # noqa: BLE001 - the runner raises it as "Error starting worker: ..."
      return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())

    def run():
      try:
        harness.run()
      finally:
        _FORWARD.close_sender(sender)

    try:
      threading.Thread(target=run, name=f'harness-{request.worker_id}', daemon=True).start()
    except Exception:  # noqa: BLE001 - the runner raises it as "Error starting worker: ..."
      _FORWARD.close_sender(sender)
      return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())
    return beam_fn_api_pb2.StartWorkerResponse()

  def StopWorker(self, request, context):  # noqa: N802 - gRPC method name
    return beam_fn_api_pb2.StopWorkerResponse()  # a harness ends with its control stream


def _serve(imports: Sequence[str]) -> int:
  """A pool process: imports `imports`, serves Beam's worker-pool API with SDK harnesses as
  threads of this process, and exits when its parent closes stdin (or dies)."""
  import importlib

  # The parent reads this process's address from stdout; whatever else writes there (a DoFn's
  # print, a library's chatter) goes to stderr, the run log, and cannot fill an unread pipe.
  report = os.fdopen(os.dup(1), 'w')
  os.dup2(2, 1)
  try:
    for name in imports:
      importlib.import_module(name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(_HarnessThreads(), server)
    port = server.add_insecure_port('127.0.0.1:0')
    server.start()
    if not logging.getLogger().handlers:
      logging.basicConfig()  # stderr, as the first `logging.warning` call would make it
    logging.getLogger().addHandler(_FORWARD)
  except Exception as e:  # noqa: BLE001 - reported to the parent, traceback to the log
    traceback.print_exc()
    print(f'{_FAILED}{type(e).__name__}: {e}'.replace('\n', ' '), file=report, flush=True)
    return 1
  print(f'{_READY}127.0.0.1:{port}', file=report, flush=True)
  report.close()
  sys.stdin.read()  # until the parent closes the pipe or dies
  # Harness threads may be mid-bundle of a run that is over: do not wait for them.
  os._exit(0)


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description='A warm Beam worker pool process (internal).')
  parser.add_argument('--imports', default='', help='modules to import before serving')
  sys.exit(_serve([m for m in parser.parse_args().imports.split(',') if m]))
