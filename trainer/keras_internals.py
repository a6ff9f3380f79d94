"""Every private name of Keras that the project relies on, and only here (written for Keras 3.15).

Keras offers no public way to do what these do; each is wrapped in a public name of this module
so that a Keras upgrade breaks in one place, and `tests/trainer/test_keras_internals.py` names
the missing piece and the version this was written for.

- `sublayers`: a layer and every layer inside it, in Keras' own order (`_flatten_layers`);
  keras-hub numbers LoRA layers in this order, and the optimizer walks it.
- `own_trainable_variables`: the trainable variables a layer created itself, not those of the
  layers inside it (`_trainable_variables`): each bias once.
- `base_kernel`: a LoRA-enabled Dense or EinsumDense layer's kernel without the adapter
  (`_kernel`; the public `kernel` adds alpha / rank * A @ B).
- `backend_functions_replaced`: Keras' TensorFlow backend functions (`keras.src.backend.
  tensorflow`, e.g. `random.dropout`, which the Dropout layer calls, and `nn.gelu`, which
  `keras.activations.gelu` calls) replaced while inside; the Trainer traces its train step so
  (trainer/cpu_kernels.py).
- `stateless_seed`: the int32 seed tensor Keras' own TensorFlow random functions draw from a
  seed or `SeedGenerator` (`draw_seed` and `_cast_seed`): the generator's state advances as
  theirs does.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Callable, Iterator, Mapping

import keras

WRITTEN_FOR_KERAS = '3.15'


def _private(owner, name: str):
  """`owner.name`; ImportError naming it and the Keras versions if this Keras has no such name."""
  try:
    return getattr(owner, name)
  except AttributeError:
    what = owner.__name__ if isinstance(owner, type) else type(owner).__name__
    raise ImportError(
      f'{what}.{name} does not exist in Keras {keras.__version__}: trainer/keras_internals.py '
      f'was written for Keras {WRITTEN_FOR_KERAS}; adapt it to this version (or install the '
      'version in requirements.lock)'
    ) from None


def sublayers(layer: keras.layers.Layer, include_self: bool = True) -> list[keras.layers.Layer]:
  """`layer` (if `include_self`) and every layer inside it, recursively, each once."""
  return list(_private(layer, '_flatten_layers')(include_self=include_self, recursive=True))


def own_trainable_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
  """The trainable variables `layer` created itself (not its sublayers')."""
  return list(_private(layer, '_trainable_variables'))


def base_kernel(layer: keras.layers.Layer) -> keras.Variable:
  """The kernel of a Dense or EinsumDense layer without its LoRA adapter."""
  return _private(layer, '_kernel')


_BACKEND = 'keras.src.backend.tensorflow'
_replacing = threading.Lock()
_replaced = {'depth': 0, 'originals': {}}


def _backend_function(path: str):
  """(module, name) of `path` ('random.dropout') in Keras' TensorFlow backend."""
  module_name, name = path.rsplit('.', 1)
  try:
    module = importlib.import_module(f'{_BACKEND}.{module_name}')
  except ImportError:
    raise ImportError(
      f'{_BACKEND}.{module_name} does not exist in Keras {keras.__version__}: '
      f'trainer/keras_internals.py was written for Keras {WRITTEN_FOR_KERAS}; adapt it to this '
      'version (or install the version in requirements.lock)'
    ) from None
  _private(module, name)
  return module, name


@contextlib.contextmanager
def backend_functions_replaced(
  replacements: Mapping[str, Callable[[Callable], Callable]],
) -> Iterator[None]:
  """Inside, each backend function `path` ('random.dropout') is `make(original)`.

  Nested or concurrent uses (threads tracing at once) replace on the first entry and restore
  on the last exit; all must give the same replacements."""
  with _replacing:
    if not _replaced['depth']:
      for path, make in replacements.items():
        module, name = _backend_function(path)
        original = getattr(module, name)
        _replaced['originals'][path] = (module, name, original)
        setattr(module, name, make(original))
    _replaced['depth'] += 1
  try:
    yield
  finally:
    with _replacing:
      _replaced['depth'] -= 1
      if not _replaced['depth']:
        for module, name, original in _replaced['originals'].values():
          setattr(module, name, original)
        _replaced['originals'].clear()


def stateless_seed(seed):
  """The int32 [2] seed Keras' TensorFlow random functions use for `seed` (an int, None or a
  `keras.random.SeedGenerator`, whose state this advances)."""
  module, _ = _backend_function('random._cast_seed')
  return module._cast_seed(module.draw_seed(seed))


def check() -> None:
  """Raises ImportError naming the first private name this Keras no longer has, with the
  meaning each wrapper relies on."""
  dense = keras.layers.Dense(2, name='probe')
  outer = keras.Sequential([keras.Input((3,)), dense])
  if dense not in sublayers(outer):
    raise ImportError(f'Keras {keras.__version__}: _flatten_layers no longer lists sublayers')
  if [v.name for v in own_trainable_variables(dense)] != ['kernel', 'bias']:
    raise ImportError(f'Keras {keras.__version__}: _trainable_variables changed meaning')
  dense.enable_lora(1)
  if base_kernel(dense).shape != (3, 2) or base_kernel(dense) is dense.kernel:
    raise ImportError(f'Keras {keras.__version__}: _kernel is no longer the base kernel')
  for path in ('random.dropout', 'nn.gelu', 'random.draw_seed'):
    _backend_function(path)
  generator = keras.random.SeedGenerator(7)
  first, second = stateless_seed(generator), stateless_seed(generator)
  if first.dtype != 'int32' or tuple(first.shape) != (2,) or bool((first == second).numpy().all()):
    raise ImportError(f'Keras {keras.__version__}: draw_seed no longer advances a SeedGenerator')
  called = []

  def recording(original):
    return lambda x, *args, **kwargs: called.append(original) or original(x, *args, **kwargs)

  with backend_functions_replaced({'random.dropout': recording, 'nn.gelu': recording}):
    keras.layers.Dropout(0.5)(keras.ops.ones((2, 2)), training=True)
    keras.activations.gelu(keras.ops.ones((2,)))
  if len(called) != 2:
    raise ImportError(
      f'Keras {keras.__version__}: the Dropout layer and activations.gelu no longer call '
      'the backend functions random.dropout and nn.gelu'
    )
