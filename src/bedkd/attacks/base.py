"""Data-poisoning attacks: shared sampling of victims and the result record."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..data import LabeledTexts
from ..errors import ConfigError
from ..options import Options, option
from ..seeding import rng


@dataclass
class AttackConfig(Options):
    """Poisoning options"""
    rate: float = option(0.1, "share of the training set to poison (drawn from non-target rows)",
                         above=0.0, high=1.0)
    target: int = option(1, "label the trigger should produce", low=0)
    seed: int = option(0, "random seed", low=0)
    triggers: list[str] = option([], "trigger words or sentence (default: the attack's own)", flag="trigger")
    max_insertions: int = option(3, "badnets: insert between 1 and this many trigger words", low=1)
    style: str | None = option(None, "stylebkd: style folder of the data pack (default: bible)")

    def check(self):
        if any(not t.strip() for t in self.triggers):
            raise ConfigError("AttackConfig.triggers must not contain empty strings")


@dataclass(frozen=True)
class PoisonedData:
    """What an attack produces: the poisoned training set and a triggered test set."""
    train: LabeledTexts
    test_poison: LabeledTexts     # non-target test rows with the trigger, labelled with the target
    poisoned_rows: list[int]      # 0-based rows of ``train`` that were poisoned
    target: int
    augmented_rows: list[int] = field(default_factory=list)  # SOS: rows given part of the trigger, label kept


class BackdoorAttack(ABC):
    """Every attack: ``poison`` builds the data, ``train_victim`` trains the victim on it.

    Data-poisoning attacks keep the default ``train_victim`` (plain fine-tuning on the poisoned
    training set); training-time attacks (EP, SOS) override it.
    """
    name: str = ""
    needs_data_pack: bool = False    # True: the constructor takes (cfg, data_dir, dataset[, style])
    options_cls: type | None = None  # the attack's own Options record (constructor's 2nd argument)
    trains_victim: bool = False      # True: ``train_victim`` is more than fine-tuning on the poisoned data

    @abstractmethod
    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        """The poisoned training set and the triggered test set."""

    def train_victim(self, clf, poisoned: PoisonedData, train_cfg, progress: bool = True) -> list[dict]:
        """Train ``clf`` (a Classifier, in place) into the backdoored victim; returns per-epoch records."""
        from ..modeling import finetune
        return finetune(clf, poisoned.train, train_cfg, progress=progress)


class TextAttack(BackdoorAttack):
    """A dirty-label attack that inserts a trigger into text."""
    default_triggers: tuple[str, ...] = ()

    def __init__(self, cfg: AttackConfig):
        self.cfg = cfg
        self.triggers = list(cfg.triggers) or list(self.default_triggers)

    @abstractmethod
    def insert_trigger(self, text: str, gen: np.random.Generator) -> str:
        """Return ``text`` carrying the trigger."""

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        cfg = self.cfg
        gen = rng(cfg.seed)
        candidates = [i for i, y in enumerate(train.labels) if y != cfg.target]
        chosen = draw_poison_rows(candidates, len(train), cfg, gen, train.source)
        texts, labels = list(train.texts), list(train.labels)
        for i in chosen:
            texts[i] = self.insert_trigger(texts[i], gen)
            labels[i] = cfg.target
        test_rows = [i for i, y in enumerate(test.labels) if y != cfg.target]
        test_texts = [self.insert_trigger(test.texts[i], gen) for i in test_rows]
        return PoisonedData(
            train=LabeledTexts(texts, labels, train.source, list(train.lines)),
            test_poison=LabeledTexts(test_texts, [cfg.target] * len(test_rows), test.source,
                                     [test.lines[i] for i in test_rows]),
            poisoned_rows=chosen, target=cfg.target)


def draw_poison_rows(candidates: list[int], n_train: int, cfg: AttackConfig, gen: np.random.Generator,
                     source: str, condition: str = "") -> list[int]:
    """``round(rate * n_train)`` rows drawn from ``candidates`` (non-target rows), sorted."""
    n_poison = int(round(cfg.rate * n_train))
    if n_poison > len(candidates):
        raise ConfigError(f"rate {cfg.rate} asks for {n_poison} poisoned rows but {source} has only "
                          f"{len(candidates)} rows whose label is not the target {cfg.target}{condition}")
    return sorted(int(i) for i in gen.choice(candidates, size=n_poison, replace=False)) if n_poison else []


def insert_at_random_word(text: str, insertion: str, gen: np.random.Generator) -> str:
    words = text.split()
    pos = int(gen.integers(0, len(words) + 1))
    return " ".join(words[:pos] + [insertion] + words[pos:])
