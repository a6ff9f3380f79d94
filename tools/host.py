"""What the host offers and which environment fits it: a plain venv or a Debian 13 root filesystem.

TFX 1.21's ML Metadata and TFDV wheels need glibc >= 2.39 and GCC 13's libstdc++
(CXXABI_1.3.15). `detect()` reads what this host has; `choose_runtime()`, a pure function of
those facts, picks a venv when the host can load the wheels natively, else a root filesystem
entered with bubblewrap, else says why neither can work. `tools/runtime.py` builds and enters
the choice.

Runs with the host's `python3` (any 3.8+) and uses the standard library only.
"""

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Optional, Tuple

# What the wheels of the stack need (see docs/runtime.md).
MIN_GLIBC = (2, 39)
MIN_CXXABI = (1, 3, 15)
PYTHON_RANGE = ((3, 10), (3, 13))

VENV = 'venv'
ROOTFS = 'rootfs'


@dataclasses.dataclass(frozen=True)
class HostFacts:
  """What the host offers, as detected by `detect()`.

  Attributes:
    glibc: glibc version, or None when the C library is not glibc.
    cxxabi: highest CXXABI version exported by the system libstdc++, or None.
    python: version of the host `python3` running this file.
    is_root: whether we run as uid 0.
    userns: whether unprivileged user namespaces are enabled.
    has_bwrap: whether `bwrap` is on PATH.
    has_mmdebstrap: whether `mmdebstrap` is on PATH.
    has_apt: whether `apt-get` is on PATH (to install the two above).
    missing_build_tools: what a venv build needs but the host lacks (the venv module, a C/C++
      compiler, Python's headers: one locked package, pyfarmhash, builds from source).
    forced: value of TFXLM_RUNTIME (`venv` or `rootfs`), or None.
  """

  glibc: Optional[Tuple[int, ...]]
  cxxabi: Optional[Tuple[int, ...]]
  python: Tuple[int, int]
  is_root: bool
  userns: bool
  has_bwrap: bool
  has_mmdebstrap: bool
  has_apt: bool
  forced: Optional[str] = None
  missing_build_tools: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Choice:
  """The environment to use.

  Attributes:
    kind: `venv`, `rootfs`, or None when neither can work.
    reason: one sentence on why.
    install_tools: host packages to apt-get install first (rootfs only).
    unprivileged: whether mmdebstrap must run in `unshare` mode (not root).
  """

  kind: Optional[str]
  reason: str
  install_tools: Tuple[str, ...] = ()
  unprivileged: bool = False


def _fmt(version):
  return '.'.join(str(v) for v in version) if version else 'none'


def native_ok(facts: HostFacts) -> Tuple[bool, str]:
  """Whether the host can load the stack's wheels in a plain venv, and why not."""
  problems = []
  if facts.glibc is None or facts.glibc < MIN_GLIBC:
    problems.append(f'glibc {_fmt(facts.glibc)} < {_fmt(MIN_GLIBC)}')
  if facts.cxxabi is None or facts.cxxabi < MIN_CXXABI:
    problems.append(f'libstdc++ CXXABI {_fmt(facts.cxxabi)} < {_fmt(MIN_CXXABI)}')
  low, high = PYTHON_RANGE
  if not low <= facts.python <= high:
    problems.append(f'Python {_fmt(facts.python)} outside {_fmt(low)}-{_fmt(high)}')
  if facts.missing_build_tools:
    problems.append(
      f'no {", ".join(facts.missing_build_tools)} for building a venv '
      '(Debian: apt-get install python3-venv python3-dev build-essential)'
    )
  return not problems, '; '.join(problems)


