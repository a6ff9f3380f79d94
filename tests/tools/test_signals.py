"""`./dev` under bubblewrap passes Ctrl-C and SIGTERM to the command instead of dying of them
(tools/runtime.py `supervise`): bubblewrap killed the command outright when it died itself, so a
pipeline run never said it was interrupted and a server never drained.

bubblewrap is not installed inside the environment the tests run in: `MONITOR` stands in for it
with what matters here, as bubblewrap 0.8 does it: it starts the command as its child, writes
{"child-pid": N} to --info-fd, exits with the command's status, dies of the stopping signals
unless it was started ignoring them, and has the command killed (SIGKILL) when it dies.
"""

import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MONITOR = textwrap.dedent(
  """
  import ctypes, json, os, signal, sys
  args = sys.argv[1:]
  info_fd = int(args[args.index('--info-fd') + 1])
  command = args[args.index('--') + 1:]
  parent = os.getpid()
  pid = os.fork()
  if pid == 0:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: --die-with-parent
    if os.getppid() != parent:
      os._exit(1)
    os.execvp(command[0], command)
  os.write(info_fd, json.dumps({'child-pid': pid}).encode())
  os.close(info_fd)
  _, status = os.waitpid(pid, 0)
  code = os.waitstatus_to_exitcode(status)
  sys.exit(code if code >= 0 else 128 - code)
  """
)

# The command: says which stopping signals reach it, and takes a second to shut down.
COMMAND = textwrap.dedent(
  """
  import signal, sys, time
  got = []
  signal.signal(signal.SIGTERM, lambda number, frame: got.append('SIGTERM'))
  try:
    print('ready', 'SIGHUP ignored' if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else '',
          flush=True)
    for _ in range(200):
      time.sleep(0.05)
      if got:
        break
  except KeyboardInterrupt:
    got.append('SIGINT')
  time.sleep(0.3)  # its own shutdown: a killed command never prints the line below
  print('stopped after', got, flush=True)
  sys.exit(3)
  """
)


def _supervisor(tmp_path):
  monitor, command = tmp_path / 'monitor.py', tmp_path / 'command.py'
  monitor.write_text(MONITOR)
  command.write_text(COMMAND)
  return [
    sys.executable,
    '-c',
    'import os, sys; sys.path.insert(0, sys.argv[1]); from tools import runtime; '
    'sys.exit(runtime.supervise([sys.executable, sys.argv[2]], [sys.executable, sys.argv[3]], '
    'dict(os.environ)))',
    REPO,
    str(monitor),
    str(command),
  ]


def _read_until(stream, text, timeout=30.0):
  seen = ''
  end = time.monotonic() + timeout
  while text not in seen and time.monotonic() < end:
    line = stream.readline()
    if not line:
      break
    seen += line
  return seen


def test_a_sigterm_sent_to_dev_reaches_the_command_once_and_it_shuts_down_on_its_own(tmp_path):
  process = subprocess.Popen(_supervisor(tmp_path), stdout=subprocess.PIPE, text=True)
  assert 'ready' in _read_until(process.stdout, 'ready')
  process.send_signal(signal.SIGTERM)  # `kill $!` after `./dev python -m serving ... &`
  rest = process.stdout.read()
  assert process.wait(timeout=30) == 3  # the command's own status
  assert "stopped after ['SIGTERM']" in rest


def test_ctrl_c_at_the_terminal_interrupts_the_command_once_and_lets_it_finish(tmp_path):
  pid, terminal = pty.fork()
  if pid == 0:  # the terminal's session: dev, bubblewrap and the command in its process group
    # As in a terminal's shell: SIGINT and SIGQUIT at their defaults, whatever this test run
    # inherited (a run started in the background of a script has them ignored).
    for number in (signal.SIGINT, signal.SIGQUIT):
      signal.signal(number, signal.SIG_DFL)
    os.execvp(sys.executable, _supervisor(tmp_path))
  seen = b''
  sent = False
  end = time.monotonic() + 60
  while time.monotonic() < end:
    ready, _, _ = select.select([terminal], [], [], 0.1)
    if ready:
      try:
        chunk = os.read(terminal, 4096)
      except OSError:
        break
      if not chunk:
        break
      seen += chunk
    if b'ready' in seen and not sent:
      os.write(terminal, b'\x03')  # Ctrl-C: the terminal sends SIGINT to the whole group
      sent = True
  _, status = os.waitpid(pid, 0)
  assert "stopped after ['SIGINT']" in seen.decode(), seen
  assert os.waitstatus_to_exitcode(status) == 3


def test_a_signal_dev_was_started_ignoring_stays_ignored_in_the_command(tmp_path):
  process = subprocess.Popen(
    _supervisor(tmp_path),
    stdout=subprocess.PIPE,
    text=True,
    preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup starts it
  )
  assert 'SIGHUP ignored' in _read_until(process.stdout, 'ready')
  process.send_signal(signal.SIGHUP)
  process.send_signal(signal.SIGTERM)
  assert "stopped after ['SIGTERM']" in process.stdout.read()
  assert process.wait(timeout=30) == 3
