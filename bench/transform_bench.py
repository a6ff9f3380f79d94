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
3. Runs a LocalDagRunner pipeline (text ExampleGen, the corpus schema, the vocabulary imported,
   Transform with task 'mlm') with the Beam arguments `pipeline/local_runner.py` chooses for that
   input, times ExampleGen and Transform from ML Metadata, and samples the resident memory and
   the CPU time of the whole process tree (Beam workers included) every 0.25 s.
The vocabulary is learned once, from the first 10 MB of the smallest corpus, with the Vocabulary
component's plain functions.

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
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator

from tfxlm import contract

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MB = 1_000_000
DEFAULT_SIZES_MB = (10.0, 100.0, 1000.0)
VOCAB_SAMPLE_BYTES = 10 * MB
RSS_INTERVAL_S = 0.25
EXAMPLE_GEN, TRANSFORM, END_TO_END = 'ExampleGen', 'Transform', 'end to end'
POOL_START = 'worker pool start'
BARE, GRAPH, NORMALIZATION, HF = (
  'fast_bert_tokenizer',
  'preprocessing_graph',
  'normalization_only',
  'hf_bert_wordpiece',
)
TOKENIZER_LABELS = {
  BARE: 'tensorflow-text FastBertTokenizer (bare op)',
  GRAPH: 'preprocessing graph (NFKC+casefold+strip+FastBert)',
  NORMALIZATION: '  of which normalization ops alone',
  HF: 'HF tokenizers BertWordPieceTokenizer, 1 thread',
}
# The targets of issue #16: (key, what, at which size, comparison, threshold).
HF_RATIO, WORKER_RATIO, RSS_GROWTH, TIME_GROWTH = (
  'e2e_vs_hf_single_thread',
  'e2e_per_worker_vs_bare_op',
  'peak_rss_growth',
  'time_growth',
)

_FUNCTION_WORDS = (
  'the of and to a in is that it was for on are as with his they at be this from have or by one '
  'had not but what all were when we there can an your which their said if do will each about how '
  'up out them then she many some so these would other into has more her two like him see time '
  'could no make than first been its who now people my made over did down only way find use may '
  'water long little very after words called just where most know get through back much before '
  'go good new write our used me man too any day same right look think also around another came '
  'come work three word must because does part even place well such here take why things help '
  'put years different away again off went old number great tell men say small every found still '
  'between name should home big give air line set own under read last never us left end along '
  'while might next sound below saw something thought both few those always looked show large '
  'often together asked house world going want school important until form food keep children'
).split()
_ONSETS = 'b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p pl pr qu r s sh sl st t th tr v w'
_NUCLEI = 'a e i o u ai ea ee oo ou ie'
_CODAS = ' n r s t l nd st ng rt ck m nt'
_ACCENTED = ('café', 'naïve', 'résumé', 'façade', 'jalapeño', 'über', 'déjà', 'coöperate')


def _make_lexicon(size: int, rng) -> list[str]:
  """Function words first, then pronounceable made-up words (1-3 syllables), no duplicates."""
  onsets, nuclei, codas = _ONSETS.split(), _NUCLEI.split(), _CODAS.split(' ')
  words = list(dict.fromkeys(_FUNCTION_WORDS))
  seen = set(words)
  while len(words) < size:
    syllables = rng.choice([1, 2, 2, 3, 3, 4], p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05])
    word = ''.join(rng.choice(onsets) + rng.choice(nuclei) for _ in range(syllables))
    word += rng.choice(codas)
    if word not in seen:
      seen.add(word)
      words.append(word)
  # A few accented words at mid frequency, so normalization has work to do.
  for i, accented in enumerate(_ACCENTED):
    words[300 + 50 * i] = accented
  return words


