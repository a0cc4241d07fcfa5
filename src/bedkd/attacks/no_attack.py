"""The no-attack row of a benchmark: the training data as it is, no triggered test set.

A defense run on its victim (a model trained on clean data) shows what the defense does to a model
without a backdoor; the same model gives every attack's ASR floor.
"""
from __future__ import annotations

from ..data import LabeledTexts
from .base import BackdoorAttack, PoisonedData


class NoAttack(BackdoorAttack):
    """No poison: ``poison`` returns the training rows unchanged, no poisoned row, no test set."""
    name = "clean"

    def __init__(self):
        """No options at all (so that the clean victim's cache key holds none)."""

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        return PoisonedData(train=train, test_poison=None, poisoned_rows=[], target=None, name=self.name)
