"""Key/value-cached text generation for GPT-2 backbones, built to be traced into a SavedModel.

The prompt is prefilled once into a cache of keys and values per layer, then each step of one
`tf.while_loop` runs a single position against that cache. It is keras-hub's
`GPT2CausalLM.generate` algorithm (`call_with_cache` + `Sampler.__call__`), rewritten on the
backbone's layers so that the traced graph needs only TensorFlow at serving time, with per-row
controls on top:

- The cache is one key and one value tensor per layer, [batch, heads, window, head_dim]: each
  step writes one position of each and attention multiplies against them as they lie. (keras-hub
  stacks all layers into one tensor and splits and restacks it every step, and its attention
  transposes the whole cache: at batch 8 those copies cost more than the model's arithmetic.)
  Without XLA a position is written with a scatter, so no XLA op is in the graph (keras'
  `slice_update` is `XlaDynamicUpdateSlice`, which TensorFlow runs by compiling it with XLA).

- Prompts are padded on the right and every row keeps its natural positions: the loop walks one
  position index shared by all rows from the shortest prompt's end; a row still inside its
  prompt copies its next prompt token, the others sample. Greedy output therefore matches
  keras-hub's token for token.
- Each row has its own `max_new_tokens`, `temperature` (<= 0 or NaN: greedy), `top_k` (<= 0:
  whole vocabulary), `top_p` (outside (0, 1) or NaN: no nucleus cut) and `seed`. A row stops at
  the end token or after its `max_new_tokens`; the loop stops when every row has.
- A temperature too small for float32 (logits / temperature overflows) is greedy, its limit;
  +inf samples evenly within the cuts, which rank tokens by logit.
- Sampling is Gumbel-max with noise hashed from (row seed, position, token id): no random state,
  and a row's draws do not depend on the other rows of its batch.
- A prompt keeps its last `seq_len - max_new_tokens` tokens (at least one), so the requested
  tokens fit in the model's window of `seq_len` positions.
"""

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from tfxlm import contract

# Gumbel noise needs u in (0, 1): 24 random bits, centred in their bucket.
_UNIFORM_BITS = 24
_NEG_INF = float('-inf')
# Attention scores of positions a query must not see (keras' large negative for float32).
_LARGE_NEGATIVE = -0.7 * 3.4028235e38


