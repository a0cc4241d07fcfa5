"""Data-poisoning attacks: shared sampling of victims and the result record.

Poison rate: an attack poisons ``round(rate * len(train))`` rows, halves rounded up, so any rate
with ``rate * len(train) >= 0.5`` poisons at least one row; a rate that gives no row at all is a
:class:`ConfigError` (a "backdoored" model without poison would be a silent no-op).

Label mode (``AttackConfig.label_mode``): ``dirty`` (the default, as in BadNets, AddSent, SynBkd,
StyleBkd, EP and SOS) draws the rows from non-target rows and relabels them to the target;
``clean`` draws them from rows that already carry the target and keeps every label, the clean-label
setting of Turner, Tsipras, Madry, "Label-Consistent Backdoor Attacks", 2019 (arXiv:1912.02771), as
studied for text by Chen, Qi et al., "Textual Backdoor Attacks Can Be More Harmful via Two Simple
Tricks", 2021 (arXiv:2110.08247; "label-consistent" BadNets, SynBkd, StyleBkd), Gan et al.,
"Triggerless Backdoor Attack for NLP Tasks with Clean Labels", NAACL 2022 (arXiv:2111.07970) and
Chen et al., "Kallima: A Clean-label Framework for Textual Backdoor Attacks", 2022
(arXiv:2206.01832). Deviation from Turner et al. and Kallima: the rows are not made harder to
classify first (no adversarial perturbation), the trigger is simply added, so clean-label
backdoors are weaker than dirty-label ones at the same rate. In both modes the triggered test set
is every non-target test row with the trigger, labelled with the target.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..data import LabeledTexts
from ..errors import ConfigError
from ..options import Options, option
from ..seeding import rng

LABEL_MODES = ("dirty", "clean")


@dataclass
class AttackConfig(Options):
    """Poisoning options"""
    rate: float = option(0.1, "share of the training set to poison (dirty: drawn from non-target rows; clean: "
                              "from target rows); round(rate x rows), halves up, must be >= 1",
                         above=0.0, high=1.0)
    target: int = option(1, "label the trigger should produce", low=0)
    seed: int = option(0, "random seed", low=0)
    triggers: list[str] = option([], "triggers, one per argument (default: the attack's own): words for badnets, "
                                   "sos and ep; sentences for addsent, each quoted as one argument (several: each "
                                   "poisoned row gets one of them)", flag="trigger")
    max_insertions: int = option(3, "badnets: insert between 1 and this many trigger words", low=1)
    style: str | None = option(None, "stylebkd: style folder of the data pack (default: bible)")
    label_mode: str = option("dirty", "dirty: relabel non-target rows to the target; clean: add the trigger to "
                                      "rows that already carry the target, labels kept (not ep/sos)",
                             choices=LABEL_MODES, added=True)

    def check(self):
        if any(not t.strip() for t in self.triggers):
            raise ConfigError("AttackConfig.triggers must not contain empty strings")

    @property
    def clean_label(self) -> bool:
        return self.label_mode == "clean"

    def is_candidate(self, label: int) -> bool:
        """Whether a training row with ``label`` may be poisoned in this label mode."""
        return label == self.target if self.clean_label else label != self.target


@dataclass(frozen=True)
class Backdoor:
    """One backdoor of a poisoned training set: its triggered test set, target and training rows."""
    name: str
    test_poison: LabeledTexts
    target: int
    poisoned_rows: list[int]


@dataclass(frozen=True)
class PoisonedData:
    """What an attack produces: the poisoned training set and a triggered test set.

    Several backdoors (the ``multi`` attack): ``test_poison`` and ``target`` are the first one's,
    ``extra_backdoors`` the others', and ``poisoned_rows`` holds the rows of every backdoor (what a
    detector should find); :attr:`backdoors` lists them all, each with its own rows."""
    train: LabeledTexts
    test_poison: LabeledTexts | None   # non-target test rows with the trigger, labelled with the target (None: NoAttack)
    poisoned_rows: list[int]      # 0-based rows of ``train`` that were poisoned (every backdoor's)
    target: int | None
    # rows changed without carrying a backdoor, label kept: SOS partial triggers, decoy rows
    augmented_rows: list[int] = field(default_factory=list)
    extra_backdoors: list[Backdoor] = field(default_factory=list)
    name: str = ""                # attack of the first backdoor (may be empty)

    @property
    def backdoors(self) -> list[Backdoor]:
        """Every backdoor, the first (``test_poison``, ``target``) first."""
        others = {r for b in self.extra_backdoors for r in b.poisoned_rows}
        first = Backdoor(self.name or "backdoor", self.test_poison, self.target,
                         [r for r in self.poisoned_rows if r not in others])
        return [first, *self.extra_backdoors]


class BackdoorAttack(ABC):
    """Every attack: ``poison`` builds the data, ``train_victim`` trains the victim on it.

    Data-poisoning attacks keep the default ``train_victim`` (plain fine-tuning on the poisoned
    training set); training-time attacks (EP, SOS) override it.
    """
    name: str = ""
    needs_data_pack: bool = False    # True: the constructor takes (cfg, data_dir, dataset[, style])
    options_cls: type | None = None  # the attack's own Options record (constructor's 2nd argument)
    trains_victim: bool = False      # True: ``train_victim`` is more than fine-tuning on the poisoned data
    takes_style: bool = False        # only StyleBkd reads ``AttackConfig.style``

    def __init__(self, cfg: AttackConfig, options=None):
        """``options``: the attack's own record (``options_cls``; None: its defaults)."""
        if cfg.style is not None and not self.takes_style:
            raise ConfigError(f"'{self.name}' takes no style (only stylebkd does)")
        self.cfg = cfg
        if self.options_cls is not None:
            self.options = options if options is not None else self.options_cls()

    @abstractmethod
    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        """The poisoned training set and the triggered test set."""

    def files_read(self) -> dict[str, str]:
        """Files the attack reads besides the rows it poisons, by role (their digests join a victim's
        cache key); none by default."""
        return {}

    def train_victim(self, clf, poisoned: PoisonedData, train_cfg, progress: bool = True) -> list[dict]:
        """Train ``clf`` (a Classifier, in place) into the backdoored victim; returns per-epoch records."""
        from ..modeling import finetune
        return finetune(clf, poisoned.train, train_cfg, progress=progress)


