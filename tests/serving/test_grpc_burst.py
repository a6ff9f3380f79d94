"""A burst of concurrent gRPC calls on one channel: each is answered OK or RESOURCE_EXHAUSTED
with a message, none CANCELLED by gRPC before the server saw it."""

import asyncio
import collections

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.conftest import MODEL, toy_server

BURST = 1500


@pytest.fixture(scope='module')
def small(toy_base):
  running = toy_server(toy_base, request_threads=2, max_queued_requests=16)
  yield running
  running.close()


async def _burst(target, n):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = 'predict_text'
  request.inputs['text'].CopyFrom(tf.make_tensor_proto([b'a fine film']))
  async with grpc.aio.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    async def one():
      try:
        await stub.Predict(request, timeout=60)
        return 'OK', ''
      except grpc.aio.AioRpcError as e:
        return e.code().name, e.details()

    return await asyncio.gather(*[one() for _ in range(n)])


def test_a_burst_is_answered_ok_or_resource_exhausted(small):
  # Over gRPC's default backlog of calls not yet taken by the server (1,000 to 3,000).
  answers = asyncio.run(_burst(small.grpc_target, BURST))
  codes = collections.Counter(code for code, _ in answers)
  assert set(codes) <= {'OK', 'RESOURCE_EXHAUSTED'}, codes
  assert codes['OK'] >= 18  # the threads and the queue were filled
  refusals = {details for code, details in answers if code == 'RESOURCE_EXHAUSTED'}
  assert all(('busy' in d or 'limit' in d) for d in refusals), refusals
