"""bench/transform_bench.py's figures: the names of its measurements, the targets of issue #16
with their verdicts, and the text report of each size and of the targets."""

from __future__ import annotations

from bench.corpus import MB

EXAMPLE_GEN, TRANSFORM, END_TO_END = 'ExampleGen', 'Transform', 'end to end'
POOL_START = 'worker pool start'
BARE, GRAPH, NORMALIZATION, HF = (
  'fast_bert_tokenizer',
  'preprocessing_graph',
  'normalization_only',
  'hf_bert_wordpiece',
)
TOKENIZER_LABELS = {
  BARE: 'tensorflow-text FastBertTokenizer (bare op)',
  GRAPH: 'preprocessing graph (NFKC+casefold+strip+FastBert)',
  NORMALIZATION: '  of which normalization ops alone',
  HF: 'HF tokenizers BertWordPieceTokenizer, 1 thread',
}
# The targets of issue #16: (key, what, at which size, comparison, threshold).
HF_RATIO, WORKER_RATIO, RSS_GROWTH, TIME_GROWTH = (
  'e2e_vs_hf_single_thread',
  'e2e_per_worker_vs_bare_op',
  'peak_rss_growth',
  'time_growth',
)


def _find(results: list[dict], size_mb: float) -> dict | None:
  return next((r for r in results if r['size_mb'] == size_mb), None)


def checks(results: list[dict], base_mb: float, top_mb: float) -> list[dict]:
  """The four targets of issue #16 with their values and verdicts (NOT RUN without the size)."""
  base, top = _find(results, base_mb), _find(results, top_mb)
  growth = base is not None and top is not None
  rows = [
    (HF_RATIO, f'end to end / HF single thread at {base_mb:g} MB', '>=', 2.0,
     base and base['ratios'][HF_RATIO]),
    (WORKER_RATIO, f'end to end per worker / bare op at {top_mb:g} MB', '>=', 0.30,
     top and top['ratios'][WORKER_RATIO]),
    (RSS_GROWTH, f'peak RSS (tree) {top_mb:g} MB / {base_mb:g} MB', '<=', 1.2,
     growth and top['stages'][END_TO_END]['peak_rss_tree_bytes']
     / base['stages'][END_TO_END]['peak_rss_tree_bytes']),
    (TIME_GROWTH, f'end-to-end time {top_mb:g} MB / {base_mb:g} MB', '<=', 10.5,
     growth and top['stages'][END_TO_END]['seconds'] / base['stages'][END_TO_END]['seconds']),
  ]  # fmt: skip
  out = []
  for key, what, op, target, value in rows:
    if value is None or value is False:
      verdict, value = 'NOT RUN', None
    else:
      verdict = 'PASS' if (value >= target if op == '>=' else value <= target) else 'FAIL'
    out.append({'key': key, 'what': what, 'op': op, 'target': target, 'value': value,
                'verdict': verdict})  # fmt: skip
  if growth:
    out[2]['largest_process_ratio'] = (
      top['stages'][END_TO_END]['peak_rss_process_bytes']
      / base['stages'][END_TO_END]['peak_rss_process_bytes']
    )
    out[3]['bytes_ratio'] = top['bytes'] / base['bytes']
  return out


def _mib(value: int) -> str:
  return f'{value / 2**20:,.0f} MiB'


def size_report(result: dict, targets: list[dict], base_mb: float, top_mb: float) -> str:
  """One size's figures: tokenizers, stages, ratios with their targets."""
  lines = [
    f'== {result["size_mb"]:g} MB ({result["bytes"] / MB:.1f} MB of text); load average '
    f'{" ".join(f"{v:.2f}" for v in result["loadavg_before"])} before the pipeline, '
    f'{" ".join(f"{v:.2f}" for v in result["loadavg_after"])} after',
    f'  one core, first {result["sample_bytes"] / MB:.1f} MB of this corpus'.ljust(56)
    + 'MB/s  MB/s of CPU time',
  ]
  for key, label in TOKENIZER_LABELS.items():
    rates = result['tokenizers'][key]
    lines.append(f'    {label:<52}{rates["mb_per_s"]:6.2f}{rates["cpu_mb_per_s"]:8.2f}')
  lines.append(
    f'  pipeline: {result["workers"]} worker(s), Beam args {" ".join(result["beam_args"])}; '
    f'process wall {result["pipeline_wall_seconds"]:.1f} s'
  )
  lines.append(
    f'    {"stage":<24}{"seconds":>9}{"MB/s":>8}{"CPU s":>9}{"peak RSS tree":>16}'
    f'{"largest process":>18}'
  )
  for name, stage in result['stages'].items():
    label = (
      'end to end (pool + EG + T)'
      if name == END_TO_END and POOL_START in result['stages']
      else ('end to end (EG + T)' if name == END_TO_END else name)
    )
    lines.append(
      f'    {label:<24}{stage["seconds"]:9.1f}{stage["mb_per_s"]:8.2f}{stage["cpu_seconds"]:9.1f}'
      f'{_mib(stage["peak_rss_tree_bytes"]):>16}{_mib(stage["peak_rss_process_bytes"]):>18}'
    )
  by_key = {t['key']: t for t in targets}
  for key, label, at in (
    (HF_RATIO, 'end to end MB/s / HF MB/s', base_mb),
    (WORKER_RATIO, 'end to end MB/s per worker / bare MB/s', top_mb),
  ):
    target = by_key[key]
    verdict = target['verdict'] if result['size_mb'] == at else f'(target applies at {at:g} MB)'
    lines.append(
      f'    {label:<44}{result["ratios"][key]:6.2f}  target {target["op"]} '
      f'{target["target"]:.2f}  {verdict}'
    )
  lines.append(
    '    the same over CPU time (MB per CPU-second, no target): vs HF '
    f'{result["cpu_ratios"][HF_RATIO]:.2f}, vs the bare op {result["cpu_ratios"][WORKER_RATIO]:.2f}'
  )
  return '\n'.join(lines)


def targets_report(targets: list[dict]) -> str:
  """The four targets, each with its value and verdict."""
  lines = ['== targets (issue #16)']
  for t in targets:
    value = '     -' if t['value'] is None else f'{t["value"]:6.2f}'
    extra = ''
    if 'largest_process_ratio' in t:
      extra = f'  (largest process: {t["largest_process_ratio"]:.2f})'
    if 'bytes_ratio' in t:
      extra = f'  (bytes ratio: {t["bytes_ratio"]:.2f})'
    lines.append(f'  {t["what"]:<48}{value}  {t["op"]} {t["target"]:5.2f}  {t["verdict"]}{extra}')
  return '\n'.join(lines)
