"""Which earlier model the Evaluator compares the candidate with."""

import os
from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy

# The resolver's input channel carrying the Trainer's output of this run: the candidate.
CANDIDATE_KEY = 'candidate'


def _producer(artifact) -> Optional[str]:
  """The component that wrote a pipeline artifact: `<root>/<component>/<output>/<execution>`."""
  parts = os.path.normpath(artifact.uri).split(os.sep) if artifact.uri else []
  return parts[-3] if len(parts) >= 3 else None


class LatestBlessedBaselineStrategy(latest_blessed_model_strategy.LatestBlessedModelStrategy):
  """The latest blessed model of the candidate's Trainer other than the candidate.

  The candidate comes in as its own channel (`CANDIDATE_KEY`, the Trainer's output in this run):
  a new model, or a cached one (a rerun with nothing changed, or a config reverted to an earlier
  one while newer models exist). Leaving it out means the Evaluator never compares a model with
  itself, and a rerun with nothing changed gets the baseline of the run that produced the
  candidate, so it hits the cache all the way to the Pusher.
  """

  def resolve_artifacts(
    self, store, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    """Returns the newest blessed Model that is not the candidate, with its blessing.

    Args:
      store: The ML Metadata store (unused: the channels carry what is needed).
      input_dict: The `model` and `model_blessing` channels and the `candidate` channel.
    """
    if CANDIDATE_KEY not in input_dict:
      raise ValueError(
        f'{type(self).__name__} needs the candidate model as the {CANDIDATE_KEY!r} channel'
      )
    candidates = list(input_dict[CANDIDATE_KEY])
    excluded = {a.id for a in candidates}
    # With several trained models (a `distill` stage's student beside the teacher), a
    # candidate's baseline comes from its own Trainer.
    producers = {_producer(a) for a in candidates} - {None}
    others = {}
    for key, artifacts in input_dict.items():
      if key != CANDIDATE_KEY:
        others[key] = [a for a in artifacts if a.id not in excluded]
    if producers and 'model' in others:
      others['model'] = [a for a in others['model'] if _producer(a) in producers]
    result = super().resolve_artifacts(store, others)
    if result is not None:
      result[CANDIDATE_KEY] = candidates
    return result
