"""The tiny csv classification config that pipeline tests run through `pipeline.local_runner`."""

import pathlib

import yaml

# A model this small trains in seconds; the tests that use it are about the run, not the model.
TINY_CLASSIFIER = {
  'task': 'classify',
  'num_layers': 1,
  'hidden_dim': 16,
  'num_heads': 2,
  'intermediate_dim': 32,
  'seq_len': 16,
}
# Evaluator thresholds every model passes: for tests about what is blessed or pushed, not how well.
BLESS_EVERY_MODEL = {'min_accuracy': 0.0, 'max_accuracy_drop': 1.0}


def classify_config(
  name: str, outputs_dir: pathlib.Path, input_base: pathlib.Path, **train
) -> dict:
  """A config for <input_base>/*.csv with `review` and `sentiment` columns.

  Args:
    name: The pipeline's name and the served model's.
    outputs_dir: Where the run writes.
    input_base: The folder of the csv files.
    **train: The `train` keys on top of TINY_CLASSIFIER (steps, batch size, ...).

  Returns:
    The config as a dict, for `write` (add sections such as `evaluation` first).
  """
  return {
    'pipeline_name': name,
    'outputs_dir': str(outputs_dir),
    'data': {
      'format': 'csv',
      'input_base': str(input_base),
      'text_column': 'review',
      'label_column': 'sentiment',
      'train_eval_ratio': [3, 1],
    },
    'vocabulary': {'size': 60},
    'train': {**TINY_CLASSIFIER, **train},
    'serving': {'model_name': name},
    'beam': {'direct_num_workers': 1},
  }


def write(path: pathlib.Path, config: dict) -> pathlib.Path:
  """Writes `config` as YAML to `path`; returns `path`."""
  path.write_text(yaml.safe_dump(config))
  return path
