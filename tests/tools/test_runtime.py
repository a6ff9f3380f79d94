"""The environment choice, a pure function of what the host offers, the cache key, and the
allocator every process of the environment runs with."""

import os
import subprocess
import sys

import pytest

from tools import host, runtime

DEBIAN12 = dict(
  glibc=(2, 36),
  cxxabi=(1, 3, 13),
  python=(3, 11),
  is_root=True,
  userns=True,
  has_bwrap=True,
  has_mmdebstrap=True,
  has_apt=True,
)
DEBIAN13 = dict(DEBIAN12, glibc=(2, 41), cxxabi=(1, 3, 15), python=(3, 13))


def facts(**overrides):
  return host.HostFacts(**{**DEBIAN12, **overrides})


def test_new_enough_host_gets_a_native_venv():
  choice = host.choose_runtime(facts(**DEBIAN13))
  assert choice.kind == host.VENV


@pytest.mark.parametrize(
  'old',
  [
    dict(glibc=(2, 38)),
    dict(cxxabi=(1, 3, 14)),
    dict(glibc=None),
    dict(python=(3, 14)),
    dict(python=(3, 9)),
  ],
)
def test_anything_too_old_or_new_falls_back_to_the_root_filesystem(old):
  choice = host.choose_runtime(facts(**{**DEBIAN13, **old}))
  assert choice.kind == host.ROOTFS


def test_new_host_without_venv_build_tools_falls_back_and_says_what_to_install():
  choice = host.choose_runtime(facts(**DEBIAN13, missing_build_tools=('Python headers',)))
  assert choice.kind == host.ROOTFS
  assert 'Python headers' in choice.reason and 'python3-dev' in choice.reason


def test_debian12_as_root_uses_the_root_filesystem_and_names_why():
  choice = host.choose_runtime(facts())
  assert choice.kind == host.ROOTFS
  assert 'glibc 2.36 < 2.39' in choice.reason and 'CXXABI 1.3.13' in choice.reason
  assert choice.install_tools == () and not choice.unprivileged


def test_root_installs_missing_tools_with_apt():
  choice = host.choose_runtime(facts(has_bwrap=False, has_mmdebstrap=False))
  assert choice.kind == host.ROOTFS
  assert choice.install_tools == ('mmdebstrap', 'bubblewrap')


def test_root_without_apt_and_without_tools_gets_a_clear_error():
  choice = host.choose_runtime(facts(has_bwrap=False, has_apt=False))
  assert choice.kind is None
  assert 'bubblewrap' in choice.reason and 'Docker' in choice.reason


def test_non_root_with_tools_and_user_namespaces_builds_unprivileged():
  choice = host.choose_runtime(facts(is_root=False))
  assert choice.kind == host.ROOTFS and choice.unprivileged


def test_non_root_without_tools_is_told_what_to_install():
  choice = host.choose_runtime(facts(is_root=False, has_mmdebstrap=False))
  assert choice.kind is None
  assert 'apt-get install mmdebstrap' in choice.reason


def test_non_root_without_user_namespaces_is_told_to_enable_them():
  choice = host.choose_runtime(facts(is_root=False, userns=False))
  assert choice.kind is None
  assert 'user namespaces' in choice.reason


def test_forcing_rootfs_on_a_new_host_is_honoured():
  choice = host.choose_runtime(facts(**DEBIAN13, forced='rootfs'))
  assert choice.kind == host.ROOTFS


def test_forcing_venv_on_an_old_host_is_refused_with_the_reason():
  choice = host.choose_runtime(facts(forced='venv'))
  assert choice.kind is None and 'glibc 2.36' in choice.reason


def test_unknown_forced_value_is_refused():
  assert host.choose_runtime(facts(forced='conda')).kind is None


def test_env_key_changes_with_the_lock(tmp_path):
  for name in runtime.KEY_FILES:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text('a')
  first = runtime.env_key(str(tmp_path))
  (tmp_path / 'requirements.lock').write_text('b')
  assert runtime.env_key(str(tmp_path)) != first


def test_detection_reads_this_host():
  detected = host.detect()
  assert detected.glibc is None or len(detected.glibc) == 2
  assert host.choose_runtime(detected).reason


