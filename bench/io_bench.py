"""Per-byte speed of ExampleGen + Transform: variants side by side in one run.

    ./dev python bench/io_bench.py [--size-mb 20] [--before-repo /work/main] [--workers 2]

Generates a text corpus (bench/corpus.py) and, in a fresh child process per
variant, runs ExampleGen (text, unshuffled) and an mlm Transform under LocalDagRunner with the
local runner's Beam settings, reading each component's duration from ML Metadata. Variants:
  before      another checkout of this repository (`--before-repo`, e.g. main), as it is;
  before-none that checkout with uncompressed intermediates (its local default);
  gzip        this checkout, intermediate TFRecords gzipped;
  gzip-2read  this checkout, gzipped, Transform's analysis reading its input as the stock one does;
  none        this checkout, uncompressed intermediates (the local default).
Prints one JSON line per run and a table of the fastest round's seconds per component, wall
(from ML Metadata) and CPU (this process and its Beam workers: steadier on a shared machine),
and MB/s (corpus bytes / seconds; fixed costs included: run two sizes to separate them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MB = 1_000_000
VARIANTS = ('before', 'before-none', 'gzip', 'gzip-2read', 'none')


def _child(repo: str, corpus: str, vocab_dir: str, root: str, compression: str, args: list) -> dict:
  """Runs in the child: ExampleGen + Transform of `repo`'s code; durations by component.

  It wires its components itself rather than through pipeline.factory: `repo` may be an older
  checkout (`--before-repo`), whose factory and tfxlm.contract lack what this checkout added
  (hence also the importers' ids as literals), and ExampleGen runs alone before Transform.
  """
  import inspect

  from tfx import v1 as tfx

  from components import example_gen, transform, vocabulary
  from pipeline import config as config_lib
  from pipeline import run_metadata
  from tfxlm import contract
  from trainer.config import TrainerConfig

  options = {}
  if 'compression' in inspect.signature(example_gen.create_example_gen).parameters:
    options = {'compression': compression.split('-')[0]}
  if compression.endswith('-2read'):
    # The stock analysis read: the projection to no column still reads every record.
    transform._AnalysisTFXIO._ProjectImpl = lambda self, names: self._source.Project(names)
  gen = example_gen.create_example_gen(contract.TEXT, corpus, shuffle=False, **options)
  metadata = os.path.join(root, 'metadata.sqlite')

  def cpu_seconds(components: list) -> float:
    """CPU time of a run, this process and its finished children (the Beam workers)."""
    pipeline = tfx.dsl.Pipeline(
      pipeline_name='io-bench',
      pipeline_root=os.path.join(root, 'root'),
      components=components,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata
      ),
      beam_pipeline_args=args,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.process_time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.process_time() - started + children

  # ExampleGen alone, then Transform of its output (imported as ExampleGen recorded it).
  cpu = {contract.EXAMPLE_GEN_ID: cpu_seconds([gen])}
  store = run_metadata.open_store(metadata)
  (written,) = store.get_artifacts_by_type('Examples')
  examples = tfx.dsl.Importer(
    source_uri=written.uri,
    artifact_type=tfx.types.standard_artifacts.Examples,
    properties={'split_names': written.properties['split_names'].string_value},
    custom_properties={
      k: v.string_value
      for k, v in written.custom_properties.items()
      if k in ('file_format', 'payload_format', 'tfrecord_compression')
    },
  ).with_id('ExamplesImporter')
  schema = tfx.components.ImportSchemaGen(schema_file=config_lib.CORPUS_SCHEMA)
  vocab = tfx.dsl.Importer(
    source_uri=vocab_dir, artifact_type=vocabulary.VocabularyArtifact, reimport=False
  ).with_id('VocabularyImporter')
  tokenize = transform.create_transform(
    examples.outputs['result'],
    schema.outputs['schema'],
    vocab.outputs['result'],
    trainer_config=TrainerConfig(task=contract.MLM, seq_len=128),
    **options,
  )
  cpu[contract.TRANSFORM_ID] = cpu_seconds([examples, schema, vocab, tokenize])
  runs = run_metadata.component_runs(run_metadata.open_store(metadata))
  seconds = {run.name: run.seconds for run in runs}
  sizes = {}
  for component in (contract.EXAMPLE_GEN_ID, contract.TRANSFORM_ID):
    folder = os.path.join(root, 'root', component)
    sizes[component] = sum(
      os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files
    )
  return {'seconds': seconds, 'cpu_seconds': cpu, 'output_bytes': sizes}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size-mb', type=float, default=20.0)
  parser.add_argument('--before-repo', default='')
  parser.add_argument('--workers', type=int, default=2, help='Beam worker processes; 1: in process')
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--rounds', type=int, default=1, help='variants interleaved; min is kept')
  parser.add_argument('--corpus', default='', help='a folder of .txt files to read instead')
  parser.add_argument('--vocab', default='', help='a vocabulary folder to use instead of learning')
  parser.add_argument('--child', nargs=6, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    repo, corpus, vocab_dir, root, compression, beam = args.child
    print(json.dumps(_child(repo, corpus, vocab_dir, root, compression, json.loads(beam))))
    return 0

  from bench import corpus as corpus_lib
  from pipeline import local_runner
  from tfxlm import contract

  work = tempfile.mkdtemp(prefix='io-bench-')
  corpus = args.corpus or os.path.join(work, 'corpus')
  if args.corpus:
    size = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus))
  else:
    size = corpus_lib.generate_corpus(corpus, args.size_mb, files=max(2, args.workers * 2))
  vocab_dir = args.vocab or os.path.join(work, 'vocab')
  if not args.vocab:
    corpus_lib.learn_vocab(corpus, vocab_dir, contract.DEFAULT_VOCAB_SIZE)
  mode = 'in_memory' if args.workers == 1 else 'multi_processing'
  best: dict[str, dict[str, float]] = {}
  for _ in range(args.rounds):
    for variant in args.variants.split(','):
      repo = args.before_repo if variant.startswith('before') else REPO
      if not repo:
        continue
      beam = [
        f'--runner={local_runner.FN_API_RUNNER}',
        f'--setup_file={os.path.join(repo, "setup.py")}',
        f'--direct_running_mode={mode}',
        f'--direct_num_workers={args.workers}',
      ]
      root = os.path.join(work, variant)
      compression = 'gzip' if variant == 'before' else variant.removeprefix('before-')
      child = [repo, corpus, vocab_dir, root, compression, json.dumps(beam)]
      command = [sys.executable, os.path.abspath(__file__), '--child', *child]
      env = {**os.environ, 'PYTHONPATH': repo}
      done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
      if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
      result = json.loads(done.stdout.strip().splitlines()[-1])
      result.update(variant=variant, input_bytes=size)
      print(json.dumps(result), flush=True)
      shutil.rmtree(root, ignore_errors=True)
      times = {
        'ExampleGen': result['seconds'][contract.EXAMPLE_GEN_ID],
        'Transform': result['seconds'][contract.TRANSFORM_ID],
        'ExampleGen_cpu': result['cpu_seconds'][contract.EXAMPLE_GEN_ID],
        'Transform_cpu': result['cpu_seconds'][contract.TRANSFORM_ID],
      }
      times['out_mb'] = sum(result['output_bytes'].values()) / MB
      kept = best.setdefault(variant, times)
      for key, value in times.items():
        kept[key] = min(kept[key], value)
  print(f'\n{size / MB:.1f} MB of text, {args.workers} worker(s), best of {args.rounds} round(s)')
  print('wall seconds (ML Metadata) and CPU seconds per component; MB/s of both together')
  print(
    f'{"variant":<12} {"ExampleGen":>11} {"Transform":>10} {"MB/s":>6} '
    f'{"ExampleGen CPU":>15} {"Transform CPU":>14} {"MB/CPU-s":>9} {"out MB":>7}'
  )
  for variant, t in best.items():
    wall = t['ExampleGen'] + t['Transform']
    cpu = t['ExampleGen_cpu'] + t['Transform_cpu']
    print(
      f'{variant:<12} {t["ExampleGen"]:>11.1f} {t["Transform"]:>10.1f} {size / MB / wall:>6.2f} '
      f'{t["ExampleGen_cpu"]:>15.1f} {t["Transform_cpu"]:>14.1f} {size / MB / cpu:>9.2f} '
      f'{t["out_mb"]:>7.1f}'
    )
  shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
