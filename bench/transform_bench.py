"""Tokenization throughput: ExampleGen + Transform end to end vs bare tokenizers, and memory.

    ./dev python bench/transform_bench.py [--size-mb 100] [--small-mb 10] [--workers 2]

1. Generates a corpus of real-looking English-like text (a Zipf-distributed word list, sentences
   with capitals, commas and end marks, a few accented words; one document per line) of
   `--size-mb`, and a second one of `--small-mb`.
2. Learns a WordPiece vocabulary (`--vocab-size`) from the small corpus with the Vocabulary
   component's plain functions.
3. Times, on one core and the same text and vocabulary: tensorflow-text FastBertTokenizer alone,
   the preprocessing graph (normalization as vocab.json says + FastBertTokenizer), and Hugging Face
   `tokenizers` BertWordPieceTokenizer with one thread (encode_batch).
4. Runs a LocalDagRunner pipeline (text ExampleGen, corpus schema, the vocabulary imported,
   Transform with task 'mlm') on Beam's DirectRunner, multi_processing with `--workers` workers,
   at both sizes, timing each component from ML Metadata and sampling the resident memory of the
   whole process tree.
5. Prints MB/s, the ratios against the targets (Transform end to end >= 2x HF single thread, and
   >= 30% of bare FastBertTokenizer per worker) and peak memory at both sizes with their ratio.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from tfxlm import contract

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MB = 1_000_000

# Words of real English text that carry most of its tokens, most frequent first.
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
        # A block of sentences at a time: numpy draws the words, Python joins them.
        lengths = rng.integers(5, 25, size=2000)
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


def _read_lines(folder: str) -> list[str]:
  lines = []
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), encoding='utf-8') as f:
      lines.extend(line.rstrip('\n') for line in f)
  return lines


def learn_vocab(corpus: str, out: str, size: int) -> None:
  """Learns the benchmark vocabulary as the Vocabulary component would, with plain functions."""
  from components import vocabulary

  counts = collections.Counter()
  for line in _read_lines(corpus):
    counts.update(vocabulary.split_words(vocabulary.normalize_text(line)))
  tokens = vocabulary.learn_wordpiece_vocab(counts.items(), size)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, contract.VOCAB_FILE), 'w', encoding='utf-8') as f:
    f.write(''.join(t + '\n' for t in tokens))
  meta = {
    'kind': contract.WORDPIECE,
    'size': len(tokens),
    'lowercase': True,
    'strip_accents': True,
    'nfkc': True,
    'suffix_indicator': contract.SUFFIX_INDICATOR,
    'words': sum(counts.values()),
    'unique_words': len(counts),
  }
  with open(os.path.join(out, contract.VOCAB_JSON), 'w') as f:
    json.dump(meta, f)


# ---- Child process roles (each prints one JSON line last) ----


def _role_tokenizers(corpus: str, vocab_dir: str, batch: int) -> dict:
  """One core: bare FastBertTokenizer, the preprocessing graph, HF BertWordPieceTokenizer."""
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  import tensorflow_text as tf_text
  from tokenizers import BertWordPieceTokenizer

  from trainer import tokenizers

  lines = _read_lines(corpus)
  size = sum(len(line.encode()) for line in lines) + len(lines)
  tokens, meta = tokenizers.read_vocabulary(vocab_dir)
  batches = [lines[i : i + batch] for i in range(0, len(lines), batch)]
  results = {'bytes': size}

  def run_tf(name, fn):
    fn = tf.function(fn)
    tensors = [tf.constant(b) for b in batches]
    fn(tensors[0])
    started = time.perf_counter()
    count = 0
    for t in tensors:
      count += int(fn(t))  # int() waits for the result.
    elapsed = time.perf_counter() - started
    results[name] = {'seconds': elapsed, 'tokens': count}

  bare = tf_text.FastBertTokenizer(
    vocab=tokens, token_out_type=tf.int64, lower_case_nfd_strip_accents=True
  )
  run_tf('fast_bert_tokenizer', lambda x: tf.size(bare.tokenize(x).flat_values))
  graph_tokenizer = tokenizers.make_tokenizer(tokens, meta, vocab_dir)
  run_tf(
    'preprocessing_graph',
    lambda x: tf.size(tokenizers.tokenize(x, graph_tokenizer, meta).flat_values),
  )
  run_tf(
    'normalization_only', lambda x: tf.reduce_sum(tf.strings.length(tokenizers.normalize(x, meta)))
  )

  hf = BertWordPieceTokenizer(
    os.path.join(vocab_dir, contract.VOCAB_FILE),
    clean_text=True,
    handle_chinese_chars=True,
    strip_accents=True,
    lowercase=True,
  )
  started = time.perf_counter()
  count = 0
  for b in batches:
    count += sum(len(e.ids) for e in hf.encode_batch(b, add_special_tokens=False))
  results['hf_bert_wordpiece'] = {'seconds': time.perf_counter() - started, 'tokens': count}
  return results


def _role_pipeline(
  corpus: str, vocab_dir: str, root: str, workers: int, mode: str, shuffle: bool
) -> dict:
  """ExampleGen + Transform under LocalDagRunner; component durations from ML Metadata."""
  import ml_metadata as mlmd
  from tfx import v1 as tfx

  from components import example_gen, transform, vocabulary
  from trainer.config import TrainerConfig

  metadata = os.path.join(root, 'metadata.sqlite')
  gen = example_gen.create_example_gen(contract.TEXT, corpus, shuffle=shuffle)
  schema = tfx.components.ImportSchemaGen(
    schema_file=os.path.join(REPO, 'schemas', 'corpus', 'schema.pbtxt')
  )
  vocab = tfx.dsl.Importer(
    source_uri=vocab_dir, artifact_type=vocabulary.VocabularyArtifact, reimport=False
  ).with_id('VocabularyImporter')
  tokenize = transform.create_transform(
    gen.outputs['examples'],
    schema.outputs['schema'],
    vocab.outputs['result'],
    trainer_config=TrainerConfig(task=contract.MLM, seq_len=128),
  )
  pipeline = tfx.dsl.Pipeline(
    pipeline_name='transform-bench',
    pipeline_root=os.path.join(root, 'root'),
    components=[gen, schema, vocab, tokenize],
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
      metadata
    ),
    beam_pipeline_args=[f'--direct_running_mode={mode}', f'--direct_num_workers={workers}'],
  )
  started = time.perf_counter()
  tfx.orchestration.LocalDagRunner().run(pipeline)
  total = time.perf_counter() - started
  store = mlmd.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata))
  durations = {}
  for execution in store.get_executions():
    type_name = store.get_execution_types_by_id([execution.type_id])[0].name
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
    durations[type_name.rsplit('.', 1)[-1]] = seconds
  return {'total_seconds': total, 'components': durations}


# ---- Orchestration ----


def _tree_rss(root_pid: int) -> tuple[int, int]:
  """(sum, max) resident bytes over a process and all its descendants."""
  children = collections.defaultdict(list)
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
        children[int(fields[1])].append(int(entry))
      except OSError:
        continue
  page = os.sysconf('SC_PAGE_SIZE')
  total = largest = 0
  stack = [root_pid]
  while stack:
    pid = stack.pop()
    stack.extend(children.get(pid, []))
    try:
      with open(f'/proc/{pid}/statm') as f:
        rss = int(f.read().split()[1]) * page
    except OSError:
      continue
    total += rss
    largest = max(largest, rss)
  return total, largest


def _run_child(args: list[str], env: dict | None = None) -> tuple[dict, int, int]:
  """Runs this script in a role; returns (its JSON result, peak tree RSS, peak process RSS)."""
  process = subprocess.Popen(
    [sys.executable, os.path.abspath(__file__), *args],
    stdout=subprocess.PIPE,
    env={**os.environ, **(env or {})},
    text=True,
  )
  peaks = [0, 0]

  def sample():
    while process.poll() is None:
      total, largest = _tree_rss(process.pid)
      peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
      time.sleep(0.25)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  out, _ = process.communicate()
  sampler.join()
  if process.returncode:
    raise SystemExit(f'{args[:2]} failed with exit code {process.returncode}')
  return json.loads(out.strip().splitlines()[-1]), peaks[0], peaks[1]


def _rate(size: int, seconds: float) -> float:
  return size / MB / seconds


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--size-mb', type=float, default=100, help='large corpus size (MB)')
  parser.add_argument('--small-mb', type=float, default=10, help='small corpus size (MB)')
  parser.add_argument('--vocab-size', type=int, default=8000)
  parser.add_argument('--workers', type=int, default=2, help='Beam DirectRunner workers')
  parser.add_argument(
    '--running-mode',
    default='multi_processing',
    choices=['multi_processing', 'multi_threading', 'in_memory'],
    help="Beam DirectRunner's direct_running_mode for the pipeline",
  )
  parser.add_argument(
    '--shuffle',
    action=argparse.BooleanOptionalAction,
    default=False,
    help="ExampleGen's shuffle before writing (default off: streaming)",
  )
  parser.add_argument('--batch', type=int, default=1000, help='texts per tokenizer call')
  parser.add_argument('--work-dir', help='keep data and pipeline outputs here (default: temp)')
  parser.add_argument('--role', choices=['tokenizers', 'pipeline'], help=argparse.SUPPRESS)
  parser.add_argument('--corpus', help=argparse.SUPPRESS)
  parser.add_argument('--vocab', help=argparse.SUPPRESS)
  parser.add_argument('--root', help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.role == 'tokenizers':
    print(json.dumps(_role_tokenizers(args.corpus, args.vocab, args.batch)))
    return 0
  if args.role == 'pipeline':
    print(
      json.dumps(
        _role_pipeline(
          args.corpus, args.vocab, args.root, args.workers, args.running_mode, args.shuffle
        )
      )
    )
    return 0

  work = args.work_dir or tempfile.mkdtemp(prefix='transform-bench-')
  sizes = {}
  started = time.perf_counter()
  for name, size_mb in (('small', args.small_mb), ('large', args.size_mb)):
    sizes[name] = generate_corpus(os.path.join(work, name), size_mb, seed=len(name))
  print(
    f'corpora: small {sizes["small"] / MB:.1f} MB, large {sizes["large"] / MB:.1f} MB '
    f'(generated in {time.perf_counter() - started:.0f} s) under {work}',
    flush=True,
  )
  vocab_dir = os.path.join(work, 'vocab')
  learn_vocab(os.path.join(work, 'small'), vocab_dir, args.vocab_size)

  single, _, _ = _run_child(
    [
      '--role',
      'tokenizers',
      '--corpus',
      os.path.join(work, 'large'),
      '--vocab',
      vocab_dir,
      '--batch',
      str(args.batch),
    ],
    env={'RAYON_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'true'},
  )
  runs = {}
  for name in ('small', 'large'):
    runs[name] = _run_child(
      [
        '--role',
        'pipeline',
        '--corpus',
        os.path.join(work, name),
        '--vocab',
        vocab_dir,
        '--root',
        os.path.join(work, f'run-{name}'),
        '--workers',
        str(args.workers),
        '--running-mode',
        args.running_mode,
        '--shuffle' if args.shuffle else '--no-shuffle',
      ]
    )

  size = single['bytes']
  rates = {
    k: _rate(size, single[k]['seconds'])
    for k in (
      'fast_bert_tokenizer',
      'preprocessing_graph',
      'normalization_only',
      'hf_bert_wordpiece',
    )
  }
  result, rss_large, proc_large = runs['large']
  _, rss_small, proc_small = runs['small']
  seconds = result['components']
  gen_s, transform_s = seconds.get('TextExampleGen', 0.0), seconds.get(contract.TRANSFORM_ID, 0.0)
  e2e = _rate(sizes['large'], gen_s + transform_s)
  transform_only = _rate(sizes['large'], transform_s)
  small_seconds = runs['small'][0]['components']
  small_gen_s = small_seconds.get('TextExampleGen', 0.0)
  small_transform_s = small_seconds.get(contract.TRANSFORM_ID, 0.0)
  # Fixed costs (worker start-up, graph tracing, MLMD) cancel out in the difference.
  extra_bytes = sizes['large'] - sizes['small']
  extra_seconds = gen_s + transform_s - small_gen_s - small_transform_s
  marginal = _rate(extra_bytes, extra_seconds) if extra_seconds > 0 else float('inf')
  print(
    f'\nvocabulary: {args.vocab_size} target; tokens per run: '
    f'{single["fast_bert_tokenizer"]["tokens"]:,} (FastBert) '
    f'{single["hf_bert_wordpiece"]["tokens"]:,} (HF)'
  )
  print(f'\n{"one core, same text and vocabulary":<52} {"MB/s":>8}')
  print(
    f'{"tensorflow-text FastBertTokenizer (fused lower/strip)":<52} '
    f'{rates["fast_bert_tokenizer"]:8.1f}'
  )
  print(
    f'{"preprocessing graph (NFKC+casefold+strip+FastBert)":<52} '
    f'{rates["preprocessing_graph"]:8.1f}'
  )
  print(f'{"  of which normalization ops alone":<52} {rates["normalization_only"]:8.1f}')
  print(f'{"HF tokenizers BertWordPieceTokenizer, 1 thread":<52} {rates["hf_bert_wordpiece"]:8.1f}')
  print(
    f'\nLocalDagRunner, DirectRunner {args.running_mode} x{args.workers}, ExampleGen '
    f'shuffle {"on" if args.shuffle else "off"}:'
  )
  print(f'  {"component":<28} {sizes["small"] / MB:6.0f} MB {sizes["large"] / MB:6.0f} MB')
  for component, s in sorted(seconds.items()):
    print(f'  {component:<28} {small_seconds.get(component, 0):7.1f} s {s:7.1f} s')
  print(f'{"ExampleGen + Transform end to end":<52} {e2e:8.1f}')
  print(f'{"Transform alone":<52} {transform_only:8.1f}')
  print(f'{"marginal e2e rate (large - small, fixed costs out)":<52} {marginal:8.1f}')
  print('\nratios:')
  hf_ratio = e2e / rates['hf_bert_wordpiece']
  per_worker = e2e / args.workers / rates['fast_bert_tokenizer']
  print(
    f'  e2e / HF single thread            {hf_ratio:6.2f}  (target >= 2)  '
    f'{"OK" if hf_ratio >= 2 else "MISSED"}'
  )
  print(
    f'  e2e per worker / bare FastBert    {per_worker:6.2f}  (target >= 0.30)  '
    f'{"OK" if per_worker >= 0.3 else "MISSED"}'
  )
  marginal_worker = marginal / args.workers / rates['fast_bert_tokenizer']
  print(f'  marginal / HF single thread       {marginal / rates["hf_bert_wordpiece"]:6.2f}')
  print(f'  marginal per worker / bare FastBert {marginal_worker:4.2f}')
  print('\npeak resident memory (whole process tree / largest process):')
  print(
    f'  {sizes["small"] / MB:6.0f} MB corpus  {rss_small / 2**20:8.0f} MiB  '
    f'{proc_small / 2**20:8.0f} MiB'
  )
  print(
    f'  {sizes["large"] / MB:6.0f} MB corpus  {rss_large / 2**20:8.0f} MiB  '
    f'{proc_large / 2**20:8.0f} MiB'
  )
  print(
    f'  ratio large/small: tree {rss_large / rss_small:.2f}, largest process '
    f'{proc_large / proc_small:.2f} (corpus ratio {sizes["large"] / sizes["small"]:.1f})'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