def choose_runtime(facts: HostFacts) -> Choice:
  """Picks the environment from what the host offers. Pure: no I/O."""
  ok, problems = native_ok(facts)
  if facts.forced not in (None, VENV, ROOTFS):
    return Choice(None, f'TFXLM_RUNTIME={facts.forced!r} is not one of venv, rootfs.')
  if facts.forced == VENV or (ok and facts.forced is None):
    if not ok:
      return Choice(None, f'TFXLM_RUNTIME=venv, but this host cannot load the wheels: {problems}.')
    return Choice(VENV, 'the host can load every wheel of the stack natively.')

  why = (
    f'this host cannot load the wheels natively ({problems})' if not ok else 'TFXLM_RUNTIME=rootfs'
  )
  missing = tuple(
    name
    for name, present in (('mmdebstrap', facts.has_mmdebstrap), ('bubblewrap', facts.has_bwrap))
    if not present
  )
  if facts.is_root:
    if missing and not facts.has_apt:
      return Choice(
        None,
        f'{why}, and {" and ".join(missing)} are missing with no apt-get to '
        'install them. Install them, or use the Docker image (see README).',
      )
    return Choice(
      ROOTFS, f'{why}: using a Debian 13 root filesystem under bubblewrap.', install_tools=missing
    )
  if missing:
    return Choice(
      None,
      f'{why}; a Debian 13 root filesystem needs {" and ".join(missing)}, '
      'which only root can install here. Run as root, ask an administrator to '
      f'`apt-get install {" ".join(missing)}`, or use the Docker image (see README).',
    )
  if not facts.userns:
    return Choice(
      None,
      f'{why}; bubblewrap needs unprivileged user namespaces, which are '
      'disabled (sysctl kernel.unprivileged_userns_clone=1). Run as root, enable '
      'them, or use the Docker image (see README).',
    )
  return Choice(
    ROOTFS,
    f'{why}: using a Debian 13 root filesystem under bubblewrap (unprivileged).',
    unprivileged=True,
  )


# --- Detection ---------------------------------------------------------------------------


def _glibc_version():
  try:
    name = os.confstr('CS_GNU_LIBC_VERSION') or ''
  except (ValueError, OSError):
    return None
  match = re.match(r'glibc (\d+)\.(\d+)', name)
  return tuple(int(g) for g in match.groups()) if match else None


def _libstdcxx_paths():
  try:
    out = subprocess.run(['ldconfig', '-p'], capture_output=True, text=True, check=False).stdout
  except OSError:
    out = ''
  paths = re.findall(r'libstdc\+\+\.so\.6 \(([^)]*)\) => (\S+)', out)
  arch_paths = [path for arch, path in paths if 'x86-64' in arch or 'x86_64' not in arch]
  return arch_paths or glob.glob('/usr/lib*/**/libstdc++.so.6', recursive=True)


def _cxxabi_version():
  best = None
  for path in _libstdcxx_paths():
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError:
      continue
    for match in re.finditer(rb'CXXABI_(\d+)\.(\d+)(?:\.(\d+))?\x00', data):
      version = tuple(int(g) for g in match.groups() if g is not None)
      best = max(best, version) if best else version
  return best


def _userns_enabled():
  try:
    with open('/proc/sys/kernel/unprivileged_userns_clone') as f:
      if f.read().strip() == '0':
        return False
  except OSError:
    pass
  try:
    with open('/proc/sys/user/max_user_namespaces') as f:
      return int(f.read().strip() or 0) > 0
  except (OSError, ValueError):
    return True


def detect() -> HostFacts:
  return HostFacts(
    glibc=_glibc_version(),
    cxxabi=_cxxabi_version(),
    python=sys.version_info[:2],
    is_root=os.geteuid() == 0,
    userns=_userns_enabled(),
    has_bwrap=shutil.which('bwrap') is not None,
    has_mmdebstrap=shutil.which('mmdebstrap') is not None,
    has_apt=shutil.which('apt-get') is not None,
    forced=os.environ.get('TFXLM_RUNTIME') or None,
    missing_build_tools=_missing_build_tools(),
  )


def _missing_build_tools():
  import importlib.util
  import sysconfig

  missing = []
  if importlib.util.find_spec('ensurepip') is None:
    missing.append('venv module (ensurepip)')
  if not (shutil.which('cc') and shutil.which('c++')):
    missing.append('C/C++ compiler')
  if not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')):
    missing.append('Python headers')
  return tuple(missing)
