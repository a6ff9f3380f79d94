"""`train.precision: auto` and the warning for bfloat16 on hardware that emulates it."""

import logging

import pytest
import tensorflow as tf

from trainer import precision
from trainer.config import TrainerConfig
from trainer.precision import Hardware, choose

AVX2_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx fma avx2 bmi2
"""
SAPPHIRE_RAPIDS_CPUINFO = AVX2_CPUINFO.replace('avx2', 'avx2 avx512f avx512_bf16 amx_bf16')


@pytest.mark.parametrize(
  'hardware, expected',
  [
    (Hardware(), 'float32'),
    (Hardware(cpu_bfloat16=True), 'mixed_bfloat16'),
    (Hardware(tpu=True), 'mixed_bfloat16'),
    (Hardware(gpu_capabilities=((8, 0), (9, 0))), 'mixed_bfloat16'),
    # V100 / T4: float16 tensor cores, no bfloat16.
    (Hardware(gpu_capabilities=((7, 5),)), 'mixed_float16'),
    # One older GPU decides for the lot; a GPU host ignores its CPU's flags.
    (Hardware(gpu_capabilities=((8, 6), (7, 0)), cpu_bfloat16=True), 'mixed_float16'),
    (Hardware(gpu_capabilities=((6, 1),), cpu_bfloat16=True), 'float32'),
  ],
)
def test_auto_picks_what_the_hardware_computes_natively(hardware, expected):
  assert choose('auto', hardware) == expected


@pytest.mark.parametrize('asked', ['float32', 'mixed_bfloat16', 'mixed_float16'])
def test_an_explicit_precision_is_kept_on_any_hardware(asked):
  for hardware in (Hardware(), Hardware(tpu=True), Hardware(gpu_capabilities=((7, 0),))):
    assert choose(asked, hardware) == asked


def test_cpu_flags_are_read_from_cpuinfo():
  assert 'avx512_bf16' not in precision.cpu_flags(AVX2_CPUINFO)
  assert {'avx2', 'avx512_bf16', 'amx_bf16'} <= precision.cpu_flags(SAPPHIRE_RAPIDS_CPUINFO)
  assert precision.cpu_flags('processor : 0\n') == set()


def test_detect_reads_this_hosts_cpu(monkeypatch):
  """On this CPU-only host, detection follows /proc/cpuinfo and oneDNN."""
  strategy = tf.distribute.get_strategy()
  for text, onednn, expected in [
    (AVX2_CPUINFO, True, False),
    (SAPPHIRE_RAPIDS_CPUINFO, True, True),
    (SAPPHIRE_RAPIDS_CPUINFO, False, False),
  ]:
    monkeypatch.setattr(precision, '_read_cpuinfo', lambda text=text: text)
    monkeypatch.setattr(precision, '_onednn_enabled', lambda onednn=onednn: onednn)
    assert precision.detect(strategy) == Hardware(cpu_bfloat16=expected, cpu_avx512=expected)


def test_resolve_logs_auto_and_warns_of_emulated_bfloat16(monkeypatch, caplog):
  strategy = tf.distribute.get_strategy()
  monkeypatch.setattr(precision, '_read_cpuinfo', lambda: AVX2_CPUINFO)
  caplog.set_level(logging.INFO, logger='absl')
  assert precision.resolve('auto', strategy) == 'float32'
  assert 'precision auto: float32 on a CPU without AVX512_BF16' in caplog.text
  assert precision.resolve('mixed_bfloat16', strategy) == 'mixed_bfloat16'
  assert 'bfloat16 is emulated here' in caplog.text
  assert 'set train.precision to auto or float32' in caplog.text
  caplog.clear()
  assert precision.resolve('float32', strategy) == 'float32'
  assert not caplog.text


def test_resolve_warns_once_of_emulated_float16_on_a_cpu_host(monkeypatch, caplog):
  # This host has no GPU: the strategy trains on its CPU.
  strategy = tf.distribute.get_strategy()
  monkeypatch.setattr(precision, '_read_cpuinfo', lambda: AVX2_CPUINFO)
  caplog.set_level(logging.INFO, logger='absl')
  assert precision.resolve('mixed_float16', strategy) == 'mixed_float16'
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert warnings == [
    'precision mixed_float16 on a CPU without AVX512_FP16 / AMX-FP16 (no GPU found): float16 is '
    'emulated here, slower than float32; set train.precision to auto or float32'
  ]
  caplog.clear()
  # A CPU that multiplies float16 under oneDNN computes it natively.
  monkeypatch.setattr(
    precision, '_read_cpuinfo', lambda: AVX2_CPUINFO.replace('avx2', 'avx2 amx_fp16')
  )
  monkeypatch.setattr(precision, '_onednn_enabled', lambda: True)
  assert precision.resolve('mixed_float16', strategy) == 'mixed_float16'
  assert not caplog.text


def test_the_config_takes_auto_and_refuses_others():
  assert TrainerConfig(precision='auto').precision == 'auto'
  with pytest.raises(ValueError, match='precision'):
    TrainerConfig(precision='bfloat16')
