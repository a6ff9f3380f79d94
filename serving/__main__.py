"""Runs the model server: `python -m serving` (or the `tfx-lm-serve` console script).

The flags mirror tensorflow_model_server's, so its command lines work here, e.g.

  python -m serving --model_name=imdb --model_base_path=/models/imdb
  python -m serving --model_config_file=models.config --enable_batching
"""

import argparse
import errno
import logging
import os
import signal
import sys
import threading

from tfxlm import contract

log = logging.getLogger('serving')


DEFAULT_REST_TIMEOUT_SECONDS = 120.0
DEFAULT_REQUEST_THREADS = 32
# tensorflow_model_server flags that tune what has no counterpart here: accepted, so a TF Serving
# command line starts, with one WARNING each saying what happens instead.
IGNORED_FLAGS = {
  'rest_api_num_threads': 'REST runs on an event loop; model work runs on --request_threads',
  'grpc_channel_arguments': 'the gRPC message size limit is --max_request_bytes',
  'model_config_file_poll_wait_seconds': '--model_config_file is read once, at start; new'
  ' versions are still found every --file_system_poll_wait_seconds, and'
  ' HandleReloadConfigRequest (--enable_model_management) changes the models',
  'num_request_iterations_for_warmup': 'each warm-up record is replayed once',
  'tensorflow_session_parallelism': 'use --tensorflow_intra_op_parallelism and'
  ' --tensorflow_inter_op_parallelism',
  'tensorflow_session_config_file': 'use --tensorflow_intra_op_parallelism and'
  ' --tensorflow_inter_op_parallelism',
  'per_process_gpu_memory_fraction': 'TensorFlow allocates GPU memory as it does by default',
  'num_load_threads': 'not configurable here',
  'num_unload_threads': 'not configurable here',
  'max_num_load_retries': 'not configurable here',
  'load_retry_interval_micros': 'not configurable here',
  'flush_filesystem_caches': 'not configurable here',
  'remove_unused_fields_from_bundle_metagraph': 'not configurable here',
  'enable_signature_method_name_check': 'not configurable here',
  'xla_cpu_compilation_enabled': 'not configurable here',
  'enable_profiler': 'not configurable here',
}
# tensorflow_model_server flags whose absence would change what clients get (no TLS, no socket,
# another model): refused, naming what to use instead.
REFUSED_FLAGS = {
  'ssl_config_file': 'use --ssl_certfile, --ssl_keyfile and --ssl_client_ca_file (PEM files)',
  'use_alts_credentials': 'use --ssl_certfile and --ssl_keyfile for TLS',
  'grpc_socket_path': 'a UNIX socket is not supported; serve gRPC on --port',
  'rest_api_enable_cors_support': 'CORS is not supported; put a proxy that adds its headers in'
  ' front',
  'platform_config_file': 'only TensorFlow SavedModels are served; list them with'
  ' --model_config_file',
  'saved_model_tags': 'only the "serve" MetaGraph is loaded',
  'prefer_tflite_model': 'TFLite models are not served',
}
# The value of each refused flag that asks for what this server does anyway
# (tensorflow_model_server's default): given so, the flag is accepted and changes nothing.
NO_OP_VALUES = {
  'ssl_config_file': '',
  'use_alts_credentials': False,
  'grpc_socket_path': '',
  'rest_api_enable_cors_support': False,
  'platform_config_file': '',
  'saved_model_tags': 'serve',
  'prefer_tflite_model': False,
}
# A setting and the flags that name it: given by several, they must agree.
ALIASES = {'request_threads': ('request_threads', 'grpc_threads', 'grpc_max_threads')}
# The least value of each numeric flag, and the float flags that must be above 0.
AT_LEAST = {
  'request_threads': 1,
  'max_queued_requests': 0,
  'grpc_max_concurrent_rpcs': 0,
  'grpc_max_connections': 0,
  'rest_max_connections': 1,
  'max_request_bytes': 1,
  'max_request_batch_size': 0,
  'max_request_elements': 1,
  'max_request_string_bytes': 1,
  'max_json_depth': 1,
  'max_execution_batch_size': 0,
  'request_memory_budget_mb': 16,
  'rest_timeout_seconds': 0,
  'drain_seconds': 0,
}
POSITIVE = (
  'rest_header_timeout_seconds',
  'rest_body_timeout_seconds',
  'grpc_request_timeout_seconds',
)
# A flag given without a value (`--use_alts_credentials`): true for a boolean flag.
_BARE = True


