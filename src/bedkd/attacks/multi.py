"""Multi: two backdoors in one model, each with its own trigger and its own target.

The first backdoor is built by ``first`` (BadNets or AddSent) from the shared ``AttackConfig``
(rate, target, triggers, label mode); the second by ``second`` with its own target, rate and
triggers, or, when ``second`` is SynBkd or StyleBkd, with its own target, rate and style (a word
trigger beside a paraphrase trigger of another label; the paraphrases come from the data pack, so
the dataset must be one of its own). The two draw disjoint training rows (the second never
touches a row of the first), so every poisoned row carries exactly one trigger. The result keeps the
first backdoor in ``test_poison`` / ``target`` (what single-backdoor code reads) and lists the
second in ``extra_backdoors``; ``poisoned_rows`` holds the rows of both.

Several backdoors with one trigger per target are the "N-to-N" attack of Xue et al.,
"Imperceptible and Multi-channel Backdoor Attack against Deep Neural Networks", 2022
(arXiv:2201.13164), following their multi-target / multi-trigger attacks (Xue, He, Wang, Liu,
"One-to-N & N-to-One: Two Advanced Backdoor Attacks Against Deep Learning Models", IEEE TDSC
2022), both for images. Here each backdoor is a text attack of this package as published; the
additions are the disjoint rows and the second backdoor's random draws, which use ``seed + 1``.
Only the first backdoor's test set is written by ``bedkd attack`` and evaluated by ``bedkd bench``;
read :attr:`PoisonedData.backdoors` for both. ``keep_rows`` of the bench renumbers
``poisoned_rows`` but not the rows inside ``extra_backdoors``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data import LabeledTexts
from ..datasets import dataset_info
from ..errors import ConfigError
from ..options import Options, option
from .addsent import AddSent
from .badnets import BadNets
from .base import AttackConfig, Backdoor, BackdoorAttack, PoisonedData, TextAttack
from .paraphrase import ParaphraseAttack
from .stylebkd import StyleBkd
from .synbkd import SynBkd

COMPONENTS: dict[str, type[TextAttack]] = {cls.name: cls for cls in (BadNets, AddSent)}
PARAPHRASES: dict[str, type[ParaphraseAttack]] = {cls.name: cls for cls in (SynBkd, StyleBkd)}


@dataclass
class MultiConfig(Options):
    """multi (two backdoors) options"""
    first: str = option("badnets", "attack of the first backdoor (rate, target, triggers of the attack options)",
                        choices=tuple(COMPONENTS))
    second: str = option("addsent", "attack of the second backdoor (synbkd, stylebkd: a paraphrase trigger, read "
                                    "from the data pack)", choices=tuple(COMPONENTS) + tuple(PARAPHRASES))
    second_target: int | None = option(None, "label the second trigger should produce; none: (target + 1) mod "
                                             "the number of classes", low=0)
    second_rate: float | None = option(None, "share of the training set the second backdoor poisons; none: "
                                             "the attack's rate", above=0.0, high=1.0)
    second_triggers: list[str] = option([], "the second backdoor's triggers, as --attack-trigger's (default: its "
                                            "attack's own)", flag="second-trigger")
    second_style: str | None = option(None, "with second stylebkd: its style folder of the data pack (default: "
                                            "bible)", added=True)

    def check(self):
        if any(not t.strip() for t in self.second_triggers):
            raise ConfigError("MultiConfig.second_triggers must not contain empty strings")
        if self.second in PARAPHRASES and self.second_triggers:
            raise ConfigError(f"MultiConfig: second {self.second} has no trigger words (the paraphrase is the "
                              "trigger); drop second_triggers")
        if self.second_style is not None and self.second != StyleBkd.name:
            raise ConfigError(f"MultiConfig: second_style is for second {StyleBkd.name}, not {self.second}")


class Multi(BackdoorAttack):
    name = "multi"
    options_cls = MultiConfig

    def __init__(self, cfg: AttackConfig, options: MultiConfig | None = None, dataset: str | None = None,
                 data_dir=None):
        """``dataset`` and ``data_dir``: where a paraphrase second backdoor reads its paraphrases."""
        super().__init__(cfg, options)
        self.first = COMPONENTS[self.options.first](cfg)
        self.dataset, self.data_dir = dataset, data_dir
        if self.options.second in PARAPHRASES:
            if dataset is None:
                raise ConfigError(f"multi: second {self.options.second} reads the data pack's paraphrases: name "
                                  "the dataset (sst2, olid, agnews)")
            self.second_attack(self._pack_classes())   # its checks, at construction
            return
        words = {w.lower() for t in self.first.triggers for w in t.split()}
        second_default = list(COMPONENTS[self.options.second].default_triggers)
        clash = words & {w.lower() for t in (self.options.second_triggers or second_default) for w in t.split()}
        if clash:
            raise ConfigError(f"multi: the two backdoors share trigger word(s) {', '.join(sorted(clash))}; a shared "
                              "word would point to two targets (give the second backdoor other second_triggers)")

    def second_attack(self, num_classes: int) -> BackdoorAttack:
        """The second backdoor's attack, its target resolved against ``num_classes``."""
        o = self.options
        target = (self.cfg.target + 1) % num_classes if o.second_target is None else o.second_target
        if target >= num_classes:
            raise ConfigError(f"multi: second_target {target} is not a class of the data (0..{num_classes - 1})")
        cfg = self.cfg.replace(target=target, rate=o.second_rate if o.second_rate is not None else self.cfg.rate,
                               triggers=list(o.second_triggers), seed=self.cfg.seed + 1)
        if o.second in PARAPHRASES:
            from . import make_attack
            return make_attack(o.second, cfg.replace(style=o.second_style), self.dataset, self.data_dir)
        return COMPONENTS[o.second](cfg)

    def _pack_classes(self) -> int:
        return dataset_info(self.dataset, self.data_dir).num_labels or 2

    def files_read(self) -> dict[str, str]:
        """A paraphrase second backdoor's files (``second_train``, ``second_test``)."""
        if self.options.second not in PARAPHRASES:
            return {}
        return {f"second_{role}": path for role, path in self.second_attack(self._pack_classes()).files_read().items()}

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        num_classes = max(2, max(train.labels) + 1, max(test.labels) + 1)
        if self.cfg.target >= num_classes:
            raise ConfigError(f"multi: target {self.cfg.target} is not a class of the data (0..{num_classes - 1})")
        one = self.first.poison(train, test)
        second = self.second_attack(num_classes)
        two = second.poison_excluding(train, test, set(one.poisoned_rows))
        texts, labels = list(one.train.texts), list(one.train.labels)
        for i in two.poisoned_rows:
            texts[i], labels[i] = two.train.texts[i], two.train.labels[i]
        extra = Backdoor(second.name, two.test_poison, two.target, list(two.poisoned_rows))
        return PoisonedData(train=LabeledTexts(texts, labels, train.source, list(train.lines)),
                            test_poison=one.test_poison, poisoned_rows=sorted(one.poisoned_rows + two.poisoned_rows),
                            target=one.target, extra_backdoors=[extra], name=self.first.name)
