"""Which files an input pattern reads, and why what lies beside them is left out.

A split's glob (under `data.input_base`) picks its files; TFX fingerprints the same matches to
decide whether a cached ExampleGen is still valid, so the glob alone decides what is read. What
the glob's folder holds besides those files is never left out silently: each kind of left-out
entry gets one warning per folder, with a count and the first few names, however many there are:

  * a hidden file the glob matches (an editor's lock or swap file; macOS metadata, `._x.csv`),
    unless the pattern names hidden files; hidden names the glob does not match (`.DS_Store`, `.git`) are ignored;
  * under a format's default pattern (`*.csv*`), a match not ending in the extension, or the
    extension and .gz or .bz2 (a backup: `x.csv.orig`, `x.csv~`); an archive the readers cannot
    open (`x.csv.zip`) is an error naming it;
  * a name whose extension differs only in case (`notes.CSV`): globs match case-sensitively;
  * a folder, matched or not: sub-folders are not read;
  * any other file the glob does not match (`notes.txt` beside CSV files); under a pattern of
    the user's own (not a format's default) these are logged at INFO, as chosen.

Only local folders are listed for the entries the glob does not match; in a bucket, what the
glob matches is all that is seen.

`data.input_base` is a folder, never a pattern: its `*`, `?` and `[` are escaped (`escape`)
before it is joined to a split's glob, here and in the `input_base` TFX fingerprints, so a
folder named `wr[1]` is read, not its look-alike `wr1`. Messages show it as written (`shown`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import stat

from absl import logging
from tfx.dsl.io import fileio

from components.errors import DataError

# How many names a left-out warning or a file listing shows.
MAX_NAMED = 3
# How many names of the files read ExampleGen records on its output (and summary.json shows).
MAX_RECORDED = 1000
# Compressions a file name may end in that the readers do not decompress (they take .gz, .bz2).
_UNREAD_COMPRESSIONS = ('.zip', '.xz', '.zst', '.7z', '.lz4', '.lzma', '.tgz', '.rar', '.z')
_GLOB_MAGIC = re.compile(r'[*?[]')
# A glob character escaped as one in brackets (`[[]`), as `escape` writes it.
_ESCAPED = re.compile(r'\[([*?[])\]')

# Kinds of left-out entries: one warning each per folder.
HIDDEN, OTHER_ENDING, CASE, FOLDER, UNMATCHED = 'hidden', 'ending', 'case', 'folder', 'unmatched'
MACOS = 'macos'  # AppleDouble `._x.csv` files: the metadata a copy from a Mac leaves


@dataclasses.dataclass
class Selection:
  """The files a pattern reads and what is left out.

  Attributes:
    files: the input files, sorted.
    left_out: per kind (HIDDEN, MACOS, OTHER_ENDING, CASE, FOLDER, UNMATCHED), the paths left
      out.
  """

  files: list[str] = dataclasses.field(default_factory=list)
  left_out: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _default_extension(pattern: str) -> str | None:
  """The extension of a format's default pattern (`*.csv*`: `.csv`), None for another pattern."""
  wanted = os.path.basename(pattern)
  return wanted[1:-1] if re.fullmatch(r'\*\.\w+\*', wanted) else None


def escape(folder: str) -> str:
  """`folder` as a glob matching only itself: each `*`, `?` and `[` in brackets, as
  `glob.escape` does (TF's glob, local or in a bucket, reads `[[]` as a plain `[`)."""
  return re.sub(r'([*?[])', r'[\1]', folder)


def _fixed(part: str) -> str | None:
  """A path component of a glob as the name it matches, None if it holds a wildcard."""
  plain = _ESCAPED.sub('', part)
  return None if _GLOB_MAGIC.search(plain) else _ESCAPED.sub(r'\1', part)


def _root(pattern: str) -> str:
  """The folder of `pattern` before its first wildcard, as a path (escapes undone): where
  left-out names are relative to."""
  fixed = []
  for part in pattern.split('/')[:-1]:
    name = _fixed(part)
    if name is None:
      break
    fixed.append(name)
  return '/'.join(fixed) or '.'


def shown(pattern: str) -> str:
  """`pattern` for messages: its leading folders (an escaped input_base) as written."""
  parts = pattern.split('/')
  for i, part in enumerate(parts[:-1]):
    name = _fixed(part)
    if name is None:
      break
    parts[i] = name
  return '/'.join(parts)


def _kind_of_match(path: str, pattern: str) -> str | None:
  """The kind of left-out entry a file the glob matches is (None: an input file)."""
  name = os.path.basename(path)
  wanted = os.path.basename(pattern)
  if name.startswith('.') and not wanted.startswith('.'):
    return MACOS if name.startswith('._') else HIDDEN
  extension = _default_extension(pattern)
  endings = (extension, f'{extension}.gz', f'{extension}.bz2') if extension else ()
  if extension is None or name.endswith(endings):
    return None
  if name.lower().endswith(endings):
    return CASE
  suffix = name[name.rfind(extension) + len(extension) :]
  if suffix.lower().endswith(_UNREAD_COMPRESSIONS):
    raise DataError(
      f'{path}: compressed as {suffix}, which is not read: decompress it, or compress it with'
      ' gzip (.gz) or bzip2 (.bz2)'
    )
  return OTHER_ENDING