def _bool(text: str) -> bool:
  """A boolean flag's value as tensorflow_model_server (absl) takes it."""
  value = text.strip().lower()
  if value in ('true', 't', 'yes', 'y', '1'):
    return True
  if value in ('false', 'f', 'no', 'n', '0'):
    return False
  raise argparse.ArgumentTypeError(f'{text!r} is not a boolean: write true, false, 1 or 0')


def _asks_for_nothing_else(name: str, value: str | bool) -> bool:
  """True when refused flag `name` is given a value that asks for what this server does anyway
  (`--use_alts_credentials=false`, `--saved_model_tags=serve`)."""
  wanted = NO_OP_VALUES[name]
  if value is _BARE:
    return wanted is True
  if isinstance(wanted, bool):
    try:
      return _bool(value) == wanted
    except argparse.ArgumentTypeError:
      return False
  if name == 'saved_model_tags':  # a comma-separated set of tags
    return {tag.strip() for tag in value.split(',')} == {wanted}
  return value.strip() == wanted


def _flags(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
  # allow_abbrev=False: a misspelt or cut flag (--rest_time=5) is an error, not another flag.
  parser = argparse.ArgumentParser(
    prog='python -m serving', description=__doc__.split('\n')[0], allow_abbrev=False
  )
  add = parser.add_argument

  def add_bool(name, default=False, **kwargs):
    """A boolean flag, given as `--flag` or `--flag=true|false|1|0` (absl's forms)."""
    add(name, nargs='?', const=True, default=default, type=_bool, metavar='true|false', **kwargs)

  add('--port', type=int, default=contract.GRPC_PORT, help='gRPC port (0 picks a free one).')
  add(
    '--rest_api_port',
    type=int,
    default=contract.REST_PORT,
    help='REST port; 0 disables REST, as in tensorflow_model_server.',
  )
  add(
    '--host',
    default='127.0.0.1',
    help='Interface to bind (default local only; 0.0.0.0 to expose the server).',
  )
  add('--model_name', default='default', help='Name of the model served from --model_base_path.')
  add('--model_base_path', default='', help='Directory of numbered version subdirectories.')
  add(
    '--model_config_file',
    default='',
    help='ModelServerConfig text proto listing the models (instead of --model_base_path).',
  )
  add(
    '--model_base_path_root',
    default='',
    help='Serve every model found under this directory (e.g. pipeline_outputs): a model is a'
    ' directory of numbered versions, named after that directory (symlinked directories are'
    ' followed).',
  )
  add(
    '--file_system_poll_wait_seconds',
    type=float,
    default=1.0,
    help='Seconds between polls for new versions; 0 loads only at start.',
  )
  add_bool('--enable_batching', help='Merge concurrent requests into batches.')
  add(
    '--batching_parameters_file',
    default='',
    help='BatchingParameters text proto (max_batch_size, batch_timeout_micros, ...).',
  )
  add(
    '--max_request_bytes',
    type=int,
    default=64 << 20,
    help='Largest gRPC message or REST body accepted.',
  )
  add(
    '--max_request_batch_size',
    type=int,
    default=0,
    help='Most rows one request may carry (0: no limit; with batching, max_batch_size also'
    ' applies).',
  )
  add(
    '--max_request_elements',
    type=int,
    default=1 << 24,
    help='Most tensor elements one request may carry, over all its inputs.',
  )
  add(
    '--max_request_string_bytes',
    type=int,
    default=64 << 20,
    help='Most bytes of string elements one request may carry.',
  )
  add(
    '--request_threads',
    type=int,
    default=None,
    help='Threads that run the model work of Predict, Classify and Regress requests (gRPC and REST'
    ' together); further requests wait in the queue (default 32). --grpc_threads is an old name,'
    " --grpc_max_threads tensorflow_model_server's.",
  )
  add('--grpc_threads', type=int, default=None, help=argparse.SUPPRESS)
  add('--grpc_max_threads', type=int, default=None, help=argparse.SUPPRESS)
  add(
    '--max_queued_requests',
    type=int,
    default=1024,
    help='Requests that may wait for a thread; beyond, RESOURCE_EXHAUSTED (REST 503).',
  )
  add(
    '--grpc_max_concurrent_rpcs',
    type=int,
    default=0,
    help='A cap on RPCs in the gRPC server, counted from when a call opens (beyond,'
    ' RESOURCE_EXHAUSTED); 0: none, as TF Serving (--max_queued_requests bounds the work).',
  )
  add(
    '--grpc_max_connections',
    type=int,
    default=0,
    help='Open gRPC connections; beyond, new ones are closed. 0: no cap, as TF Serving (a cap'
    ' lets whoever holds that many idle connections shut others out).',
  )
  add(
    '--grpc_request_timeout_seconds',
    type=float,
    default=60.0,
    help="Time a gRPC call's request message, and the end of its stream, have to arrive after the"
    ' call opens; beyond, DEADLINE_EXCEEDED.',
  )
  add(
    '--rest_max_connections',
    type=int,
    default=4096,
    help='Open REST connections (no thread each: they cost a socket); beyond, 503.',
  )
  add(
    '--request_memory_budget_mb',
    type=int,
    default=1024,
    help='Memory one request may take above the idle server; the rows of one signature call'
    ' are derived from it, measured when a version loads.',
  )
  add(
    '--max_execution_batch_size',
    type=int,
    default=0,
    help='Rows of one signature call (0: derived from --request_memory_budget_mb); with'
    ' batching, max_batch_size also applies.',
  )
  add(
    '--large_batch_policy',
    choices=('split', 'refuse'),
    default='split',
    help='A request of more rows than one call takes: run in chunks whose outputs are'
    " concatenated (split, as TF Serving's large batch splitting), or INVALID_ARGUMENT.",
  )
  add(
    '--monitoring_config_file',
    default='',
    help="TF Serving's MonitoringConfig text proto: prometheus_config { enable: true path:"
    ' "/metrics" } serves the Prometheus metrics at that path, enable: false at none'
    f' (default without this flag: {contract.METRICS_PATH}).',
  )
  add(
    '--rest_header_timeout_seconds',
    type=float,
    default=30.0,
    help='Time an idle REST connection has to send a request line and headers.',
  )
  add(
    '--rest_body_timeout_seconds',
    type=float,
    default=60.0,
    help='Time a REST request body has to arrive, and its answer to be read by the client.',
  )
  add(
    '--max_json_depth',
    type=int,
    default=64,
    help='Deepest nesting of arrays and objects in a REST body.',
  )
  add('--ssl_certfile', default='', help='PEM certificate: serve gRPC over TLS and HTTPS.')
  add('--ssl_keyfile', default='', help='PEM private key for --ssl_certfile.')
  add(
    '--ssl_client_ca_file',
    default='',
    help='PEM CA certificates: require client certificates signed by them (mutual TLS).',
  )
  add(
    '--auth_token_file',
    default='',
    help='File holding a bearer token every call must carry (gRPC metadata and HTTP header'
    ' "authorization: Bearer <token>"); REST /healthz stays open.',
  )
  add_bool(
    '--enable_model_management',
    help='Serve HandleReloadConfigRequest (off by default: any client could unload models).',
  )
  add(
    '--drain_seconds',
    type=float,
    default=30.0,
    help='On SIGTERM, how long to wait for in-flight requests; then they are answered 503 '
    'between chunks, so a model call already running ends first (one chunk: the rows per '
    "call the start-up log gives, seconds on a CPU). Leave a pod's grace period that much "
    'more.',
  )
  add(
    '--rest_timeout_seconds',
    type=float,
    default=None,
    help='A REST predict, classify or regress call running longer is answered 504 (gRPC calls use'
    f' their deadline); 0 means no limit (default {DEFAULT_REST_TIMEOUT_SECONDS:g}).',
  )
  add(
    '--rest_api_timeout_in_ms',
    type=int,
    default=None,
    help="--rest_timeout_seconds in milliseconds, tensorflow_model_server's spelling.",
  )
  add(
    '--tensorflow_intra_op_parallelism',
    type=int,
    default=0,
    help='Threads one TensorFlow op may use (0: TensorFlow chooses, one per core).',
  )
  add(
    '--tensorflow_inter_op_parallelism',
    type=int,
    default=0,
    help='TensorFlow ops run at once (0: TensorFlow chooses).',
  )
  add_bool(
    '--enable_model_warmup',
    default=True,
    help='Replay assets.extra/tf_serving_warmup_requests before a version serves; always'
    ' on here (false is ignored with a warning).',
  )
  add('--log_level', default='INFO', help='Python logging level.')
  for name in IGNORED_FLAGS:
    add(f'--{name}', nargs='?', const='', default=None, help=argparse.SUPPRESS)
  for name in REFUSED_FLAGS:
    add(f'--{name}', nargs='?', const=_BARE, default=None, help=argparse.SUPPRESS)
  flags = parser.parse_args(argv)
  for name, why in REFUSED_FLAGS.items():
    value = getattr(flags, name)
    if value is not None and not _asks_for_nothing_else(name, value):
      shown = f'--{name}' if value is _BARE else f'--{name}={value}'
      parser.error(f'{shown} (tensorflow_model_server) is not supported: {why}')
  # The flag each setting was given by, and the value as typed, for messages.
  typed = {name: (f'--{name}', getattr(flags, name)) for name in AT_LEAST}
  for name, spellings in ALIASES.items():
    given = {f'--{n}': getattr(flags, n) for n in spellings if getattr(flags, n) is not None}
    _agree(parser, given)
    if given:
      typed[name] = next(iter(given.items()))
      setattr(flags, name, typed[name][1])
  if flags.request_threads is None:
    flags.request_threads = DEFAULT_REQUEST_THREADS
  seconds = {}
  if flags.rest_timeout_seconds is not None:
    seconds['--rest_timeout_seconds'] = flags.rest_timeout_seconds
  if flags.rest_api_timeout_in_ms is not None:
    seconds['--rest_api_timeout_in_ms'] = flags.rest_api_timeout_in_ms / 1000
    typed['rest_timeout_seconds'] = ('--rest_api_timeout_in_ms', flags.rest_api_timeout_in_ms)
  _agree(parser, seconds, {'--rest_api_timeout_in_ms': flags.rest_api_timeout_in_ms})
  flags.rest_timeout_seconds = min(seconds.values(), default=DEFAULT_REST_TIMEOUT_SECONDS)
  for name, least in AT_LEAST.items():
    if getattr(flags, name) < least:
      flag, value = typed[name]
      parser.error(f'{flag} must be >= {least}, got {value:g}')
  for name in POSITIVE:
    if not getattr(flags, name) > 0:
      parser.error(f'--{name} must be > 0, got {getattr(flags, name):g}')
  return parser, flags


def _agree(parser, given, shown=None):
  """Refuses names of one setting given different values (flag -> value, in one unit),
  naming the flags as typed (`shown`: flag -> the value typed, where the unit differs)."""
  if len(set(given.values())) > 1:
    shown = shown or {}
    typed = ' and '.join(f'{flag}={shown.get(flag, value):g}' for flag, value in given.items())
    parser.error(f'{typed} name one setting with different values: give one of them')


def ignored_flag_warnings(flags: argparse.Namespace) -> list[str]:
  """One line for each tensorflow_model_server flag given that has no effect here."""
  lines = [
    f'--{name} (tensorflow_model_server) is ignored: {why}'
    for name, why in IGNORED_FLAGS.items()
    if getattr(flags, name) is not None
  ]
  if not flags.enable_model_warmup:
    lines.append(
      '--enable_model_warmup=false is ignored: warm-up always runs before a version serves'
    )
  return lines


def _read_flag_file(flag: str, path: str, parse, *args):
  """`parse(path, *args)`, a file a flag names; its errors as one ValueError naming the flag.

  Raises:
    ValueError: '--flag: PATH: what is wrong in it', or '--flag=PATH: why it cannot be read'.
  """
  try:
    return parse(path, *args)
  except OSError as e:
    raise ValueError(f'--{flag}={path}: cannot read it: {e.strerror or e}') from None
  except ValueError as e:
    raise ValueError(f'--{flag}: {e}') from None


def serving_line(host: str, grpc_port: int, rest_port: int | None) -> str:
  """The one line printed once the server is up, for scripts and tests to find its ports:
  `SERVING grpc=HOST:PORT rest=HOST:PORT`, `rest=off` where REST is disabled."""
  from serving.server import host_port  # imported with the server, before this is called

  rest = host_port(host, rest_port) if rest_port else 'off'
  return f'SERVING grpc={host_port(host, grpc_port)} rest={rest}'


def _listen_problem(error: BaseException, flags) -> str | None:
  """One line for a port the server could not listen on (taken, privileged, not this host's
  address), naming the flag to change; None for another error."""
  from serving.server import host_port  # imported with the server, which failed to listen

  if isinstance(error, RuntimeError) and 'bind' in str(error):  # grpc names no reason
    return (
      f'cannot serve gRPC on {host_port(flags.host, flags.port)}: the port is taken (another'
      ' server?) or not allowed; stop the other server or choose another --port'
    )
  where = f'cannot serve REST on {host_port(flags.host, flags.rest_api_port)}'
  reasons = {
    errno.EADDRINUSE: 'the port is in use (another server?); stop it or choose another '
    '--rest_api_port',
    errno.EACCES: 'permission denied (ports below 1024 need root); choose another --rest_api_port',
    errno.EADDRNOTAVAIL: f'{flags.host} is not an address of this machine; check --host',
  }
  if isinstance(error, OSError) and error.errno in reasons:
    return f'{where}: {reasons[error.errno]}'
  return None


def main(argv: list[str] | None = None) -> int:
  """Parses flags, serves until SIGTERM or SIGINT, drains, exits 0."""
  parser, flags = _flags(sys.argv[1:] if argv is None else argv)
  native_log = None
  if argv is None:  # the program itself, not a call from another one
    # Before TensorFlow is imported: its C++ start-up lines go to a log, not the console.
    from tfxlm import console

    native_log = console.default_log_path('serve')
    console.route_native_stderr(native_log)
  logging.basicConfig(
    level=flags.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s'
  )
  if native_log:
    log.info("TensorFlow's native log: %s", native_log)
  for line in ignored_flag_warnings(flags):
    log.warning('%s', line)
  sources = [
    bool(flags.model_base_path),
    bool(flags.model_config_file),
    bool(flags.model_base_path_root),
  ]
  if sum(sources) != 1:
    parser.error(
      'give exactly one of --model_base_path, --model_config_file and --model_base_path_root'
    )
  if flags.auth_token_file:
    from serving import auth

    try:
      auth.read_token(flags.auth_token_file)  # a bad file is a usage error
    except (OSError, ValueError) as e:
      parser.error(str(e))
  # Imported once the flags are known good: these pull in TensorFlow, which takes seconds.
  from serving import codec, memory, rest
  from serving import config as config_lib
  from serving import server as server_lib
  from serving.batching import BatchingOptions

  try:
    if flags.model_config_file:
      models = _read_flag_file(
        'model_config_file', flags.model_config_file, config_lib.parse_model_config_file
      )
    elif flags.model_base_path:
      models = [config_lib.ModelConfig(flags.model_name, os.path.abspath(flags.model_base_path))]
    else:
      models = []
    metrics_path = contract.METRICS_PATH
    if flags.monitoring_config_file:
      metrics_path = _read_flag_file(
        'monitoring_config_file',
        flags.monitoring_config_file,
        config_lib.parse_monitoring_config_file,
        contract.METRICS_PATH,
        (contract.HEALTH_PATH,),
      )
    batching = None
    if flags.enable_batching:
      batching = (
        _read_flag_file(
          'batching_parameters_file',
          flags.batching_parameters_file,
          config_lib.parse_batching_parameters_file,
        )
        if flags.batching_parameters_file
        else BatchingOptions()
      )
    options = server_lib.ServerOptions(
      host=flags.host,
      grpc_port=flags.port,
      rest_port=flags.rest_api_port or None,
      request_threads=flags.request_threads,
      max_queued_requests=flags.max_queued_requests,
      grpc_max_concurrent_rpcs=flags.grpc_max_concurrent_rpcs,
      grpc_max_connections=flags.grpc_max_connections,
      grpc_request_timeout_seconds=flags.grpc_request_timeout_seconds,
      max_request_bytes=flags.max_request_bytes,
      limits=codec.Limits(flags.max_request_elements, flags.max_request_string_bytes),
      rest_options=rest.RestOptions(
        max_connections=flags.rest_max_connections,
        header_timeout=flags.rest_header_timeout_seconds,
        body_timeout=flags.rest_body_timeout_seconds,
        max_json_depth=flags.max_json_depth,
        metrics_path=metrics_path,
      ),
      ssl_certfile=flags.ssl_certfile or None,
      ssl_keyfile=flags.ssl_keyfile or None,
      ssl_client_ca_file=flags.ssl_client_ca_file or None,
      auth_token_file=flags.auth_token_file or None,
      enable_model_management=flags.enable_model_management,
      drain_seconds=flags.drain_seconds,
      rest_timeout_seconds=flags.rest_timeout_seconds or None,
    )
    execution = memory.ExecutionOptions(
      memory_budget_bytes=flags.request_memory_budget_mb << 20,
      max_execution_batch_size=flags.max_execution_batch_size,
      split_large_batches=flags.large_batch_policy == 'split',
    )
  except (OSError, ValueError) as e:
    parser.error(str(e))
  # Before any model loads: TensorFlow fixes its thread pools at the first op.
  import tensorflow as tf

  if flags.tensorflow_intra_op_parallelism:
    tf.config.threading.set_intra_op_parallelism_threads(flags.tensorflow_intra_op_parallelism)
  if flags.tensorflow_inter_op_parallelism:
    tf.config.threading.set_inter_op_parallelism_threads(flags.tensorflow_inter_op_parallelism)
  server = server_lib.build(
    models,
    flags.model_base_path_root or None,
    batching,
    flags.file_system_poll_wait_seconds,
    options,
    flags.max_request_batch_size or None,
    execution,
  )
  if flags.monitoring_config_file and flags.rest_api_port:
    log.info(
      'Prometheus metrics: %s',
      f'GET {metrics_path} on the REST port'
      if metrics_path
      else f'none ({flags.monitoring_config_file} does not enable prometheus_config)',
    )
  stop = threading.Event()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())
  try:
    server.start()
  except (OSError, RuntimeError) as e:
    problem = _listen_problem(e, flags)  # `start` has stopped what it started
    if problem is None:
      raise
    print(f'error: {problem}', file=sys.stderr, flush=True)
    return 1
  print(serving_line(flags.host, server.grpc_port, server.rest_port), flush=True)
  while not stop.wait(1.0):
    pass
  log.info('shutting down: draining in-flight requests (up to %ss)', flags.drain_seconds)
  server.stop()
  log.info('stopped')
  return 0


if __name__ == '__main__':
  sys.exit(main())
