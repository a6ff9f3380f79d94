"""pipeline/tfx_api.py: TFX's v1 names without importing tfx.v1 (and its Google Cloud clients)."""

import ast
import os

from pipeline.tfx_api import tfx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _names(namespace, prefix=''):
  for name, value in sorted(vars(namespace).items()):
    if hasattr(value, '__dict__') and type(value).__name__ == 'SimpleNamespace':
      yield from _names(value, f'{prefix}{name}.')
    else:
      yield f'{prefix}{name}', value


def test_every_name_is_tfx_v1s():
  from tfx import v1

  names = dict(_names(tfx))
  assert len(names) == 17
  for dotted, value in names.items():
    expected = v1
    for part in dotted.split('.'):
      expected = getattr(expected, part)
    if dotted == 'types.standard_artifacts':  # v1's is a module naming the same classes
      assert all(getattr(value, n) is getattr(expected, n) for n in dir(expected) if n[0] != '_')
    else:
      assert value is expected, dotted


def _imports_tfx_v1(path):
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == 'tfx':
      if any(alias.name == 'v1' for alias in node.names):
        yield node.lineno
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tfx.v1'):
      yield node.lineno
    elif isinstance(node, ast.Import):
      if any(alias.name.startswith('tfx.v1') for alias in node.names):
        yield node.lineno


def test_no_module_of_the_project_imports_tfx_v1():
  found = []
  for folder in ('components', 'pipeline', 'serving', 'tfxlm', 'trainer', 'tests'):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
      for name in files:
        path = os.path.join(root, name)
        if name.endswith('.py') and path != os.path.abspath(__file__):
          found += [f'{os.path.relpath(path, REPO)}:{n}' for n in _imports_tfx_v1(path)]
  assert found == []
