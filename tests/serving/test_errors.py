"""TensorFlow errors as the caller sees them: TensorFlow's own message, not the server's."""

import grpc
import pytest
import tensorflow as tf

from serving import errors

REQUIRED = 'Name: <unknown>, Feature: x (data type: float) is required but could not be found.'


@pytest.mark.parametrize(
  'message',
  [
    # A TF1 SavedModel's node carries the stack that loaded it, with source lines or without.
    'Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at (most'
    ' recent call last):\n  File "<frozen runpy>", line 198, in _run_module_as_main\n\n  File'
    ' "/srv/serving/manager.py", line 327, in _load\n    servable = Servable(name, version,'
    f' path)\n\n{REQUIRED}\n\t [[{{{{node ParseExample/ParseExampleV2}}}}]]'
    ' [Op:__inference_pruned_59]',
    f'Detected at node a defined at (most recent call last):\n  File "x.py", line 4, in'
    f' <module>\n{REQUIRED}',
    f'Traceback (most recent call last):\n  File "/srv/serving/servable.py", line 9, in f\n'
    f'    return g()\n{REQUIRED}',
  ],
)
def test_a_tf_error_with_a_python_stack_keeps_only_tensorflows_message(message):
  error = errors.from_tf_error(tf.errors.InvalidArgumentError(None, None, message), 'sig "s"')
  assert error.code == grpc.StatusCode.INVALID_ARGUMENT
  assert error.message == f'sig "s": {REQUIRED}'


def test_a_tf_error_of_nothing_but_a_stack_says_so_without_it():
  error = errors.from_tf_error(
    tf.errors.InternalError(None, None, '  File "/srv/a.py", line 1, in f\n    f()'), 'sig "s"'
  )
  assert error.message == 'sig "s": TensorFlow gave no message'
