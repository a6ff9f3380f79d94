"""bench/finetune_bench.py's verdicts: medians of the rounds' paired figures against the targets."""

import json

from bench import finetune_bench as bench


def _run(accuracy, trainer_seconds, train_seconds, share=1.0):
  return {
    'accuracy': accuracy,
    'trainer_seconds': trainer_seconds,
    'train_seconds': train_seconds,
    'tokens_per_second': 1000.0,
    'peak_rss_bytes': 2e9,
    'trainable_weights': int(share * 1e6),
    'trainable_share': share,
    'adapter_bytes': 1e6 if share < 1 else None,
  }


def _verdicts(tmp_path, monkeypatch, capsys, full, lora):
  monkeypatch.setattr(bench, 'HERE', str(tmp_path))
  bench.report({'full': full, 'lora': lora}, 0.5, 0.7)
  out = capsys.readouterr().out
  with open(tmp_path / 'results' / 'finetune.json') as f:
    written = json.load(f)
  return out, list(written['checks'].values())


def test_the_targets_judge_the_median_of_the_paired_rounds(tmp_path, monkeypatch, capsys):
  # Round by round: time ratios 0.55, 0.58 and 0.70 (a slow LoRA round): median 0.58, PASS;
  # accuracy gaps 0.005, 0.02 and 0.008: median 0.008, PASS.
  full = [_run(0.84, 200.0, 180.0), _run(0.85, 200.0, 180.0), _run(0.83, 200.0, 180.0)]
  lora = [
    _run(0.835, 110.0, 95.0, 0.013),
    _run(0.83, 116.0, 99.0, 0.013),
    _run(0.822, 140.0, 120.0, 0.013),
  ]
  out, checks = _verdicts(tmp_path, monkeypatch, capsys, full, lora)
  assert checks == [True, True, True]
  assert '0.580x (0.550x to 0.700x)' in out
  assert '+0.0080 (+0.0050 to +0.0200)' in out
  assert '0.8400 (0.8300 to 0.8500)' in out  # full's median accuracy and its range


def test_each_target_fails_on_its_own(tmp_path, monkeypatch, capsys):
  full = [_run(0.84, 200.0, 180.0), _run(0.84, 200.0, 180.0)]
  slow = [_run(0.84, 125.0, 100.0, 0.013), _run(0.84, 121.0, 100.0, 0.013)]  # 0.615x
  assert _verdicts(tmp_path, monkeypatch, capsys, full, slow)[1] == [True, False, True]
  worse = [_run(0.825, 100.0, 90.0, 0.013), _run(0.828, 100.0, 90.0, 0.013)]  # gap 0.0135
  assert _verdicts(tmp_path, monkeypatch, capsys, full, worse)[1] == [False, True, True]
  large = [_run(0.84, 100.0, 90.0, 0.03)] * 2
  assert _verdicts(tmp_path, monkeypatch, capsys, full, large)[1] == [True, True, False]
