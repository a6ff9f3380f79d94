"""The Pusher's executor: TFX's own, with a failed write into the serving folder said in the
config's terms (which folder, the key that sets it, what to do) instead of TensorFlow's bare
`PermissionDeniedError` or `FailedPreconditionError ... is not a directory`."""

from typing import Any, Dict, List

from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec

# The config key of the push destination's root, for the error message.
SERVING_ROOT_KEY = 'serving.serving_root'


class PushError(RuntimeError):
  """The pushed model could not be written into the serving folder."""


def _destination(exec_properties: Dict[str, Any]) -> str:
  """The push destination's base folder, as the component's `push_destination` says."""
  from tfx.proto import pusher_pb2
  from tfx.utils import proto_utils

  text = exec_properties.get('push_destination')
  if not text:
    return ''
  destination = pusher_pb2.PushDestination()
  proto_utils.json_to_proto(text, destination)
  return destination.filesystem.base_directory


class Executor(tfx_pusher.Executor):
  """TFX's Pusher executor; a failed write names the folder and `serving.serving_root`."""

  def Do(  # noqa: N802 (TFX API)
    self,
    input_dict: Dict[str, List[types.Artifact]],
    output_dict: Dict[str, List[types.Artifact]],
    exec_properties: Dict[str, Any],
  ) -> None:
    import tensorflow as tf

    try:
      super().Do(input_dict, output_dict, exec_properties)
    except (tf.errors.OpError, OSError) as e:
      where = _destination(exec_properties) or 'the push destination'
      reason = getattr(e, 'message', None) or getattr(e, 'strerror', None) or str(e)
      raise PushError(
        f'Pusher: cannot write the model into {where} ({type(e).__name__}: {reason}); what to '
        f'do: set {SERVING_ROOT_KEY} to a folder you can write (the model is blessed: a rerun '
        'reuses everything else)'
      ) from e


def use_executor(pusher):
  """Has `pusher` (a `tfx.components.Pusher`) run this module's executor; returns it."""
  pusher.executor_spec = executor_spec.ExecutorClassSpec(Executor)
  return pusher
