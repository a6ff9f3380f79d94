"""Test-wide settings: quiet TensorFlow's start-up noise, register markers."""

import os

# Before TensorFlow is imported anywhere: keep its C++ INFO/WARNING lines out of test output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
os.environ.setdefault('ABSL_MIN_LOG_LEVEL', '2')


def pytest_configure(config):
  config.addinivalue_line(
    'markers', 'slow: long runs left out of `make test` (run `make test-all`)'
  )
