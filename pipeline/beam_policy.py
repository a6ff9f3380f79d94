"""The Beam arguments of every run, local or on Kubeflow: one policy.

- **Runner.** The user's, when the config names one (`beam.args` locally, `kubeflow.beam_args` on
  the cluster, e.g. `--runner=DataflowRunner`). Otherwise Beam's portable in-process runner,
  `FN_API_RUNNER`, named rather than `DirectRunner`: Beam 2.77's DirectRunner first tries the
  Prism runner, which it downloads from GitHub on first use (or fails to, offline or in a pod
  without egress, leaving a `beam-temp*` folder in /tmp each time), then falls back to this one.
  A config that gives `--direct_running_mode` and no runner gets `FN_API_RUNNER` too, which reads
  that mode and `--direct_num_workers` as DirectRunner's fallback would.
- **Workers.** Locally, inputs up to `IN_PROCESS_MAX_BYTES` run inside the pipeline's process
  (starting worker processes, each importing TensorFlow, costs 5-10 s per Beam component, more
  than the work itself) and larger or remote ones on one worker process per core;
  `beam.direct_num_workers` decides when set. In a Kubeflow pod: worker processes on all of the
  pod's cores.
- **Dependencies.** `--setup_file` names the project's setup.py (this checkout's locally, the
  image's on Kubeflow) unless the arguments already name the dependencies: without it TFX builds
  an sdist of itself for every Beam component (`dependency_utils.make_beam_dependency_flags`,
  3-10 s each); with it, a remote runner installs the project on its workers.

The compression of the intermediate files is a config value (`pipeline.config.
intermediate_compression`; `remote_defaults` gzips on Kubeflow).
"""

import os
from typing import List, Optional, Sequence

FN_API_RUNNER = 'apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner'
# This checkout's setup.py: local Beam workers import the code from this environment.
SETUP_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'setup.py')
IN_PROCESS_MAX_BYTES = 32 << 20
# Arguments that choose how Beam runs: given any, the config decides the runner.
_RUNNER_FLAGS = ('--runner', '--direct_running_mode')
# Arguments that name the workers' dependencies.
_DEPENDENCY_FLAGS = ('--setup_file', '--requirements_file', '--extra_package')


def _users(args: Sequence[str], setup_file: str) -> List[str]:
  """The config's own runner arguments, with the runner and the dependencies named."""
  args = list(args)
  if not any(a.startswith('--runner') for a in args):
    args = [f'--runner={FN_API_RUNNER}', *args]
  if any(a.startswith(_DEPENDENCY_FLAGS) for a in args):
    return args
  return [*args, f'--setup_file={setup_file}']


def _multi_processing(workers: int) -> List[str]:
  return ['--direct_running_mode=multi_processing', f'--direct_num_workers={workers}']


def in_process(setup_file: str = SETUP_FILE) -> List[str]:
  """Every Beam component inside the pipeline's process."""
  return [
    f'--runner={FN_API_RUNNER}',
    f'--setup_file={setup_file}',
    '--direct_running_mode=in_memory',
    '--direct_num_workers=1',
  ]


def local(
  args: Sequence[str],
  direct_num_workers: int,
  input_bytes: Optional[int],
  num_cpus: Optional[int] = None,
) -> List[str]:
  """The Beam arguments of a local run.

  Args:
    args: `beam.args` of the config.
    direct_num_workers: `beam.direct_num_workers` (0: chosen here).
    input_bytes: Bytes of text the run reads; None if unknown (remote input).
    num_cpus: Cores to run worker processes on; None: this machine's.
  """
  if any(a.startswith(_RUNNER_FLAGS) for a in args):
    return _users(args, SETUP_FILE)
  workers = direct_num_workers
  if not workers:
    small = input_bytes is not None and input_bytes <= IN_PROCESS_MAX_BYTES
    workers = 1 if small else num_cpus or os.cpu_count() or 1
  if workers == 1:
    return [*args, *in_process()]
  return [
    f'--runner={FN_API_RUNNER}',
    f'--setup_file={SETUP_FILE}',
    *args,
    *_multi_processing(workers),
  ]


def kubeflow(args: Sequence[str], image_repo_dir: str) -> List[str]:
  """The Beam arguments of a run on Kubeflow.

  Args:
    args: `kubeflow.beam_args` of the config.
    image_repo_dir: Where the project sits inside the image (`kubeflow.image_repo_dir`).
  """
  setup_file = os.path.join(image_repo_dir, 'setup.py')
  if any(a.startswith(_RUNNER_FLAGS) for a in args):
    return _users(args, setup_file)
  # 0 workers: Beam starts one per core of the pod.
  return [f'--runner={FN_API_RUNNER}', f'--setup_file={setup_file}', *args, *_multi_processing(0)]
