"""The GPU image's stack: requirements-gpu.lock is the CPU lock plus TensorFlow's CUDA libraries.

The slow test installs the GPU lock the way the Dockerfile does (`tools/install_stack.sh` with
`STACK_LOCK=requirements-gpu.lock`) into a throw-away venv, and checks on this GPU-less machine
that TensorFlow imports, is a CUDA build, and finds the CUDA libraries where its own RUNPATH
points. Running on a GPU is not checked here (no GPU).
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import textwrap
import time

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_LOCK = os.path.join(REPO, 'requirements.lock')
GPU_LOCK = os.path.join(REPO, 'requirements-gpu.lock')
# TensorFlow's CUDA dependencies (its `and-cuda` extra), and the library of each that TensorFlow
# loads at start on a GPU machine (with the soname's major version).
CUDA_LIBRARIES = {
  'cublas': 'libcublas.so.12',
  'cuda_cupti': 'libcupti.so.12',
  'cuda_runtime': 'libcudart.so.12',
  'cudnn': 'libcudnn.so.9',
  'cufft': 'libcufft.so.11',
  'cusolver': 'libcusolver.so.11',
  'cusparse': 'libcusparse.so.12',
  'nccl': 'libnccl.so.2',
}


def _canonical(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def _pins(path):
  pins = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      line = line.split('#')[0].strip()
      if line:
        name, version = line.split('==')
        pins[_canonical(name)] = version
  return pins


def test_gpu_lock_is_the_cpu_lock_plus_the_cuda_libraries_tensorflow_asks_for():
  cpu, gpu = _pins(CPU_LOCK), _pins(GPU_LOCK)
  assert {name: gpu.get(name) for name in cpu} == cpu  # every CPU pin, unchanged
  extra = set(gpu) - set(cpu)
  assert extra and all(name.startswith('nvidia-') for name in extra), sorted(extra)
  # Every requirement of tensorflow's `and-cuda` extra is pinned, within its range.
  requirements = [Requirement(r) for r in importlib.metadata.requires('tensorflow')]
  cuda = [
    r
    for r in requirements
    if r.marker
    and r.marker.evaluate({'extra': 'and-cuda'})
    and not r.marker.evaluate({'extra': ''})
  ]
  assert len(cuda) >= len(CUDA_LIBRARIES)
  for requirement in cuda:
    name = _canonical(requirement.name)
    assert name in gpu, f'{name} (tensorflow[and-cuda]) is not in requirements-gpu.lock'
    assert requirement.specifier.contains(gpu[name]), (name, gpu[name], str(requirement))
  assert {_canonical(r.name) for r in cuda} == extra


CHECK = textwrap.dedent("""
    import ctypes, json, os, re, subprocess, sys
    import tensorflow as tf
    tf_dir = os.path.dirname(tf.__file__)
    runpath = set()
    for lib in ('libtensorflow_framework.so.2', 'libtensorflow_cc.so.2'):
      out = subprocess.run(['readelf', '-d', os.path.join(tf_dir, lib)], check=True,
                           capture_output=True, text=True).stdout
      for entry in re.search(r'runpath: \\[(.*)\\]', out).group(1).split(':'):
        runpath.add(os.path.normpath(entry.replace('$ORIGIN', tf_dir)))
    libraries = json.loads(sys.argv[1])
    found = {}
    for package, soname in libraries.items():
      folder = os.path.join(os.path.dirname(tf_dir), 'nvidia', package, 'lib')
      path = os.path.join(folder, soname)
      if folder in runpath and os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        found[package] = path
    info = tf.sysconfig.get_build_info()
    print(json.dumps({
        'tf_file': tf.__file__, 'version': tf.__version__,
        'built_with_cuda': tf.test.is_built_with_cuda(),
        'cuda_version': info.get('cuda_version'), 'cudnn_version': info.get('cudnn_version'),
        'gpus': len(tf.config.list_physical_devices('GPU')), 'found': found,
    }))
""")


@pytest.fixture
def venv(tmp_path):
  """A throw-away venv folder, removed at the end: with the CUDA wheels it holds ~8 GB."""
  path = tmp_path / 'gpu-venv'
  yield path
  shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_the_gpu_lock_installs_and_tensorflow_finds_its_cuda_libraries(venv):
  # No pip cache: the CUDA wheels are several GB and leave with the venv.
  env = dict(os.environ, PIP_NO_CACHE_DIR='1')
  start = time.monotonic()
  result = subprocess.run(
    ['bash', os.path.join(REPO, 'tools', 'install_stack.sh'), str(venv), GPU_LOCK],
    env=env,
    capture_output=True,
    text=True,
    timeout=3600,
  )
  install_s = time.monotonic() - start
  assert result.returncode == 0, result.stderr[-4000:]
  python = str(venv / 'bin' / 'python')
  # The Dockerfile's own check, with the repository on PYTHONPATH as in the image.
  result = subprocess.run(
    [
      python,
      '-c',
      'import tfx.v1, tensorflow_text, keras_hub, trainer.task, components.vocabulary',
    ],
    env=dict(os.environ, PYTHONPATH=REPO),
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  result = subprocess.run(
    [python, '-c', CHECK, json.dumps(CUDA_LIBRARIES)], capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  print(f'GPU lock installed in {install_s:.0f} s: {report}')
  assert report['tf_file'].startswith(str(venv))
  assert report['version'] == _pins(GPU_LOCK)['tensorflow']
  assert report['built_with_cuda'] is True
  assert report['cuda_version'] and report['cudnn_version']
  assert report['gpus'] == 0  # no GPU here; TensorFlow falls back to the CPU without failing
  assert set(report['found']) == set(CUDA_LIBRARIES), report['found']
  # The CUDA libraries' major versions are the ones this TensorFlow was built against.
  assert report['cuda_version'].split('.')[0] == CUDA_LIBRARIES['cuda_runtime'].split('.')[-1]
  assert str(report['cudnn_version']).split('.')[0] == CUDA_LIBRARIES['cudnn'].split('.')[-1]
