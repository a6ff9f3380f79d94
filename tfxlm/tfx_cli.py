"""The pipeline the `tfx` CLI was asked to run, passed on to the pipeline file it runs.

`tfx run create --engine local --pipeline_name NAME` runs the file `tfx pipeline create`
recorded as `python <file>`, without arguments: the file cannot tell which pipeline was asked
for, and would run the one its config names ($TFXLM_CONFIG, else the demo). sitecustomize.py
notes NAME in `PIPELINE_ENV` in the CLI's process, whose children inherit it, and
pipeline/local_runner.py refuses a config of another pipeline.
"""

import os
from typing import MutableMapping, Optional, Sequence

PIPELINE_ENV = 'TFXLM_TFX_PIPELINE'
_NAME_FLAGS = ('--pipeline_name', '--pipeline-name')


def requested_pipeline(argv: Sequence[str]) -> Optional[str]:
  """NAME of `tfx run create ... --pipeline_name NAME` (or `--pipeline-name`, `=NAME`); None
  for any other command."""
  args = list(argv[1:])
  if args[:2] != ['run', 'create']:
    return None
  for i, arg in enumerate(args):
    for flag in _NAME_FLAGS:
      if arg == flag and i + 1 < len(args):
        return args[i + 1]
      if arg.startswith(f'{flag}='):
        return arg[len(flag) + 1 :]
  return None


def note_requested_pipeline(argv: Sequence[str], environ: MutableMapping[str, str]) -> None:
  """Sets (or, for another command, clears) `PIPELINE_ENV` from the CLI's arguments."""
  name = requested_pipeline(argv)
  if name:
    environ[PIPELINE_ENV] = name
  else:
    environ.pop(PIPELINE_ENV, None)


def mismatch(config_name: str, config_path: str) -> Optional[str]:
  """Why this process must not run pipeline `config_name` (loaded from `config_path`): the `tfx`
  CLI asked for another one. None when it did not, or asked for this one."""
  requested = os.environ.get(PIPELINE_ENV)
  if not requested or requested == config_name:
    return None
  return (
    f'tfx asked for pipeline {requested!r}, but the config {config_path} is pipeline '
    f'{config_name!r} (the CLI passes no arguments: the config is $TFXLM_CONFIG, else the '
    f'demo): give the config {requested!r} was created from, e.g. TFXLM_CONFIG=path/to/'
    f'config.yaml tfx run create --engine local --pipeline_name {requested}'
  )
