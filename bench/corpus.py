"""A generated English-like text corpus and a WordPiece vocabulary learned from it, for benches.

`generate_corpus` writes a Zipf-distributed word list as sentences with capitals, commas, end
marks and a few accented words, one document per line, block by block so that no corpus sits
in memory; `learn_vocab` learns a vocabulary from its start as the Vocabulary component would.
"""

from __future__ import annotations

import collections
import os
from typing import Iterator

from tfxlm import contract

MB = 1_000_000
VOCAB_SAMPLE_BYTES = 10 * MB

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
  """Function words first, then pronounceable made-up words (1-4 syllables), no duplicates."""
  onsets, nuclei, codas = _ONSETS.split(), _NUCLEI.split(), _CODAS.split(' ')
  words = list(dict.fromkeys(_FUNCTION_WORDS))
  seen = set(words)
  while len(words) < size:
    # A block of candidate words at a time: numpy draws the parts, Python joins them.
    block = 2 * (size - len(words)) + 64
    syllables = rng.choice([1, 2, 2, 3, 3, 4], size=block, p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05])
    starts = rng.integers(len(onsets), size=(block, 4))
    middles = rng.integers(len(nuclei), size=(block, 4))
    ends = rng.integers(len(codas), size=block)
    for n, start, middle, end in zip(syllables, starts.tolist(), middles.tolist(), ends.tolist()):
      word = ''.join(onsets[start[i]] + nuclei[middle[i]] for i in range(n)) + codas[end]
      if word not in seen:
        seen.add(word)
        words.append(word)
        if len(words) == size:
          break
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
