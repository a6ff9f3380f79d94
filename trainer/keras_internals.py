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
"""

from __future__ import annotations

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
