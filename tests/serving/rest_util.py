"""One HTTP helper for the REST tests: send a request, get (status, decoded JSON body)."""

import json
import urllib.error
import urllib.request


def rest_json(base_url, path, body=None, method=None):
  """Sends `body` (JSON-encoded unless already bytes) to base_url + path."""
  data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
  request = urllib.request.Request(base_url + path, data=data, method=method)
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def rest_text(base_url, path):
  """GETs base_url + path; returns the body as text (e.g. the Prometheus metrics)."""
  with urllib.request.urlopen(base_url + path, timeout=30) as response:
    return response.read().decode()