def _mix32(x: tf.Tensor) -> tf.Tensor:
  """A bijective 32-bit integer hash with full avalanche (Wellons' "lowbias32")."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
  x = x * tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
  x = x * tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def gumbel_noise(seed: tf.Tensor, position: tf.Tensor, vocab_size: int) -> tf.Tensor:
  """Standard Gumbel noise [b, vocab] that depends only on each row's seed and the position.

  Args:
    seed: int32 [b], one seed per row.
    position: int32 scalar, the position being sampled.
    vocab_size: Columns of the noise.
  """
  key = _mix32(tf.bitwise.bitwise_xor(tf.cast(seed, tf.uint32), tf.constant(0x9E3779B9, tf.uint32)))
  key = _mix32(key + tf.cast(position, tf.uint32) * tf.constant(0x85EBCA6B, tf.uint32))
  columns = tf.cast(tf.range(vocab_size), tf.uint32) * tf.constant(0xC2B2AE35, tf.uint32)
  bits = _mix32(key[:, tf.newaxis] + columns[tf.newaxis, :])
  bits = tf.bitwise.right_shift(bits, tf.constant(32 - _UNIFORM_BITS, tf.uint32))
  uniform = (tf.cast(bits, tf.float32) + 0.5) / float(1 << _UNIFORM_BITS)
  return -tf.math.log(-tf.math.log(uniform))


def next_tokens(
  logits: tf.Tensor,
  banned: tf.Tensor,
  temperature: tf.Tensor,
  top_k: tf.Tensor,
  top_p: tf.Tensor,
  seed: tf.Tensor,
  position: tf.Tensor,
) -> tf.Tensor:
  """Picks one token per row from float32 logits [b, vocab]; never a `banned` [vocab] token.

  Greedy rows (temperature <= 0) take the argmax of the softmax, as keras-hub's greedy sampler
  does. Sampling rows scale by 1 / temperature, keep the `top_k` most likely tokens and then the
  smallest set whose probability reaches `top_p`, and draw with Gumbel-max.
  """
  vocab_size = logits.shape[-1]
  banned = banned[tf.newaxis, :]
  probabilities = tf.nn.softmax(logits, axis=-1)
  greedy = tf.argmax(tf.where(banned, -1.0, probabilities), axis=-1, output_type=tf.int32)
  sampling = temperature > 0.0

  def sample():
    allowed = tf.where(banned, _NEG_INF, logits)
    scaled = tf.where(
      banned, _NEG_INF, logits / tf.where(sampling, temperature, 1.0)[:, tf.newaxis]
    )
    # Ranked by logit, not by scaled logit: a huge temperature rounds the scaled ones to ties
    # (0 at +inf), which would keep every token whatever top_k and top_p say.
    ranked, order = tf.math.top_k(allowed, k=vocab_size)
    ranked_scaled = tf.gather(scaled, order, batch_dims=1)
    k = tf.where((top_k > 0) & (top_k < vocab_size), top_k, vocab_size)
    # The smallest set whose probability reaches top_p, within the top k: the first token
    # always, then each one while the probability before it is below top_p.
    in_top_k = tf.range(vocab_size)[tf.newaxis, :] < k[:, tf.newaxis]
    ranked_probabilities = tf.nn.softmax(tf.where(in_top_k, ranked_scaled, _NEG_INF), axis=-1)
    before = tf.math.cumsum(ranked_probabilities, axis=-1, exclusive=True)
    nucleus = (top_p > 0.0) & (top_p < 1.0)
    kept = in_top_k & ((before < top_p[:, tf.newaxis]) | ~nucleus[:, tf.newaxis])
    count = tf.maximum(tf.reduce_sum(tf.cast(kept, tf.int32), axis=-1), 1)
    threshold = tf.gather(ranked, count - 1, batch_dims=1)
    scaled = tf.where(allowed < threshold[:, tf.newaxis], _NEG_INF, scaled)
    noisy = scaled + gumbel_noise(seed, position, vocab_size)
    # A tiny temperature overflows the scaled logits to +-inf, whose ties argmax breaks by
    # id (a banned one when all are -inf): such a row takes its limit, the greedy token.
    finite = tf.math.is_finite(ranked_scaled[:, 0])
    sampled = tf.argmax(noisy, axis=-1, output_type=tf.int32)
    return tf.where(sampling & finite, sampled, greedy)

  return tf.cond(tf.reduce_any(sampling), sample, lambda: greedy)


class CachedGenerator:
  """Generates token ids from a keras-hub `GPT2Backbone` with a key/value cache.

  Args:
    backbone: The `GPT2Backbone` whose layers run (its weights are read, never changed).
    seq_len: The model's window: positions of a prompt plus its continuation.
    end_id: The token that ends a row's text.
    banned_ids: Tokens never generated.
    max_new_tokens_limit: Requests above it fail with INVALID_ARGUMENT; the effective limit is
      at most seq_len - 1, so the window always holds one prompt token.
    jit_compile: Compile the decoding loop with XLA (once per batch size and window, both
      rounded up to powers of two). Faster, but serving then needs XLA's CPU JIT
      (docs/runtime.md); without it the traced graph holds plain TensorFlow ops only.
  """

  def __init__(
    self,
    backbone,
    seq_len: int,
    end_id: int,
    banned_ids=(),
    max_new_tokens_limit: int = contract.DEFAULT_MAX_NEW_TOKENS_LIMIT,
    jit_compile: bool = False,
  ):
    if max_new_tokens_limit < 1:
      raise ValueError(f'max_new_tokens_limit must be >= 1, got {max_new_tokens_limit}')
    if seq_len < 2:
      raise ValueError(
        f'generation needs seq_len >= 2 (a prompt token and a new one), got {seq_len}'
      )
    self.backbone = backbone
    self.seq_len = seq_len
    self.end_id = end_id
    self.vocab_size = backbone.vocabulary_size
    self.banned = tf.constant([i in set(banned_ids) for i in range(self.vocab_size)])
    self.limit = min(max_new_tokens_limit, seq_len - 1)
    self.num_layers = backbone.num_layers
    self.num_heads = backbone.num_heads
    self.head_dim = backbone.hidden_dim // backbone.num_heads
    for layer in backbone.transformer_layers:
      if not getattr(layer, 'normalize_first', False) or not hasattr(
        layer, '_self_attention_layer'
      ):
        raise ValueError(
          f'generation runs GPT-2 decoder layers (keras-hub TransformerDecoder with '
          f'normalize_first=True); {layer.name} of {type(backbone).__name__} is not one'
        )
    self.jit_compile = jit_compile
    # The loop is a tf.while_loop already: nothing for AutoGraph to rewrite.
    self._loop = (
      tf.function(self.loop, jit_compile=True, autograph=False) if jit_compile else self.loop
    )

  def _attend(self, layer, x, h, keys, values, index):
    """The rest of one decoder layer (keras-hub's `TransformerDecoder`, normalize_first).

    x [b, n, hidden] is the layer's input, h its normalized form; `keys` and `values`
    [b, heads, positions, head_dim] already hold their projections. Query j attends to the
    positions <= index + j.
    """
    attention = layer._self_attention_layer
    residual = x
    query = tf.transpose(attention._query_dense(h), [0, 2, 1, 3])  # [b, heads, n, head_dim]
    # As keras' dot_product_attention: scores in float32, scaled after the product.
    scores = tf.cast(tf.matmul(query, keys, transpose_b=True), tf.float32)
    scores = scores * attention._inverse_sqrt_key_dim
    n, positions = tf.shape(query)[2], tf.shape(keys)[2]
    visible = tf.range(positions)[tf.newaxis, :] <= (index + tf.range(n))[:, tf.newaxis]
    scores = tf.where(visible, scores, _LARGE_NEGATIVE)
    weights = tf.cast(tf.nn.softmax(scores, axis=-1), values.dtype)
    attended = tf.transpose(tf.matmul(weights, values), [0, 2, 1, 3])  # [b, n, heads, head_dim]
    x = attention._output_dense(attended) + residual
    residual = x
    h = layer._feedforward_layer_norm(x)
    h = layer._feedforward_output_dense(layer._feedforward_intermediate_dense(h))
    return h + residual

  def _embed(self, token_ids, index):
    backbone = self.backbone
    tokens = backbone.token_embedding(token_ids)
    positions = backbone.position_embedding(tokens, start_index=index)
    return backbone.embeddings_add((tokens, positions))

  def _logits(self, x):
    x = self.backbone.layer_norm(x)
    return tf.cast(self.backbone.token_embedding(x, reverse=True), tf.float32)

  @staticmethod
  def _heads_first(projection):
    return tf.transpose(projection, [0, 2, 1, 3])  # [b, n, heads, d] -> [b, heads, n, d]

  def prefill(self, prompt: tf.Tensor, width: tf.Tensor):
    """Runs `prompt` [b, p] at positions 0..p-1; returns the cache of `width` >= p positions.

    The cache is a tuple of keys and values per layer, each [b, heads, width, head_dim]
    (positions p.. are zeros).
    """
    x = self._embed(prompt, 0)
    padding = [[0, 0], [0, 0], [0, width - tf.shape(prompt)[1]], [0, 0]]
    cache = []
    for layer in self.backbone.transformer_layers:
      attention = layer._self_attention_layer
      h = layer._self_attention_layer_norm(x)
      keys = self._heads_first(attention._key_dense(h))
      values = self._heads_first(attention._value_dense(h))
      x = self._attend(layer, x, h, keys, values, 0)
      cache += [tf.pad(keys, padding), tf.pad(values, padding)]
    return tuple(cache)

  def step(self, token_ids: tf.Tensor, cache: tuple, index: tf.Tensor):
    """Runs `token_ids` [b, 1] at position `index` against `cache` (from `prefill`).

    The same computation as keras-hub's `GPT2CausalLM.call_with_cache`, on a cache laid out
    per layer and heads first, so that attention reads it without copying it.

    Returns:
      (float32 logits [b, vocab], the cache with position `index` written).
    """
    x = self._embed(token_ids, index)
    written = []
    for i, layer in enumerate(self.backbone.transformer_layers):
      attention = layer._self_attention_layer
      h = layer._self_attention_layer_norm(x)
      keys = self._write(cache[2 * i], self._heads_first(attention._key_dense(h)), index)
      values = self._write(cache[2 * i + 1], self._heads_first(attention._value_dense(h)), index)
      x = self._attend(layer, x, h, keys, values, index)
      written += [keys, values]
    return self._logits(x)[:, 0, :], tuple(written)

  def _write(self, cache, update, index):
    """`cache` [b, heads, width, d] with `update` [b, heads, 1, d] at position `index`."""
    if self.jit_compile:
      # In place inside the compiled loop.
      return xla.dynamic_update_slice(cache, update, tf.stack([0, 0, index, 0]))
    # Without XLA: plain TensorFlow ops only, so the export needs no XLA to serve. A scatter of
    # the [b, heads] rows of head_dim values touches one position, where a tf.where would
    # rewrite the whole cache.
    shape = tf.shape(cache)
    rows, heads = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing='ij')
    at = tf.stack([rows, heads, tf.fill(tf.shape(rows), index)], axis=-1)  # [b, heads, 3]
    return tf.tensor_scatter_nd_update(cache, at, update[:, :, 0, :])

  def generate(
    self,
    prompt_ids: tf.RaggedTensor,
    max_new_tokens: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    top_p: tf.Tensor,
    seed: tf.Tensor,
  ):
    """Continues each prompt (int32 ragged [b, None]); every control is a [b] tensor.

    Returns:
      (ids int32 [b, n], new bool [b, n]): each row's prompt then its continuation, and where
      the continuation's tokens are (the end token excluded).

    Raises:
      tf.errors.InvalidArgumentError: for a `max_new_tokens` outside [0, limit] or controls
        whose batch size differs from the prompts'.
    """
    batch = prompt_ids.nrows(out_type=tf.int32)
    checks = [
      _check(
        tf.shape(value)[0] == batch,
        f'prompt has {{}} rows but {name} has {{}}: send one value per prompt',
        batch,
        tf.shape(value)[0],
      )
      for name, value in (
        ('max_new_tokens', max_new_tokens),
        ('temperature', temperature),
        ('top_k', top_k),
        ('top_p', top_p),
        ('seed', seed),
      )
    ]
    checks.append(
      _check(tf.reduce_all(prompt_ids.row_lengths() > 0), 'every prompt needs at least one token')
    )
    in_range = (max_new_tokens >= 0) & (max_new_tokens <= self.limit)
    checks.append(
      _check(
        tf.reduce_all(in_range),
        f'max_new_tokens must be 0 to {self.limit} (the limit set at export, in a window of '
        f'{self.seq_len} tokens), got {{}}: ask for at most {self.limit} new tokens per row',
        tf.concat([tf.boolean_mask(max_new_tokens, ~in_range), [0]], axis=0)[0],
      )
    )
    with tf.control_dependencies(checks):
      max_new_tokens = tf.identity(max_new_tokens)

    # Keep each prompt's last tokens, leaving room for its new ones.
    lengths = tf.cast(prompt_ids.row_lengths(), tf.int32)
    kept = tf.minimum(lengths, tf.maximum(self.seq_len - max_new_tokens, 1))
    starts = tf.cast(prompt_ids.row_starts(), tf.int32) + lengths - kept
    prompt_ids = tf.RaggedTensor.from_row_lengths(
      tf.gather(prompt_ids.flat_values, tf.ragged.range(starts, starts + kept).flat_values), kept
    )
    lengths = kept
    total = tf.minimum(tf.reduce_max(lengths + max_new_tokens), self.seq_len)
    total = tf.maximum(total, tf.maximum(tf.reduce_max(lengths), 1))
    prompt = prompt_ids.to_tensor(default_value=0)  # [b, longest prompt], right-padded
    width = total
    if self.jit_compile:
      # XLA compiles the loop once per shape: round the batch and the window up to powers of
      # two. Extra rows sit inside their "prompt" until the end and generate nothing.
      rows = _bucket(batch, 1 << 30, smallest=1)
      width = _bucket(total, self.seq_len, smallest=16)
      extra = rows - batch
      prompt = tf.pad(prompt, [[0, extra], [0, 0]])
      lengths = tf.concat([lengths, tf.fill([extra], total)], axis=0)
      max_new_tokens = tf.pad(max_new_tokens, [[0, extra]])
      temperature, top_k, top_p, seed = (
        tf.pad(value, [[0, extra]]) for value in (temperature, top_k, top_p, seed)
      )
    ids = tf.pad(prompt, [[0, 0], [0, width - tf.shape(prompt)[1]]])
    cache = self.prefill(prompt, width)
    ids, new = self._loop(
      ids, cache, lengths, total, max_new_tokens, temperature, top_k, top_p, seed
    )
    return ids[:batch, :total], new[:batch, :total]

  def loop(self, ids, cache, lengths, total, max_new_tokens, temperature, top_k, top_p, seed):
    """Fills `ids` [b, width] from the end of each row's prompt up to column `total`.

    `cache` holds the prompts' keys and values. Every shape follows from those of `ids` and
    `cache`, so that XLA compiles this once per (batch, width).
    """
    batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
    columns = tf.range(width)[tf.newaxis, :]

    def body(index, ids, new, done, cache):
      previous = tf.slice(ids, [0, index - 1], [batch, 1])
      logits, cache = self.step(previous, cache, index - 1)
      sampled = next_tokens(logits, self.banned, temperature, top_k, top_p, seed, index)
      in_prompt = index < lengths
      token = tf.where(in_prompt, tf.slice(ids, [0, index], [batch, 1])[:, 0], sampled)
      generating = ~in_prompt & ~done
      at_index = columns == index
      ids = tf.where(at_index, token[:, tf.newaxis], ids)
      new = new | (at_index & (generating & (token != self.end_id))[:, tf.newaxis])
      done = done | (
        generating & ((token == self.end_id) | (index + 1 - lengths >= max_new_tokens))
      )
      return index + 1, ids, new, done, cache

    # The loop starts at the shortest prompt's end (rows inside their prompt copy it).
    start = tf.reduce_min(tf.concat([lengths, [total]], axis=0))
    cache_shape = (tf.TensorShape([None, self.num_heads, None, self.head_dim]),) * len(cache)
    _, ids, new, _, _ = tf.while_loop(
      lambda index, ids, new, done, cache: (index < total) & ~tf.reduce_all(done),
      body,
      (start, ids, tf.zeros_like(ids, tf.bool), max_new_tokens <= 0, cache),
      shape_invariants=(
        tf.TensorShape([]),
        tf.TensorShape([None, None]),
        tf.TensorShape([None, None]),
        tf.TensorShape([None]),
        cache_shape,
      ),
    )
    return ids, new


def _check(condition: tf.Tensor, template: str, *values: tf.Tensor) -> tf.Operation:
  """Fails with INVALID_ARGUMENT and `template` filled with `values` unless `condition`.

  The message is Assert's one datum, free of the tensor dumps of tf.debugging.assert_*
  (servers show it as is): no quotes or backslashes, which Assert would escape.
  """
  message = tf.strings.format(template, values) if values else template
  return tf.debugging.Assert(condition, [message])


def _bucket(size: tf.Tensor, limit: int, smallest: int) -> tf.Tensor:
  """The smallest power of two >= `size` (and >= `smallest`), or `limit` if that is less."""
  sizes = {min(smallest << n, limit) for n in range(32) if (smallest << n) < 2 * limit}
  sizes = sorted(sizes | {limit})
  sizes = tf.constant(sizes, tf.int32)
  return tf.gather(sizes, tf.searchsorted(sizes, tf.reshape(size, [1]))[0])
