"""Labels that are another label but for Unicode normal form, case or surrounding whitespace
(TensorFlow-free: the config checks use it as well as ExampleGen's readers)."""

import unicodedata
from typing import List, Optional, Sequence, Tuple

# What `near_label` finds for a label that is a domain value in another Unicode normal form.
NFC_ONLY = ['Unicode normal form']


def near_label(label: str, domain: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
  """The value of `domain` that `label` differs from only in Unicode normal form, case or
  surrounding whitespace, and which of these differ (in that order); None if there is none."""

  def fold(text):
    return unicodedata.normalize('NFC', text).strip().casefold()

  for value in sorted(domain):
    if fold(value) != fold(label):
      continue
    composed, composed_value = (unicodedata.normalize('NFC', t) for t in (label, value))
    ways = {
      NFC_ONLY[0]: label.strip().casefold() != value.strip().casefold(),
      'case': composed.strip() != composed_value.strip(),
      'surrounding whitespace': composed.casefold() != composed_value.casefold(),
    }
    return value, [way for way, differs in ways.items() if differs]
  return None


def differs_only(label: str, near: Tuple[str, List[str]]) -> str:
  """`'Positive' differs from 'positive' only in case` for `near_label`'s answer (escaped with
  ascii() where the normal form differs, so the two read apart)."""
  show = ascii if NFC_ONLY[0] in near[1] else repr
  return f'{show(label)} differs from {show(near[0])} only in {" and ".join(near[1])}'
