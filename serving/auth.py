"""The bearer token of `--auth_token_file` and the check of a call's `Authorization`, shared by
REST and gRPC; no TensorFlow here, so the server's flag checks can read the token before the
seconds-long TensorFlow import."""

import hmac


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


def bearer_matches(authorization: str | bytes, token: str) -> bool:
  """True when an `Authorization` value is `Bearer <token>`.

  The scheme matches in any case (RFC 7235: `bearer`, `BEARER`); the token is compared in
  constant time.
  """
  if isinstance(authorization, bytes):
    authorization = authorization.decode('utf-8', 'replace')
  scheme, _, credentials = authorization.strip().partition(' ')
  same_token = hmac.compare_digest(credentials.strip().encode('utf-8', 'replace'), token.encode())
  return scheme.lower() == 'bearer' and same_token
