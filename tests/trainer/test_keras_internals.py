"""The private Keras names the project relies on (trainer/keras_internals.py) still exist, with
the meaning its wrappers give them, in the installed Keras."""

import types

import keras
import pytest

from trainer import keras_internals


def test_every_private_name_exists_with_its_meaning_in_the_installed_keras():
  keras_internals.check()


def test_a_missing_name_is_named_with_the_version_it_was_written_for():
  with pytest.raises(
    ImportError,
    match=r'SimpleNamespace\._flatten_layers does not exist in Keras .*written for Keras 3',
  ):
    keras_internals.sublayers(types.SimpleNamespace())


def test_sublayers_are_listed_once_and_own_variables_exclude_theirs():
  inner = keras.layers.Dense(2, name='inner')
  outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name='head')])
  names = [layer.name for layer in keras_internals.sublayers(outer, include_self=False)]
  assert names[-2:] == ['inner', 'head'] and len(set(names)) == len(names)
  assert keras_internals.own_trainable_variables(outer) == []
  assert [v.name for v in keras_internals.own_trainable_variables(inner)] == ['kernel', 'bias']
