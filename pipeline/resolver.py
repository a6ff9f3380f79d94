"""Which earlier model the Evaluator compares the candidate with."""

from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy


class LatestBlessedBaselineStrategy(latest_blessed_model_strategy.LatestBlessedModelStrategy):
  """The latest blessed model other than the candidate.

  The resolver runs after the Trainer, so the newest Model artifact is the candidate: a new one,
  or on a rerun with nothing changed, the cached one from before. Leaving it out gives the
  Evaluator the same baseline as the run that produced the candidate, so a rerun with nothing
  changed hits the cache all the way to the Pusher, instead of re-evaluating the candidate
  against itself (which the stock LatestBlessedModelStrategy would do).
  """

  def _resolve(self, input_dict, model_channel_key, model_blessing_channel_key):
    models = sorted(input_dict[model_channel_key], key=lambda a: a.id)
    input_dict = dict(input_dict)
    input_dict[model_channel_key] = models[:-1]
    return super()._resolve(input_dict, model_channel_key, model_blessing_channel_key)
