"""tensorflow-text's WordPiece learner, computed with arrays: the same vocabulary, many times faster.

tensorflow-text's `wordpiece_tokenizer_learner_lib.learn` binary-searches a count threshold; for
each threshold it runs `num_iterations` passes that, in pure Python, count every substring of
every word (from each piece boundary of the previous pass's greedy longest-match segmentation),
discount each substring's count by the counts of the longer substrings it is a prefix of, and keep
those at or above the threshold. On 15k distinct words that is most of a minute.

Here every substring of every word is enumerated once and given an id; a pass is then a handful
of numpy operations over those ids:
- the first pass does not depend on the threshold (it counts every substring), so it is computed
  once for the whole search;
- the greedy longest match of a later pass is, per (word, start) segment, the longest substring in
  the current vocabulary (a `maximum.reduceat`), followed from start 0 for all words at once;
- the prefix discount walks the prefix tree (each substring's parent is itself minus its last
  character) from the longest substrings down, carrying the discounted counts of the present
  descendants to each ancestor, which is what the reference's per-prefix decrements add up to.

The filtering of the input (length, reserved tokens, alphabet), the threshold bounds and the
final ordering are the reference's own functions, called as they are there. Words that contain
the joiner itself would mix joined and plain substrings under one string: those inputs (and the
unused settings without a joiner or without passes) go to the reference learner unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as reference


class _Substrings:
  """Every substring of every word, with ids, laid out by (word, start) segment.

  Entry k is the substring word[start:end] of segment `entry_segment[k]`; a segment's entries are
  contiguous, by increasing end. Substrings starting after position 0 carry the joiner, as the
  reference's do.
  """

  def __init__(self, words: Sequence[str], joiner: str):
    ids: dict[str, int] = {}
    tokens: list[str] = []
    lengths: list[int] = []
    parents: list[int] = []
    entry_token: list[int] = []
    entry_end: list[int] = []
    segment_first: list[int] = []  # index of each segment's first entry
    word_first_segment: list[int] = []
    for word in words:
      word_first_segment.append(len(segment_first))
      n = len(word)
      for start in range(n):
        segment_first.append(len(entry_token))
        prefix = joiner if start else ''
        parent = -1
        for end in range(start + 1, n + 1):
          token = prefix + word[start:end]
          token_id = ids.get(token)
          if token_id is None:
            token_id = ids[token] = len(tokens)
            tokens.append(token)
            lengths.append(end - start)
            parents.append(parent)
          entry_token.append(token_id)
          entry_end.append(end)
          parent = token_id
    self.tokens = tokens
    self.ids = ids
    self.token_length = np.asarray(lengths, dtype=np.int64)
    self.token_parent = np.asarray(parents, dtype=np.int64)
    self.entry_token = np.asarray(entry_token, dtype=np.int64)
    self.entry_end = np.asarray(entry_end, dtype=np.int64)
    self.segment_first = np.asarray(segment_first, dtype=np.int64)
    self.word_first_segment = np.asarray(word_first_segment, dtype=np.int64)
    self.word_length = np.asarray([len(w) for w in words], dtype=np.int64)
    segment_sizes = np.diff(np.append(self.segment_first, len(entry_token)))
    self.entry_segment = np.repeat(np.arange(len(segment_first)), segment_sizes)
    self.segment_word = np.repeat(np.arange(len(words)), self.word_length)
    # Tokens by decreasing length, grouped: the order the prefix discount runs in.
    by_length = np.argsort(-self.token_length, kind='stable')
    bounds = np.flatnonzero(np.diff(self.token_length[by_length])) + 1
    self.length_groups = np.split(by_length, bounds)


class _Learner:
  """One learning problem: the filtered word counts and the threshold-independent first pass."""

  def __init__(self, word_counts: list[tuple[str, int]], params: reference.Params):
    self.params = params
    self.char_tokens = reference.extract_char_tokens(word_counts)
    self.words = _Substrings([w for w, _ in word_counts], params.joiner)
    words = self.words
    self.word_count = np.asarray([c for _, c in word_counts], dtype=np.float64)
    self.entry_weight = self.word_count[self.words.segment_word[words.entry_segment]]
    # The current vocabulary always holds every character alone and as a suffix.
    self.char_mask = np.zeros(len(words.tokens), dtype=bool)
    for char in self.char_tokens:
      for token in (char, params.joiner + char):
        if token in words.ids:
          self.char_mask[words.ids[token]] = True
    self.first_pass = self._discounted(np.ones(len(words.segment_first), dtype=bool))

  def _discounted(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the substrings of the chosen segments, each less the counts of the present
    longer substrings it is a prefix of; and which substrings are present at all."""
    words = self.words
    chosen = segments[words.entry_segment]
    size = len(words.tokens)
    counts = np.bincount(
      words.entry_token[chosen], weights=self.entry_weight[chosen], minlength=size
    )
    present = np.bincount(words.entry_token[chosen], minlength=size) > 0
    # below[t]: the discounted counts of the present substrings that extend t, summed.
    below = np.zeros(size, dtype=np.float64)
    for group in words.length_groups:
      counts[group] -= below[group]
      carried = np.where(present[group], counts[group], 0.0) + below[group]
      parents = words.token_parent[group]
      has_parent = parents >= 0
      below += np.bincount(parents[has_parent], weights=carried[has_parent], minlength=size)
    return counts, present

  def _segmentation(self, vocab_mask: np.ndarray) -> np.ndarray:
    """The segments the greedy longest match starts a piece at, over all words that it splits
    whole into vocabulary pieces (the reference skips the others)."""
    words = self.words
    ends = np.where(vocab_mask[words.entry_token], words.entry_end, -1)
    best_end = np.maximum.reduceat(ends, words.segment_first)
    chosen = np.zeros(len(words.segment_first), dtype=bool)
    failed = np.zeros(len(words.word_length), dtype=bool)
    frontier = words.word_first_segment[words.word_length > 0]
    while frontier.size:
      chosen[frontier] = True
      end = best_end[frontier]
      word = words.segment_word[frontier]
      failed[word[end < 0]] = True
      going = (end >= 0) & (end < words.word_length[word])
      frontier = words.word_first_segment[word[going]] + end[going]
    return chosen & ~failed[words.segment_word]

  def vocabulary(self, thresh: int) -> dict[str, int]:
    """The reference's `learn_with_thresh`, as the token -> count dict before final ordering."""
    counts, present = self.first_pass
    kept = present & (counts >= thresh)
    for _ in range(1, self.params.num_iterations):
      counts, present = self._discounted(self._segmentation(kept | self.char_mask))
      kept = present & (counts >= thresh)
    current = {self.words.tokens[i]: int(counts[i]) for i in np.flatnonzero(kept)}
    return reference.ensure_all_tokens_exist(
      self.char_tokens, current, self.params.include_joiner_token, self.params.joiner
    )

  def search(self, lower: int, upper: int) -> list[str]:
    """The reference's `learn_binary_search`, same thresholds in the same order."""
    params = self.params
    slack = max(params.slack_ratio * params.vocab_size, 0)
    while True:
      thresh = (upper + lower) // 2
      current = self.vocabulary(thresh)
      size = len(set(params.reserved_tokens) | self.char_tokens | set(current))
      within = size <= params.vocab_size and params.vocab_size - size <= slack
      if within or lower >= upper or thresh <= 1:
        return reference.generate_final_vocabulary(
          params.reserved_tokens, self.char_tokens, current
        )
      if size > params.vocab_size:
        lower = thresh + 1
      else:
        upper = thresh - 1


