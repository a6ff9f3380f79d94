"""bench/transform_bench.py: the corpus generator, the verdicts, and a whole run at a tiny size
(a slow test: two pipelines in a subprocess, some 40 s of a 2-core machine, for a benchmark's
plumbing; `make bench` runs it whole)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from bench import corpus, transform_verdicts
from bench import transform_bench as bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('size_mb', [0.01, 0.05, 0.3])
def test_corpus_has_the_asked_size_one_document_per_line(tmp_path, size_mb):
  files = 4
  written = corpus.generate_corpus(str(tmp_path), size_mb, files=files, seed=3)
  on_disk = sum(os.path.getsize(tmp_path / name) for name in os.listdir(tmp_path))
  assert written == on_disk
  # Each file stops within a sentence or two of its share.
  assert size_mb * corpus.MB <= written <= size_mb * corpus.MB + files * 600
  lines = list(corpus.iter_lines(str(tmp_path)))
  assert lines and all(line.strip() for line in lines)
  assert sum(len(line.encode()) + 1 for line in lines) == written


def test_sample_stops_after_its_bytes(tmp_path):
  corpus.generate_corpus(str(tmp_path), 0.05, files=2, seed=1)
  sample = list(corpus.iter_lines(str(tmp_path), 10_000))
  size = sum(len(line.encode()) + 1 for line in sample)
  assert 10_000 <= size < 10_000 + max(len(line.encode()) + 1 for line in sample)


def _result(size_mb, e2e_s, tree_rss, hf_ratio=1.0, worker_ratio=0.5):
  return {
    'size_mb': size_mb,
    'bytes': int(size_mb * corpus.MB),
    'stages': {
      transform_verdicts.END_TO_END: {
        'seconds': e2e_s,
        'peak_rss_tree_bytes': tree_rss,
        'peak_rss_process_bytes': tree_rss // 2,
      }
    },
    'ratios': {
      transform_verdicts.HF_RATIO: hf_ratio,
      transform_verdicts.WORKER_RATIO: worker_ratio,
    },
  }


@pytest.mark.parametrize(
  ('key', 'passing', 'failing'),
  [
    (transform_verdicts.HF_RATIO, {'hf_ratio': 2.0}, {'hf_ratio': 1.99}),
    (transform_verdicts.WORKER_RATIO, {'worker_ratio': 0.30}, {'worker_ratio': 0.29}),
    (transform_verdicts.RSS_GROWTH, {'tree_rss': 120}, {'tree_rss': 121}),
    (transform_verdicts.TIME_GROWTH, {'e2e_s': 105.0}, {'e2e_s': 105.1}),
  ],
)
def test_each_target_passes_at_its_threshold_and_fails_past_it(key, passing, failing):
  def verdict(top_overrides):
    base_kwargs = {'e2e_s': 10.0, 'tree_rss': 100, 'hf_ratio': 3.0, 'worker_ratio': 0.5}
    top_kwargs = {**base_kwargs, 'e2e_s': 10.0, **top_overrides}
    if key == transform_verdicts.HF_RATIO:  # measured at the base size
      base_kwargs.update(top_overrides)
    results = [_result(100, **base_kwargs), _result(1000, **top_kwargs)]
    return {t['key']: t for t in transform_verdicts.checks(results, 100, 1000)}[key]['verdict']

  assert verdict(passing) == 'PASS'
  assert verdict(failing) == 'FAIL'


def test_targets_without_their_size_are_not_run():
  targets = {
    t['key']: t
    for t in transform_verdicts.checks([_result(100, 10.0, 100, hf_ratio=2.5)], 100, 1000)
  }
  assert targets[transform_verdicts.HF_RATIO]['verdict'] == 'PASS'
  for key in (
    transform_verdicts.WORKER_RATIO,
    transform_verdicts.RSS_GROWTH,
    transform_verdicts.TIME_GROWTH,
  ):
    assert targets[key]['verdict'] == 'NOT RUN' and targets[key]['value'] is None
  assert 'NOT RUN' in transform_verdicts.targets_report(list(targets.values()))


@pytest.mark.parametrize('text', ['', 'ten', '10,-1', '0'])
def test_bad_sizes_are_refused_by_name(text):
  with pytest.raises(argparse.ArgumentTypeError, match=f'expected .*MB numbers.*{text!r}'):
    bench.parse_sizes(text)


@pytest.mark.slow
def test_a_tiny_run_reports_every_stage_ratio_and_target(tmp_path):
  out = tmp_path / 'results.json'
  size = '0.1'
  run = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'bench', 'transform_bench.py'),
      f'--sizes={size}',
      f'--base-mb={size}',
      f'--top-mb={size}',
      '--sample-mb=0.05',
      '--vocab-size=200',
      f'--work-dir={tmp_path / "work"}',
      f'--json={out}',
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads(out.read_text())
  (measured,) = results['sizes']
  assert 0 < measured['sample_bytes'] <= measured['bytes']
  for name in (
    transform_verdicts.BARE,
    transform_verdicts.GRAPH,
    transform_verdicts.NORMALIZATION,
    transform_verdicts.HF,
  ):
    assert measured['tokenizers'][name]['mb_per_s'] > 0
  assert measured['tokenizers'][transform_verdicts.BARE]['tokens'] > 0
  for name in (
    transform_verdicts.EXAMPLE_GEN,
    transform_verdicts.TRANSFORM,
    transform_verdicts.END_TO_END,
  ):
    stage = measured['stages'][name]
    assert stage['seconds'] > 0 and stage['mb_per_s'] > 0
    assert stage['peak_rss_tree_bytes'] >= stage['peak_rss_process_bytes'] > 0
    assert stage['cpu_seconds'] > 0 and stage['cpu_mb_per_s'] > 0
  assert measured['workers'] >= 1 and measured['beam_args']
  for ratios in (measured['ratios'], measured['cpu_ratios']):
    assert set(ratios) == {transform_verdicts.HF_RATIO, transform_verdicts.WORKER_RATIO}
    assert all(value > 0 for value in ratios.values())
  targets = results['targets']
  assert [t['key'] for t in targets] == [
    transform_verdicts.HF_RATIO,
    transform_verdicts.WORKER_RATIO,
    transform_verdicts.RSS_GROWTH,
    transform_verdicts.TIME_GROWTH,
  ]
  for target in targets:
    assert target['verdict'] in ('PASS', 'FAIL')
    assert (
      f'{target["value"]:6.2f}  {target["op"]} {target["target"]:5.2f}  {target["verdict"]}'
      in (run.stdout)
    )
  assert 'end to end MB/s / HF MB/s' in run.stdout
  assert 'end to end MB/s per worker / bare MB/s' in run.stdout
  assert results['machine']['loadavg_start']


@pytest.mark.parametrize(
  ('beam_args', 'workers'),
  [
    (['--direct_running_mode=in_memory', '--direct_num_workers=1'], 1),
    (['--direct_running_mode=multi_processing', '--direct_num_workers=3'], 3),
    (['--direct_running_mode=multi_processing', '--direct_num_workers=0'], os.cpu_count()),
    (['--runner=FnApiRunner'], 1),
  ],
)
def test_workers_are_read_from_the_beam_arguments(beam_args, workers):
  assert bench.beam_workers(beam_args) == workers
