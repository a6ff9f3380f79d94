"""Builds and enters the project's runtime environment that tools/host.py chooses.

A plain venv, or a Debian 13 root filesystem built with mmdebstrap and entered with
bubblewrap. Both are cached outside the clone, keyed on the hash of the lock file and the
install scripts, so a new clone reuses them.

This file runs with the host's `python3` (any 3.8+) and uses the standard library only.

Usage:
    python3 tools/runtime.py exec -- CMD [ARGS...]   # build if needed, then run CMD inside
    python3 tools/runtime.py ensure                  # build if needed, print where
    python3 tools/runtime.py describe                # print the facts and the choice
    python3 tools/runtime.py clean                   # remove every cached environment
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

try:  # imported as tools.runtime (the tests, pipeline code)
  from tools import host
except (
  ImportError
):  # run as a script (./dev, make): Python puts this file's folder first on sys.path
  import host

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Files whose content decides the environment; their hash names the cache entry.
KEY_FILES = ('requirements.lock', 'tools/install_stack.sh', 'tools/debian-packages.txt')

DEBIAN_SUITE = 'trixie'
ROOTFS_VENV = '/opt/venv'
READY_SUFFIX = '.ready'  # beside the environment's folder: written last, when it is complete
CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'
# Host pip settings that are copied into the root filesystem so pip behaves the same there.
PIP_CONFIG_PATHS = ('/etc/pip.conf', '/etc/xdg/pip')
PASS_ENV_PREFIXES = (
  'PIP_',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'ALL_PROXY',
  'all_proxy',
)
# The memory allocator every process of the environment runs with (LD_PRELOAD): jemalloc,
# Debian's libjemalloc2 (tools/debian-packages.txt). TensorFlow, Beam and Python allocate and free
# many short-lived buffers; with jemalloc the whole test suite takes 4-16% less time than with
# glibc's malloc (docs/runtime.md, "Memory allocator"). TFXLM_MALLOC=system turns it off; an
# LD_PRELOAD the caller set is left alone.
MALLOC_ENV = 'TFXLM_MALLOC'
MALLOC_CHOICES = ('jemalloc', 'system')
JEMALLOC = 'libjemalloc.so.2'
LIB_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib')
# Top-level folders of the system: the root filesystem's own, never the host's.
SYSTEM_DIRS = frozenset(
  (
    'bin',
    'boot',
    'dev',
    'etc',
    'lib',
    'lib32',
    'lib64',
    'libx32',
    'opt',
    'proc',
    'root',
    'run',
    'sbin',
    'sys',
    'tmp',
    'usr',
    'var',
    'lost+found',
  )
)

# --- Building ----------------------------------------------------------------------------


def env_key(repo: str = REPO) -> str:
  digest = hashlib.sha256()
  for name in KEY_FILES:
    with open(os.path.join(repo, name), 'rb') as f:
      digest.update(name.encode() + b'\0' + f.read())
  return digest.hexdigest()[:16]


def cache_root() -> str:
  if os.environ.get('TFXLM_CACHE'):
    return os.environ['TFXLM_CACHE']
  if os.geteuid() == 0:
    return '/var/cache/tfx-lm'
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'tfx-lm')


def _log(msg):
  print(f'[runtime] {msg}', file=sys.stderr, flush=True)


def _run(cmd, **kwargs):
  _log('$ ' + ' '.join(cmd))
  subprocess.run(cmd, check=True, **kwargs)


def _debian_packages():
  with open(os.path.join(REPO, 'tools/debian-packages.txt')) as f:
    return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def _passthrough_env():
  return {k: v for k, v in os.environ.items() if k.startswith(PASS_ENV_PREFIXES)}


def _pip_local_paths():
  """Host folders that the host's pip settings point at (find-links, file:// indexes), so that
  pip inside the root filesystem sees the same sources."""
  texts = [v for k, v in os.environ.items() if k.startswith('PIP_')]
  for path in (
    '/etc/pip.conf',
    '/etc/xdg/pip/pip.conf',
    os.path.expanduser('~/.config/pip/pip.conf'),
    os.path.expanduser('~/.pip/pip.conf'),
  ):
    try:
      with open(path) as f:
        texts.append(f.read())
    except OSError:
      pass
  found = set()
  for text in texts:
    for match in re.finditer(r'(?:file://)?(/[^\s,;]+)', text):
      candidate = match.group(1).rstrip('/')
      if os.path.basename(candidate) == 'simple':
        candidate = os.path.dirname(candidate)  # a PEP 503 index links to files beside it
      if os.path.isdir(candidate) and candidate not in ('/', '/etc', '/tmp'):
        found.add(candidate)
  return sorted(found)


def _bwrap_base(rootfs):
  cmd = [
    'bwrap',
    '--bind',
    rootfs,
    '/',
    '--dev',
    '/dev',
    '--proc',
    '/proc',
    '--bind',
    '/tmp',
    '/tmp',
    '--die-with-parent',
  ]
  for path in ('/etc/resolv.conf', '/etc/hosts'):
    if os.path.exists(path):
      cmd += ['--ro-bind', path, path]
  return cmd


def _build_venv(target):
  # Built in place (a venv hard-codes its path); the `.ready` file tells a finished one.
  _run([sys.executable, '-m', 'venv', target])
  _run(
    [
      'bash',
      os.path.join(REPO, 'tools/install_stack.sh'),
      target,
      os.path.join(REPO, 'requirements.lock'),
    ]
  )


def _build_rootfs(target, choice):
  if choice.install_tools:
    _run(['apt-get', 'update', '-q'])
    _run(
      ['apt-get', 'install', '-y', '-q', *choice.install_tools],
      env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'},
    )
  # Unprivileged, mmdebstrap leaves the files owned by the user's subordinate ids: every later
  # step that writes into the tree runs in a user namespace mapping them back to root.
  owner = _rootfs_owner(choice)
  tmp = target + f'.tmp-{os.getpid()}'
  _remove(tmp, owner)
  mode = ['--mode=unshare'] if choice.unprivileged else []
  _run(
    [
      'mmdebstrap',
      '--variant=apt',
      *mode,
      '--include=' + ','.join(_debian_packages()),
      DEBIAN_SUITE,
      tmp,
    ]
  )
  for path in (CA_BUNDLE, *PIP_CONFIG_PATHS):
    if os.path.exists(path):
      _run(owner + ['mkdir', '-p', tmp + os.path.dirname(path)])
      _run(owner + ['cp', '-rT', path, tmp + path])
  src = '/run/tfxlm-src'
  cmd = owner + _bwrap_base(tmp) + ['--ro-bind', REPO, src, '--chdir', '/']
  for path in _pip_local_paths():
    cmd += ['--ro-bind', path, path]
  for key, value in _passthrough_env().items():
    cmd += ['--setenv', key, value]
  cmd += [
    '--setenv',
    'PATH',
    '/usr/sbin:/usr/bin:/sbin:/bin',
    'bash',
    f'{src}/tools/install_stack.sh',
    ROOTFS_VENV,
    f'{src}/requirements.lock',
  ]
  _run(cmd)
  _remove(target, owner)
  os.rename(tmp, target)


def _rootfs_owner(choice):
  """The command prefix that acts as the owner of the root filesystem's files."""
  return ['unshare', '--map-auto', '--map-root-user', '--'] if choice.unprivileged else []


