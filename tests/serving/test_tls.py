"""gRPC over TLS and REST over HTTPS, with a self-signed certificate made in the test."""

import datetime
import ipaddress
import json
import os
import ssl
import urllib.request

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from serving import client
from serving.config import ModelConfig
from tests.serving.conftest import MODEL, start_server


def _self_signed(directory):
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=1))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(
      x509.SubjectAlternativeName(
        [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]
      ),
      critical=False,
    )
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
  )
  cert_path, key_path = os.path.join(directory, 'cert.pem'), os.path.join(directory, 'key.pem')
  with open(cert_path, 'wb') as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
  with open(key_path, 'wb') as f:
    f.write(
      key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
      )
    )
  return cert_path, key_path


@pytest.fixture(scope='module')
def tls_server(toy_base, tmp_path_factory):
  cert, key = _self_signed(str(tmp_path_factory.mktemp('tls')))
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'ssl_certfile': cert, 'ssl_keyfile': key},
  )
  yield running, cert
  running.close()


def test_grpc_over_tls(tls_server):
  running, cert = tls_server
  target = f'localhost:{running.server.grpc_port}'
  spec, outputs = client.GrpcClient(target, root_cert=cert).predict(MODEL, ['secure film'])
  assert spec['version'] == '2' and outputs['probabilities'].shape == (1, 3)
  # A plaintext client cannot talk to it.
  with pytest.raises(grpc.RpcError) as raised:
    client.GrpcClient(target, timeout=5).predict(MODEL, ['x'], input_key='examples')
  assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_over_https(tls_server):
  running, cert = tls_server
  url = f'https://localhost:{running.server.rest_port}'
  outputs = client.RestClient(url, cafile=cert).predict(MODEL, ['secure film'])
  assert len(outputs['probabilities']) == 1
  context = ssl.create_default_context(cafile=cert)
  with urllib.request.urlopen(url + '/healthz', context=context, timeout=10) as response:
    assert json.loads(response.read())['status'] == 'ok'
  with pytest.raises(OSError):  # plain HTTP to the HTTPS port
    urllib.request.urlopen(f'http://localhost:{running.server.rest_port}/healthz', timeout=5)


@pytest.fixture(scope='module')
def mtls_server(toy_base, tmp_path_factory):
  cert, key = _self_signed(str(tmp_path_factory.mktemp('mtls')))
  # The self-signed certificate is its own CA: clients present it as their certificate.
  running = start_server(
    toy_base,
    [ModelConfig(MODEL, os.path.join(toy_base, MODEL))],
    poll_wait_seconds=0,
    options={'ssl_certfile': cert, 'ssl_keyfile': key, 'ssl_client_ca_file': cert},
  )
  yield running, cert, key
  running.close()


def test_mutual_tls_needs_a_client_certificate(mtls_server):
  running, cert, key = mtls_server
  with open(cert, 'rb') as c, open(key, 'rb') as k:
    cert_pem, key_pem = c.read(), k.read()
  target = f'localhost:{running.server.grpc_port}'
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  with_cert = grpc.secure_channel(target, grpc.ssl_channel_credentials(cert_pem, key_pem, cert_pem))
  without = grpc.secure_channel(target, grpc.ssl_channel_credentials(cert_pem))
  try:
    stub = model_service_pb2_grpc.ModelServiceStub(with_cert)
    assert stub.GetModelStatus(request, timeout=30).model_version_status
    with pytest.raises(grpc.RpcError) as raised:
      model_service_pb2_grpc.ModelServiceStub(without).GetModelStatus(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
  finally:
    with_cert.close()
    without.close()
  url = f'https://localhost:{running.server.rest_port}/v1/models/{MODEL}'
  context = ssl.create_default_context(cafile=cert)
  with pytest.raises(OSError):
    urllib.request.urlopen(url, context=context, timeout=10)
  context.load_cert_chain(cert, key)
  with urllib.request.urlopen(url, context=context, timeout=10) as response:
    assert json.loads(response.read())['model_version_status']
