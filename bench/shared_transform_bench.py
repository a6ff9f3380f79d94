"""One Transform for pretraining and classification vs one per stage, side by side.

    ./dev python bench/shared_transform_bench.py [--rows 12000] [--repeats 1] [--train-steps 20]

Generates labeled review-like rows (a CSV, in a temporary folder), then runs two LocalDagRunner
pipelines over them, each in a fresh process, alternating. Both are `pipeline.factory`'s
`create_pipeline` for an mlm pretrain stage and a classify stage, run up to the Trainers (a
partial run: no Evaluator, no Pusher):

- `two`: ExampleGen, the data checks (StatisticsGen, ImportSchemaGen, ExampleValidator),
  Vocabulary, a classify Transform and an mlm PretrainTransform (`share_transform=False`: what
  the factory built before the stages shared one), then the mlm PretrainTrainer and the classify
  Trainer warm-started from it;
- `one`: the same, with one classify Transform that also outputs the mlm pieces (what the
  factory builds by default) feeding both Trainers.

Prints each component's seconds (from ML Metadata), the Transform seconds and wall time of each
variant, the saving and the bytes of transformed examples written. `--train-steps 0` stops the
runs after the Transforms. Beam runs in process (`--direct_running_mode=in_memory`), as local
runs of small inputs do.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from tfxlm import contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = ('two', 'one')
_POSITIVE = ('good', 'great', 'fine', 'superb', 'moving', 'clever', 'warm', 'fresh')
_NEGATIVE = ('bad', 'awful', 'dull', 'weak', 'flat', 'tired', 'silly', 'rotten')
_FILLER = (
  'the a an film movie story actor actress plot scene music ending director camera light dark '
  'night day world people time life script cast role performance screen audience character '
  'drama comedy thriller minutes hour first last never always really quite very rather often '
  'and but with without of in on at for from by about into over after before'
).split()
_BACKBONE = {'num_layers': 2, 'hidden_dim': 32, 'num_heads': 2, 'intermediate_dim': 64}


def write_reviews(path: str, rows: int, seed: int = 0) -> int:
  """`rows` labeled reviews of 15-45 words; returns the file's size in bytes."""
  rng = random.Random(seed)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['label', 'text'])
    for _ in range(rows):
      label = rng.choice(('1', '0'))  # the labels of the default schema (schemas/labeled)
      words = [rng.choice(_FILLER) for _ in range(rng.randint(15, 45))]
      for _ in range(rng.randint(1, 3)):
        words.insert(
          rng.randint(0, len(words)), rng.choice(_POSITIVE if label == '1' else _NEGATIVE)
        )
      writer.writerow([label, ' '.join(words).capitalize() + '.'])
  return os.path.getsize(path)


def variant_config(variant: str, data: str, root: str, train_steps: int):
  """The pipeline config of a run: the reviews as labeled CSV, a 2,000-token vocabulary, an mlm
  pretrain stage warm-starting a classify stage, a tiny backbone."""
  from pipeline import config as config_lib

  stage = {
    'seq_len': 64,
    'per_replica_batch_size': 16,
    'train_steps': max(1, train_steps),
    'eval_steps': 2,
    'eval_every_steps': max(1, train_steps),
    'log_every_steps': max(1, train_steps),
    'checkpoint_every_steps': max(1, train_steps),
    **_BACKBONE,
  }
  return config_lib.from_dict(
    {
      'pipeline_name': f'shared-transform-{variant}',
      'outputs_dir': root,
      'enable_cache': False,
      'data': {
        'format': contract.CSV,
        'input_base': data,
        'text_column': 'text',
        'label_column': 'label',
      },
      'vocabulary': {'size': 2000},
      'pretrain': {**stage, 'task': contract.MLM},
      'train': {**stage, 'task': contract.CLASSIFY},
    }
  )


