"""Cached generation (trainer/generation.py) and the exported `generate` signature.

Models have random weights: what is tested is that generation computes what the model says,
the same as keras-hub's GPT2CausalLM.generate and as a full forward pass per token.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import grpc
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import client
from serving import server as server_lib
from serving.config import ModelConfig
from tests.trainer import generation_util
from tfxlm import contract
from trainer import generation, models, vocabulary

SEP = contract.SEP_ID
NEVER = -1  # an end token no row produces


@pytest.fixture(scope='module')
def lm(clm_data):
  vocab_size = len(clm_data['vocab'])
  config, model = generation_util.random_clm(vocab_size, max_new_tokens_limit=12)
  generation_util.never_predict(model.backbone, generation_util.BANNED_IDS)
  return config, model


@pytest.fixture(scope='module')
def exported(lm, clm_data, tmp_path_factory):
  config, model = lm
  path = str(tmp_path_factory.mktemp('generate') / 'model')
  generation_util.export_clm(model, config, clm_data['transform_graph'], path)
  return path, tf.saved_model.load(path).signatures[contract.GENERATE]


@pytest.fixture(scope='module')
def exported_xla(lm, clm_data, tmp_path_factory):
  """The same model exported with its decoding loop compiled by XLA."""
  config, model = lm
  config = dataclasses.replace(config, generate_jit_compile=True)
  path = str(tmp_path_factory.mktemp('generate_xla') / 'model')
  generation_util.export_clm(model, config, clm_data['transform_graph'], path)
  return path, tf.saved_model.load(path).signatures[contract.GENERATE]


def _graph_functions(path):
  """(op types, names of the functions XLA must compile) of a SavedModel's graph."""
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0].graph_def
  ops = {node.op for node in graph.node}
  compiled = set()
  for function in graph.library.function:
    ops |= {node.op for node in function.node_def}
    if function.attr['_XlaMustCompile'].b:
      compiled.add(function.signature.name)
  return ops, compiled


_ROW = lambda dtype: tf.TensorSpec([None], dtype)
_TRACED = {}


def _generator(model, end_id=SEP, seq_len=32):
  """The generator's `generate`, traced once per (model, end token)."""
  key = (id(model), end_id)
  if key not in _TRACED:
    generator = generation.CachedGenerator(
      model.backbone, seq_len, end_id, generation_util.BANNED_IDS, max_new_tokens_limit=seq_len
    )
    _TRACED[key] = tf.function(
      generator.generate,
      input_signature=[
        tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
        _ROW(tf.int32),
        _ROW(tf.float32),
        _ROW(tf.int32),
        _ROW(tf.float32),
        _ROW(tf.int32),
      ],
    )
  return _TRACED[key]


def _run(generate, prompts, max_new, temperature=0.0, top_k=0, top_p=1.0, seed=0):
  """Each row's new token ids."""
  b = len(prompts)
  row = lambda v, dtype: tf.constant(np.broadcast_to(v, [b]), dtype)
  ids, new = generate(
    tf.ragged.constant(prompts, dtype=tf.int32),
    row(max_new, tf.int32),
    row(temperature, tf.float32),
    row(top_k, tf.int32),
    row(top_p, tf.float32),
    row(seed, tf.int32),
  )
  return [list(r[m]) for r, m in zip(ids.numpy(), new.numpy())]


def _uncached_greedy(model, prompt, max_new, end_id, seq_len=32):
  """Greedy decoding with a full forward pass over the whole text for every new token."""
  forward = tf.function(
    lambda ids: model({models.TOKEN_IDS: ids, models.PADDING_MASK: tf.ones_like(ids)})[0, -1],
    input_signature=[tf.TensorSpec([1, None], tf.int32)],
  )
  ids, new = list(prompt)[-max(seq_len - max_new, 1) :], []
  while len(new) < max_new and len(ids) < seq_len:
    probabilities = tf.nn.softmax(forward(tf.constant([ids], tf.int32))).numpy()
    probabilities[generation_util.BANNED_IDS] = -1.0
    token = int(np.argmax(probabilities))
    if token == end_id:
      break
    ids.append(token)
    new.append(token)
  return new


