"""trainer/cpu_kernels.py's dropout and GELU against Keras' own, forward and backward.

    ./dev python bench/cpu_kernels_bench.py [--rounds 7] [--calls 20] [--quick]

Times, on the tensors of one transformer layer of the demo's classify step (all-MiniLM-L6-v2,
batches of 32 snippets of 32 tokens: hidden 1,024 x 384, attention 32 x 12 x 32 x 32, the GELU's
1,024 x 1,536), a traced forward and backward pass of:
- Keras' dropout (`keras.layers.Dropout(0.1)`, training) and the same layer inside
  `cpu_kernels.replaced()`, in float32 and bfloat16, on the hidden and the attention shapes;
- Keras' GELU (`keras.activations.gelu`, tanh form as keras-hub's BERT and GPT-2 use, and erf)
  and the same inside `cpu_kernels.replaced()`, in float32 and bfloat16.
Each round runs every case once, in rotating order; it prints the median milliseconds of a call
over the rounds (their range) and Keras / ours per case. Target (this bench's own; it serves
issue #28's loop targets): ours at least 1.0x Keras' in every case.
"""

import argparse
import statistics
import time

import keras
import tensorflow as tf

from trainer import cpu_kernels


def _timed(fn, x, calls):
  """Mean seconds of one of `calls` traced forward + backward passes of `fn` on `x`."""

  @tf.function(autograph=False)
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
    return tape.gradient(y, x)

  step(x)
  start = time.perf_counter()
  for _ in range(calls):
    result = step(x)
  result.numpy()
  return (time.perf_counter() - start) / calls


def _cases(quick: bool):
  scale = 8 if quick else 1
  hidden, attention, ffn = (1024 // scale, 384), (32 // scale, 12, 32, 32), (1024 // scale, 1536)
  cases = {}
  for dtype in ('float32', 'bfloat16'):
    for name, shape in (('hidden', hidden), ('attention', attention)):
      layer = keras.layers.Dropout(0.1, seed=1)
      cases[f'dropout {name} {dtype}'] = (
        lambda x, layer=layer: layer(x, training=True),
        tf.cast(tf.random.stateless_normal(shape, (1, 2)), dtype),
      )
  for dtype in ('float32', 'bfloat16'):
    for approximate in (True, False):
      form = 'tanh' if approximate else 'erf'
      cases[f'GELU {form} {dtype}'] = (
        lambda x, a=approximate: keras.activations.gelu(x, approximate=a),
        tf.cast(tf.random.stateless_normal(ffn, (3, 4)), dtype),
      )
  return cases


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--calls', type=int, default=20)
  parser.add_argument('--quick', action='store_true', help='small tensors, 2 rounds: a smoke run')
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.calls < 1:
    parser.error(f'--rounds and --calls must be at least 1, got {args.rounds} and {args.calls}')
  if args.quick:
    args.rounds, args.calls = min(args.rounds, 2), min(args.calls, 3)
  cases = _cases(args.quick)
  runs = [(name, side) for name in cases for side in ('keras', 'ours')]
  times = {run: [] for run in runs}
  for r in range(args.rounds + 1):  # round 0 traces and warms up
    shift = r % len(runs)
    for name, side in runs[shift:] + runs[:shift]:
      fn, x = cases[name]
      if side == 'ours':
        with cpu_kernels.replaced():
          seconds = _timed(fn, x, args.calls)  # traced inside: the graph holds ours
      else:
        seconds = _timed(fn, x, args.calls)
      if r:
        times[name, side].append(seconds * 1000)
  failed = 0
  for name in cases:
    keras_ms, ours_ms = times[name, 'keras'], times[name, 'ours']
    ratios = [k / o for k, o in zip(keras_ms, ours_ms)]
    ratio = statistics.median(ratios)
    ok = ratio >= 1.0
    failed += not ok
    print(
      f'{name:28s} Keras {statistics.median(keras_ms):6.2f} ms ({min(keras_ms):.2f}-'
      f'{max(keras_ms):.2f}), ours {statistics.median(ours_ms):6.2f} ms ({min(ours_ms):.2f}-'
      f'{max(ours_ms):.2f}): {ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) '
      f'{"PASS" if ok else "FAIL"} (target >= 1.0x)'
    )
  if args.quick:
    print('(--quick: small tensors, a smoke run; the targets apply to the full run only)')
    return 0
  return 1 if failed else 0


if __name__ == '__main__':
  raise SystemExit(main())