def generate_corpus(folder: str, size_mb: float, *, files: int = 8, seed: int = 0) -> int:
  """Writes `files` .txt files of about size_mb MB in total; returns the exact byte count."""
  import numpy as np

  rng = np.random.default_rng(seed)
  lexicon = np.array(_make_lexicon(30_000, rng), dtype=object)
  ranks = np.arange(1, len(lexicon) + 1)
  probabilities = 1.0 / ranks**1.07
  probabilities /= probabilities.sum()
  os.makedirs(folder, exist_ok=True)
  target = int(size_mb * MB)
  per_file = target // files
  total = 0
  for index in range(files):
    written = 0
    with open(os.path.join(folder, f'part-{index:02d}.txt'), 'w', encoding='utf-8') as f:
      while written < per_file:
        # A block of sentences at a time: numpy draws the words, Python joins them. Blocks
        # shrink near the end (about 90 bytes a sentence), so small corpora keep their size.
        sentences_left = max(1, (per_file - written) // 90)
        lengths = rng.integers(5, 25, size=min(2000, sentences_left))
        words = lexicon[rng.choice(len(lexicon), size=int(lengths.sum()), p=probabilities)]
        commas = rng.random(len(words)) < 0.06
        ends = rng.choice(['.', '.', '.', '!', '?'], size=len(lengths))
        sentences, start = [], 0
        for length, end in zip(lengths, ends):
          chunk = [
            w + ',' if c else w
            for w, c in zip(words[start : start + length], commas[start : start + length])
          ]
          chunk[-1] = chunk[-1].rstrip(',')
          sentences.append(' '.join(chunk).capitalize() + end)
          start += length
        document_sizes = rng.integers(2, 12, size=len(sentences))
        lines, i = [], 0
        for n in document_sizes:
          if i >= len(sentences):
            break
          lines.append(' '.join(sentences[i : i + n]))
          i += n
        block = '\n'.join(lines) + '\n'
        f.write(block)
        written += len(block.encode())
    total += written
  return total


def iter_lines(folder: str, limit_bytes: int | None = None) -> Iterator[str]:
  """The corpus's documents in file order, stopping after about `limit_bytes` bytes."""
  seen = 0
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), encoding='utf-8') as f:
      for line in f:
        if limit_bytes is not None and seen >= limit_bytes:
          return
        seen += len(line.encode())
        yield line.rstrip('\n')


