"""Whether one training step fits in the host's memory, checked before the first step.

A batch far too large for the machine (`per_replica_batch_size: 100000` on a laptop-sized
model) used to grow the process until the kernel killed it, minutes later, with no message.
The estimate is a floor of what backpropagation keeps per micro-batch, from the backbone's
sizes: per layer and token about 10 hidden-wide and 2 feed-forward-wide activations, and per
head two [seq_len, seq_len] attention maps; plus the vocabulary-wide logits of the LM tasks.
Measured on a 1-layer, 16-wide model at seq_len 64 and batch 100,000: 12 GB estimated, 21 GB
used before the kernel stopped it. Host memory only: a GPU's is its own.
"""

from __future__ import annotations

import math

from tfxlm import contract
from trainer import inputs
from trainer.config import TrainerConfig

_GIB = 1 << 30


def step_bytes(config: TrainerConfig, backbone, vocabulary_size: int) -> int:
  """A lower bound of the activation bytes one replica's micro-batch keeps for its backward
  pass (`backbone`: a keras-hub backbone, which has these sizes as attributes)."""
  return _bytes(config, backbone, vocabulary_size, config.per_replica_batch_size)


def _bytes(config: TrainerConfig, backbone, vocabulary_size: int, rows: int) -> int:
  # `rows` examples in a micro-batch (per_replica_batch_size: accumulation runs its micro-batches
  # one after the other, so it multiplies the update's batch, not the memory of a step).
  length = config.seq_len
  hidden, ffn = backbone.hidden_dim, backbone.intermediate_dim
  per_layer = rows * length * (10 * hidden + 2 * ffn) + 2 * rows * backbone.num_heads * length**2
  values = backbone.num_layers * per_layer
  if config.task == contract.CLM:
    values += 2 * rows * length * vocabulary_size
  elif config.task == contract.MLM:
    values += 2 * rows * inputs.max_predictions(length, config.mask_rate) * vocabulary_size
  element = 2 if config.precision in (contract.MIXED_BFLOAT16, contract.MIXED_FLOAT16) else 4
  return values * element


def _read_int(path: str, key: str | None = None) -> int | None:
  try:
    with open(path) as f:
      for line in f:
        fields = line.split()
        if key is None:
          return int(fields[0]) if fields and fields[0].isdigit() else None
        if fields and fields[0] == key:
          return int(fields[1]) * 1024  # /proc/meminfo's kB
  except (OSError, ValueError, IndexError):
    return None
  return None


def available_bytes() -> int | None:
  """Memory this process can still take: /proc/meminfo's MemAvailable, or less under a cgroup
  (v2) limit; None where neither is readable (not Linux)."""
  free = [_read_int('/proc/meminfo', 'MemAvailable:')]
  limit = _read_int('/sys/fs/cgroup/memory.max')  # 'max' (no limit) reads as None
  used = _read_int('/sys/fs/cgroup/memory.current')
  if limit is not None and used is not None:
    free.append(max(limit - used, 0))
  known = [v for v in free if v is not None]
  return min(known) if known else None


def check(config: TrainerConfig, backbone, vocabulary_size: int, local_replicas: int) -> None:
  """Refuses a step whose activations alone would not fit in the host's available memory.

  Raises:
    ValueError: naming the batch, the estimate, the memory available and what to lower.
  """
  available = available_bytes()
  if available is None:
    return
  need = step_bytes(config, backbone, vocabulary_size) * local_replicas
  if need <= available:
    return
  # The estimate grows with the rows of a micro-batch; the advice leaves half of what is
  # available for the rest (weights, optimizer state, input pipeline).
  per_row = _bytes(config, backbone, vocabulary_size, 1) * local_replicas
  rows = min(int(available / 2 // per_row), config.per_replica_batch_size)
  update_batch = config.per_replica_batch_size * max(config.grad_accum_steps, 1)
  if rows:
    advice = (
      f'set per_replica_batch_size: {rows} and grad_accum_steps: '
      f'{math.ceil(update_batch / rows)} to keep about the same batch per update in smaller '
      'micro-batches, or lower seq_len'
    )
  else:
    advice = 'lower seq_len (even one example per micro-batch does not fit at this length)'
  raise ValueError(
    f'train.per_replica_batch_size {config.per_replica_batch_size} at seq_len {config.seq_len} '
    f'needs at least {need / _GIB:.1f} GiB for one step (its activations, estimated from the '
    f'model size), more than the {available / _GIB:.1f} GiB of memory available: {advice}'
  )


def backbone_of(model):
  """The keras-hub backbone inside a task model (the layer with the backbone's sizes)."""
  for layer in [model, *model._flatten_layers(include_self=False)]:
    if all(hasattr(layer, name) for name in ('num_layers', 'hidden_dim', 'num_heads')):
      return layer
  return None


def local_devices(strategy) -> list[str]:
  """The devices this worker's replicas run on; for the default strategy (which has none
  listed), the first GPU if TensorFlow sees one, else the CPU."""
  try:
    devices = list(strategy.extended.worker_devices)
  except (AttributeError, NotImplementedError, RuntimeError):
    devices = []
  if devices:
    return devices
  import tensorflow as tf

  return ['/device:GPU:0'] if tf.config.list_logical_devices('GPU') else ['/device:CPU:0']


def host_only(devices: list[str]) -> bool:
  """True when `devices` are all CPUs (the activations live in host memory)."""
  return all('GPU' not in d.upper() and 'TPU' not in d.upper() for d in devices)
