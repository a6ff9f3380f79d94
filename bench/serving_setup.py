"""What bench/serving_bench.py serves and calls: the model (the toy, one of the demo's shape, or
a pushed one), its requests, the server processes (this tree's and a baseline commit's) and
batch-1 callers of each front end."""

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench import server_process
from serving import codec
from tests.serving import toy_model
from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = 'bench'
SIZES = dict(vocab_size=2000, hidden=64, num_layers=12, seq_len=32)
TEXT = (
  'the plot was thin and the pacing slow, but the lead actor carried every scene with a'
  ' warmth that made the ending land'
)


def percentiles(seconds):
  """p50 and p99 in milliseconds of a list of durations in seconds."""
  ms = np.array(seconds) * 1e3
  return {
    'p50_ms': float(np.percentile(ms, 50)),
    'p99_ms': float(np.percentile(ms, 99)),
    'n': len(ms),
  }


class Payload:
  """The signature a bench request calls and its batch-1 inputs, for any pushed model."""

  def __init__(self, version_dir):
    signatures = tf.saved_model.load(version_dir).signatures
    self.signature_name = 'predict_text' if 'predict_text' in signatures else 'serving_default'
    self.function = signatures[self.signature_name]
    (self.key,) = self.function.structured_input_signature[1]
    self.examples = self.key == contract.EXAMPLES_INPUT

  def values(self, n, text=TEXT):
    """n rows: raw strings, or serialized tf.Examples for an `examples` input."""
    if self.examples:
      one = codec.text_example(text).SerializeToString()
      return [one] * n
    return [text.encode()] * n

  def request(self, n, text=TEXT):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = self.signature_name
    request.inputs[self.key].CopyFrom(tf.make_tensor_proto(self.values(n, text)))
    return request

  def json_body(self, n=1):
    if self.examples:
      rows = [{'b64': base64.b64encode(v).decode()} for v in self.values(n)]
    else:
      rows = [v.decode() for v in self.values(n)]
    return json.dumps({'signature_name': self.signature_name, 'instances': rows})

  def in_process(self):
    tensor = tf.constant(self.values(1))
    return lambda: self.function(**{self.key: tensor})