def learn_vocab(corpus: str, out: str, size: int, sample_bytes: int = VOCAB_SAMPLE_BYTES) -> None:
  """Learns the benchmark vocabulary from the first `sample_bytes` of `corpus`, as the Vocabulary
  component would, with its plain functions."""
  from trainer import tokenizers
  from trainer.vocabulary import Vocabulary

  counts = collections.Counter()
  for line in iter_lines(corpus, sample_bytes):
    counts.update(tokenizers.split_words(tokenizers.normalize_text(line)))
  tokens = tokenizers.learn_wordpiece_vocab(counts.items(), size)
  spec = {
    'kind': contract.WORDPIECE,
    'size': len(tokens),
    'lowercase': True,
    'strip_accents': True,
    'nfkc': True,
    'suffix_indicator': contract.SUFFIX_INDICATOR,
    'words': sum(counts.values()),
    'unique_words': len(counts),
  }
  Vocabulary(tokens, spec).write(out)


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

  lines = list(iter_lines(corpus, sample_bytes))
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
      'data': {
        'format': contract.TEXT,
        'input_base': corpus,
        'label_column': None,
        'text_mode': contract.LINE,
        'shuffle': shuffle,
      },
      'train': {'task': contract.MLM, 'seq_len': 128},
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

  from components import example_gen, transform, vocabulary
  from pipeline import beam_pool, local_runner, run_metadata

  config = pipeline_config(corpus, root, workers, shuffle)
  # As a local run does: multi-process Beam gets the run's warm worker pool, whose start-up (each
  # pool process importing the stack) counts in the end-to-end time.
  pool = beam_pool.WorkerPool()
  pool_started = time.time()
  args = pool.pipeline_args(local_runner.beam_args(config))
  pool_ready = time.time()
  gen = example_gen.create_example_gen(
    contract.TEXT, corpus, label_column=None, text_mode=contract.LINE, shuffle=shuffle
  )
  schema = tfx.components.ImportSchemaGen(schema_file=config.schema_file)
  vocab = tfx.dsl.Importer(
    source_uri=vocab_dir, artifact_type=vocabulary.VocabularyArtifact, reimport=False
  ).with_id('VocabularyImporter')
  tokenize = transform.create_transform(
    gen.outputs['examples'],
    schema.outputs['schema'],
    vocab.outputs['result'],
    trainer_config=config.train,
  )
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
  pipeline = tfx.dsl.Pipeline(
    pipeline_name=config.pipeline_name,
    pipeline_root=config.pipeline_root,
    components=[gen, schema, vocab, tokenize],
    metadata_connection_config=connection,
    beam_pipeline_args=args,
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


def tree_usage(root_pid: int) -> tuple[int, int, float]:
  """(sum, largest) resident bytes over a process and all its descendants, and their CPU
  seconds so far (user + system, with those of the children they have reaped)."""
  children, ticks = collections.defaultdict(list), {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
        children[int(fields[1])].append(int(entry))
        # Fields 14-17 of stat: utime, stime, cutime, cstime (this list starts at field 3).
        ticks[int(entry)] = sum(int(v) for v in fields[11:15])
      except (OSError, IndexError, ValueError):
        continue  # the process ended while we looked
  page = os.sysconf('SC_PAGE_SIZE')
  total = largest = cpu = 0
  stack = [root_pid]
  while stack:
    pid = stack.pop()
    stack.extend(children.get(pid, []))
    try:
      with open(f'/proc/{pid}/statm') as f:
        rss = int(f.read().split()[1]) * page
    except (OSError, IndexError):
      continue
    total += rss
    largest = max(largest, rss)
    cpu += ticks.get(pid, 0)
  return total, largest, cpu / os.sysconf('SC_CLK_TCK')


def run_child(args: list[str], log_path: str, env: dict | None = None) -> tuple[dict, list]:
  """Runs this script in a role, its stderr to `log_path`.

  Returns:
    Its JSON result and the samples of its process tree: (epoch s, resident bytes summed,
    largest process's resident bytes, CPU seconds so far).

  Raises:
    SystemExit: the role failed (with the end of its log).
  """
  with open(log_path, 'w') as log:
    process = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), *args],
      stdout=subprocess.PIPE,
      stderr=log,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})},
      text=True,
    )
    samples = []

    def sample():
      while process.poll() is None:
        samples.append((time.time(), *tree_usage(process.pid)))
        time.sleep(RSS_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    sampler.join()
  if process.returncode:
    with open(log_path, errors='replace') as f:
      tail = ''.join(f.readlines()[-20:])
    raise SystemExit(f'{args[:2]} failed with exit code {process.returncode}:\n{tail}')
  return json.loads(out.strip().splitlines()[-1]), samples


def _usage(samples: list, start: float, end: float) -> dict:
  """Peak memory and CPU seconds of the process tree between two epoch times."""
  # A window shorter than the sampling period holds no sample: the first one after it bounds it.
  inside = [s for s in samples if start <= s[0] <= end] or [s for s in samples if s[0] > end][:1]
  before = [s[3] for s in samples if s[0] <= start] or [0.0]
  return {
    'peak_rss_tree_bytes': max((s[1] for s in inside), default=0),
    'peak_rss_process_bytes': max((s[2] for s in inside), default=0),
    'cpu_seconds': max((s[3] for s in inside), default=before[-1]) - before[-1],
  }


def _loadavg() -> list[float]:
  with open('/proc/loadavg') as f:
    return [float(v) for v in f.read().split()[:3]]


def measure_size(
  work: str, size_mb: float, vocab_dir: str | None, args: argparse.Namespace
) -> tuple[dict, str]:
  """Generates the corpus of one size, times the bare tokenizers on its sample and the pipeline
  on all of it. Returns the measurements and the vocabulary folder (learned here if None)."""
  folder = os.path.join(work, f'{size_mb:g}MB')
  corpus = os.path.join(folder, 'corpus')
  started = time.perf_counter()
  size = generate_corpus(corpus, size_mb, seed=int(size_mb * 1000) % 2**31)
  generated_s = time.perf_counter() - started
  print(f'\n== {size_mb:g} MB: {size / MB:.1f} MB generated in {generated_s:.0f} s', flush=True)
  if vocab_dir is None:
    started = time.perf_counter()
    vocab_dir = os.path.join(work, 'vocab')
    learn_vocab(corpus, vocab_dir, args.vocab_size)
    print(f'vocabulary learned in {time.perf_counter() - started:.0f} s', flush=True)
  started = time.perf_counter()
  sample_bytes = int(args.sample_mb * MB)
  single, _ = run_child(
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
  load_before = _loadavg()
  run, samples = run_child(
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
  load_after = _loadavg()
  stages = {}
  measured = (POOL_START, EXAMPLE_GEN, TRANSFORM) if POOL_START in run['stages'] else ()
  for name in measured or (EXAMPLE_GEN, TRANSFORM):
    window = run['stages'].get(name)
    if window is None:
      raise SystemExit(f'{size_mb:g} MB: ML Metadata has no {name} execution (see {folder})')
    seconds = window['end'] - window['start']
    stages[name] = {'seconds': seconds, **_usage(samples, window['start'], window['end'])}
  first = min(run['stages'][name]['start'] for name in stages)
  last = max(run['stages'][name]['end'] for name in stages)
  stages[END_TO_END] = {
    **_usage(samples, first, last),
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


def _find(results: list[dict], size_mb: float) -> dict | None:
  return next((r for r in results if r['size_mb'] == size_mb), None)


def checks(results: list[dict], base_mb: float, top_mb: float) -> list[dict]:
  """The four targets of issue #16 with their values and verdicts (NOT RUN without the size)."""
  base, top = _find(results, base_mb), _find(results, top_mb)
  growth = base is not None and top is not None
  rows = [
    (HF_RATIO, f'end to end / HF single thread at {base_mb:g} MB', '>=', 2.0,
     base and base['ratios'][HF_RATIO]),
    (WORKER_RATIO, f'end to end per worker / bare op at {top_mb:g} MB', '>=', 0.30,
     top and top['ratios'][WORKER_RATIO]),
    (RSS_GROWTH, f'peak RSS (tree) {top_mb:g} MB / {base_mb:g} MB', '<=', 1.2,
     growth and top['stages'][END_TO_END]['peak_rss_tree_bytes']
     / base['stages'][END_TO_END]['peak_rss_tree_bytes']),
    (TIME_GROWTH, f'end-to-end time {top_mb:g} MB / {base_mb:g} MB', '<=', 10.5,
     growth and top['stages'][END_TO_END]['seconds'] / base['stages'][END_TO_END]['seconds']),
  ]  # fmt: skip
  out = []
  for key, what, op, target, value in rows:
    if value is None or value is False:
      verdict, value = 'NOT RUN', None
    else:
      verdict = 'PASS' if (value >= target if op == '>=' else value <= target) else 'FAIL'
    out.append({'key': key, 'what': what, 'op': op, 'target': target, 'value': value,
                'verdict': verdict})  # fmt: skip
  if growth:
    out[2]['largest_process_ratio'] = (
      top['stages'][END_TO_END]['peak_rss_process_bytes']
      / base['stages'][END_TO_END]['peak_rss_process_bytes']
    )
    out[3]['bytes_ratio'] = top['bytes'] / base['bytes']
  return out


def _mib(value: int) -> str:
  return f'{value / 2**20:,.0f} MiB'


def size_report(result: dict, targets: list[dict], base_mb: float, top_mb: float) -> str:
  """One size's figures: tokenizers, stages, ratios with their targets."""
  lines = [
    f'== {result["size_mb"]:g} MB ({result["bytes"] / MB:.1f} MB of text); load average '
    f'{" ".join(f"{v:.2f}" for v in result["loadavg_before"])} before the pipeline, '
    f'{" ".join(f"{v:.2f}" for v in result["loadavg_after"])} after',
    f'  one core, first {result["sample_bytes"] / MB:.1f} MB of this corpus'.ljust(56)
    + 'MB/s  MB/s of CPU time',
  ]
  for key, label in TOKENIZER_LABELS.items():
    rates = result['tokenizers'][key]
    lines.append(f'    {label:<52}{rates["mb_per_s"]:6.2f}{rates["cpu_mb_per_s"]:8.2f}')
  lines.append(
    f'  pipeline: {result["workers"]} worker(s), Beam args {" ".join(result["beam_args"])}; '
    f'process wall {result["pipeline_wall_seconds"]:.1f} s'
  )
  lines.append(
    f'    {"stage":<24}{"seconds":>9}{"MB/s":>8}{"CPU s":>9}{"peak RSS tree":>16}'
    f'{"largest process":>18}'
  )
  for name, stage in result['stages'].items():
    label = (
      'end to end (pool + EG + T)'
      if name == END_TO_END and POOL_START in result['stages']
      else ('end to end (EG + T)' if name == END_TO_END else name)
    )
    lines.append(
      f'    {label:<24}{stage["seconds"]:9.1f}{stage["mb_per_s"]:8.2f}{stage["cpu_seconds"]:9.1f}'
      f'{_mib(stage["peak_rss_tree_bytes"]):>16}{_mib(stage["peak_rss_process_bytes"]):>18}'
    )
  by_key = {t['key']: t for t in targets}
  for key, label, at in (
    (HF_RATIO, 'end to end MB/s / HF MB/s', base_mb),
    (WORKER_RATIO, 'end to end MB/s per worker / bare MB/s', top_mb),
  ):
    target = by_key[key]
    verdict = target['verdict'] if result['size_mb'] == at else f'(target applies at {at:g} MB)'
    lines.append(
      f'    {label:<44}{result["ratios"][key]:6.2f}  target {target["op"]} '
      f'{target["target"]:.2f}  {verdict}'
    )
  lines.append(
    '    the same over CPU time (MB per CPU-second, no target): vs HF '
    f'{result["cpu_ratios"][HF_RATIO]:.2f}, vs the bare op {result["cpu_ratios"][WORKER_RATIO]:.2f}'
  )
  return '\n'.join(lines)


def targets_report(targets: list[dict]) -> str:
  """The four targets, each with its value and verdict."""
  lines = ['== targets (issue #16)']
  for t in targets:
    value = '     -' if t['value'] is None else f'{t["value"]:6.2f}'
    extra = ''
    if 'largest_process_ratio' in t:
      extra = f'  (largest process: {t["largest_process_ratio"]:.2f})'
    if 'bytes_ratio' in t:
      extra = f'  (bytes ratio: {t["bytes_ratio"]:.2f})'
    lines.append(f'  {t["what"]:<48}{value}  {t["op"]} {t["target"]:5.2f}  {t["verdict"]}{extra}')
  return '\n'.join(lines)


def machine() -> dict:
  """What the figures were measured on."""
  with open('/proc/meminfo') as f:
    memory = int(f.readline().split()[1]) * 1024
  return {
    'cpus': os.cpu_count(),
    'memory_bytes': memory,
    'python': platform.python_version(),
    'loadavg_start': _loadavg(),
  }


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
  parser.add_argument('--vocab-size', type=int, default=8000)
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
  info = machine()
  results, vocab_dir = [], None
  try:
    for size_mb in args.sizes:
      result, vocab_dir = measure_size(work, size_mb, vocab_dir, args)
      results.append(result)
      targets = checks(results, args.base_mb, args.top_mb)
      print(size_report(result, targets, args.base_mb, args.top_mb), flush=True)
  finally:
    if not args.work_dir and not args.keep:
      shutil.rmtree(work, ignore_errors=True)
  targets = checks(results, args.base_mb, args.top_mb)
  print('\n' + targets_report(targets))
  info['loadavg_end'] = _loadavg()
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
            'vocab_sample_bytes': VOCAB_SAMPLE_BYTES,
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
