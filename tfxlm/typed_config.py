"""The one loader of the project's typed configs: plain mappings to frozen dataclasses.

The pipeline config (pipeline/config.py, from YAML) and the trainer config (trainer/config.py,
from the pipeline config or the Trainer's custom_config) are both built here: one coercion path
(`from_dict`) and one set of field checks (`check_fields`), so a value is accepted or refused
the same way whichever door it came in by. Every error names the dotted key:
`train.learning_rate: expected a finite number, got nan`.

No TensorFlow and no YAML here: the Trainer reads its custom_config with this module.
"""

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar('T')

# Field metadata of a field the loader sets, not the user: accepted, but not listed as a known key.
INTERNAL = {'internal': True}

# A name that becomes a folder, an ML Metadata context or a URL segment: it starts with a letter
# or digit, then letters, digits, '.', '_' or '-' (no '/', no spaces, never '.' or '..').
SAFE_NAME_CHARACTERS = "letters, digits, '.', '_' and '-', starting with a letter or digit"
_SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')


class ConfigError(ValueError):
  """A configuration value is missing, unknown, of the wrong type or out of range."""


class _Explained(ConfigError):
  """A type error that already says what was read and what to write: kept as it is."""


class FieldError(ConfigError):
  """A field's value is refused by its dataclass's own checks; `from_dict` adds the key path."""

  def __init__(self, field: str, message: str):
    super().__init__(f'{field}: {message}')
    self.field = field
    self.message = message


@dataclasses.dataclass(frozen=True)
class Range:
  """An interval a number must lie in; `None` leaves that side open to infinity."""

  low: float | None = None
  high: float | None = None
  low_inclusive: bool = True
  high_inclusive: bool = True

  def contains(self, value: float) -> bool:
    if self.low is not None and (
      value < self.low or (value == self.low and not self.low_inclusive)
    ):
      return False
    if self.high is not None and (
      value > self.high or (value == self.high and not self.high_inclusive)
    ):
      return False
    return True

  def __str__(self) -> str:
    if self.high is None:
      return f'{">=" if self.low_inclusive else ">"} {self.low:g}'
    left = '[' if self.low_inclusive else '('
    right = ']' if self.high_inclusive else ')'
    return f'in {left}{self.low:g}, {self.high:g}{right}'


POSITIVE = Range(low=0, low_inclusive=False)
NON_NEGATIVE = Range(low=0)
AT_LEAST_ONE = Range(low=1)
FRACTION = Range(low=0, high=1)
OPEN_FRACTION = Range(low=0, high=1, low_inclusive=False, high_inclusive=False)


def check_fields(
  instance: Any,
  *,
  ranges: Mapping[str, Range] = (),
  choices: Mapping[str, Sequence[str]] = (),
  names: Sequence[str] = (),
) -> None:
  """Checks a dataclass's fields: every float finite, numbers in range, choices, safe names.

  Call it from `__post_init__`; `None` (an unset optional field) passes every check.

  Raises:
    FieldError: naming the first refused field.
  """
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    if isinstance(value, float) and not math.isfinite(value):
      raise FieldError(field.name, f'expected a finite number, got {value}')
  for name, interval in dict(ranges).items():
    value = getattr(instance, name)
    if value is not None and not interval.contains(value):
      raise FieldError(name, f'must be {interval}, got {value}')
  for name, options in dict(choices).items():
    value = getattr(instance, name)
    if value not in options:
      raise FieldError(name, f'{value!r} is not one of {", ".join(options)}')
  for name in names:
    value = getattr(instance, name)
    if not _SAFE_NAME.fullmatch(value):
      raise FieldError(name, f'{value!r} is not a safe name: use {SAFE_NAME_CHARACTERS}')


def from_dict(
  cls: type[T],
  data: Mapping[str, Any] | None,
  where: str = '',
  required: frozenset[str] = frozenset(),
) -> T:
  """Builds the dataclass `cls` from a plain mapping, converting and checking every value.

  Args:
    cls: A (frozen) dataclass whose fields carry type hints; nested dataclasses, `X | None`,
      `tuple[X, ...]` and fixed-length tuples are followed.
    data: The mapping (None: all defaults). Keys missing from it keep their defaults.
    where: The dotted key of `data` inside a larger config, for messages ('' at the top).
    required: dotted keys of `X | None` fields that a later check requires: the type errors of
      their values do not offer null.

  Raises:
    ConfigError: for an unknown key, a value of the wrong type, or one the dataclass's own
      checks refuse, naming the dotted key.
  """
  if data is None:
    data = {}
  if not isinstance(data, Mapping):
    raise ConfigError(
      f'{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {data!r}'
    )
  hints = typing.get_type_hints(cls)
  fields = [f for f in dataclasses.fields(cls) if f.init]
  unknown = sorted(set(data) - {f.name for f in fields}, key=str)
  if unknown:
    known = sorted(f.name for f in fields if not f.metadata.get('internal'))
    raise ConfigError(f'{where + ": " if where else ""}{unknown_key_message(unknown[0], known)}')
  values = {
    key: _convert(value, hints[key], _join(where, key), required=required)
    for key, value in data.items()
  }
  try:
    return cls(**values)
  except FieldError as e:
    raise ConfigError(f'{_join(where, e.field)}: {e.message}') from None


def unknown_key_message(key: Any, known: Sequence[str]) -> str:
  """`unknown key 'x' (did you mean 'y'?; known keys: ...)`."""
  close = difflib.get_close_matches(str(key), known, n=1)
  guess = f'did you mean {close[0]!r}? ' if close else ''
  return f'unknown key {key!r} ({guess}known keys: {", ".join(known)})'


