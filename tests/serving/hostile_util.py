"""Helpers for the hostile-client tests: raw HTTP on one socket, process memory."""

import socket


def rss_bytes() -> int:
  """This process's resident set size (the in-process server included)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) * 1024
  raise RuntimeError('no VmRSS in /proc/self/status')


class RawHttp:
  """One keep-alive connection on which exact bytes are sent and responses read back."""

  def __init__(self, port: int, timeout: float = 10.0):
    self.sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    self.buffer = b''

  def send(self, data: bytes) -> None:
    self.sock.sendall(data)

  def _fill(self):
    chunk = self.sock.recv(65536)
    if not chunk:
      raise ConnectionError('closed')
    self.buffer += chunk

  def response(self) -> tuple[int, dict, bytes]:
    """The next response: (status, lower-cased headers, body). ConnectionError if closed."""
    while b'\r\n\r\n' not in self.buffer:
      self._fill()
    head, self.buffer = self.buffer.split(b'\r\n\r\n', 1)
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(':', 1) for line in lines[1:])}
    length = int(headers.get('content-length', 0))
    while len(self.buffer) < length:
      self._fill()
    body, self.buffer = self.buffer[:length], self.buffer[length:]
    return status, headers, body

  def closed(self) -> bool:
    """True when the server has closed the connection (nothing more to read)."""
    try:
      return self.sock.recv(1) == b''
    except ConnectionResetError:
      return True

  def close(self) -> None:
    self.sock.close()


def post(path: str, body: bytes, headers: str = '') -> bytes:
  """A POST request with a Content-Length (`headers`: extra CRLF-terminated lines)."""
  return (
    f'POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n'.encode()
    + body
  )
