"""Runs trainer.task.run_fn in its own process: `python run_fn_main.py ARGS.json`.

ARGS.json holds the FnArgs fields as a JSON object (the kill-and-resume and multi-process tests).
"""

import json
import sys

from absl import logging
from tfx.components.trainer import fn_args_utils

from trainer import task

if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  with open(sys.argv[1]) as f:
    task.run_fn(fn_args_utils.FnArgs(**json.load(f)))
