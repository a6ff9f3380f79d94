"""Tokenization at 10 MB, 100 MB and 1 GB: ExampleGen + Transform end to end vs bare tokenizers.

    ./dev python bench/transform_bench.py [--sizes 10,100,1000] [--json results.json]

For each size (MB of UTF-8 text, smallest first):
1. Generates a corpus of English-like text (a Zipf-distributed word list, sentences with capitals,
   commas and end marks, a few accented words; one document per line) in a temporary folder,
   written block by block so that no corpus sits in memory.
2. Times, on one core, on the first `--sample-mb` MB of that corpus: tensorflow-text
   FastBertTokenizer alone (the bare op), the preprocessing graph (normalization as vocab.json
   says + FastBertTokenizer), and Hugging Face `tokenizers` BertWordPieceTokenizer with one thread;
   each rate over wall time (what the ratios use) and over the process's CPU time (which other
   load on the machine inflates less).
3. Runs a LocalDagRunner pipeline (`pipeline.factory.create_transform_pipeline`: text
   ExampleGen, the corpus schema, the vocabulary imported, Transform with task 'mlm') with the
   Beam arguments `pipeline/local_runner.py` chooses for that input, times ExampleGen and
   Transform from ML Metadata, and samples the resident memory and the CPU time of the whole
   process tree (Beam workers included) every 0.25 s (`bench/process_tree.py`).
The corpus (`bench/corpus.py`) is generated per size; the vocabulary is learned once, from the
first 10 MB of the smallest corpus, with the Vocabulary component's plain functions. The targets
and the report are `bench/transform_verdicts.py`'s.

It prints per size the time, MB/s and peak memory (tree sum and largest process) of each stage,
the ratios, and the targets of issue #16 with PASS/FAIL:
- end to end / HF single thread: ExampleGen + Transform MB/s over HF's one-thread MB/s,
  >= 2 at `--base-mb` (100);
- end to end per worker / bare op: ExampleGen + Transform MB/s per Beam worker over the bare
  FastBertTokenizer's one-core MB/s (the share of the op's speed that survives the pipeline),
  >= 0.30 at `--top-mb` (1000);
- memory growth: peak tree RSS at `--top-mb` over that at `--base-mb`, <= 1.2;
- time growth: end-to-end seconds at `--top-mb` over those at `--base-mb`, <= 10.5.
The first two also over CPU time (MB per CPU-second of the pipeline's process tree over the
tokenizers' MB per CPU-second; no target): what a byte costs, which a loaded machine inflates
far less than the wall-time ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from bench import corpus as corpus_lib
from bench import process_tree
from bench import transform_verdicts as verdicts
from bench.corpus import MB
from bench.transform_verdicts import (
  BARE,
  END_TO_END,
  EXAMPLE_GEN,
  GRAPH,
  HF,
  HF_RATIO,
  NORMALIZATION,
  POOL_START,
  TRANSFORM,
  WORKER_RATIO,
)
from tfxlm import contract

DEFAULT_SIZES_MB = (10.0, 100.0, 1000.0)

# ---- Child process roles (each prints one JSON line last) ----


def _role_tokenizers(corpus: str, vocab_dir: str, batch: int, sample_bytes: int) -> dict:
  """One core, the first `sample_bytes` of `corpus`: the bare FastBertTokenizer, the
  preprocessing graph, its normalization alone, and HF BertWordPieceTokenizer."""
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  import tensorflow_text as tf_text
  from tokenizers import BertWordPieceTokenizer

  from trainer import vocabulary

  lines = list(corpus_lib.iter_lines(corpus, sample_bytes))
  size = sum(len(line.encode()) for line in lines) + len(lines)
  vocab = vocabulary.Vocabulary.read(vocab_dir)
  tokens = list(vocab.tokens)
  batches = [lines[i : i + batch] for i in range(0, len(lines), batch)]
  results = {'bytes': size}

  def run_tf(name, fn):
    fn = tf.function(fn)
    tensors = [tf.constant(b) for b in batches]
    fn(tensors[0])
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    for t in tensors:
      count += int(fn(t))  # int() waits for the result.
    results[name] = {
      'seconds': time.perf_counter() - started,
      'cpu_seconds': time.process_time() - cpu,
      'tokens': count,
    }

  bare = tf_text.FastBertTokenizer(
    vocab=tokens, token_out_type=tf.int64, lower_case_nfd_strip_accents=True
  )
  run_tf(BARE, lambda x: tf.size(bare.tokenize(x).flat_values))
  graph_tokenizer = vocab.tokenizer()
  run_tf(GRAPH, lambda x: tf.size(vocab.tokenize(x, graph_tokenizer).flat_values))
  normalization = vocab.normalization
  run_tf(
    NORMALIZATION,
    lambda x: tf.reduce_sum(tf.strings.length(vocabulary.normalize(x, **normalization))),
  )

  hf = BertWordPieceTokenizer(
    os.path.join(vocab_dir, contract.VOCAB_FILE),
    clean_text=True,
    handle_chinese_chars=True,
    strip_accents=True,
    lowercase=True,
  )
  started, cpu = time.perf_counter(), time.process_time()
  count = 0
  for b in batches:
    count += sum(len(e.ids) for e in hf.encode_batch(b, add_special_tokens=False))
  results[HF] = {
    'seconds': time.perf_counter() - started,
    'cpu_seconds': time.process_time() - cpu,
    'tokens': count,
  }
  return results


def pipeline_config(corpus: str, root: str, workers: int, shuffle: bool):
  """The pipeline config of a benchmark run: `corpus` as unlabeled text, one document per line,
  an 'mlm' Trainer (what Transform tokenizes for); `workers` 0 lets the runner choose."""
  from pipeline import config as config_lib

  return config_lib.from_dict(
    {
      'pipeline_name': 'transform-bench',
      'outputs_dir': root,
      'enable_cache': False,
      'data': {
        'format': contract.TEXT,
        'input_base': corpus,
        'label_column': None,
        'text_mode': contract.LINE,
        'shuffle': shuffle,
      },
      'train': {'task': contract.MLM, 'seq_len': 128, 'train_steps': 2, 'eval_steps': 1},
      'beam': {'direct_num_workers': workers},
    }
  )


def beam_workers(beam_args: list[str]) -> int:
  """How many workers tokenize in parallel under `beam_args` (1 when Beam runs in-process)."""
  values = dict(a.split('=', 1) for a in beam_args if a.startswith('--') and '=' in a)
  if values.get('--direct_running_mode', 'in_memory') == 'in_memory':
    return 1
  return int(values.get('--direct_num_workers', '0')) or os.cpu_count() or 1


def _role_pipeline(corpus: str, vocab_dir: str, root: str, workers: int, shuffle: bool) -> dict:
  """ExampleGen + Transform under LocalDagRunner with local_runner's Beam arguments; each stage's
  time window (epoch seconds) from ML Metadata."""
  from tfx import v1 as tfx

  from pipeline import beam_pool, factory, local_runner, run_metadata

  config = pipeline_config(corpus, root, workers, shuffle)
  # As a local run does: multi-process Beam gets the run's warm worker pool, whose start-up (each
  # pool process importing the stack) counts in the end-to-end time.
  pool = beam_pool.WorkerPool()
  pool_started = time.time()
  args = pool.pipeline_args(local_runner.beam_args(config))
  pool_ready = time.time()
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
  pipeline = factory.create_transform_pipeline(
    config,
    vocabulary_dir=vocab_dir,
    pipeline_root=config.pipeline_root,
    metadata_connection_config=connection,
    beam_pipeline_args=args,
    input_base=corpus,
  )
  started = time.time()
  with pool:
    tfx.orchestration.LocalDagRunner().run(pipeline)
  ended = time.time()
  names = {contract.EXAMPLE_GEN_ID: EXAMPLE_GEN, contract.TRANSFORM_ID: TRANSFORM}
  stages = {
    names[run.name]: {'start': run.start, 'end': run.end}
    for run in run_metadata.component_runs(run_metadata.open_store(config.metadata_path))
    if run.name in names
  }
  if pool_ready - pool_started > 0.01:
    stages[POOL_START] = {'start': pool_started, 'end': pool_ready}
  return {
    'start': started,
    'end': ended,
    'beam_args': args,
    'workers': beam_workers(args),
    'stages': stages,
  }


# ---- Orchestration ----


def measure_size(
  work: str, size_mb: float, vocab_dir: str | None, args: argparse.Namespace
) -> tuple[dict, str]:
  """Generates the corpus of one size, times the bare tokenizers on its sample and the pipeline
  on all of it. Returns the measurements and the vocabulary folder (learned here if None)."""
  folder = os.path.join(work, f'{size_mb:g}MB')
  corpus = os.path.join(folder, 'corpus')
  started = time.perf_counter()
  size = corpus_lib.generate_corpus(corpus, size_mb, seed=int(size_mb * 1000) % 2**31)
  generated_s = time.perf_counter() - started
  print(f'\n== {size_mb:g} MB: {size / MB:.1f} MB generated in {generated_s:.0f} s', flush=True)
  if vocab_dir is None:
    started = time.perf_counter()
    vocab_dir = os.path.join(work, 'vocab')
    corpus_lib.learn_vocab(corpus, vocab_dir, args.vocab_size)
    print(f'vocabulary learned in {time.perf_counter() - started:.0f} s', flush=True)
  started = time.perf_counter()
  sample_bytes = int(args.sample_mb * MB)
  single, _ = process_tree.run_child(
    __file__,
    [
      '--role=tokenizers',
      f'--corpus={corpus}',
      f'--vocab={vocab_dir}',
      f'--batch={args.batch}',
      f'--sample-bytes={sample_bytes}',
    ],
    os.path.join(folder, 'tokenizers.log'),
    env={'RAYON_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'true'},
  )
  print(f'bare tokenizers timed in {time.perf_counter() - started:.0f} s', flush=True)
  load_before = process_tree.loadavg()
  run, samples = process_tree.run_child(
    __file__,
    [
      '--role=pipeline',
      f'--corpus={corpus}',
      f'--vocab={vocab_dir}',
      f'--root={os.path.join(folder, "run")}',
      f'--workers={args.workers}',
      '--shuffle' if args.shuffle else '--no-shuffle',
    ],
    os.path.join(folder, 'pipeline.log'),
  )
  load_after = process_tree.loadavg()
  stages = {}
  measured = (POOL_START, EXAMPLE_GEN, TRANSFORM) if POOL_START in run['stages'] else ()
  for name in measured or (EXAMPLE_GEN, TRANSFORM):
    window = run['stages'].get(name)
    if window is None:
      raise SystemExit(f'{size_mb:g} MB: ML Metadata has no {name} execution (see {folder})')
    seconds = window['end'] - window['start']
    stages[name] = {
      'seconds': seconds,
      **process_tree.usage(samples, window['start'], window['end']),
    }
  first = min(run['stages'][name]['start'] for name in stages)
  last = max(run['stages'][name]['end'] for name in stages)
  stages[END_TO_END] = {
    **process_tree.usage(samples, first, last),
    'seconds': sum(stage['seconds'] for stage in stages.values()),
  }
  for stage in stages.values():
    stage['mb_per_s'] = size / MB / stage['seconds']
    stage['cpu_mb_per_s'] = size / MB / stage['cpu_seconds'] if stage['cpu_seconds'] else None
  sampled = single['bytes']
  tokenizers = {
    k: {
      **single[k],
      'mb_per_s': sampled / MB / single[k]['seconds'],
      'cpu_mb_per_s': sampled / MB / single[k]['cpu_seconds'],
    }
    for k in (BARE, GRAPH, NORMALIZATION, HF)
  }
  e2e_rate, workers = stages[END_TO_END]['mb_per_s'], run['workers']
  result = {
    'size_mb': size_mb,
    'bytes': size,
    'generated_seconds': generated_s,
    'sample_bytes': sampled,
    'tokenizers': tokenizers,
    'beam_args': run['beam_args'],
    'workers': workers,
    'pipeline_wall_seconds': run['end'] - run['start'],
    'stages': stages,
    'ratios': {
      HF_RATIO: e2e_rate / tokenizers[HF]['mb_per_s'],
      WORKER_RATIO: e2e_rate / workers / tokenizers[BARE]['mb_per_s'],
    },
    # MB per CPU-second of the pipeline's process tree over the same for the tokenizers alone:
    # what a byte costs, which other load on the machine inflates far less than wall time.
    'cpu_ratios': {
      HF_RATIO: (stages[END_TO_END]['cpu_mb_per_s'] or 0) / tokenizers[HF]['cpu_mb_per_s'],
      WORKER_RATIO: (stages[END_TO_END]['cpu_mb_per_s'] or 0) / tokenizers[BARE]['cpu_mb_per_s'],
    },
    'loadavg_before': load_before,
    'loadavg_after': load_after,
  }
  if not args.keep:
    shutil.rmtree(folder, ignore_errors=True)
  return result, vocab_dir


def parse_sizes(text: str) -> tuple[float, ...]:
  """'10,100,1000' -> (10.0, 100.0, 1000.0), sorted, each > 0."""
  try:
    sizes = tuple(sorted({float(part) for part in text.split(',') if part.strip()}))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'expected MB numbers like 10,100,1000, got {text!r}'
    ) from None
  if not sizes or sizes[0] <= 0:
    raise argparse.ArgumentTypeError(f'expected positive MB numbers, got {text!r}')
  return sizes


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--sizes',
    type=parse_sizes,
    default=DEFAULT_SIZES_MB,
    help='corpus sizes in MB, comma-separated (default 10,100,1000)',
  )
  parser.add_argument('--base-mb', type=float, default=100.0, help='size of the HF target')
  parser.add_argument('--top-mb', type=float, default=1000.0, help='size of the per-worker target')
  parser.add_argument(
    '--sample-mb', type=float, default=20.0, help='bare tokenizers run on this much of each corpus'
  )
  parser.add_argument('--vocab-size', type=int, default=contract.DEFAULT_VOCAB_SIZE)
  parser.add_argument(
    '--workers', type=int, default=0, help='Beam workers; 0: pipeline/local_runner.py chooses'
  )
  parser.add_argument(
    '--shuffle',
    action=argparse.BooleanOptionalAction,
    default=False,
    help="ExampleGen's shuffle before writing (default off: streaming)",
  )
  parser.add_argument('--batch', type=int, default=1000, help='texts per tokenizer call')
  parser.add_argument('--json', help='write the results here as JSON')
  parser.add_argument('--work-dir', help='generate and run here (default: a temporary folder)')
  parser.add_argument('--keep', action='store_true', help='keep each corpus and pipeline output')
  parser.add_argument('--role', choices=['tokenizers', 'pipeline'], help=argparse.SUPPRESS)
  parser.add_argument('--corpus', help=argparse.SUPPRESS)
  parser.add_argument('--vocab', help=argparse.SUPPRESS)
  parser.add_argument('--root', help=argparse.SUPPRESS)
  parser.add_argument('--sample-bytes', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.role == 'tokenizers':
    print(json.dumps(_role_tokenizers(args.corpus, args.vocab, args.batch, args.sample_bytes)))
    return 0
  if args.role == 'pipeline':
    result = _role_pipeline(args.corpus, args.vocab, args.root, args.workers, args.shuffle)
    print(json.dumps(result))
    return 0

  # The Vocabulary component's module imports TensorFlow here too: no C++ start-up lines.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  work = args.work_dir or tempfile.mkdtemp(prefix='transform-bench-')
  os.makedirs(work, exist_ok=True)
  print(f'working in {work}; sizes {", ".join(f"{s:g}" for s in args.sizes)} MB', flush=True)
  info = process_tree.machine()
  results, vocab_dir = [], None
  try:
    for size_mb in args.sizes:
      result, vocab_dir = measure_size(work, size_mb, vocab_dir, args)
      results.append(result)
      targets = verdicts.checks(results, args.base_mb, args.top_mb)
      print(verdicts.size_report(result, targets, args.base_mb, args.top_mb), flush=True)
  finally:
    if not args.work_dir and not args.keep:
      shutil.rmtree(work, ignore_errors=True)
  targets = verdicts.checks(results, args.base_mb, args.top_mb)
  print('\n' + verdicts.targets_report(targets))
  info['loadavg_end'] = process_tree.loadavg()
  print(
    f'machine: {info["cpus"]} CPUs, {info["memory_bytes"] / 2**30:.0f} GiB; load average '
    f'{" ".join(map(str, info["loadavg_start"]))} at start, '
    f'{" ".join(map(str, info["loadavg_end"]))} at end'
  )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(
        {
          'machine': info,
          'settings': {
            'sizes_mb': list(args.sizes),
            'base_mb': args.base_mb,
            'top_mb': args.top_mb,
            'sample_mb': args.sample_mb,
            'vocab_size': args.vocab_size,
            'vocab_sample_bytes': corpus_lib.VOCAB_SAMPLE_BYTES,
            'workers': args.workers,
            'shuffle': args.shuffle,
            'batch': args.batch,
          },
          'sizes': results,
          'targets': targets,
        },
        f,
        indent=1,
      )
    print(f'results: {args.json}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
