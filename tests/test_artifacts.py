"""Custom artifact types resolve by their TYPE_NAME, as TFX's Kubeflow v2 entrypoint imports
them, and `tfxlm.contract` stays importable without TFX."""

import subprocess
import sys

from tfx.utils import import_utils

from components import vocabulary
from tfxlm import artifacts


def test_type_names_import_as_their_classes():
  cls = artifacts.VocabularyArtifact
  assert cls.TYPE_NAME == 'tfxlm.Vocabulary'
  assert import_utils.import_class_by_path(cls.TYPE_NAME) is cls
  assert vocabulary.Vocabulary.SPEC_CLASS.OUTPUTS['vocabulary'].type is cls


def test_the_contract_imports_without_tfx_or_tensorflow():
  code = (
    'import sys, tfxlm.contract; '
    "print(sorted(m for m in ('tfx', 'tensorflow') if m in sys.modules))"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'
