"""Training precision: `auto` resolved on the host that trains, from what its hardware computes.

bfloat16 pays only where the hardware multiplies it natively: a TPU, a GPU of compute capability
8.0 or newer, or a CPU with AVX512_BF16 or AMX-BF16 under TensorFlow's oneDNN kernels. Elsewhere
TensorFlow emulates it: on a 2-core AVX2 EPYC (no AVX-512) fine-tuning all-MiniLM-L6-v2 under
`mixed_bfloat16` ran 147 tokens/s against 935 in float32, 0.16x (README "Training"). float16
is the same on a CPU without AVX512_FP16 or AMX-FP16: there a 512x512 float16 matmul takes twice
the float32 one's time, before the loss scaling `mixed_float16` adds. `choose`
is a pure function of detected facts, so `auto` is tested with faked hardware; `resolve`
detects them and logs the choice.
"""

import dataclasses

from absl import logging

from tfxlm.contract import AUTO, FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16

# /proc/cpuinfo flags of x86 CPUs that multiply bfloat16 (float16) natively.
_BFLOAT16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
_FLOAT16_CPU_FLAGS = ('avx512_fp16', 'amx_fp16')


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What `auto` looks at.

  Attributes:
    tpu: Training runs on a TPU.
    gpu_capabilities: (major, minor) compute capability of each local GPU.
    cpu_bfloat16: The CPU has bfloat16 instructions and TensorFlow uses oneDNN.
    cpu_float16: The CPU has float16 instructions and TensorFlow uses oneDNN.
    cpu_avx512: The CPU has AVX-512 (AVX512F) and TensorFlow uses oneDNN: its own kernels then
      outrun XLA's CPU code on a language model's step (trainer/training.py, `JIT_MIN_STEPS`).
  """

  tpu: bool = False
  gpu_capabilities: tuple = ()
  cpu_bfloat16: bool = False
  cpu_float16: bool = False
  cpu_avx512: bool = False

  def native_bfloat16(self) -> bool:
    """Whether the devices that train multiply bfloat16 natively."""
    if self.tpu:
      return True
    if self.gpu_capabilities:
      return all(tuple(c) >= (8, 0) for c in self.gpu_capabilities)
    return self.cpu_bfloat16

  def describe(self) -> str:
    if self.tpu:
      return 'a TPU'
    if self.gpu_capabilities:
      found = ', '.join('.'.join(map(str, c)) for c in self.gpu_capabilities)
      return f'GPU(s) of compute capability {found}'
    return 'a CPU ' + ('with' if self.cpu_bfloat16 else 'without') + ' AVX512_BF16 / AMX-BF16'


def choose(precision: str, hardware: Hardware) -> str:
  """The Keras policy for `train.precision` on `hardware`: `auto` is mixed_bfloat16 where it is
  native, mixed_float16 on GPUs of compute capability 7.x (their tensor cores multiply
  float16), float32 elsewhere; any other value is kept."""
  if precision != AUTO:
    return precision
  if hardware.native_bfloat16():
    return MIXED_BFLOAT16
  if hardware.gpu_capabilities and all(tuple(c) >= (7, 0) for c in hardware.gpu_capabilities):
    return MIXED_FLOAT16
  return FLOAT32


def cpu_flags(cpuinfo: str) -> set[str]:
  """The flags of the first processor in a /proc/cpuinfo text (empty when it lists none)."""
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() in ('flags', 'Features'):
      return set(value.split())
  return set()


def _onednn_enabled() -> bool:
  try:
    from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415 - TF-internal probe
  except ImportError:
    return False
  return bool(_pywrap_util_port.IsMklEnabled())


def _read_cpuinfo() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return f.read()
  except OSError:  # not Linux: no flags, so no bfloat16 assumed
    return ''


def detect(strategy) -> Hardware:
  """The hardware `strategy` trains on."""
  import tensorflow as tf  # noqa: PLC0415 - the pure functions above need no TensorFlow

  if isinstance(strategy, tf.distribute.TPUStrategy):
    return Hardware(tpu=True)
  capabilities = []
  for gpu in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(tuple(details.get('compute_capability', (0, 0))))
  if capabilities:
    return Hardware(gpu_capabilities=tuple(capabilities))
  flags = cpu_flags(_read_cpuinfo())
  onednn = _onednn_enabled()
  return Hardware(
    cpu_bfloat16=bool(flags & set(_BFLOAT16_CPU_FLAGS)) and onednn,
    cpu_float16=bool(flags & set(_FLOAT16_CPU_FLAGS)) and onednn,
    cpu_avx512='avx512f' in flags and onednn,
  )


def resolve(precision: str, strategy) -> str:
  """`choose` on this host's hardware, logged; a warning where mixed_bfloat16 or mixed_float16
  is asked for on hardware that only emulates it (once per run: the Trainer calls this once)."""
  hardware = detect(strategy)
  chosen = choose(precision, hardware)
  if precision == AUTO:
    logging.info('precision auto: %s on %s', chosen, hardware.describe())
  elif precision == MIXED_BFLOAT16 and not hardware.native_bfloat16():
    logging.warning(
      'precision mixed_bfloat16 on %s: bfloat16 is emulated here, many times slower than '
      'float32; set train.precision to auto or float32',
      hardware.describe(),
    )
  elif (
    precision == MIXED_FLOAT16
    and not hardware.tpu
    and not hardware.gpu_capabilities
    and not hardware.cpu_float16
  ):
    logging.warning(
      'precision mixed_float16 on a CPU without AVX512_FP16 / AMX-FP16 (no GPU found): float16 '
      'is emulated here, slower than float32; set train.precision to auto or float32'
    )
  return chosen
