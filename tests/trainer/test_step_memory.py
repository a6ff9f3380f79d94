"""A training step too large for the host's memory is refused before it starts, in words."""

import types

import pytest

from tests.trainer import trainer_data
from tfxlm import contract
from trainer import step_memory, task
from trainer.config import TrainerConfig

GIB = 1 << 30
# all-MiniLM-L6-v2's sizes, and the new-user probe's 1-layer scratch model.
MINILM = types.SimpleNamespace(num_layers=6, hidden_dim=384, num_heads=12, intermediate_dim=1536)
TINY = types.SimpleNamespace(num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32)


def _config(**settings):
  return TrainerConfig(**{'task': contract.CLASSIFY, 'seq_len': 128, **settings})


def test_the_estimate_grows_with_the_micro_batch_and_halves_with_16_bits():
  demo = step_memory.step_bytes(_config(per_replica_batch_size=32), MINILM, 30522)
  assert 0.3 * GIB < demo < 2 * GIB  # the demo's fine-tuning step: well within any laptop
  # The probe's batch that the kernel killed at 21 GB: estimated at more than half of that.
  probe = _config(per_replica_batch_size=100_000, seq_len=64)
  assert step_memory.step_bytes(probe, TINY, 80) > 10 * GIB
  # per_replica_batch_size is the micro-batch: accumulating four of them one after the other
  # keeps one micro-batch's activations at a time, not a quarter of them.
  accumulated = _config(per_replica_batch_size=100_000, seq_len=64, grad_accum_steps=4)
  assert step_memory.step_bytes(accumulated, TINY, 80) == step_memory.step_bytes(probe, TINY, 80)
  quarter = _config(per_replica_batch_size=25_000, seq_len=64)
  assert step_memory.step_bytes(quarter, TINY, 80) == pytest.approx(
    step_memory.step_bytes(probe, TINY, 80) / 4, rel=0.01
  )
  half = _config(per_replica_batch_size=32, precision=contract.MIXED_BFLOAT16)
  assert step_memory.step_bytes(half, MINILM, 30522) == demo // 2
  # The LM tasks also keep vocabulary-wide logits.
  clm = _config(task=contract.CLM, per_replica_batch_size=32)
  assert step_memory.step_bytes(clm, MINILM, 30522) > demo + 2 * 32 * 128 * 30522 * 4 * 0.99


def test_a_step_larger_than_the_memory_available_names_the_batch_and_what_to_do(monkeypatch):
  monkeypatch.setattr(step_memory, 'available_bytes', lambda: 4 * GIB)
  config = _config(per_replica_batch_size=100_000, seq_len=64)
  with pytest.raises(ValueError) as error:
    step_memory.check(config, TINY, 80, local_replicas=1)
  message = str(error.value)
  assert message.startswith('train.per_replica_batch_size 100000 at seq_len 64 needs at least')
  assert 'than the 4.0 GiB of memory available' in message
  advice = message.rsplit('memory available: ', 1)[1]
  rows = int(advice.split('per_replica_batch_size: ', 1)[1].split()[0])
  accum = int(advice.split('grad_accum_steps: ', 1)[1].split()[0])
  assert 1 <= rows < 100_000 and rows * accum >= 100_000  # about the same batch per update
  smaller = _config(per_replica_batch_size=rows, seq_len=64, grad_accum_steps=accum)
  step_memory.check(smaller, TINY, 80, local_replicas=1)  # the advice fits
  step_memory.check(_config(per_replica_batch_size=32), MINILM, 30522, local_replicas=1)
  # Following the advice of a run that already accumulates keeps its batch per update too.
  with pytest.raises(ValueError) as again:
    step_memory.check(
      _config(per_replica_batch_size=100_000, seq_len=64, grad_accum_steps=3), TINY, 80, 1
    )
  accum_again = int(str(again.value).split('grad_accum_steps: ', 1)[1].split()[0])
  assert rows * accum_again >= 300_000


def test_a_length_that_does_not_fit_even_one_example_asks_for_a_shorter_seq_len(monkeypatch):
  monkeypatch.setattr(step_memory, 'available_bytes', lambda: 4 * GIB)
  with pytest.raises(ValueError, match=r'lower seq_len \(even one example per micro-batch'):
    step_memory.check(_config(per_replica_batch_size=16, seq_len=100_000), MINILM, 30522, 1)


def test_the_memory_available_is_read_on_linux():
  available = step_memory.available_bytes()
  assert available is not None and 0 < available < 1 << 50


def test_the_trainer_refuses_a_batch_too_large_before_training(
  classify_data, tmp_path, monkeypatch
):
  monkeypatch.setattr(step_memory, 'available_bytes', lambda: 2 * GIB)
  config = trainer_data.tiny_config(contract.CLASSIFY, per_replica_batch_size=1_000_000)
  args = trainer_data.fn_args(classify_data, str(tmp_path), config)
  with pytest.raises(ValueError, match='per_replica_batch_size 1000000 at seq_len 16 needs'):
    task.run_fn(args)
  assert not (tmp_path / 'serving').exists()
