"""This tree's model server (`python -m serving`) as a child process, for benches."""

import contextlib
import os
import socket
import subprocess
import sys
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A free TCP port on the loopback interface."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(base: str, names) -> Iterator[int]:
  """This tree's `python -m serving` for the models `names` (folders under `base`, each of
  numbered versions), until the block ends; yields its gRPC port."""
  config_file = os.path.join(base, 'models.config')
  with open(config_file, 'w') as f:
    f.write('model_config_list {\n')
    for name in names:
      f.write(f'  config {{ name: "{name}" base_path: "{os.path.join(base, name)}" }}\n')
    f.write('}\n')
  port = free_port()
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'serving',
      f'--port={port}',
      f'--rest_api_port={free_port()}',
      f'--model_config_file={config_file}',
      '--file_system_poll_wait_seconds=0',
      '--log_level=WARNING',
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    cwd=REPO,
    env=env,
  )
  try:
    line = proc.stdout.readline()
    if not line.startswith('SERVING'):
      raise RuntimeError(f'server did not start: {line!r}')
    yield port
  finally:
    proc.terminate()
    proc.wait(timeout=60)
