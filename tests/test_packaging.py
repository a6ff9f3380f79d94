"""The project installs as a package, and the Dockerfile uses the shared install steps."""

import os
import shutil
import subprocess
import sys
import zipfile

from tools import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_contains_the_packages_and_the_configs(tmp_path):
  # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
  src = tmp_path / 'src'
  shutil.copytree(
    REPO,
    src,
    ignore=shutil.ignore_patterns('.git', 'pipeline_outputs', '__pycache__', 'build', '*.egg-info'),
  )
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'wheel',
      '--quiet',
      '--no-deps',
      '--no-build-isolation',
      '--wheel-dir',
      str(tmp_path),
      str(src),
    ],
    check=True,
    cwd=tmp_path,
  )
  (wheel,) = tmp_path.glob('tfx_lm-*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  for package in ('pipeline', 'components', 'trainer', 'serving', 'tfxlm'):
    assert f'{package}/__init__.py' in names
  # What every stage imports: the contract and the config loader.
  assert {'tfxlm/contract.py', 'tfxlm/typed_config.py', 'pipeline/factory.py'} <= set(names)
  assert 'pipeline/configs/demo.yaml' in names
  metadata = next(n for n in names if n.endswith('METADATA'))
  text = zipfile.ZipFile(wheel).read(metadata).decode()
  assert 'Requires-Dist: tfx==1.21.0' in text
  requires_python = next(line for line in text.splitlines() if line.startswith('Requires-Python'))
  assert '>=3.10' in requires_python and '<3.14' in requires_python


def test_dockerfile_installs_through_the_shared_script_and_package_list():
  dockerfile = open(os.path.join(REPO, 'Dockerfile')).read()
  assert dockerfile.startswith('#') and 'FROM debian:trixie-slim' in dockerfile
  assert 'tools/install_stack.sh /opt/venv' in dockerfile
  assert 'tools/debian-packages.txt' in dockerfile
  assert 'requirements.lock' in dockerfile
  # One Dockerfile, two images: STACK_LOCK picks the CPU (default) or the GPU lock.
  assert 'ARG STACK_LOCK=requirements.lock' in dockerfile
  assert 'COPY requirements.lock requirements-gpu.lock /tmp/build/' in dockerfile
  assert 'install_stack.sh /opt/venv "/tmp/build/${STACK_LOCK}"' in dockerfile
  # The image's processes run with the allocator ./dev preloads (tools/runtime.py), from the
  # package list both install.
  assert f'ENV LD_PRELOAD=/usr/local/lib/{runtime.JEMALLOC}' in dockerfile
  assert (
    f'/usr/lib/*-linux-gnu/{runtime.JEMALLOC})" /usr/local/lib/{runtime.JEMALLOC}' in dockerfile
  )
  assert 'libjemalloc2' in runtime._debian_packages()
