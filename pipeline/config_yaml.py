"""The YAML side of the pipeline config: a file's mapping read with duplicate keys refused,
`--set KEY=VALUE` overrides merged in (an error traced back to the one that gave its value),
YAML 1.1's `3e-4` read as the number users mean, and its base-60 numbers (`9:1` is 541) left as
the text written, for the field's check to name.
"""

import math
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import yaml

from tfxlm.typed_config import ConfigError


def _set_dotted(tree: Dict[str, Any], dotted: str, value):
  keys = dotted.split('.')
  node = tree
  for key in keys[:-1]:
    child = node.get(key)
    if child is None:
      child = node[key] = {}
    if not isinstance(child, dict):
      raise ConfigError(f'--set {dotted}: {key!r} is not a section')
    node = child
  earlier = node.get(keys[-1])
  if isinstance(value, dict) and isinstance(earlier, dict):
    # `--set train.seed=1 --set train={lora: ...}`: merged as into the file's section.
    value = _merge(earlier, value)
  node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
  """Turns ['train.learning_rate=3e-4', ...] into a nested dict (YAML-typed values)."""
  tree: Dict[str, Any] = {}
  for item in overrides:
    key, sep, raw = item.partition('=')
    if not sep or not key:
      raise ConfigError(f'--set {item!r}: expected KEY=VALUE, e.g. train.train_steps=100')
    try:
      value = yaml.load(raw, Loader=UniqueKeyLoader) if raw else ''
    except yaml.YAMLError as e:
      if raw.lstrip()[:1] in ('[', '{', '"', "'"):
        raise ConfigError(f'--set {item!r}: value is not valid YAML ({e})') from None
      value = raw  # a glob such as *.txt (a YAML alias) or @x: meant as the plain string
    _set_dotted(tree, key.strip(), value)
  return tree


_EXPONENT_FLOAT = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$')


class WrittenFloat(float):
  """A float that prints as it was written (`1e4`, not 10000.0), so that an error about it
  shows what the config says (an overflow, `1e999`, prints as inf)."""

  def __new__(cls, text: str):
    value = super().__new__(cls, text)
    value.text = text if math.isfinite(value) else repr(float(value))
    return value

  def __repr__(self) -> str:
    return self.text

  __str__ = __repr__


def _yaml_floats(value):
  """YAML 1.1 reads `3e-4` (no dot) as a string; every user means the number."""
  if isinstance(value, dict):
    return {k: _yaml_floats(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_yaml_floats(v) for v in value]
  if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
    return WrittenFloat(value)
  return value


class UniqueKeyLoader(yaml.SafeLoader):
  """YAML's safe loader, refusing a key given twice in one mapping: PyYAML would keep the last
  silently, dropping e.g. a whole first `train:` section."""

  def construct_mapping(self, node, deep=False):
    first_line = {}
    for key_node, _ in node.value:
      if key_node.tag == 'tag:yaml.org,2002:merge':
        continue  # `<<: *defaults` keys may be overridden: that is what they are for
      key = self.construct_object(key_node, deep=deep)
      try:
        repeated = key in first_line
      except TypeError:
        continue  # an unhashable key: the base class reports it
      if repeated:
        raise yaml.constructor.ConstructorError(
          None,
          None,
          f'{key!r} appears twice in one mapping (first on line {first_line[key]}): keep one',
          key_node.start_mark,
        )
      first_line[key] = key_node.start_mark.line + 1
    return super().construct_mapping(node, deep=deep)

  def construct_base_60(self, node):
    """YAML 1.1's base-60 numbers (`9:1` is 541, `1:30.5` is 90.5) as the text written: nobody
    means them, and the text lets a field's error say what was read."""
    text = self.construct_scalar(node)
    if ':' in text:
      return text
    tag = node.tag.rsplit(':', 1)[-1]
    return (self.construct_yaml_int if tag == 'int' else self.construct_yaml_float)(node)


UniqueKeyLoader.add_constructor('tag:yaml.org,2002:int', UniqueKeyLoader.construct_base_60)
UniqueKeyLoader.add_constructor('tag:yaml.org,2002:float', UniqueKeyLoader.construct_base_60)


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
  merged = dict(base)
  for key, value in extra.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


# The dotted key an error message starts with: `train.train_steps: ...`, `data.ratio[0]: ...`.
_LEADING_KEY = re.compile(r'([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*): ')


def override_keys(overrides: Sequence[str]) -> List[str]:
  """The dotted keys the overrides write: a section's (`train={seq_len: 64}`) by its keys."""

  def dotted(tree: Dict[Any, Any], prefix: str) -> Iterator[str]:
    for key, value in tree.items():
      name = f'{prefix}{key}'
      if isinstance(value, dict) and value:
        yield from dotted(value, f'{name}.')
      else:
        yield name

  return [key for item in overrides for key in dotted(parse_overrides([item]), '')]


def given_by_override(message: str, overrides: Sequence[str]) -> bool:
  """Whether a `--set` gave the value an error `message` is about (the key it starts with).

  Overrides apply in order, and a section's (`train={...}`) replaces the earlier overrides of
  its keys, but not the file's: a section the file and an override both write is neither's.
  """
  match = _LEADING_KEY.match(message)
  if not match:
    return False
  node: Any = parse_overrides(overrides)
  for key in re.sub(r'\[\d+\]', '', match.group(1)).split('.'):
    if not isinstance(node, dict) or key not in node:
      return False
    node = node[key]
  return not isinstance(node, dict)


# The dotted keys (and section names) an error message names: `train.lora`, `pretrain`.
_NAMED_KEY = re.compile(r'(?<![\w.\-/])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*')


# A key whose value an error gives: at its start, or after a comma (`a.b: 1, c.d: 2: ...`).
_GIVEN_KEY = re.compile(r'(?:^|, )([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): ')


def keys_given(message: str, sections) -> List[str]:
  """The config keys (of the top-level `sections`) whose values an error `message` gives, as
  a check across keys starts (`pretrain.seq_len: 16, train.seq_len: 128: ...`); a key the
  advice names (`write train.seq_len: 16`) is not one."""
  return [key for key in _GIVEN_KEY.findall(message) if key.split('.')[0] in sections]


def overrides_named(message: str, overrides: Sequence[str]) -> List[str]:
  """The overrides (as given, `train.lora.rank=4`) whose keys an error `message` names: the key
  itself, or a section holding it (`train.lora` for `train.lora.rank`), so that a check across
  keys can say which of its values came from the command line. A bare word names only a
  top-level key an override sets itself (`pretrain=null`): prose such as 'train warm-starts'
  names no override of `train.seq_len`."""
  named = set(_NAMED_KEY.findall(message))
  found = []
  for item in overrides:
    for key in override_keys([item]):
      parts = key.split('.')
      ancestors = {'.'.join(parts[:i]) for i in range(2, len(parts))}
      if key in named or ancestors & named:
        found.append(item)
        break
  return found


def with_overrides(
  data: Dict[str, Any],
  overrides: Sequence[str],
  prepare: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
  """A config file's mapping with `KEY=VALUE` overrides merged in, exponent floats as numbers.

  `prepare`, when given, edits the overrides' own nested mapping before the merge (the config
  makes the relative paths they give absolute from the working folder).
  """
  tree = parse_overrides(overrides)
  if prepare is not None:
    prepare(tree)
  return _yaml_floats(_merge(data, tree))
