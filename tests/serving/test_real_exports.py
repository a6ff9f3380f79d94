"""Models exported by the pipeline's trainer (tensorflow-text ops, Transform layer) served over
gRPC and REST: the same answers as the in-process call, and the bad inputs they reject."""

import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
  classification_pb2,
  get_model_metadata_pb2,
  inference_pb2,
  predict_pb2,
)

from serving import client, memory
from serving.config import ModelConfig
from tests.serving import real_models, rest_util
from tests.serving.conftest import start_server
from tfxlm import contract

TEXTS = ['good great film nice', 'a bad awful movie night']


@pytest.fixture(scope='session')
def real_base(tmp_path_factory):
  """<base>/classify/1 and <base>/clm/1, exported by trainer.task.run_fn."""
  base = str(tmp_path_factory.mktemp('real_models'))
  work = str(tmp_path_factory.mktemp('real_models_work'))
  for task_name in (contract.CLASSIFY, contract.CLM):
    real_models.export(tmp_path_factory, work, task_name, base)
  return base


@pytest.fixture(scope='module')
def real(real_base):
  running = start_server(
    real_base,
    [ModelConfig(t, os.path.join(real_base, t)) for t in (contract.CLASSIFY, contract.CLM)],
    poll_wait_seconds=0,
  )
  yield running
  running.close()


def _examples(texts):
  return [
    tf.train.Example(
      features=tf.train.Features(
        feature={
          contract.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))
        }
      )
    ).SerializeToString()
    for t in texts
  ]


def _in_process(base, name, signature, **inputs):
  loaded = tf.saved_model.load(os.path.join(base, name, str(real_models.VERSION)))
  outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
  return {k: v.numpy() for k, v in outputs.items()}


def _assert_same(got, expected):
  assert set(got) == set(expected)
  for key, value in expected.items():
    if value.dtype.kind == 'f':
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    else:
      np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize('name', [contract.CLASSIFY, contract.CLM])
@pytest.mark.parametrize(
  'signature,key',
  [
    (contract.SERVING_DEFAULT, contract.EXAMPLES_INPUT),
    (contract.PREDICT_TEXT, contract.TEXT_INPUT),
  ],
)
def test_grpc_predict_matches_in_process(real, real_base, name, signature, key):
  values = _examples(TEXTS) if key == contract.EXAMPLES_INPUT else TEXTS
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = signature
  request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
  response = real.predictions.Predict(request, timeout=60)
  got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
  _assert_same(got, _in_process(real_base, name, signature, **{key: values}))
  if name == contract.CLASSIFY:
    assert set(got[contract.LABELS]) <= {b'pos', b'neg'}
  else:
    assert all(got[contract.TOKEN_COUNT] > 0) and all(got[contract.TOKEN_LOGPROB_SUM] < 0)


def test_rest_predict_and_classify_on_the_classifier(real, real_base):
  status, body = rest_util.rest_json(
    real.rest_url,
    f'/v1/models/{contract.CLASSIFY}:predict',
    {'signature_name': contract.PREDICT_TEXT, 'inputs': {contract.TEXT_INPUT: TEXTS}},
  )
  assert status == 200, body
  expected = _in_process(
    real_base, contract.CLASSIFY, contract.PREDICT_TEXT, **{contract.TEXT_INPUT: TEXTS}
  )
  np.testing.assert_allclose(
    body['outputs'][contract.PROBABILITIES], expected[contract.PROBABILITIES], rtol=1e-5
  )
  status, body = rest_util.rest_json(
    real.rest_url,
    f'/v1/models/{contract.CLASSIFY}:classify',
    {'examples': [{contract.TEXT_KEY: t} for t in TEXTS]},
  )
  assert status == 200, body
  np.testing.assert_allclose(
    [[s for _, s in row] for row in body['results']], expected[contract.PROBABILITIES], rtol=1e-5
  )
  # The classes are named as in the data (the model's label vocabulary), not "0", "1": the
  # best-scored one is the label Predict gives.
  names = [[name for name, _ in row] for row in body['results']]
  assert names == [['neg', 'pos']] * len(TEXTS), names
  best = [max(row, key=lambda pair: pair[1])[0] for row in body['results']]
  assert best == [label.decode() for label in expected[contract.LABELS]]
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = contract.CLASSIFY
  for example in _examples(TEXTS):
    request.input.example_list.examples.add().ParseFromString(example)
  response = real.predictions.Classify(request, timeout=60)
  assert len(response.result.classifications) == 2
  assert [[c.label for c in row.classes] for row in response.result.classifications] == names
  # The export's TF Serving classification signature (method_name classify, as TF Serving's
  # Classify and MultiInference need): the same answer, gRPC and REST.
  request.model_spec.signature_name = contract.CLASSIFICATION
  by_signature = real.predictions.Classify(request, timeout=60)
  assert by_signature.result == response.result
  assert by_signature.model_spec.signature_name == contract.CLASSIFICATION
  multi = inference_pb2.MultiInferenceRequest(input=request.input)
  task = multi.tasks.add(method_name='tensorflow/serving/classify')
  task.model_spec.name = contract.CLASSIFY
  task.model_spec.signature_name = contract.CLASSIFICATION
  answer = real.predictions.MultiInference(multi, timeout=60)
  assert answer.results[0].classification_result == response.result
  # As TF Serving: a predict signature is no classification, and every task must read one
  # input tensor (each TF2 signature has its own).
  task.model_spec.signature_name = contract.SERVING_DEFAULT
  with pytest.raises(grpc.RpcError) as raised:
    real.predictions.MultiInference(multi, timeout=60)
  assert 'Expected classification signature method_name' in raised.value.details()
  task.model_spec.signature_name = contract.CLASSIFICATION
  other = multi.tasks.add(method_name='tensorflow/serving/regress')
  other.model_spec.name = contract.CLASSIFY
  other.model_spec.signature_name = contract.PREDICT_TEXT
  with pytest.raises(grpc.RpcError) as raised:
    real.predictions.MultiInference(multi, timeout=60)
  assert raised.value.details() == 'Input tensor must be the same for all Signatures.'
  status, body = rest_util.rest_json(
    real.rest_url,
    f'/v1/models/{contract.CLASSIFY}:classify',
    {
      'signature_name': contract.CLASSIFICATION,
      'examples': [{contract.TEXT_KEY: t} for t in TEXTS],
    },
  )
  assert status == 200, body
  assert [[n for n, _ in row] for row in body['results']] == names


