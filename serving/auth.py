"""The bearer token of `--auth_token_file`; no TensorFlow here, so the server's flag checks can
read it before the seconds-long TensorFlow import."""


def read_token(path: str) -> str:
  """The bearer token in `path` (surrounding whitespace dropped).

  Raises:
    OSError: when the file cannot be read.
    ValueError: when the file is empty or the token has characters a header cannot carry.
  """
  with open(path, encoding='utf-8') as f:
    token = f.read().strip()
  if not token:
    raise ValueError(f'{path}: the token file is empty')
  if not all(33 <= ord(c) < 127 for c in token):
    raise ValueError(f'{path}: the token must be printable ASCII without spaces')
  return token
