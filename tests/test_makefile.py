"""The Makefile's targets with values a user may give: paths with spaces and quotes.

Each target runs in a scratch folder holding a copy of the Makefile and a `./dev` that records
the arguments and TFXLM_OUTPUTS it was given, so what make would hand the environment is
checked without running it.
"""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDER = '#!/bin/sh\nprintf "%s\\n" "TFXLM_OUTPUTS=$TFXLM_OUTPUTS" "$@" > dev.args\n'

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='needs GNU make')


@pytest.fixture
def folder(tmp_path):
  shutil.copy(os.path.join(REPO, 'Makefile'), tmp_path / 'Makefile')
  (tmp_path / 'dev').write_text(RECORDER)
  (tmp_path / 'dev').chmod(0o755)
  return tmp_path


def _make(folder, *args):
  done = subprocess.run(
    ['make', '-s', *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False
  )
  recorded = folder / 'dev.args'
  lines = recorded.read_text().splitlines() if recorded.exists() else []
  return done, lines


@pytest.mark.parametrize(
  'target, config_var',
  [
    ('demo', 'CONFIG'),
    ('demo-lm', 'LM_CONFIG'),
    ('demo-scratch', 'SCRATCH_CONFIG'),
    ('demo-compress', 'COMPRESS_CONFIG'),
  ],
)
def test_a_config_and_outputs_with_spaces_and_quotes_stay_one_argument(folder, target, config_var):
  done, lines = _make(folder, target, "OUTPUTS=my runs/it's", f"{config_var}=my configs/o'k.yaml")
  assert done.returncode == 0, done.stderr
  assert lines == [
    f"TFXLM_OUTPUTS={folder}/my runs/it's",
    'python',
    '-m',
    'pipeline.local_runner',
    '--config',
    "my configs/o'k.yaml",
  ]


def test_make_demo_writes_under_outputs_where_make_serve_reads(folder):
  done, lines = _make(folder, 'demo-lm', 'OUTPUTS=out')
  assert done.returncode == 0, done.stderr
  assert lines[0] == f'TFXLM_OUTPUTS={folder}/out'
  done, lines = _make(folder, 'serve', 'OUTPUTS=out', 'PIPELINE=demo-lm', 'MODEL_NAME=demo-lm')
  assert f'--model_base_path={folder}/out/demo-lm/serving/demo-lm' in lines
  done, lines = _make(folder, 'serve')  # the defaults: what `make demo` writes
  assert lines[4:] == [
    '--model_name=sentiment',
    f'--model_base_path={folder}/pipeline_outputs/demo/serving/sentiment',
    '--port=8500',
    '--rest_api_port=8501',
  ]
  done, lines = _make(folder, 'demo')
  assert lines[0] == f'TFXLM_OUTPUTS={folder}/pipeline_outputs'


def test_serve_and_kubeflow_compile_keep_each_value_whole(folder):
  done, lines = _make(folder, 'serve', 'OUTPUTS=my runs', 'MODEL_NAME=m n', 'PIPELINE=p q')
  assert done.returncode == 0, done.stderr
  assert lines[4:6] == ['--model_name=m n', f'--model_base_path={folder}/my runs/p q/serving/m n']
  done, lines = _make(folder, 'kubeflow-compile', 'CONFIG=a b.yaml', 'KFP_PIPELINE_ROOT=gs://b/x y')
  assert done.returncode == 0, done.stderr
  assert lines[-4:] == ['--config', 'a b.yaml', '--set', 'kubeflow.pipeline_root=gs://b/x y']


def test_clean_removes_the_outputs_folder_named_and_nothing_else(folder):
  """`make clean OUTPUTS='my runs'` once ran `rm -rf my runs`: it removed `my` (and `runs`)."""
  (folder / 'my runs' / 'demo').mkdir(parents=True)
  (folder / 'my').mkdir()
  (folder / 'my' / 'keep.txt').write_text('x')
  (folder / 'runs').mkdir()
  done, _ = _make(folder, 'clean', 'OUTPUTS=my runs')
  assert done.returncode == 0, done.stderr
  assert not (folder / 'my runs').exists()
  assert (folder / 'my' / 'keep.txt').read_text() == 'x'
  assert (folder / 'runs').is_dir()