def _local_file(path: str) -> bool:
  """Whether a local match is a readable file (False: a folder); anything else is an error."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise DataError(
      f'{path}: cannot read this input file ({e.strerror}; a broken or looping symbolic '
      'link?): fix it, or move it out of the input folder'
    ) from None
  if stat.S_ISDIR(mode):
    return False
  if not stat.S_ISREG(mode):
    raise DataError(
      f'{path}: not a regular file (a named pipe, socket or device): move it out of the '
      'input folder or narrow data.file_pattern'
    )
  if not os.access(path, os.R_OK):
    raise DataError(f'{path}: no permission to read this input file: chmod it or copy it')
  return True


def select(pattern: str) -> Selection:
  """The files `pattern` matches and what is left out beside them (see the module docstring);
  a local match that cannot be read as a file is an error here, naming it, not later in a Beam
  worker (a named pipe would block it)."""
  selection = Selection()
  matched = sorted(fileio.glob(pattern))
  for path in matched:
    kind = _kind_of_match(path, pattern)
    if kind is None:
      is_file = not fileio.isdir(path) if '://' in path else _local_file(path)
      kind = None if is_file else FOLDER
    if kind is None:
      selection.files.append(path)
    else:
      selection.left_out.setdefault(kind, []).append(path)
  folder = _fixed(os.path.dirname(pattern)) if '://' not in pattern else None
  if folder is None or not os.path.isdir(folder or '.'):
    return selection
  wanted = os.path.basename(pattern)
  seen = {os.path.basename(path) for path in matched}
  with os.scandir(folder or '.') as entries:
    for entry in sorted(entries, key=lambda e: e.name):
      if entry.name in seen or (entry.name.startswith('.') and not wanted.startswith('.')):
        continue
      path = os.path.join(folder, entry.name)
      if entry.is_dir():
        kind = FOLDER
      elif fnmatch.fnmatchcase(entry.name.lower(), wanted.lower()):
        kind = CASE
      else:
        kind = UNMATCHED
      selection.left_out.setdefault(kind, []).append(path)
  for paths in selection.left_out.values():
    paths.sort()
  return selection


def named(names: list[str]) -> str:
  """The first MAX_NAMED of `names`, then `...` if there are more."""
  return ', '.join(names[:MAX_NAMED]) + (', ...' if len(names) > MAX_NAMED else '')


def _reason(kind: str, pattern: str, names: list[str]) -> str:
  """Why entries of `kind` are left out and what to do to read them."""
  wanted = os.path.basename(pattern)
  extension = _default_extension(pattern)
  if kind == MACOS:
    return (
      "macOS metadata (AppleDouble '._' files a copy from a Mac leaves), not data: delete them"
      ' (dot_clean, or rm ._*)'
    )
  if kind == HIDDEN:
    return "hidden (an editor's lock or swap file?); read only if data.file_pattern starts with '.'"
  if kind == OTHER_ENDING:
    return (
      f'not {extension} files (backups or leftovers?); to read one, rename it to end in {extension}'
    )
  if kind == CASE:
    example = ''
    if extension:
      found = re.search(re.escape(extension), names[0], re.IGNORECASE)
      example = f" (e.g. '*{found.group()}*')" if found else ''
    return (
      f"the extension's case differs from {wanted!r} (names match case-sensitively): rename "
      f'them, or set data.file_pattern to match them{example}'
    )
  if kind == FOLDER:
    return (
      'sub-folders are not read: move their files up, or set data.file_pattern to '
      f"'{names[0]}/{wanted}' to read that folder instead"
    )
  return f'not matching {wanted!r}: set data.format or data.file_pattern to read them'


def warn_left_out(selection: Selection, pattern: str) -> None:
  """Logs one line per kind of left-out entry: a count and the first few names."""
  root = _root(pattern)
  user_pattern = _default_extension(pattern) is None
  for kind, paths in selection.left_out.items():
    names = [os.path.relpath(p, root) if '://' not in p else p[len(root) + 1 :] for p in paths]
    noun = 'folder' if kind == FOLDER else 'file'
    noun += '' if len(names) == 1 else 's'
    line = 'input: %d %s in %s left out (%s): %s'
    args = (len(names), noun, root, named(names), _reason(kind, pattern, names))
    if kind == UNMATCHED and user_pattern:
      logging.info(line, *args)  # the user's own pattern chose to leave them out
    else:
      logging.warning(line, *args)


def input_files(pattern: str) -> list[str]:
  """The files `pattern` reads (see `select`), warning of what is left out beside them."""
  selection = select(pattern)
  warn_left_out(selection, pattern)
  return selection.files


def describe_files(pattern: str) -> str:
  """`pattern` with how many files it reads and the first few names, for messages."""
  files = select(pattern).files
  names = named([os.path.basename(f) for f in files])
  return f'{shown(pattern)} ({len(files)} file(s): {names})'


def recorded(input_base: str, patterns: list[str]) -> str:
  """The files the `patterns` (under `input_base`, escaped) read, as ExampleGen records them on
  its output: JSON {"count": n, "files": [the first MAX_RECORDED, relative to input_base]}."""
  prefix = _ESCAPED.sub(r'\1', input_base).rstrip('/') + '/'
  files = [
    path[len(prefix) :] if path.startswith(prefix) else path
    for pattern in patterns
    for path in select(os.path.join(input_base, pattern)).files
  ]
  return json.dumps({'count': len(files), 'files': files[:MAX_RECORDED]})