def key_problem(cls: type, dotted: str) -> str | None:
  """What is wrong with the dotted key `dotted` of the dataclass `cls` (an unknown key, or one
  inside a value that is no section), or None when it names a field."""
  keys = dotted.split('.')
  for i, key in enumerate(keys):
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
      return f'{".".join(keys[:i])} is not a section'
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if key not in fields:
      known = sorted(n for n, f in fields.items() if not f.metadata.get('internal'))
      return unknown_key_message(key, known)
    tp = typing.get_type_hints(cls)[key]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
      (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    cls = tp
  return None


def to_dict(value: Any) -> Any:
  """A dataclass (nested ones too) as plain dicts and lists, which `from_dict` accepts back."""
  if dataclasses.is_dataclass(value):
    return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, (tuple, list)):
    return [to_dict(v) for v in value]
  return value


def _join(where: str, key: str) -> str:
  return f'{where}.{key}' if where else key


def _convert(
  value: Any,
  tp: Any,
  where: str,
  nullable: bool = False,
  required: frozenset[str] = frozenset(),
) -> Any:
  """Checks `value` against the type hint `tp` and returns it in that type (`nullable`: the
  field also takes null, which the error then names; `required`: as `from_dict`'s)."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in typing.get_args(tp):
      return None  # a required field's own check refuses it, saying why
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
    nullable = type(None) in typing.get_args(tp) and where not in required
    return _convert(value, inner, where, nullable=nullable, required=required)
  if nullable and tp in (bool, int, float):
    expected = {bool: 'true, false or null', int: 'an integer or null', float: 'a number or null'}
    try:
      return _convert(value, tp, where)
    except ConfigError as e:
      if isinstance(e, _Explained) or str(e).startswith(f'{where}: expected a finite'):
        raise
      _wrong(where, expected[tp], value)
  if dataclasses.is_dataclass(tp):
    if value is None:
      _wrong(where, 'a mapping', value)
    return from_dict(tp, value, where, required)
  if origin is tuple:
    return _convert_tuple(value, typing.get_args(tp), where)
  if tp is bool:
    return value if isinstance(value, bool) else _wrong(where, 'true or false', value)
  if tp is int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
      # 1e4 and 10000.0 are floats to YAML; a count wants 10000.
      read = '' if str(value) == repr(float(value)) else f', read as {float(value)!r}'
      raise _Explained(
        f'{where}: expected an integer, got the float {value}{read}: write {int(value)}'
      )
    if isinstance(value, bool) or not isinstance(value, int):
      _wrong(where, 'an integer', value)
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      _wrong(where, 'a number', value)
    if not math.isfinite(value):
      _wrong(where, 'a finite number', value)
    return float(value)
  if tp is str:
    if isinstance(value, (bool, int, float)):
      _wrong(where, f'a string ({_unquoted_hint(value)})', value)
    return value if isinstance(value, str) else _wrong(where, 'a string', value)
  raise TypeError(f'{where}: unsupported config field type {tp!r}')


_NUMBERS_IN_TEXT = re.compile(r'\s*[-+]?\d+(?:\.\d*)?(?:\s*[:,/;]\s*[-+]?\d+(?:\.\d*)?)+\s*')


def _convert_tuple(value: Any, args: tuple, where: str) -> tuple:
  texts = str in (args[:1] if len(args) == 2 and args[1] is Ellipsis else args)
  if isinstance(value, str) and not texts and _NUMBERS_IN_TEXT.fullmatch(value):
    # `9:1` (which YAML 1.1 reads as the base-60 number 541), `9,1`, `9/1`: numbers as text.
    items = ', '.join(re.findall(r'[-+]?\d+(?:\.\d*)?', value))
    raise _Explained(f'{where}: expected a list, got the text {value!r}: write [{items}]')
  if isinstance(value, str) and texts:
    # `pos,neg` (a --set, or a file's unbracketed line): the items as YAML's flow list.
    items = ', '.join(_flow_item(item.strip()) for item in value.split(',') if item.strip())
    raise _Explained(f'{where}: expected a list, got the text {value!r}: write [{items}]')
  if isinstance(value, str) or not isinstance(value, (list, tuple)):
    _wrong(where, 'a list', value)
  if len(args) == 2 and args[1] is Ellipsis:
    return tuple(_convert(v, args[0], f'{where}[{i}]') for i, v in enumerate(value))
  if len(value) != len(args):
    _wrong(where, f'a list of {len(args)} items', value)
  return tuple(
    _convert(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(zip(value, args, strict=True))
  )


def _flow_item(text: str) -> str:
  """`text` as an item of a YAML flow list: quoted when YAML would read it otherwise (a number,
  a boolean, or text with YAML's own punctuation)."""
  if re.fullmatch(r'[A-Za-z_./~-][\w./~=+@-]*', text) and text.lower() not in _YAML_WORDS:
    return text
  return "'" + text.replace("'", "''") + "'"


# Words YAML 1.1 reads as booleans or null.
_YAML_WORDS = frozenset('y n yes no true false on off null ~'.split())


def _unquoted_hint(value: Any) -> str:
  """Why a string field got a boolean or a number: YAML reads such words unquoted as those."""
  if isinstance(value, bool):
    return "YAML reads yes, no, true, false, on and off as booleans: quote it, e.g. 'yes'"
  return f"YAML reads {value} as a number: quote it, e.g. '{value}'"


def _wrong(where: str, expected: str, value: Any) -> typing.NoReturn:
  raise ConfigError(f'{where}: expected {expected}, got {value!r}')
