"""Small generated text data sets for the component tests."""

import contextlib
import csv
import json
import os
import random
import shutil

import apache_beam as beam
import tensorflow as tf

from pipeline import local_runner
from trainer import inputs

_WORDS = (
  'the a film movie story actor plot scene music ending good bad great boring funny slow '
  'wonderful terrible love hate watch again never always really quite very café naïve '
  'director camera light dark night day world people time life'
).split()


def sentences(n: int, seed: int = 0) -> list[str]:
  """n short sentences of random words, capitalized and punctuated."""
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
    out.append(' '.join(words).capitalize() + rng.choice('.!?'))
  return out


def write_csv(path: str, rows: list[list[str]], header: list[str]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def labeled_rows(n: int, seed: int = 0) -> list[list[str]]:
  """[label, text] rows with labels '0'/'1'."""
  return [[str(i % 2), text] for i, text in enumerate(sentences(n, seed))]


def write_text(path: str, lines: list[str]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(''.join(line + '\n' for line in lines))
  return path


def write_jsonl(path: str, records: list[dict]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in records))
  return path


def write_tfrecord(path: str, records: list[dict[str, str]]) -> str:
  """tf.Examples with one bytes value per given feature."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      feature = {
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
        for k, v in record.items()
      }
      writer.write(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
      )
  return path


def read_examples(examples_uri: str, split: str) -> list[dict[str, list]]:
  """The tf.Examples of one split of an Examples artifact, as {feature: values} dicts."""
  files = tf.io.gfile.glob(os.path.join(examples_uri, f'Split-{split}', '*'))
  out = []
  for record in tf.data.TFRecordDataset(files, compression_type=inputs.compression_type(files)):
    example = tf.train.Example.FromString(record.numpy())
    row = {}
    for key, feature in example.features.feature.items():
      kind = feature.WhichOneof('kind')
      row[key] = list(getattr(feature, kind).value) if kind else []
    out.append(row)
  return out


@contextlib.contextmanager
def local_pipeline():
  """A Beam pipeline on the local runner, its temporary folder removed afterwards: Beam makes it
  in /tmp when the pipeline is created and removes it only when the pipeline runs, so each test
  that builds one without running it (or whose build fails) left a folder behind."""
  pipeline = beam.Pipeline(runner=local_runner.FN_API_RUNNER)
  try:
    yield pipeline
  finally:
    shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
