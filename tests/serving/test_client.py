"""The query client's output: JSON whose text reads as written, on any stdout."""

import io
import json

import pytest

from serving import client

ANSWER = {'model_spec': {'name': 'lm'}, 'outputs': {'text': ['子供 le café 🙂']}}


def test_output_shows_non_ascii_text_as_written():
  # It printed "\u5b50\u4f9b le caf\u00e9".
  stream = io.TextIOWrapper(io.BytesIO(), encoding='utf-8')
  client.print_json(ANSWER, stream)
  stream.seek(0)
  line = stream.read()
  assert '子供 le café 🙂' in line and json.loads(line) == ANSWER


@pytest.mark.parametrize('encoding', ['ascii', 'latin-1'])
def test_output_to_a_stdout_that_cannot_encode_the_text_is_escaped_json(encoding):
  stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
  client.print_json(ANSWER, stream)  # no UnicodeEncodeError
  stream.seek(0)
  assert json.loads(stream.read()) == ANSWER