def test_the_classification_signature_is_warmed_up_and_sized_as_serving_default(real):
  # Its input is `inputs`, not `examples`: the synthetic request once fed it raw text, its
  # warm-up failed and its calls kept the fixed default size, whatever the model.
  servable = real.server.manager.resolve(contract.CLASSIFY)
  rows = servable.call_rows
  assert rows[contract.CLASSIFICATION] == rows[contract.SERVING_DEFAULT], rows


def test_query_client_classifies_with_the_classification_signature(real, capsys):
  """`serving.client --classify` picks the export's classification signature (the one TF
  Serving's Classify can run) unless --signature names another."""
  answers = []
  for where in (['--grpc', real.grpc_target], ['--rest', real.rest_url]):
    for extra in ([], ['--signature', contract.SERVING_DEFAULT]):
      argv = where + ['--model_name', contract.CLASSIFY, '--classify', '--text', TEXTS[0]] + extra
      assert client.main(argv) == 0
      answers.append(json.loads(capsys.readouterr().out))
  assert answers[0]['model_spec']['signature_name'] == contract.CLASSIFICATION
  assert answers[1]['model_spec']['signature_name'] == contract.SERVING_DEFAULT
  for answer in answers[1:]:
    assert [[n for n, _ in row] for row in answer['results']] == [['neg', 'pos']]
    np.testing.assert_allclose(
      [[s for _, s in row] for row in answer['results']],
      [[s for _, s in row] for row in answers[0]['results']],
      rtol=1e-5,
    )


def _generate_request(real):
  """A generate request built from the signature's metadata (its inputs may change)."""
  metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  metadata.model_spec.name = contract.CLM
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  real.predictions.GetModelMetadata(metadata, timeout=60).metadata['signature_def'].Unpack(
    signature_defs
  )
  inputs = signature_defs.signature_def[contract.GENERATE].inputs
  defaults = {
    contract.PROMPT_INPUT: TEXTS,
    contract.MAX_NEW_TOKENS_INPUT: 3,
    contract.TEMPERATURE_INPUT: 0.0,
    contract.TOP_K_INPUT: 0,
    contract.TOP_P_INPUT: 1.0,
    contract.SEED_INPUT: 0,
  }
  request = predict_pb2.PredictRequest()
  request.model_spec.name = contract.CLM
  request.model_spec.signature_name = contract.GENERATE
  for key, info in inputs.items():
    dtype = tf.as_dtype(info.dtype)
    value = defaults[key]
    rows = info.tensor_shape.dim and not isinstance(value, list)
    value = [value] * len(TEXTS) if rows else value
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
  return request


def test_generate_through_the_server(real):
  response = real.predictions.Predict(_generate_request(real), timeout=120)
  texts = tf.make_ndarray(response.outputs[contract.GENERATED_TEXT])
  assert texts.shape == (len(TEXTS),) and all(isinstance(t, bytes) for t in texts)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATE_INPUTS = [
  contract.MAX_NEW_TOKENS_INPUT,
  contract.PROMPT_INPUT,
  contract.SEED_INPUT,
  contract.TEMPERATURE_INPUT,
  contract.TOP_K_INPUT,
  contract.TOP_P_INPUT,
]


def _documented_generate_bodies():
  """The JSON bodies of the docs' `curl -d '...'` examples of the generate signature."""
  bodies = []
  for doc in ('README.md', os.path.join('serving', 'README.md')):
    with open(os.path.join(REPO, doc), encoding='utf-8') as f:
      for line in f:
        if line.startswith("curl -s -d '") and f'"{contract.GENERATE}"' in line:
          bodies.append((doc, json.loads(line.split("'")[1])))
  return bodies


