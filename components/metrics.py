"""A TFMA metric for language models: corpus perplexity from per-example sums.

The exported language models return, per example, `token_logprob_sum` (the summed
log-likelihood of the scored tokens, nats) and `token_count` (trainer/export.py). Perplexity over
the eval split is exp(-sum logprob / sum count): a token-weighted mean, which a mean of
per-example perplexities would not be.
"""

import math
from typing import Dict, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2

from tfxlm.contract import TOKEN_COUNT, TOKEN_LOGPROB_SUM

PERPLEXITY = 'perplexity'


class Perplexity(metric_types.Metric):
  """exp(total negative log-likelihood / total scored tokens) over the evaluated examples."""

  def __init__(self, name: str = PERPLEXITY):
    super().__init__(metric_util.merge_per_key_computations(_perplexity_computations), name=name)


def _perplexity_computations(
  name: str = PERPLEXITY,
  eval_config: Optional[config_pb2.EvalConfig] = None,
  model_name: str = '',
  output_name: str = '',
  sub_key=None,
  example_weighted: bool = False,
):
  del eval_config
  key = metric_types.MetricKey(
    name=name,
    model_name=model_name,
    output_name=output_name,
    sub_key=sub_key,
    example_weighted=example_weighted,
  )
  return [
    metric_types.MetricComputation(
      keys=[key], preprocessors=None, combiner=_PerplexityCombiner(key)
    )
  ]


class _PerplexityCombiner(beam.CombineFn):
  def __init__(self, key: metric_types.MetricKey):
    self._key = key

  def create_accumulator(self):
    return np.zeros(2, dtype=np.float64)  # (negative log-likelihood, token count)

  def add_input(self, accumulator, element: metric_types.StandardMetricInputs):
    predictions = element.get_by_key('predictions', self._key.model_name, None)
    if not isinstance(predictions, dict) or TOKEN_LOGPROB_SUM not in predictions:
      got = sorted(predictions) if isinstance(predictions, dict) else type(predictions).__name__
      raise ValueError(
        f'Perplexity needs the model outputs {TOKEN_LOGPROB_SUM!r} and {TOKEN_COUNT!r}; got {got}'
      )
    accumulator[0] -= float(np.sum(predictions[TOKEN_LOGPROB_SUM]))
    accumulator[1] += float(np.sum(predictions[TOKEN_COUNT]))
    return accumulator

  def merge_accumulators(self, accumulators):
    return np.sum(list(accumulators), axis=0)

  def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, float]:
    nll, count = accumulator
    return {self._key: math.exp(nll / count) if count else float('nan')}


metric_types.register_metric(Perplexity)
