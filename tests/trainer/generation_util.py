"""Causal LMs with random weights for the generation tests and bench/generate_bench.py."""

import keras
import numpy as np
import tensorflow_transform as tft

from tfxlm import contract
from trainer import config as config_lib
from trainer import export, models

# Reserved tokens `generate` never produces; [SEP] (the end token) is not among them.
BANNED_IDS = [i for i in range(len(contract.RESERVED_TOKENS)) if i != contract.SEP_ID]


def random_clm(vocab_size: int, seed: int = 1, **overrides):
  """(TrainerConfig, clm keras model) with random weights; `overrides` set config fields."""
  fields = {
    'task': contract.CLM,
    'num_layers': 2,
    'hidden_dim': 32,
    'num_heads': 2,
    'intermediate_dim': 64,
    'dropout': 0.0,
    'seq_len': 32,
  }
  fields.update(overrides)
  config = config_lib.TrainerConfig.from_dict(fields)
  keras.utils.set_random_seed(seed)
  backbone = models.build_backbone(config, vocab_size)
  return config, models.build_model(config.task, backbone)


def never_predict(backbone, token_ids, strength: float = 50.0) -> None:
  """Rewrites weights so that `token_ids` get logits about -strength at every position.

  keras-hub's generate cannot ban tokens; with these weights neither it nor `generate` ever
  picks them, so the two can be compared token for token. The final LayerNorm's first output
  becomes the constant 1 and the tied embedding's first column -strength for those tokens.
  """
  gamma, beta = backbone.layer_norm.gamma, backbone.layer_norm.beta
  gamma.assign(np.concatenate([[0.0], gamma.numpy()[1:]]).astype(gamma.dtype))
  beta.assign(np.concatenate([[1.0], beta.numpy()[1:]]).astype(beta.dtype))
  embeddings = backbone.token_embedding.embeddings
  value = embeddings.numpy()
  value[list(token_ids), 0] = -strength
  embeddings.assign(value)


def export_clm(model, config, transform_graph: str, export_dir: str) -> str:
  """Exports `model` as run_fn does, with the token vocabulary of `transform_graph`."""
  tft_output = tft.TFTransformOutput(transform_graph)
  tokens = export.read_lines(tft_output.vocabulary_file_by_name(contract.TOKEN_VOCAB_NAME))
  return export.export_saved_model(model, tft_output, config, tokens, None, export_dir)
