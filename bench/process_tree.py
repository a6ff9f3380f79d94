"""Measuring a child process's tree: resident memory and CPU time, sampled while it runs.

Benches that time a pipeline run it in a child process (its Beam workers are that child's
children) and read the samples over each stage's time window.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import subprocess
import sys
import threading
import time

SAMPLE_INTERVAL_S = 0.25


def tree_usage(root_pid: int) -> tuple[int, int, float]:
  """(sum, largest) resident bytes over a process and all its descendants, and their CPU
  seconds so far (user + system, with those of the children they have reaped)."""
  children, ticks = collections.defaultdict(list), {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
        children[int(fields[1])].append(int(entry))
        # Fields 14-17 of stat: utime, stime, cutime, cstime (this list starts at field 3).
        ticks[int(entry)] = sum(int(v) for v in fields[11:15])
      except (OSError, IndexError, ValueError):
        continue  # the process ended while we looked
  page = os.sysconf('SC_PAGE_SIZE')
  total = largest = cpu = 0
  stack = [root_pid]
  while stack:
    pid = stack.pop()
    stack.extend(children.get(pid, []))
    try:
      with open(f'/proc/{pid}/statm') as f:
        rss = int(f.read().split()[1]) * page
    except (OSError, IndexError):
      continue
    total += rss
    largest = max(largest, rss)
    cpu += ticks.get(pid, 0)
  return total, largest, cpu / os.sysconf('SC_CLK_TCK')


def run_child(
  script: str, args: list[str], log_path: str, env: dict | None = None
) -> tuple[dict, list]:
  """Runs the Python file `script` with `args`, its stderr to `log_path`; it prints one JSON
  line last.

  Returns:
    That JSON result and the samples of its process tree: (epoch s, resident bytes summed,
    largest process's resident bytes, CPU seconds so far).

  Raises:
    SystemExit: the role failed (with the end of its log).
  """
  with open(log_path, 'w') as log:
    process = subprocess.Popen(
      [sys.executable, os.path.abspath(script), *args],
      stdout=subprocess.PIPE,
      stderr=log,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})},
      text=True,
    )
    samples = []

    def sample():
      while process.poll() is None:
        samples.append((time.time(), *tree_usage(process.pid)))
        time.sleep(SAMPLE_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    sampler.join()
  if process.returncode:
    with open(log_path, errors='replace') as f:
      tail = ''.join(f.readlines()[-20:])
    raise SystemExit(f'{args[:2]} failed with exit code {process.returncode}:\n{tail}')
  return json.loads(out.strip().splitlines()[-1]), samples


def usage(samples: list, start: float, end: float) -> dict:
  """Peak memory and CPU seconds of the process tree between two epoch times."""
  # A window shorter than the sampling period holds no sample: the first one after it bounds it.
  inside = [s for s in samples if start <= s[0] <= end] or [s for s in samples if s[0] > end][:1]
  before = [s[3] for s in samples if s[0] <= start] or [0.0]
  return {
    'peak_rss_tree_bytes': max((s[1] for s in inside), default=0),
    'peak_rss_process_bytes': max((s[2] for s in inside), default=0),
    'cpu_seconds': max((s[3] for s in inside), default=before[-1]) - before[-1],
  }


def loadavg() -> list[float]:
  """The load averages over 1, 5 and 15 minutes."""
  with open('/proc/loadavg') as f:
    return [float(v) for v in f.read().split()[:3]]


def machine() -> dict:
  """What the figures were measured on."""
  with open('/proc/meminfo') as f:
    memory = int(f.readline().split()[1]) * 1024
  return {
    'cpus': os.cpu_count(),
    'memory_bytes': memory,
    'python': platform.python_version(),
    'loadavg_start': loadavg(),
  }
