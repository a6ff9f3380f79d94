"""Generation speed: the cached `generate` signature against the uncached one it replaced,
keras-hub's GPT2CausalLM.generate, and the same signature through the server over gRPC.

    ./dev python bench/generate_bench.py [--quick] [--repeats 3]

A causal LM of size `small` (4 layers, hidden 256) with random weights and seq_len 512, exported
by the trainer's code over a real Transform graph; prompts of 32 tokens ([SEP] + 31 words),
128 new tokens per row, greedy, at batch 1 and 8. The weights are edited so that [SEP] never
wins, so every row generates all 128 tokens on every path. Prints tokens/s per path and:
  (a) cached export / uncached (a full forward pass over the window per token, the algorithm
      `generate` had before: kept here only as the reference), target >= 5x at batch 1;
  (b) cached export / keras-hub's GPT2CausalLM.generate in this process, target >= 1.0x;
  (c) gRPC call time / in-process signature call time, target <= 1.2x.
Paths are timed in turn within each repeat and the median kept, so load from other processes
falls on both sides of a ratio alike; absolute figures on a shared machine are noisy.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import grpc  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving import client  # noqa: E402
from tests.trainer import generation_util, trainer_data  # noqa: E402
from tfxlm import contract  # noqa: E402
from trainer import config as config_lib  # noqa: E402
from trainer import models  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROMPT_TOKENS = 32
SEQ_LEN = 512
UNCACHED_TOKENS = 16


def uncached_generate(model, seq_len):
  """The former `generate` on token ids: the whole window through the model for every token."""

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32)])
  def run(prompt, max_new_tokens):
    batch = tf.shape(prompt)[0]
    lengths = tf.fill([batch], tf.shape(prompt)[1])
    window = tf.pad(prompt, [[0, 0], [0, seq_len - tf.shape(prompt)[1]]])
    banned = tf.constant(
      [i in generation_util.BANNED_IDS for i in range(model.backbone.vocabulary_size)]
    )

    def body(i, window, lengths, generated):
      logits = model(
        {models.TOKEN_IDS: window, models.PADDING_MASK: tf.ones_like(window)}, training=False
      )
      last = tf.gather(logits, lengths - 1, batch_dims=1)
      token = tf.argmax(tf.where(banned[tf.newaxis], -1e9, last), axis=-1, output_type=tf.int32)
      window = tf.tensor_scatter_nd_update(
        window, tf.stack([tf.range(batch), lengths], axis=1), token
      )
      return i + 1, window, lengths + 1, generated.write(i, token)

    _, _, _, generated = tf.while_loop(
      lambda i, *_: i < max_new_tokens,
      body,
      (0, window, lengths, tf.TensorArray(tf.int32, size=max_new_tokens)),
    )
    return tf.transpose(generated.stack())

  return run


def _paths(signature, columns, uncached, ids, causal_lm, grpc_client, rows, new_tokens):
  """name -> (a call, the tokens it generates per row) for each path compared.

  The uncached path generates UNCACHED_TOKENS: each of its steps runs the whole window whatever
  the position, so its tokens/s does not depend on how many it generates, and 128 at batch 8
  would take minutes.
  """
  padded = np.pad(ids, [[0, 0], [0, new_tokens]])
  mask = np.pad(np.ones_like(ids, bool), [[0, 0], [0, new_tokens]])
  return {
    'cached export': (lambda: signature(**columns), new_tokens),
    'uncached': (lambda: uncached(tf.constant(ids), tf.constant(UNCACHED_TOKENS)), UNCACHED_TOKENS),
    'keras-hub generate': (
      lambda: causal_lm.generate({'token_ids': padded, 'padding_mask': mask}, stop_token_ids=None),
      new_tokens,
    ),
    'cached over gRPC': (lambda: grpc_client.generate('gen', rows), new_tokens),
  }


def start_server(base):
  process = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'serving',
      '--model_name',
      'gen',
      '--model_base_path',
      base,
      '--port',
      '0',
      '--rest_api_port',
      '0',
      '--file_system_poll_wait_seconds',
      '0',
    ],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
  )
  for line in process.stdout:
    if line.startswith('SERVING '):
      return process, line.split()[1].split('=', 1)[1]
  raise RuntimeError(f'the server exited with {process.wait()}')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='16 new tokens, one repeat')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  new_tokens = 16 if args.quick else 128
  repeats = 1 if args.quick else args.repeats

  work = tempfile.mkdtemp(prefix='generate_bench_')
  data = trainer_data.transform_data(
    work, contract.CLM, trainer_data.corpus_texts(100, 1), trainer_data.corpus_texts(10, 2), SEQ_LEN
  )
  vocab = data['vocab']
  config = config_lib.TrainerConfig(
    task=contract.CLM, model_size='small', seq_len=SEQ_LEN, dropout=0.0
  )
  keras.utils.set_random_seed(1)
  model = models.build_model(config.task, models.build_backbone(config, len(vocab)))
  # No [SEP], and no suffix pieces either, so every row's text has one word per new token.
  suffixes = [i for i, token in enumerate(vocab) if token.startswith('##')]
  generation_util.never_predict(
    model.backbone, generation_util.BANNED_IDS + [contract.SEP_ID] + suffixes
  )
  base = os.path.join(work, 'serving', 'gen')
  export_dir = generation_util.export_clm(
    model, config, data['transform_graph'], os.path.join(base, '1')
  )
  signature = tf.saved_model.load(export_dir).signatures[contract.GENERATE]
  uncached = uncached_generate(model, SEQ_LEN)
  causal_lm = keras_hub.models.GPT2CausalLM(backbone=model.backbone, preprocessor=None)
  causal_lm.compile(sampler='greedy')
  server, target = start_server(base)
  grpc_client = client.GrpcClient(target, timeout=600)

  words = trainer_data.FILLER
  rng = np.random.default_rng(0)
  results = {}
  try:
    for batch in (1, 8):
      prompts = [' '.join(rng.choice(words, PROMPT_TOKENS - 1)) for _ in range(batch)]
      ids = np.array(
        [[contract.SEP_ID] + [vocab.index(w) for w in p.split()] for p in prompts], np.int32
      )
      rows = client.generation_rows(prompts, new_tokens)
      columns = {k: tf.constant([r[k] for r in rows]) for k in rows[0]}
      paths = _paths(signature, columns, uncached, ids, causal_lm, grpc_client, rows, new_tokens)
      check = signature(**columns)[contract.GENERATED_TEXT].numpy()
      assert all(len(t.split()) == new_tokens for t in check), 'a row stopped early'
      times = {name: [] for name in paths}
      for run, _ in paths.values():  # warm-up: tracing, keras-hub's compile
        run()
      for _ in range(repeats):
        for name, (run, _) in paths.items():
          started = time.perf_counter()
          run()
          times[name].append(time.perf_counter() - started)
      for name, values in times.items():
        seconds = float(np.median(values))
        results[(batch, name)] = batch * paths[name][1] / seconds
        print(
          f'batch {batch}: {name:>20}: {results[(batch, name)]:8.1f} tokens/s '
          f'({seconds:.3f} s per call of {paths[name][1]} tokens)',
          flush=True,
        )
  finally:
    server.terminate()
    server.wait(timeout=30)
    grpc_client.channel.close()

  print(
    f'\n{new_tokens} new tokens after {PROMPT_TOKENS}, model small, seq_len {SEQ_LEN}, '
    f'vocabulary {len(vocab)}; median of {repeats}:'
  )
  ok = True
  for batch in (1, 8):
    cached = results[(batch, 'cached export')]
    a = cached / results[(batch, 'uncached')]
    b = cached / results[(batch, 'keras-hub generate')]
    c = cached / results[(batch, 'cached over gRPC')]
    print(
      f'batch {batch}: (a) cached / uncached {a:.1f}x   (b) cached / keras-hub {b:.2f}x   '
      f'(c) gRPC / in-process time {c:.2f}x  (tokens/s ratios)'
    )
    if batch == 1 and not args.quick:
      ok = ok and a >= 5.0
  return 0 if ok else 1


if __name__ == '__main__':
  try:
    sys.exit(main())
  except grpc.RpcError as e:
    print(f'error: {e.code().name}: {e.details()}', file=sys.stderr)
    sys.exit(1)