def _keras_hub_greedy(model, prompts, length, end_id):
  """keras-hub's GPT2CausalLM.generate (greedy) up to `length` positions; new ids per row."""
  causal_lm = keras_hub.models.GPT2CausalLM(backbone=model.backbone, preprocessor=None)
  causal_lm.compile(sampler='greedy')
  token_ids = np.zeros([len(prompts), length], np.int32)
  padding_mask = np.zeros([len(prompts), length], bool)
  for i, prompt in enumerate(prompts):
    token_ids[i, : len(prompt)] = prompt
    padding_mask[i, : len(prompt)] = True
  out = causal_lm.generate(
    {'token_ids': token_ids, 'padding_mask': padding_mask},
    stop_token_ids=None if end_id == NEVER else [end_id],
  )
  rows = []
  for prompt, ids, mask in zip(prompts, out['token_ids'], out['padding_mask']):
    new = [int(t) for t in ids[len(prompt) :][mask[len(prompt) :]]]
    rows.append(new[: new.index(end_id)] if end_id in new else new)
  return rows


def _prompts(vocab_size, lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [
    [SEP] + rng.integers(len(contract.RESERVED_TOKENS), vocab_size, n - 1).tolist() for n in lengths
  ]


@pytest.mark.parametrize('end_id', [NEVER, SEP])
def test_greedy_matches_keras_hub_and_a_full_forward_pass_per_token(lm, end_id):
  _, model = lm
  prompts = _prompts(model.backbone.vocabulary_size, [1, 4, 11, 2])
  length = 20  # keras-hub fills every row to one length: ask each row for what is left
  max_new = [length - len(p) for p in prompts]
  got = _run(_generator(model, end_id), prompts, max_new)
  assert got == _keras_hub_greedy(model, prompts, length, end_id)
  assert got == [_uncached_greedy(model, p, n, end_id) for p, n in zip(prompts, max_new)]
  if end_id == NEVER:
    assert [len(r) for r in got] == max_new
  assert not set(sum(got, [])) & set(generation_util.BANNED_IDS)


def test_each_row_stops_at_its_first_end_token(lm):
  _, model = lm
  prompts = _prompts(model.backbone.vocabulary_size, [3, 6, 2], seed=1)
  full = _run(_generator(model, NEVER), prompts, 15)
  end_id = full[0][4]
  stopped = _run(_generator(model, end_id), prompts, 15)
  assert stopped == [r[: r.index(end_id)] if end_id in r else r for r in full]
  assert len(stopped[0]) <= 4


def test_a_prompt_longer_than_the_window_keeps_its_last_tokens(lm):
  _, model = lm
  prompt = _prompts(model.backbone.vocabulary_size, [45], seed=2)[0]
  generate = _generator(model, NEVER)
  for max_new in (5, 31):
    kept = prompt[-(32 - max_new) :]
    assert _run(generate, [prompt], max_new) == _run(generate, [kept], max_new)
    assert len(_run(generate, [prompt], max_new)[0]) == max_new


def test_sampling_draws_from_the_temperature_top_k_top_p_distribution():
  logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, 3.0, 0.2], np.float32)
  banned = tf.constant([False] * 6 + [True, False])  # token 6 would be the favourite
  rows = 6000
  seeds = tf.range(rows)

  def frequencies(temperature, top_k=0, top_p=1.0, position=7):
    row = lambda v, dtype: tf.fill([rows], tf.cast(v, dtype))
    picks = generation.next_tokens(
      tf.tile(logits[np.newaxis], [rows, 1]),
      banned,
      row(temperature, tf.float32),
      row(top_k, tf.int32),
      row(top_p, tf.float32),
      seeds,
      tf.constant(position),
    )
    return np.bincount(picks.numpy(), minlength=len(logits)) / rows

  def expected(temperature, support):
    scaled = np.where(np.isin(np.arange(len(logits)), support), logits / temperature, -np.inf)
    return np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()

  allowed = [0, 1, 2, 3, 4, 5, 7]
  for temperature in (1.0, 0.5):
    np.testing.assert_allclose(frequencies(temperature), expected(temperature, allowed), atol=0.025)
  np.testing.assert_allclose(frequencies(1.0, top_k=3), expected(1.0, [0, 1, 2]), atol=0.025)
  # Probabilities over the allowed tokens: 0.38, 0.23, 0.14, ... top_p 0.5 keeps the first two.
  np.testing.assert_allclose(frequencies(1.0, top_p=0.5), expected(1.0, [0, 1]), atol=0.025)
  greedy = frequencies(0.0)
  assert greedy[0] == 1.0
  # Another position draws other noise with the same seeds.
  assert not np.array_equal(frequencies(1.0), frequencies(1.0, position=8))


