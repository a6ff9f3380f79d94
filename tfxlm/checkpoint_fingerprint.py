"""A cheap fingerprint of a local checkpoint folder, for TFX's cache key.

TFX reuses a component's earlier output when its inputs and exec properties are unchanged. A
`train.preset` folder is neither an artifact nor content the exec properties name: regenerated in
place (new weights, an edited tokenizer), the Vocabulary and Trainer would be `cached` and the run
would keep serving the old weights. The factory puts this fingerprint into those components'
exec properties, so that the key changes when the files do. A `base_model` or `distill.teacher`
folder is an artifact, but imported with reimport=False: the same artifact while its path is the
same, whatever its files hold; the Trainer that reads it carries its fingerprint too.

What it covers, and why it stays cheap for checkpoints of many GB:
  - weight files (`*.safetensors`, `*.h5`, `*.bin`, ..., a SavedModel's
    `variables.data-*-of-*` shards): name, size and mtime_ns, one `stat` each, no read. A hash of the safetensors header would not do: the same architecture
    retrained has the same header and the same size, and only its values differ;
  - every other file (config.json, the tokenizer's files, a keras-hub preset's assets): the
    sha256 of its content; they are small, and an edit that keeps size and mtime still counts.
Hidden files and folders (`.cache/`, `.DS_Store`) are skipped.

Remote handles (`pypi:NAME==VERSION/PATH`, pinned by version and sha256; `hf://`, `gs://`,
`kaggle://`, a keras-hub preset name) get no fingerprint: the handle itself is the key, and a
spec compiled for another machine (Kubeflow) must not depend on this machine's files.

No TensorFlow import: the pipeline factory calls it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from tfxlm import contract, pinned_wheels

WEIGHT_SUFFIXES = ('.safetensors', '.h5', '.bin', '.npz', '.ckpt', '.pt', '.pth', '.msgpack')
# A TensorFlow checkpoint's shard (a SavedModel's variables/variables.data-00000-of-00001).
_TF_SHARD = re.compile(r'\.data-[0-9]+-of-[0-9]+$')


def is_local_folder(preset: str | None) -> bool:
  """Whether `preset` is a folder of this machine (not a remote handle or a preset name)."""
  if not preset or '://' in preset or pinned_wheels.is_handle(preset):
    return False
  return os.path.isdir(preset)


def _is_weights(name: str) -> bool:
  return name.endswith(WEIGHT_SUFFIXES) or _TF_SHARD.search(name) is not None


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(preset: str | None, *, weights: bool = True) -> str:
  """The fingerprint of the local checkpoint folder `preset`: '' for none or a remote handle.

  Args:
    preset: A `train.preset` handle.
    weights: False leaves the weight files out: what the Vocabulary reads (the tokenizer), so
      that new weights re-run the Trainer but not the Vocabulary and Transform.

  Returns:
    'sha256:<hex>' over the sorted relative paths and each file's facts (see the module
    docstring); the same files give the same string on every call.
  """
  if not is_local_folder(preset):
    return ''
  entries = []
  for root, dirs, files in os.walk(preset, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if name.startswith('.'):
        continue
      path = os.path.join(root, name)
      relative = os.path.relpath(path, preset).replace(os.sep, '/')
      if _is_weights(name):
        if weights:
          stat = os.stat(path)  # follows a Hugging Face cache's symlinks to the blob
          entries.append([relative, stat.st_size, stat.st_mtime_ns])
      else:
        entries.append([relative, _sha256(path)])
  text = json.dumps(sorted(entries), separators=(',', ':'))
  return 'sha256:' + hashlib.sha256(text.encode('utf-8')).hexdigest()


def with_fingerprint(
  custom_config: dict, preset: str | None, key: str = contract.PRESET_FINGERPRINT_KEY
) -> dict:
  """A Trainer's `custom_config` plus the fingerprint of the local folder `preset` under `key`
  (`contract.PRESET_FINGERPRINT_KEY` for its checkpoint, `contract.BASE_MODEL_FINGERPRINT_KEY`
  for its base model); unchanged without one (a remote handle is its own key)."""
  value = fingerprint(preset)
  if not value:
    return custom_config
  return {**custom_config, key: value}