def run_variant(variant: str, data: str, root: str, train_steps: int) -> dict:
  """Runs one variant's pipeline, `pipeline.factory.create_pipeline`'s up to the Transforms (or
  the Trainers); returns its wall time, component seconds and output bytes."""
  from tfx import v1 as tfx
  from tfx.dsl.compiler import compiler
  from tfx.proto.orchestration import pipeline_pb2

  from pipeline import factory, run_metadata

  config = variant_config(variant, data, root, train_steps)
  metadata_path = os.path.join(root, 'metadata.sqlite')
  pipeline = factory.create_pipeline(
    config,
    pipeline_root=os.path.join(root, 'root'),
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
      metadata_path
    ),
    beam_pipeline_args=['--direct_running_mode=in_memory'],
    share_transform=variant == 'one',
  )
  # The run stops after these and what they need (the data checks and the vocabulary included):
  # the evaluation and the push are not what this bench compares.
  last = [contract.TRAINER_ID] if train_steps else [contract.TRANSFORM_ID]
  if variant == 'two' and not train_steps:
    last.append(contract.PRETRAIN_TRANSFORM_ID)
  options = pipeline_pb2.RunOptions()
  options.partial_run.to_nodes.extend(last)
  started = time.perf_counter()
  tfx.orchestration.LocalDagRunner().run_with_ir(
    compiler.Compiler().compile(pipeline), run_options=options
  )
  wall = time.perf_counter() - started
  seconds = {}
  for run in run_metadata.component_runs(run_metadata.open_store(metadata_path)):
    seconds[run.name] = seconds.get(run.name, 0.0) + run.seconds
  written = 0
  for transform_id in (contract.TRANSFORM_ID, contract.PRETRAIN_TRANSFORM_ID):
    folder = os.path.join(root, 'root', transform_id, 'transformed_examples')
    for dirpath, _, files in os.walk(folder):
      written += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
  return {'wall_seconds': wall, 'components': seconds, 'transformed_bytes': written}


def _child(variant: str, data: str, root: str, train_steps: int) -> dict:
  """Runs `variant` in a fresh process, so neither variant inherits the other's warm imports."""
  out = os.path.join(root, 'result.json')
  subprocess.run(
    [
      sys.executable,
      os.path.abspath(__file__),
      '--child',
      variant,
      '--data',
      data,
      '--root',
      root,
      '--train-steps',
      str(train_steps),
      '--out',
      out,
    ],
    check=True,
    cwd=REPO,
  )
  with open(out, encoding='utf-8') as f:
    return json.load(f)


def _transform_seconds(result: dict) -> float:
  return sum(
    result['components'].get(c, 0.0)
    for c in (contract.TRANSFORM_ID, contract.PRETRAIN_TRANSFORM_ID)
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', type=int, default=12000, help='labeled reviews to generate')
  parser.add_argument('--repeats', type=int, default=1, help='runs of each variant, alternating')
  parser.add_argument('--train-steps', type=int, default=20, help='0 leaves the Trainers out')
  parser.add_argument('--child', choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument('--data', help=argparse.SUPPRESS)
  parser.add_argument('--root', help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    result = run_variant(args.child, args.data, args.root, args.train_steps)
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(result, f)
    return 0

  with tempfile.TemporaryDirectory(prefix='shared_transform_bench_') as tmp:
    data = os.path.join(tmp, 'data')
    os.makedirs(data)
    size = write_reviews(os.path.join(data, 'reviews.csv'), args.rows)
    print(f'{args.rows} reviews, {size / 1e6:.2f} MB of CSV; {os.cpu_count()} cores')
    results = {variant: [] for variant in VARIANTS}
    for repeat in range(args.repeats):
      for variant in VARIANTS:
        root = os.path.join(tmp, f'{variant}-{repeat}')
        results[variant].append(_child(variant, data, root, args.train_steps))

  def mean(values):
    return sum(values) / len(values)

  nodes = sorted({n for runs in results.values() for r in runs for n in r['components']})
  print(f'\n{"component (mean s)":<24}' + ''.join(f'{v + " Transform(s)":>18}' for v in VARIANTS))
  for node in nodes:
    row = ''.join(
      f'{mean([r["components"].get(node, 0.0) for r in results[v]]):>18.1f}' for v in VARIANTS
    )
    print(f'{node:<24}{row}')
  for v in VARIANTS:
    runs = ', '.join(
      f'{_transform_seconds(r):.1f} s / {r["wall_seconds"]:.1f} s' for r in results[v]
    )
    print(f'{v}: Transform / wall time of each run: {runs}')
  transform = {v: mean([_transform_seconds(r) for r in results[v]]) for v in VARIANTS}
  wall = {v: mean([r['wall_seconds'] for r in results[v]]) for v in VARIANTS}
  written = {v: results[v][0]['transformed_bytes'] for v in VARIANTS}
  print(
    f'\nTransform total: two {transform["two"]:.1f} s, one {transform["one"]:.1f} s; '
    f'saved {transform["two"] - transform["one"]:.1f} s '
    f'({transform["one"] / transform["two"]:.2f}x the time)'
  )
  print(
    f'pipeline wall: two {wall["two"]:.1f} s, one {wall["one"]:.1f} s; '
    f'saved {wall["two"] - wall["one"]:.1f} s ({wall["one"] / wall["two"]:.2f}x)'
  )
  print(
    f'transformed examples written: two {written["two"] / 1e6:.2f} MB, '
    f'one {written["one"] / 1e6:.2f} MB'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
