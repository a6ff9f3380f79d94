"""The Pusher's executor: TFX's own, with a failed write named in the config's terms."""

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import pusher
from tfxlm import contract


def _push(tmp_path, base_directory):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'model')
  serving = tmp_path / 'model' / contract.SERVING_MODEL_DIR
  serving.mkdir(parents=True)
  (serving / 'saved_model.pb').write_bytes(b'')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessing')
  blessing.set_int_custom_property('blessed', 1)
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  destination = pusher_pb2.PushDestination(
    filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base_directory)
  )
  pusher.Executor().Do(
    {'model': [model], 'model_blessing': [blessing]},
    {'pushed_model': [pushed]},
    {'push_destination': proto_utils.proto_to_json(destination)},
  )
  return pushed


def test_a_push_into_a_folder_it_cannot_write_names_the_folder_and_the_key(tmp_path):
  (tmp_path / 'afile').write_text('')
  target = str(tmp_path / 'afile' / 'sub' / 'demo')
  with pytest.raises(pusher.PushError) as caught:
    _push(tmp_path, target)
  message = str(caught.value)
  assert '\n' not in message
  assert f'cannot write the model into {target}' in message
  assert 'set serving.serving_root to a folder you can write' in message


def test_a_push_that_can_write_is_tfxs_own(tmp_path):
  pushed = _push(tmp_path, str(tmp_path / 'serving' / 'demo'))
  assert pushed.get_int_custom_property('pushed') == 1
  version = pushed.get_string_custom_property('pushed_destination')
  assert (tmp_path / 'serving' / 'demo' / version.rsplit('/', 1)[-1] / 'saved_model.pb').exists()