def _picks(logits, banned, temperature, top_k=0, top_p=1.0, rows=200):
  """`next_tokens` for `rows` copies of `logits` [vocab], seeds 0..rows-1."""
  row = lambda v, dtype: tf.fill([rows], tf.cast(v, dtype))
  return generation.next_tokens(
    tf.tile(np.asarray(logits, np.float32)[np.newaxis], [rows, 1]),
    tf.constant(banned),
    row(temperature, tf.float32),
    row(top_k, tf.int32),
    row(top_p, tf.float32),
    tf.range(rows),
    tf.constant(3),
  ).numpy()


def test_a_temperature_too_small_for_float32_is_greedy_never_a_banned_token():
  banned = [True] + [False] * 5 + [True, False]
  # logits / 1.2e-38 overflows to +inf for the first four allowed tokens, or to -inf for all.
  for logits in ([10, 30, 20, 40, 0, -10, 60, 4], [-30, -20, -40, -15, -50, -25, -5, -35]):
    greedy = _picks(logits, banned, 0.0)
    assert set(greedy) == {3}
    for temperature in (1.2e-38, 1e-37, 1e-39, 1e-45):
      for top_k, top_p in ((0, 1.0), (2, 1.0), (0, 0.5)):
        picks = _picks(logits, banned, temperature, top_k, top_p)
        np.testing.assert_array_equal(picks, greedy, err_msg=f'{temperature} {top_k} {top_p}')


def test_a_huge_temperature_samples_evenly_within_top_k_and_top_p():
  logits = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, 3.0, 0.2]
  banned = [False] * 6 + [True, False]
  rows = 4000
  # Even odds over the 7 allowed tokens: top_p 0.5 keeps the first 4 (3/7 < 0.5 before it).
  for top_k, top_p, kept in (
    (3, 1.0, [0, 1, 2]),
    (0, 0.5, [0, 1, 2, 3]),
    (0, 1.0, [0, 1, 2, 3, 4, 5, 7]),
  ):
    for temperature in (float('inf'), 3e38):
      picks = _picks(logits, banned, temperature, top_k, top_p, rows=rows)
      expected = np.isin(np.arange(8), kept) / len(kept)
      np.testing.assert_allclose(np.bincount(picks, minlength=8) / rows, expected, atol=0.03)


def _call(signature, prompts, max_new, temperature=0.0, top_k=0, top_p=1.0, seed=0):
  b = len(prompts)
  row = lambda v, dtype: tf.constant(np.broadcast_to(v, [b]), dtype)
  out = signature(
    prompt=tf.constant(prompts),
    max_new_tokens=row(max_new, tf.int32),
    temperature=row(temperature, tf.float32),
    top_k=row(top_k, tf.int32),
    top_p=row(top_p, tf.float32),
    seed=row(seed, tf.int32),
  )
  return [t.decode() for t in out[contract.GENERATED_TEXT].numpy()]


PROMPTS = ['the film was', 'a', 'night river stone cloud bird house tree world people time']


