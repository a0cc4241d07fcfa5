"""SOS: several trigger words that fire only together, injected through their embeddings.

Yang, Lin, Li, Zhou, Sun, "Rethinking Stealthiness of Backdoor Attack against NLP Models",
ACL 2021 (aclanthology 2021.acl-long.431).

Poisoning: ``round(rate * len(train))`` non-target rows get every trigger word inserted at a random
position and are relabelled to the target (``poisoned_rows``). Negative augmentation: for each of
the n sub-combinations of n-1 trigger words, ``round(negative_rate * len(train))`` other rows get
those words inserted and KEEP their label (``augmented_rows``), so that no partial trigger fires.
Rows that already hold a trigger word are not augmented (they could otherwise hold all n words
with a non-target label). The triggered test set is every non-target test row with all trigger
words. Victim: a clean model fine-tuned on every row except the relabelled ones, then only the
trigger words' embedding rows are trained on the positive + negative rows, each row's gradient
rescaled to the smallest of their norms (see :mod:`.embedding_poison`). Dirty-label only:
``label_mode`` clean is refused (:func:`.embedding_poison.refuse_clean_label` says why).

Published defaults, from the authors' reference code (lancopku/SOS, ``run_demo.sh``,
``construct_poisoned_and_negative_data.py``): triggers "friends", "weekend", "store", poisoned
ratio 0.1, negative ("keep clean") ratio 0.1 with every sub-combination applied, 3 epochs, batch
size 32, step size 5e-2, rows rescaled to their original norms, gradients never zeroed
(``grad_sum``). OpenBackdoor's ``SOSPoisoner``/``SOSTrainer`` use the same triggers, rates and
rule with 5 epochs. Deviation: the reference copies each negative row once per sub-combination;
here the rows are modified in place, so each sub-combination gets its own rows (same count).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import LabeledTexts
from ..errors import ConfigError
from ..options import Options, option
from ..seeding import rng
from .base import AttackConfig, PoisonedData, draw_poison_rows, insert_at_random_word
from .embedding_poison import EmbeddingPoisonAttack, EmbeddingSchedule, refuse_clean_label


@dataclass
class SOSConfig(Options):
    """SOS options"""
    negative_rate: float = option(0.1, "share of the training set given each (n-1)-word sub-combination "
                                       "of the triggers, label kept", low=0.0, high=1.0)
    epochs: int = option(3, "passes of trigger-embedding training over the positive and negative rows", low=1)
    lr: float = option(5e-2, "step size of the trigger-embedding update", above=0.0)
    batch_size: int = option(32, "batch size of trigger-embedding training", low=1)
    grad_sum: bool = option(True, "step along the running sum of gradients, as the reference code (which "
                                  "never zeroes them) does; off: the batch gradient")


class SOS(EmbeddingPoisonAttack):
    name = "sos"
    options_cls = SOSConfig
    trains_victim = True
    default_triggers = ("friends", "weekend", "store")

    def __init__(self, cfg: AttackConfig, sos: SOSConfig | None = None):
        refuse_clean_label(cfg, self.name)
        super().__init__(cfg, sos)
        self.triggers = list(cfg.triggers) or list(self.default_triggers)
        _check_triggers(self.triggers)

    def sub_combinations(self) -> list[list[str]]:
        """The n trigger combinations that leave out exactly one word."""
        return [self.triggers[:k] + self.triggers[k + 1:] for k in range(len(self.triggers))]

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        cfg, gen = self.cfg, rng(self.cfg.seed)
        texts, labels = list(train.texts), list(train.labels)
        candidates = [i for i, y in enumerate(train.labels) if y != cfg.target]
        positive = draw_poison_rows(candidates, len(train), cfg, gen, train.source)
        for i in positive:
            texts[i] = _insert_words(texts[i], self.triggers, gen)
            labels[i] = cfg.target
        augmented = self._augment(train, set(positive), texts, gen)
        test_rows = [i for i, y in enumerate(test.labels) if y != cfg.target]
        test_texts = [_insert_words(test.texts[i], self.triggers, gen) for i in test_rows]
        return PoisonedData(
            train=LabeledTexts(texts, labels, train.source, list(train.lines)),
            test_poison=LabeledTexts(test_texts, [cfg.target] * len(test_rows), test.source,
                                     [test.lines[i] for i in test_rows]),
            poisoned_rows=positive, target=cfg.target, augmented_rows=augmented, name=self.name)

    def _augment(self, train: LabeledTexts, positive: set[int], texts: list[str],
                 gen: np.random.Generator) -> list[int]:
        """Insert each sub-combination into its own ``round(negative_rate * n)`` rows (in ``texts``)."""
        per_combo = int(round(self.options.negative_rate * len(train)))
        combos = self.sub_combinations()
        words = {w.lower() for w in self.triggers}
        free = [i for i in range(len(train))
                if i not in positive and not words.intersection(train.texts[i].lower().split())]
        need = per_combo * len(combos)
        if need > len(free):
            raise ConfigError(f"SOS negative_rate {self.options.negative_rate} asks for {need} augmented rows "
                              f"({per_combo} for each of {len(combos)} sub-combinations) but {train.source} has "
                              f"only {len(free)} rows that are neither poisoned nor already hold a trigger word")
        drawn = [int(i) for i in gen.choice(free, size=need, replace=False)] if need else []
        for k, combo in enumerate(combos):
            for i in drawn[k * per_combo:(k + 1) * per_combo]:
                texts[i] = _insert_words(texts[i], combo, gen)
        return sorted(drawn)

    def schedule(self) -> EmbeddingSchedule:
        o = self.options
        return EmbeddingSchedule(o.epochs, o.lr, o.batch_size, o.grad_sum, balance=True)

    def embedding_rows(self, poisoned: PoisonedData) -> list[int]:
        return sorted(set(poisoned.poisoned_rows) | set(poisoned.augmented_rows))


def _check_triggers(triggers: list[str]) -> None:
    if len(triggers) < 2:
        raise ConfigError(f"SOS needs at least two trigger words that fire together, got {triggers}")
    if any(len(t.split()) != 1 for t in triggers):
        raise ConfigError(f"SOS trigger words must be single words without spaces, got {triggers}")
    if len({t.lower() for t in triggers}) != len(triggers):
        raise ConfigError(f"SOS trigger words must differ from each other, got {triggers}")


def _insert_words(text: str, words: list[str], gen: np.random.Generator) -> str:
    """Each word at its own random position."""
    for word in words:
        text = insert_at_random_word(text, word, gen)
    return text