def learn(
  word_counts: Sequence[tuple[str, int]],
  vocab_size: int,
  reserved_tokens: list[str],
  upper_thresh: int | None = int(1e7),
  lower_thresh: int | None = 10,
  num_iterations: int = 4,
  max_input_tokens: int | None = int(5e6),
  max_token_length: int = 50,
  max_unique_chars: int = 1000,
  slack_ratio: float = 0.05,
  include_joiner_token: bool = True,
  joiner: str = '##',
) -> list[str]:
  """`wordpiece_tokenizer_learner_lib.learn` with the same arguments and the same result."""
  word_counts = list(word_counts.items() if isinstance(word_counts, dict) else word_counts)
  if num_iterations < 1 or not include_joiner_token or any(joiner in w for w, _ in word_counts):
    return reference.learn(
      word_counts,
      vocab_size,
      reserved_tokens,
      upper_thresh=upper_thresh,
      lower_thresh=lower_thresh,
      num_iterations=num_iterations,
      max_input_tokens=max_input_tokens,
      max_token_length=max_token_length,
      max_unique_chars=max_unique_chars,
      slack_ratio=slack_ratio,
      include_joiner_token=include_joiner_token,
      joiner=joiner,
    )
  params = reference.Params(
    upper_thresh,
    lower_thresh,
    num_iterations,
    max_input_tokens,
    max_token_length,
    max_unique_chars,
    vocab_size,
    slack_ratio,
    include_joiner_token,
    joiner,
    reserved_tokens,
  )
  upper, lower = reference.get_search_threshs(word_counts, upper_thresh, lower_thresh)
  words = reference.get_input_words(word_counts, reserved_tokens, max_token_length)
  allowed = reference.get_allowed_chars(words, max_unique_chars)
  words = reference.filter_input_words(words, allowed, max_input_tokens)
  if not words:
    return reference.learn_binary_search(words, lower, upper, params)
  return _Learner(words, params).search(lower, upper)