def test_exported_greedy_text_is_keras_hubs_and_loads_with_only_tensorflow_text(
  lm, exported, exported_xla, clm_data, tmp_path
):
  _, model = lm
  path, signature = exported
  # The prompts' ids as the export tokenizes them ([SEP] first).
  examples = [
    tf.train.Example(
      features=tf.train.Features(
        feature={
          contract.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[p.encode()]))
        }
      )
    ).SerializeToString()
    for p in PROMPTS
  ]
  loaded = tf.saved_model.load(path)
  ids = loaded.signatures[contract.TRANSFORM_FEATURES](examples=tf.constant(examples))
  prompts = [
    [SEP] + [int(t) for t in row if t != contract.PAD_ID]
    for row in ids[contract.TOKEN_IDS_KEY].numpy()
  ]
  length = 24
  max_new = [min(12, length - len(p)) for p in prompts]
  expected_ids = _keras_hub_greedy(
    model, prompts, max(len(p) + n for p, n in zip(prompts, max_new)), SEP
  )
  expected_ids = [r[:n] for r, n in zip(expected_ids, max_new)]
  vocab = clm_data['vocab']
  expected = [
    vocabulary.decode_tokens(
      tf.constant([[vocab[t] for t in r] or ['']]),
      tf.constant([[True] * len(r) or [False]]),
      contract.WORDPIECE,
    )
    .numpy()[0]
    .decode()
    for r in expected_ids
  ]
  got = _call(signature, PROMPTS, max_new)
  assert got == expected
  assert any(len(r) >= 3 for r in expected_ids)
  # Compiled by XLA (3 rows run as 4, the window rounded up to 16): the same text.
  assert _call(exported_xla[1], PROMPTS, max_new) == expected

  script = textwrap.dedent(f"""
    import json, sys
    import tensorflow as tf, tensorflow_text  # noqa: F401
    texts = []
    for path in ({path!r}, {exported_xla[0]!r}):
      signature = tf.saved_model.load(path).signatures['generate']
      b = {len(PROMPTS)}
      out = signature(prompt=tf.constant({PROMPTS!r}), max_new_tokens=tf.constant({max_new!r}),
                      temperature=tf.zeros([b]), top_k=tf.zeros([b], tf.int32),
                      top_p=tf.ones([b]), seed=tf.zeros([b], tf.int32))
      texts.append([t.decode() for t in out['text'].numpy()])
    assert 'keras_hub' not in sys.modules and 'keras' not in sys.modules, 'keras was imported'
    print(json.dumps(texts))
  """)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run(
    [sys.executable, '-c', script],
    capture_output=True,
    text=True,
    cwd=str(tmp_path),
    env=env,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == [got, got]


def test_only_the_xla_export_needs_xla_to_serve(exported, exported_xla):
  ops, compiled = _graph_functions(exported[0])
  assert not compiled and not {op for op in ops if op.startswith('Xla')}, sorted(ops)
  ops, compiled = _graph_functions(exported_xla[0])
  assert len(compiled) == 1 and 'XlaDynamicUpdateSlice' in ops


def test_rows_of_one_batch_take_their_own_controls(exported):
  _, signature = exported
  prompt, other = PROMPTS[0], PROMPTS[2]
  rows = [  # (prompt, max_new_tokens, temperature, top_k, top_p, seed)
    (prompt, 10, 0.0, 0, 1.0, 0),
    (prompt, 10, 0.7, 1, 1.0, 3),  # top_k 1 is greedy whatever the temperature
    (prompt, 10, 1.0, 0, 1e-6, 4),  # so is a vanishing top_p
    (other, 6, 1.5, 0, 1.0, 5),
    (other, 0, 1.0, 5, 0.9, 6),
    (other, 3, 0.0, 0, 1.0, 7),
  ]
  columns = list(zip(*rows))
  batch = _call(signature, *columns)
  assert batch[1] == batch[0] and batch[2] == batch[0]
  assert len(batch[3].split()) <= 6 and batch[4] == '' and len(batch[5].split()) <= 3
  # A row's text does not depend on the rows beside it.
  assert [_call(signature, *[[v] for v in r])[0] for r in rows] == batch


def test_the_same_seed_gives_the_same_text(exported):
  _, signature = exported
  seeds = [1, 1, 2, 3, 4, 5]
  first = _call(signature, [PROMPTS[1]] * 6, 12, temperature=1.0, seed=seeds)
  assert _call(signature, [PROMPTS[1]] * 6, 12, temperature=1.0, seed=seeds) == first
  assert first[0] == first[1] and len(set(first[1:])) > 1


def test_max_new_tokens_is_bounded_at_export(exported):
  _, signature = exported
  assert len(_call(signature, [PROMPTS[0]], 12)) == 1  # the limit itself is fine
  for bad in (13, -1, 2**31 - 1, -(2**31)):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
      _call(signature, PROMPTS[:2], [3, bad])
    _assert_short(error.value.message, 'max_new_tokens must be 0 to 12', f'got {bad}:')
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    signature(
      prompt=tf.constant(PROMPTS[:2]),
      max_new_tokens=tf.constant([3]),
      temperature=tf.zeros([2]),
      top_k=tf.zeros([2], tf.int32),
      top_p=tf.ones([2]),
      seed=tf.zeros([2], tf.int32),
    )
  _assert_short(error.value.message, 'prompt has 2 rows but max_new_tokens has 1', 'one value per')


def _assert_short(message, *parts):
  """`message` says `parts` without the tensor dumps of tf.debugging.assert_* ops."""
  for part in parts:
    assert part in message, message
  for dump in ('Condition', 'did not hold', 'x (', 'y (', '\\"'):
    assert dump not in message, message


# -- through the server ------------------------------------------------------------------------


def _pushed(path, base, name):
  """Copies an exported model to <base>/<name>/1, the layout the Pusher writes."""
  shutil.copytree(path, os.path.join(base, name, '1'))
  return ModelConfig(name, os.path.join(base, name))


@pytest.fixture(scope='module')
def served(exported, exported_xla, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('serving'))
  server = server_lib.build(
    [_pushed(exported[0], base, 'lm'), _pushed(exported_xla[0], base, 'lm_xla')],
    poll_wait_seconds=0,
    options=server_lib.ServerOptions(grpc_port=0, rest_port=0),
  ).start()
  yield server
  server.stop(grace_seconds=5)


def _columns(rows):
  keys = (
    contract.PROMPT_INPUT,
    contract.MAX_NEW_TOKENS_INPUT,
    contract.TEMPERATURE_INPUT,
    contract.TOP_K_INPUT,
    contract.TOP_P_INPUT,
    contract.SEED_INPUT,
  )
  return [[r[k] for r in rows] for k in keys]


def test_generate_through_the_server_in_both_rest_formats_and_grpc(exported, served):
  _, signature = exported
  rows = client.generation_rows(PROMPTS, 8, temperature=0.9, top_k=5, top_p=0.95, seed=11)
  rows[0][contract.TEMPERATURE_INPUT] = 0.0
  rows[1][contract.MAX_NEW_TOKENS_INPUT] = 3
  expected = _call(signature, *_columns(rows))
  rest = client.RestClient(f'http://127.0.0.1:{served.rest_port}')
  assert rest.generate('lm', rows)[contract.GENERATED_TEXT] == expected  # "instances" rows
  columns = {k: [r[k] for r in rows] for k in rows[0]}
  answer = rest.request(
    f'{rest.url}/v1/models/lm:predict', {'signature_name': contract.GENERATE, 'inputs': columns}
  )
  assert answer['outputs'] == expected
  _, outputs = client.GrpcClient(f'127.0.0.1:{served.grpc_port}').generate('lm', rows)
  assert [t.decode() for t in outputs[contract.GENERATED_TEXT]] == expected


def test_a_bad_max_new_tokens_gets_a_short_answer_over_rest_and_grpc(served):
  rest = client.RestClient(f'http://127.0.0.1:{served.rest_port}')
  grpc_client = client.GrpcClient(f'127.0.0.1:{served.grpc_port}')
  for bad in (13, -1, 2**31 - 1):
    rows = client.generation_rows(PROMPTS, 3)
    rows[1][contract.MAX_NEW_TOKENS_INPUT] = bad
    expected = (
      f'signature "generate": max_new_tokens must be 0 to 12 (the limit set at export, in a '
      f'window of 32 tokens), got {bad}: ask for at most 12 new tokens per row'
    )
    with pytest.raises(RuntimeError) as error:
      rest.generate('lm', rows)
    assert str(error.value) == f'HTTP 400: {expected}'  # TF Serving's {"error": ...} message
    with pytest.raises(grpc.RpcError) as error:
      grpc_client.generate('lm', rows)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == expected


def test_the_grpc_client_refuses_controls_int32_cannot_hold(served, capsys):
  # tf.make_tensor_proto would wrap them: 2**32 + 5 would go out as 5.
  where = ['--grpc', f'127.0.0.1:{served.grpc_port}', '--model_name', 'lm', '--generate']
  for flag, value in (('--max_new_tokens', 99_999_999_999), ('--seed', 2**32 + 5)):
    args = where + ['--prompt', 'a', '--prompt', 'b', '--max_new_tokens', '3', flag, str(value)]
    assert client.main(args) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the greedy-decoding note on --seed
    assert err.startswith(f'error: {flag[2:]} of row 0 is {value}, outside int32'), err


def test_the_server_runs_the_xla_compiled_generate(exported, exported_xla, served):
  rows = client.generation_rows(PROMPTS[:2], 10, temperature=0.9, seed=3)
  rows[0][contract.TEMPERATURE_INPUT] = 0.0
  _, outputs = client.GrpcClient(f'127.0.0.1:{served.grpc_port}').generate('lm_xla', rows)
  texts = [t.decode() for t in outputs[contract.GENERATED_TEXT]]
  assert texts == _call(exported_xla[1], *_columns(rows))
  assert texts[0] == _call(exported[1], *_columns(rows[:1]))[0]  # greedy: the same text
  assert len(texts[1].split()) >= 3


class _Spin(tf.Module):
  """A signature that busy-waits n[0] milliseconds, then returns 2 * n: slow on demand, for the
  same wall time on a fast or a loaded machine."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name='n')])
  def spin(self, n):
    until = tf.timestamp() + tf.cast(n[0], tf.float64) / 1000.0
    waited = tf.while_loop(lambda t: t < until, lambda t: tf.timestamp(), (tf.timestamp(),))[0]
    with tf.control_dependencies([waited]):
      return {'y': tf.cast(n, tf.float32) * 2.0}


def test_a_call_past_its_deadline_is_answered_and_frees_the_request_thread(tmp_path):
  module = _Spin()
  path = str(tmp_path / 'export')
  tf.saved_model.save(module, path, signatures={'serving_default': module.spin})
  options = server_lib.ServerOptions(grpc_port=0, rest_port=0, rest_timeout_seconds=0.5)
  server = server_lib.build(
    [_pushed(path, str(tmp_path / 'models'), 'spin')], poll_wait_seconds=0, options=options
  ).start()
  try:
    rest = client.RestClient(f'http://127.0.0.1:{server.rest_port}')
    url = f'{rest.url}/v1/models/spin:predict'
    assert rest.request(url, {'instances': [10]})['predictions'] == [
      pytest.approx(module.spin(tf.constant([10]))['y'].numpy()[0])
    ]
    slow = 3_000  # milliseconds: six times the REST timeout and the gRPC deadline
    started = time.monotonic()
    with pytest.raises(RuntimeError, match='HTTP 504.*deadline exceeded'):
      rest.request(url, {'instances': [slow]})
    assert time.monotonic() - started < 3.0
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'spin'
    request.inputs['n'].CopyFrom(tf.make_tensor_proto([slow], dtype=tf.int32))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
      grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}')
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
      stub.Predict(request, timeout=0.5)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3.0
  finally:
    server.stop(grace_seconds=5)