def test_pip_local_sources_of_the_host_are_found_for_the_root_filesystem(tmp_path, monkeypatch):
  wheels = tmp_path / 'wheels'
  index = tmp_path / 'mirror' / 'simple'
  wheels.mkdir()
  index.mkdir(parents=True)
  monkeypatch.setenv('PIP_FIND_LINKS', str(wheels))
  monkeypatch.setenv('PIP_EXTRA_INDEX_URL', f'file://{index} file:///nonexistent/simple')
  found = runtime._pip_local_paths()
  # The index's parent: a PEP 503 page links to ../../files beside `simple`.
  assert str(wheels) in found and str(tmp_path / 'mirror') in found
  assert not [p for p in found if p.startswith('/nonexistent')]


def _root_with(tmp_path, *libs):
  for lib in libs:
    path = tmp_path / lib.lstrip('/')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
  return str(tmp_path)


def test_jemalloc_is_preloaded_where_installed_unless_turned_off_or_preloaded(tmp_path):
  lib = '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2'
  root = _root_with(tmp_path, lib)
  assert runtime.allocator(root, {}) == lib
  assert runtime.allocator(root, {'TFXLM_MALLOC': 'jemalloc'}) == lib
  assert runtime.allocator(root, {'TFXLM_MALLOC': 'system'}) == ''
  assert runtime.allocator(root, {'LD_PRELOAD': '/opt/mine.so'}) == ''
  assert runtime.allocator(_root_with(tmp_path / 'bare'), {}) == ''


def test_an_unknown_allocator_is_refused_with_what_to_set(tmp_path):
  with pytest.raises(SystemExit, match=r"TFXLM_MALLOC='tcmalloc' is not one of jemalloc, system"):
    runtime.allocator(str(tmp_path), {'TFXLM_MALLOC': 'tcmalloc'})


def test_the_root_filesystem_sets_the_preload_inside_only(tmp_path, monkeypatch):
  monkeypatch.delenv('LD_PRELOAD', raising=False)
  monkeypatch.delenv('TFXLM_MALLOC', raising=False)
  target = _root_with(tmp_path, '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2')
  choice = host.Choice(host.ROOTFS, 'test')
  cmd, env = runtime.command_in(choice, target, ['python', '-V'], '/')
  sandbox = cmd[: cmd.index('--')]
  at = sandbox.index('LD_PRELOAD')
  assert sandbox[at - 1 : at + 2] == [
    '--setenv',
    'LD_PRELOAD',
    '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2',
  ]
  # bwrap itself runs on the host, which may not have the library.
  assert 'LD_PRELOAD' not in env
  monkeypatch.setenv('TFXLM_MALLOC', 'system')
  cmd, _ = runtime.command_in(choice, target, ['python', '-V'], '/')
  assert 'LD_PRELOAD' not in cmd


def test_this_environment_runs_its_processes_with_jemalloc():
  """The suite runs through ./dev: this process and the processes it starts have jemalloc mapped,
  where the environment has it (the root filesystem always; a venv host if installed)."""
  kind = os.environ.get('TFXLM_RUNTIME_KIND')
  if kind is None or os.environ.get('TFXLM_MALLOC') == 'system':
    pytest.skip('not run through ./dev, or jemalloc turned off')
  if kind == host.VENV and not runtime.allocator('', {}):
    pytest.skip('a venv host without libjemalloc2')
  if runtime.JEMALLOC not in os.environ.get('LD_PRELOAD', runtime.JEMALLOC):
    pytest.skip('the caller preloads another library (LD_PRELOAD)')
  with open('/proc/self/maps') as f:
    assert runtime.JEMALLOC in f.read()
  child = subprocess.run(
    [sys.executable, '-c', 'print(open("/proc/self/maps").read())'],
    capture_output=True,
    text=True,
    check=True,
  )
  assert runtime.JEMALLOC in child.stdout


def test_describe_prints_readable_lines_of_the_host_and_the_choice():
  old = facts(is_root=False, has_bwrap=False, has_mmdebstrap=False)
  text = runtime.describe(old, host.choose_runtime(old))
  assert 'HostFacts(' not in text and 'Choice(' not in text
  assert '  glibc 2.36 (native venv needs >= 2.39)' in text.splitlines()
  assert '  bwrap: no; mmdebstrap: no; apt-get: yes' in text.splitlines()
  assert '\n  why: ' in text
  new = facts(**DEBIAN13)
  assert 'Environment: venv' in runtime.describe(new, host.choose_runtime(new)).splitlines()
