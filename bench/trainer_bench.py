"""Trainer throughput: the real input path against in-memory batches, float32 against bfloat16.

    ./dev python bench/trainer_bench.py [--quick] [--task mlm] [--rounds 6] [--steps 10]

1. Generates a corpus (texts from a fixed Markov chain over a small word list) and runs TF
   Transform over it with the project's `preprocessing_fn` (tests/trainer/trainer_data.py), which
   writes gzipped TFRecords of transformed examples as TFX's Transform does.
2. For each precision (float32, mixed_bfloat16) builds the trainer's model (BertBackbone 'small':
   4 layers, hidden 256, for mlm; GPT2Backbone for clm), its optimizer and the training loop of
   `trainer/training.py`, then trains on two inputs:
   - real: `trainer/inputs.py` over the TFRecords (read, parse, chunk or pack, mask, batch);
   - memory: the same number of batches taken from that pipeline once, held as tensors and
     replayed (no input work at all).
   The two alternate in rounds of `--steps` train steps, so load from other processes on the
   machine falls on both alike; the first step of each is left out (tracing).
3. Prints tokens/second (non-padding input tokens) of each, the ratio real / memory (target
   >= 0.9) and bfloat16 / float32 on the real path, and writes bench/results/trainer.json.
"""

import argparse
import json
import os
import tempfile
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft

from tests.trainer import trainer_data  # the test helpers that run a real Transform
from tfxlm import contract
from trainer import inputs, optimization, task, training
from trainer.config import TrainerConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def _loop(config, vocabularies, run_dir):
  strategy = tf.distribute.get_strategy()
  keras.mixed_precision.set_global_policy(config.precision)
  try:
    model = task.build_task_model(config, vocabularies)
    optimizer = optimization.create_optimizer(
      model, learning_rate=config.learning_rate, total_steps=10_000, warmup_steps=100
    )
    optimizer.build(model.trainable_variables)
  finally:
    keras.mixed_precision.set_global_policy(contract.FLOAT32)
  return training.Loop(strategy, model, optimizer, config, run_dir)


def _time_steps(loop, iterator, steps):
  """(tokens, seconds) of `steps` train steps."""
  started = time.perf_counter()
  tokens = 0.0
  for _ in range(steps):
    sums = loop._train_step(iterator)
    tokens += float(sums[3])
  return tokens, time.perf_counter() - started


def measure(config, data, vocabularies, rounds, steps, work_dir):
  """Tokens/second of the real input path and of replayed in-memory batches."""
  tft_output = tft.TFTransformOutput(data['transform_graph'])
  real = inputs.make_dataset(
    data['train_files'],
    tft_output.transformed_feature_spec(),
    config,
    vocab_size=len(vocabularies.tokens),
    batch_size=config.per_replica_batch_size,
    training=True,
    seed=config.seed,
  )
  cached = list(real.take(steps))
  stacked = tf.nest.map_structure(lambda *t: tf.stack(t), *cached)
  memory = tf.data.Dataset.from_tensor_slices(stacked).repeat()
  loop = _loop(config, vocabularies, os.path.join(work_dir, config.precision))
  iterators = {'real': iter(real), 'memory': iter(memory)}
  totals = {name: [0.0, 0.0] for name in iterators}
  for iterator in iterators.values():
    _time_steps(loop, iterator, 2)  # tracing and warm-up
  for _ in range(rounds):
    for name, iterator in iterators.items():
      tokens, seconds = _time_steps(loop, iterator, steps)
      totals[name][0] += tokens
      totals[name][1] += seconds
  return {name: tokens / seconds for name, (tokens, seconds) in totals.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='tiny model and data: a smoke run')
  parser.add_argument('--task', default=contract.MLM, choices=(contract.MLM, contract.CLM))
  parser.add_argument('--rounds', type=int, default=6)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--documents', type=int, default=6000)
  args = parser.parse_args()
  if args.quick:
    size = {
      'num_layers': 2,
      'hidden_dim': 32,
      'num_heads': 2,
      'intermediate_dim': 64,
      'seq_len': 32,
      'per_replica_batch_size': 16,
    }
    args.rounds, args.steps, args.documents = 2, 5, 600
  else:
    size = {'model_size': 'small', 'seq_len': 128, 'per_replica_batch_size': 32}

  work_dir = tempfile.mkdtemp(prefix='trainer_bench_')
  started = time.perf_counter()
  data = trainer_data.transform_data(
    os.path.join(work_dir, 'data'),
    args.task,
    trainer_data.corpus_texts(args.documents, 1),
    trainer_data.corpus_texts(50, 2),
    size['seq_len'],
  )
  print(f'Transform of {args.documents} documents: {time.perf_counter() - started:.1f} s')
  vocabularies = task.Vocabularies.from_tft_output(
    tft.TFTransformOutput(data['transform_graph']), args.task
  )

  results = {'task': args.task, 'size': size, 'rounds': args.rounds, 'steps': args.steps}
  for precision in ('float32', 'mixed_bfloat16'):
    config = TrainerConfig(task=args.task, precision=precision, dropout=0.0, **size)
    speeds = measure(config, data, vocabularies, args.rounds, args.steps, work_dir)
    results[precision] = speeds
    print(
      f'{precision:>15}: real input {speeds["real"]:9,.0f} tokens/s   in-memory '
      f'{speeds["memory"]:9,.0f} tokens/s   real / memory {speeds["real"] / speeds["memory"]:.3f}'
      ' (target >= 0.9)'
    )
  ratio = results['mixed_bfloat16']['real'] / results['float32']['real']
  results['bfloat16_over_float32'] = ratio
  print(f'mixed_bfloat16 / float32 on the real input path: {ratio:.2f}x')
  if not args.quick:
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    with open(os.path.join(HERE, 'results', 'trainer.json'), 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
