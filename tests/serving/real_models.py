"""Tiny models exported by the pipeline's own trainer code (TF Transform graph, keras-hub
backbone, tensorflow-text tokenizer), pushed in the Pusher layout for the server to load.

Built with the trainer tests' helpers (`tests/trainer/trainer_data.py`): their real Transform
outputs (built once per session, shared with the trainer tests), then `trainer.task.run_fn` for
two steps. Untrained weights are enough here: the tests compare the server with the in-process
call, not model quality.
"""

import os
import shutil

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import task

VERSION = 1
# Two steps of a one-layer model on 32 rows: the export is what matters, not the training.
_SIZES = {
  'num_layers': 1,
  'hidden_dim': 16,
  'num_heads': 2,
  'intermediate_dim': 32,
  'seq_len': trainer_data.SEQ_LEN,
  'per_replica_batch_size': 8,
  'train_steps': 2,
  'eval_steps': 1,
  'eval_every_steps': 2,
  'log_every_steps': 1,
  'checkpoint_every_steps': 2,
  'warmup_steps': 1,
}


_DATA = {contract.CLASSIFY: trainer_data.classify_data, contract.CLM: trainer_data.clm_data}


def export(tmp_path_factory, root: str, task_name: str, base: str) -> str:
  """Trains `task_name` on the shared Transform output; pushes the model to <base>/<task>/1.

  Args:
    tmp_path_factory: pytest's, for the session-wide Transform outputs.
    root: Where the Trainer writes.
    task_name: classify or clm.
    base: The model base path the server reads.

  Returns:
    The version directory.
  """
  work = os.path.join(root, task_name)
  data = _DATA[task_name](tmp_path_factory)
  args = trainer_data.fn_args(data, work, trainer_data.tiny_config(task_name, **_SIZES))
  task.run_fn(args)
  version_dir = os.path.join(base, task_name, str(VERSION))
  shutil.copytree(args.serving_model_dir, version_dir)
  return version_dir