def _remove(path, owner):
  if os.path.lexists(path):
    _run(owner + ['rm', '-rf', path])


def ensure(choice: host.Choice) -> str:
  """Builds the chosen environment unless cached; returns its directory."""
  root = cache_root()
  os.makedirs(root, exist_ok=True)
  target = os.path.join(root, f'{choice.kind}-{env_key()}')
  marker = target + READY_SUFFIX
  if os.path.exists(marker):
    return target
  with open(os.path.join(root, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(marker):
      return target
    _log(f'building the {choice.kind} environment in {target}: {choice.reason}')
    _remove(target, _rootfs_owner(choice))  # a half-built one from an interrupted run
    try:
      if choice.kind == host.VENV:
        _build_venv(target)
      else:
        _build_rootfs(target, choice)
      with open(marker, 'w') as f:
        f.write(env_key() + '\n')
    except subprocess.CalledProcessError as e:
      raise SystemExit(
        f'[runtime] building the {choice.kind} environment failed: '
        f'{" ".join(e.cmd)} exited with {e.returncode}. Nothing was cached; '
        'fix the cause and run the command again.'
      ) from None
  return target


def allocator(root: str, env) -> str:
  """The allocator library to preload, as a path inside the environment whose system files are
  under `root` ('' for the host's), or '' for none: turned off, the caller's LD_PRELOAD, or not
  installed."""
  choice = env.get(MALLOC_ENV) or MALLOC_CHOICES[0]
  if choice not in MALLOC_CHOICES:
    raise SystemExit(
      f'[runtime] {MALLOC_ENV}={choice!r} is not one of {", ".join(MALLOC_CHOICES)}: '
      f"unset it for jemalloc, or set {MALLOC_ENV}=system for glibc's malloc."
    )
  if choice == 'system' or env.get('LD_PRELOAD'):
    return ''
  for folder in LIB_DIRS:
    path = os.path.join(folder, JEMALLOC)
    if os.path.exists(root + path):
      return path
  return ''


def command_in(choice: host.Choice, target: str, argv, cwd: str):
  """The argv and environment that run `argv` inside the environment."""
  env = dict(os.environ)
  env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
  env['TFXLM_RUNTIME_KIND'] = choice.kind
  if choice.kind == host.VENV:
    env['VIRTUAL_ENV'] = target
    env['PATH'] = os.path.join(target, 'bin') + os.pathsep + env.get('PATH', '')
    preload = allocator('', env)
    if preload:
      env['LD_PRELOAD'] = preload
    return list(argv), env
  cmd = _bwrap_base(target)
  preload = allocator(target, env)
  if preload:  # set inside only: bwrap itself runs on the host, which may not have the library
    cmd += ['--setenv', 'LD_PRELOAD', preload]
  # The host's own data (e.g. /home, /mnt, /srv, /data, /work): every top-level folder that is
  # not part of the system, so that input folders and configs outside the repository work.
  for name in sorted(os.listdir('/')):
    path = '/' + name
    if name not in SYSTEM_DIRS and os.path.isdir(path) and not os.path.islink(path):
      cmd += ['--bind', path, path]
  cmd += ['--bind', REPO, REPO]
  if not os.path.exists(target + cwd):
    # Not visible yet (e.g. under /root); a folder the environment has itself (/, /usr, ...)
    # is never covered by the host's.
    cmd += ['--bind', cwd, cwd]
  cmd += ['--chdir', cwd]
  env['PATH'] = f'{ROOTFS_VENV}/bin:/usr/local/bin:/usr/bin:/bin'
  env['VIRTUAL_ENV'] = ROOTFS_VENV
  # The host's find-links folder does not exist inside; pip would warn on every call.
  if env.get('PIP_FIND_LINKS') and not os.path.exists(target + env['PIP_FIND_LINKS']):
    del env['PIP_FIND_LINKS']
  return cmd + ['--', *argv], env


# Signals that stop a command: `supervise` passes them to it rather than to bubblewrap.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SI_KERNEL = 0x80  # siginfo's si_code of a signal the terminal sent (Ctrl-C, Ctrl-\\, hang-up)


def supervise(monitor, command, env) -> int:
  """Runs `monitor` (bubblewrap's argv up to its `--`) on `command`; returns its exit status.

  bubblewrap stays as the command's parent and, with --die-with-parent, has it killed outright
  (SIGKILL) when it dies itself: Ctrl-C or a SIGTERM reaching bubblewrap ended a pipeline run
  or a server without its own shutdown (the run's "interrupted" line, the server's drain). So
  bubblewrap ignores the stopping signals (`FORWARDED_SIGNALS`), the command gets them back
  as they were here (`env --default-signal`; one this process was started ignoring, as nohup
  does, stays ignored), and this process, bubblewrap's parent, passes each one it is sent to
  the command, once. A signal of the terminal's (Ctrl-C) reaches the command itself: the
  three share the terminal's process group. Killed outright, this process takes bubblewrap
  and the command with it (--die-with-parent).
  """
  stopping = [s for s in FORWARDED_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
  waited = set(stopping) | {signal.SIGCHLD}
  if stopping:
    names = ','.join(signal.Signals(s).name[3:] for s in stopping)
    command = ['env', f'--default-signal={names}', '--', *command]
  info_read, info_write = os.pipe()  # bubblewrap writes {"child-pid": N} there once started
  os.set_inheritable(info_write, True)

  def in_bubblewrap():
    for number in stopping:
      signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)

  signal.pthread_sigmask(signal.SIG_BLOCK, waited)
  try:
    process = subprocess.Popen(
      [*monitor, '--info-fd', str(info_write), '--', *command],
      env=env,
      close_fds=False,  # as the exec it replaces: descriptors the caller passed stay open
      preexec_fn=in_bubblewrap,
    )
  except FileNotFoundError:
    print(f'[runtime] command not found: {monitor[0]}', file=sys.stderr)
    return 127
  finally:
    os.close(info_write)
  child = _child_pid(info_read)
  sent = {}  # (signal, sender) -> when it was last passed on
  while True:
    info = signal.sigwaitinfo(waited)
    if info.si_signo == signal.SIGCHLD:
      status = process.poll()
      if status is not None:
        break
      continue
    if info.si_code == _SI_KERNEL or child is None:
      continue  # the terminal's: the command had it too
    now = time.monotonic()
    key = (info.si_signo, info.si_pid)
    if now - sent.get(key, -10.0) < 1.0:
      continue  # one sender's group signal (timeout(1) sends one to us, one to our group)
    sent[key] = now
    try:
      os.kill(child, info.si_signo)
    except ProcessLookupError:
      pass
  if status < 0:  # bubblewrap itself died of a signal: end the same way
    signal.signal(-status, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {-status})
    os.kill(os.getpid(), -status)
    return 128 - status
  return status


def _child_pid(info_fd):
  """The command's process id from bubblewrap's --info-fd, None if it did not start."""
  text = b''
  try:
    while True:  # until the object is whole: the end of file may come only with the command's
      chunk = os.read(info_fd, 4096)
      if not chunk:
        return None
      text += chunk
      try:
        return int(json.loads(text.decode('utf-8'))['child-pid'])
      except ValueError:
        continue
      except (KeyError, TypeError):
        return None
  finally:
    os.close(info_fd)


def describe(facts: host.HostFacts, choice: host.Choice) -> str:
  """What the host has and which environment is chosen, and why, as lines to read."""

  def version(v):
    return '.'.join(map(str, v)) if v else 'none'

  def yes(flag):
    return 'yes' if flag else 'no'

  low, high = host.PYTHON_RANGE
  lines = [
    'Host:',
    f'  glibc {version(facts.glibc)} (native venv needs >= {version(host.MIN_GLIBC)})',
    f'  libstdc++ CXXABI {version(facts.cxxabi)} (needs >= {version(host.MIN_CXXABI)})',
    f'  python3 {version(facts.python)} (needs {version(low)}-{version(high)})',
    '  venv build tools: '
    + (
      f'{", ".join(facts.missing_build_tools)} missing' if facts.missing_build_tools else 'present'
    ),
    f'  root: {yes(facts.is_root)}; user namespaces: {yes(facts.userns)}',
    f'  bwrap: {yes(facts.has_bwrap)}; mmdebstrap: {yes(facts.has_mmdebstrap)}; '
    f'apt-get: {yes(facts.has_apt)}',
    f'  TFXLM_RUNTIME: {facts.forced or "unset"}',
    f'Environment: {choice.kind or "none usable"}'
    + (' (mmdebstrap unprivileged, in unshare mode)' if choice.unprivileged else ''),
    f'  why: {choice.reason}',
  ]
  if choice.install_tools:
    lines.append(f'  first installs: {" ".join(choice.install_tools)} (apt-get)')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='verb', required=True)
  sub.add_parser('describe', help='print what the host has and the environment chosen')
  sub.add_parser('ensure', help='build the environment if needed, print where')
  sub.add_parser('clean', help='remove every cached environment')
  run = sub.add_parser('exec')
  run.add_argument('cmd', nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)

  facts = host.detect()
  choice = host.choose_runtime(facts)
  if args.verb == 'clean':
    root = cache_root()
    # An unprivileged root filesystem belongs to the user's subordinate ids.
    owner = _rootfs_owner(choice) if choice.kind == host.ROOTFS else []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
      _remove(os.path.join(root, name), owner)
    return 0
  if args.verb == 'describe':
    print(describe(facts, choice))
    return 0 if choice.kind else 1
  if choice.kind is None:
    print(f'[runtime] no usable environment: {choice.reason}', file=sys.stderr)
    return 1
  target = ensure(choice)
  if args.verb == 'ensure':
    print(f'{choice.kind} {target}')
    return 0
  cmd = args.cmd[1:] if args.cmd[:1] == ['--'] else args.cmd
  if not cmd:
    parser.error('exec needs a command')
  argv2, env = command_in(choice, target, cmd, os.getcwd())
  sys.stdout.flush()
  if choice.kind == host.ROOTFS:
    split = argv2.index('--')
    return supervise(argv2[:split], argv2[split + 1 :], env)
  try:
    os.execvpe(argv2[0], argv2, env)
  except FileNotFoundError:
    print(f'[runtime] command not found: {argv2[0]}', file=sys.stderr)
    return 127


if __name__ == '__main__':
  sys.exit(main())
