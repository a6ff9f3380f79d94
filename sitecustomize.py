"""Python runs this at every start in the project's environment (`./dev` and the Docker image
put the repository on PYTHONPATH); it only acts for the `tfx` CLI, which imports TensorFlow before
any of our code runs, so its C++ start-up lines would reach the console (see tfxlm/console.py),
and which runs the pipeline file without telling it the pipeline asked for (tfxlm/tfx_cli.py).
It then runs the `sitecustomize` it shadows (e.g. Debian's), if any.
"""

import os
import sys

# The CLI's entry module and the handler of the engine the README uses (imported lazily by the
# CLI, after the entry module): between them they import TensorFlow and TFX.
_TFX_CLI_MODULES = ('tfx.tools.cli.cli_main', 'tfx.tools.cli.handler.local_handler')


def _quiet_tfx_cli() -> None:
  from tfxlm import console

  try:
    console.import_quietly(_TFX_CLI_MODULES, console.default_log_path('tfx'))
  except Exception:  # noqa: BLE001 - the CLI imports them again and reports the error itself
    pass


def _run_shadowed() -> None:
  from importlib import machinery, util

  here = os.path.dirname(os.path.abspath(__file__))
  path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
  spec = machinery.PathFinder.find_spec(__name__, path)
  if spec is not None and spec.loader is not None:
    spec.loader.exec_module(util.module_from_spec(spec))


def _note_requested_pipeline() -> None:
  # `tfx run create` runs the pipeline file without arguments: tell it the pipeline asked for.
  from tfxlm import tfx_cli

  tfx_cli.note_requested_pipeline(sys.argv, os.environ)


if getattr(sys, 'argv', None) and os.path.basename(sys.argv[0]) == 'tfx':
  _note_requested_pipeline()
  _quiet_tfx_cli()
_run_shadowed()