class ServerProcess:
  """`python -m serving` from `tree` on free loopback ports, until stop()."""

  def __init__(self, base, log_dir, extra=(), tree=REPO, name='new'):
    self.name = name
    self.grpc_port, self.rest_port = server_process.free_port(), server_process.free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=tree)
    self.log_path = os.path.join(log_dir, f'{name}-server.log')
    self._log = open(self.log_path, 'w')
    self.proc = subprocess.Popen(
      [
        sys.executable,
        '-m',
        'serving',
        f'--port={self.grpc_port}',
        f'--rest_api_port={self.rest_port}',
        f'--model_name={MODEL}',
        f'--model_base_path={base}',
        '--file_system_poll_wait_seconds=0',
        '--log_level=INFO',
        *extra,
      ],
      stdout=subprocess.PIPE,
      stderr=self._log,
      text=True,
      cwd=tree,
      env=env,
    )
    line = self.proc.stdout.readline()
    if not line.startswith('SERVING'):
      self.proc.kill()
      raise RuntimeError(f'{name} server did not start: {line!r}')

  def status_kib(self, field):
    with open(f'/proc/{self.proc.pid}/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
    raise RuntimeError(f'no {field} for {self.proc.pid}')

  def reset_peak(self):
    with open(f'/proc/{self.proc.pid}/clear_refs', 'w') as f:
      f.write('5')

  def healthy(self):
    try:
      connection = http.client.HTTPConnection('127.0.0.1', self.rest_port, timeout=10)
      connection.request('GET', '/healthz')
      return connection.getresponse().status == 200
    except OSError:
      return False

  def sizing(self):
    """The server's log lines on the rows of one call (serving/memory.py)."""
    with open(self.log_path) as f:
      return [line.split(': ', 1)[-1].strip() for line in f if 'rows per call' in line]

  def stop(self):
    self.proc.terminate()
    try:
      self.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      self.proc.kill()
    self._log.close()


def grpc_caller(port, payload):
  """A batch-1 gRPC Predict to the server on `port`, as a call of no argument."""
  stub = prediction_service_pb2_grpc.PredictionServiceStub(
    grpc.insecure_channel(f'127.0.0.1:{port}')
  )
  request = payload.request(1)
  return lambda: stub.Predict(request, timeout=60)


def rest_caller(port, payload):
  """A batch-1 REST predict on one kept-alive connection, as a call of no argument."""
  connection = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
  body = payload.json_body()

  def call():
    connection.request(
      'POST', f'/v1/models/{MODEL}:predict', body, {'Content-Type': 'application/json'}
    )
    response = connection.getresponse()
    response.read()
    if response.status != 200:
      raise RuntimeError(f'HTTP {response.status}')

  return call


def baseline_tree(ref, where):
  """The server of commit `ref`, extracted from this repository's history."""
  tree = os.path.join(where, f'baseline-{ref}')
  os.makedirs(tree)
  archive = subprocess.run(
    ['git', 'archive', ref], cwd=REPO, capture_output=True, check=True
  ).stdout
  subprocess.run(['tar', '-x', '-C', tree], input=archive, check=True)
  return tree


# The demo's next model (all-MiniLM-L6-v2 fine-tuned): a 6-layer, hidden-384 BERT.
MINILM = dict(num_layers=6, hidden_dim=384, num_heads=12, intermediate_dim=1536)


def _demo_shaped(work, seq_len):
  """A classifier of the demo's next model's shape, exported by the pipeline's own trainer
  code (TF Transform graph, tensorflow-text tokenizer, keras-hub BertBackbone), trained two
  steps on the trainer tests' generated data: its vocabulary is theirs (a few hundred words,
  not MiniLM's 30,522, so its weights are ~45 MB lighter; activations, which the memory
  budget is about, are the same). Returns the version folder."""
  from tests.trainer import trainer_data
  from trainer import task

  data = trainer_data.transform_data(
    os.path.join(work, 'transform'),
    contract.CLASSIFY,
    trainer_data.labeled_texts(600, 1),
    trainer_data.labeled_texts(128, 2),
    seq_len,
  )
  config = trainer_data.tiny_config(
    contract.CLASSIFY,
    **MINILM,
    seq_len=seq_len,
    per_replica_batch_size=8,
    train_steps=2,
    eval_steps=1,
    eval_every_steps=2,
    log_every_steps=1,
    checkpoint_every_steps=2,
    warmup_steps=1,
  )
  args = trainer_data.fn_args(data, os.path.join(work, 'train'), config)
  task.run_fn(args)
  version = os.path.join(work, MODEL, '1')
  shutil.copytree(args.serving_model_dir, version)
  return version


def model_base(args, work):
  """(model base path, a version folder) of the model to serve."""
  if args.demo_shaped:
    # Built once, then reused (bench/results/ is not versioned).
    kept = os.path.join(REPO, 'bench', 'results', f'demo_shaped_seq{args.demo_seq_len}')
    version = os.path.join(kept, MODEL, '1')
    if not os.path.exists(os.path.join(version, 'saved_model.pb')):
      shutil.rmtree(kept, ignore_errors=True)
      built = _demo_shaped(os.path.join(work, 'build'), args.demo_seq_len)
      shutil.copytree(built, version)
    return os.path.dirname(version), version
  if args.model_path:
    path = os.path.abspath(args.model_path)
    if os.path.exists(os.path.join(path, 'saved_model.pb')):
      base = os.path.join(work, 'model')
      os.makedirs(base)
      os.symlink(path, os.path.join(base, '1'))
      return base, path
    versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
    if not versions:
      raise SystemExit(f'--model_path {path}: no saved_model.pb and no numbered version folder')
    return path, os.path.join(path, versions[-1])
  sizes = {key: getattr(args, key) for key in SIZES}
  version = toy_model.export(work, MODEL, 1, seed=1, **sizes)
  return os.path.dirname(version), version