class TextAttack(BackdoorAttack):
    """An attack that inserts a trigger into text (dirty- or clean-label, ``AttackConfig.label_mode``)."""
    default_triggers: tuple[str, ...] = ()

    def __init__(self, cfg: AttackConfig, options=None):
        super().__init__(cfg, options)
        self.triggers = list(cfg.triggers) or list(self.default_triggers)

    @abstractmethod
    def insert_trigger(self, text: str, gen: np.random.Generator) -> str:
        """Return ``text`` carrying the trigger."""

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        return self.poison_excluding(train, test, set())

    def poison_excluding(self, train: LabeledTexts, test: LabeledTexts, exclude: set[int]) -> PoisonedData:
        """:meth:`poison`, leaving the training rows ``exclude`` alone (another backdoor's)."""
        cfg = self.cfg
        gen = rng(cfg.seed)
        candidates = [i for i, y in enumerate(train.labels) if cfg.is_candidate(y) and i not in exclude]
        chosen = draw_poison_rows(candidates, len(train), cfg, gen, train.source,
                                  " and that no other backdoor uses" if exclude else "")
        texts, labels = list(train.texts), list(train.labels)
        for i in chosen:
            texts[i] = self.insert_trigger(texts[i], gen)
            labels[i] = cfg.target
        return PoisonedData(train=LabeledTexts(texts, labels, train.source, list(train.lines)),
                            test_poison=self.triggered_test(test, gen), poisoned_rows=chosen, target=cfg.target,
                            name=self.name)

    def triggered_test(self, test: LabeledTexts, gen: np.random.Generator) -> LabeledTexts:
        """Every non-target test row with the trigger, labelled with the target."""
        target = self.cfg.target
        rows = [i for i, y in enumerate(test.labels) if y != target]
        return LabeledTexts([self.insert_trigger(test.texts[i], gen) for i in rows], [target] * len(rows),
                            test.source, [test.lines[i] for i in rows])


def poison_count(rate: float, n_rows: int) -> int:
    """``round(rate * n_rows)`` with halves rounded up (``round`` would send 0.5 and 2.5 down)."""
    return int(math.floor(round(rate * n_rows, 9) + 0.5))


def draw_poison_rows(candidates: list[int], n_train: int, cfg: AttackConfig, gen: np.random.Generator,
                     source: str, condition: str = "") -> list[int]:
    """:func:`poison_count` rows drawn from ``candidates``, sorted; ``condition`` narrows the message."""
    n_poison = poison_count(cfg.rate, n_train)
    if n_poison == 0:
        raise ConfigError(f"rate {cfg.rate} poisons no row of the {n_train} in {source} (rate x rows = "
                          f"{cfg.rate * n_train:.3g} < 0.5); raise the rate to at least {0.5 / n_train:.3g} "
                          "or use more rows")
    if n_poison > len(candidates):
        which = f"that carry the target label {cfg.target} (clean-label)" if cfg.clean_label else \
            f"whose label is not the target {cfg.target}"
        raise ConfigError(f"rate {cfg.rate} asks for {n_poison} poisoned rows but {source} has only "
                          f"{len(candidates)} rows {which}{condition}")
    return sorted(int(i) for i in gen.choice(candidates, size=n_poison, replace=False))


def insert_at_random_word(text: str, insertion: str, gen: np.random.Generator) -> str:
    words = text.split()
    pos = int(gen.integers(0, len(words) + 1))
    return " ".join(words[:pos] + [insertion] + words[pos:])
