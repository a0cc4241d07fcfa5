"""The three roles a defense can play, each one small interface (after ART's split by role).

* :class:`Purifier` — model in, purified model out (BeDKD, fine-tuning, fine-pruning, KD, NAD).
* :class:`DataFilter` — suspicious training set in, the rows to drop out; the victim is then
  retrained on the rest (BKI, CUBE).
* :class:`InputFilter` — at inference time, each input is rewritten (ONION) or rejected (STRIP,
  RAP); thresholds are set from clean data only, in ``fit``.

Every defense takes one ``Options`` dataclass, checked at construction, and never modifies the
classifier it is given.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..data import LabeledTexts
from ..modeling import Classifier

if TYPE_CHECKING:
    from .data_filters.dmm import Detection


@dataclass
class Purified:
    """What a purifier returns: a new classifier, a JSON-able report (config, data, seconds) and,
    for a purifier that flags suspicious rows (BeDKD), its detection. Ground truth never enters a
    defense: whoever knows it scores the detection (``detection.metrics(poisoned_rows)``)."""
    classifier: Classifier
    report: dict = field(default_factory=dict)
    detection: Detection | None = None


class Purifier(ABC):
    name: str = ""

    @abstractmethod
    def purify(self, suspect_model: Classifier, clean: LabeledTexts, suspect_data: LabeledTexts | None = None,
               progress: bool = False) -> Purified:
        """A purified copy of ``suspect_model``. ``clean`` is the defender's clean pool (the budget);
        ``suspect_data`` the suspicious training set, for methods that use it (the same signature
        for every purifier; a method's own inputs, such as BeDKD's saved ``detection``, are keywords
        after these)."""


@dataclass
class Filtered:
    """What a data filter returns: the 0-based rows of the suspicious set it removes, per-row scores
    (higher = more suspicious; empty when the method has none) and a report."""
    removed_rows: list[int]
    scores: list[float] = field(default_factory=list)
    report: dict = field(default_factory=dict)


class DataFilter(ABC):
    name: str = ""

    @abstractmethod
    def filter(self, suspect_model: Classifier, suspect_data: LabeledTexts, clean: LabeledTexts | None = None,
               progress: bool = False) -> Filtered:
        """Rows of ``suspect_data`` judged poisoned."""


@dataclass
class Screened:
    """An input filter's verdict on a batch: the (possibly rewritten) texts and which were rejected."""
    texts: list[str]
    rejected: list[bool]
    scores: list[float] = field(default_factory=list)


class InputFilter(ABC):
    name: str = ""
    options: type | None = None      # the method's Options record (None: it has none)

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None or self.options is None else self.options()
        self.threshold: float | None = None      # set by ``fit``
        self.fit_report: dict = {}

    def fit(self, suspect_model: Classifier, clean: LabeledTexts, progress: bool = False) -> "InputFilter":
        """Set thresholds from clean data only (default: nothing to fit); returns self."""
        self.model = suspect_model
        return self

    @abstractmethod
    def screen(self, texts: list[str], progress: bool = False) -> Screened:
        """Rewrite or reject each input; ``fit`` must have been called."""