def test_the_docs_generate_curl_examples_work_as_written(real):
  bodies = _documented_generate_bodies()
  assert {doc for doc, _ in bodies} == {'README.md', os.path.join('serving', 'README.md')}
  for doc, body in bodies:
    status, answer = rest_util.rest_json(real.rest_url, f'/v1/models/{contract.CLM}:predict', body)
    assert status == 200, (doc, body, answer)
    rows = body.get('instances') or body['inputs'][contract.PROMPT_INPUT]
    texts = answer.get('predictions') or answer['outputs']
    assert len(texts) == len(rows) and all(isinstance(t, str) for t in texts)


def test_generate_with_prompts_only_names_what_is_missing_over_rest_and_grpc(real):
  # No input has a default (none in TF Serving either): the answer says which are missing and
  # what the signature takes.
  expected = (
    f'signature "{contract.GENERATE}" expects inputs {GENERATE_INPUTS} but got '
    f"['{contract.PROMPT_INPUT}'] (extra: [], missing: "
    f'{[k for k in GENERATE_INPUTS if k != contract.PROMPT_INPUT]})'
  )
  path = f'/v1/models/{contract.CLM}:predict'
  for body in (
    {'instances': [{contract.PROMPT_INPUT: 'the film'}]},
    {'inputs': {contract.PROMPT_INPUT: ['the film']}},
  ):
    status, answer = rest_util.rest_json(
      real.rest_url, path, {'signature_name': contract.GENERATE, **body}
    )
    assert (status, answer) == (400, {'error': expected})
  for body in ({'instances': ['the film']}, {'inputs': ['the film']}):  # values without names
    status, answer = rest_util.rest_json(
      real.rest_url, path, {'signature_name': contract.GENERATE, **body}
    )
    assert status == 400 and str(GENERATE_INPUTS) in answer['error']
  request = predict_pb2.PredictRequest()
  request.model_spec.name = contract.CLM
  request.model_spec.signature_name = contract.GENERATE
  request.inputs[contract.PROMPT_INPUT].CopyFrom(tf.make_tensor_proto(['the film']))
  with pytest.raises(grpc.RpcError) as raised:
    real.predictions.Predict(request, timeout=60)
  assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert raised.value.details() == expected


@pytest.mark.parametrize('name', [contract.CLASSIFY, contract.CLM])
def test_bad_inputs_to_real_models(real, name):
  def predict(signature, key, values):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
    return real.predictions.Predict(request, timeout=60)

  for values, message in (
    ([b'\x0a\xff!'], 'serving_default'),
    ([tf.train.Example().SerializeToString()], 'Feature: text'),
  ):
    with pytest.raises(grpc.RpcError) as raised:
      predict(contract.SERVING_DEFAULT, contract.EXAMPLES_INPUT, values)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()
  # The tensorflow-text tokenizer replaces bytes that are not UTF-8 (the toy model refuses
  # them): served, not an internal error.
  response = predict(contract.PREDICT_TEXT, contract.TEXT_INPUT, [b'\xff\xfe bad'])
  assert response.outputs


def test_huge_strings_are_refused_by_the_memory_budget_and_long_ones_split(real_base):
  # 48 MiB per request: a call may use 24 MiB, about 1 MiB of text at STRING_BYTE_FACTOR.
  budget = 48 << 20
  running = start_server(
    real_base,
    [ModelConfig(contract.CLASSIFY, os.path.join(real_base, contract.CLASSIFY))],
    poll_wait_seconds=0,
    execution=memory.ExecutionOptions(memory_budget_bytes=budget),
  )
  limit = budget // 2 // memory.STRING_BYTE_FACTOR
  huge = 'good film ' * (2 * limit // 10)  # twice what a call may tokenize
  long = 'good film ' * (limit * 6 // 10 // 10)  # three of these exceed one call: split
  path = f'/v1/models/{contract.CLASSIFY}:predict'
  try:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.CLASSIFY
    request.model_spec.signature_name = contract.PREDICT_TEXT
    request.inputs[contract.TEXT_INPUT].CopyFrom(tf.make_tensor_proto(['a film', huge]))
    with pytest.raises(grpc.RpcError) as raised:
      running.predictions.Predict(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f'row 1 of the request carries {len(huge)} bytes' in raised.value.details()
    assert '--request_memory_budget_mb' in raised.value.details()

    body = {'signature_name': contract.PREDICT_TEXT, 'instances': [huge]}
    status, answer = rest_util.rest_json(running.rest_url, path, body)
    assert status == 413, answer
    assert f'{len(huge)} bytes' in answer['error']

    for texts in (TEXTS, [long] * 3 + TEXTS):
      body = {'signature_name': contract.PREDICT_TEXT, 'instances': texts}
      status, answer = rest_util.rest_json(running.rest_url, path, body)
      assert status == 200, answer
      assert len(answer['predictions']) == len(texts)
  finally:
    running.close()
