"""Decoy: an adaptive attack on DMM, BeDKD's detector, that fills its flag budget with harmless rows.

Threat model. The attacker poisons training data only (the victim is trained by plain
fine-tuning, as for BadNets) and knows BeDKD and its defaults: DMM copies the victim, distils it
for 20 epochs on about 80 clean rows per class with labels flipped ``y -> (y + 1) mod K``, scans
the training rows in a random order, flags a row when the mean |p_teacher - p_student| is below
0.1, stops after 128 flagged rows and punishes at most 33 flagged rows the teacher predicts as
their label (the lowest-scoring first), then AKD distils the victim on clean rows while pushing it
away from those rows. The attacker does not know the defender's clean rows or seed, so it cannot
predict which rows are scanned first.

What DMM relies on: the flipped distillation moves the model wherever the defender's clean rows
reach, so rows whose prediction rests on ordinary content change and rows whose prediction rests
on something else (a trigger) do not. Nothing in the clean rows reaches a pattern that never
occurs in natural text either. The attack exploits that and the fixed budgets:

* the backdoor is BadNets (rare-word triggers, dirty-label by default) at a low rate;
* ``DecoyConfig.rate`` of the training rows are replaced by decoy rows: ``length`` words drawn
  from a small vocabulary of its own per class (neutral nouns that occur nowhere in the data),
  labelled with that class. A decoy row has no content for the flip to move, so the student
  keeps the teacher's prediction and DMM flags it; the teacher predicts its label, so it is
  eligible for punishment.

In DMM's random scan, decoys and poisoned rows are met in proportion to their numbers, so when both
are flagged the expected share of poisoned rows among the 128 flagged rows is about
``rate / (rate + decoy rate)`` (1 % against 10 %: about 9 %), and when decoys score as low as
poisoned rows the 33 kept rows are mostly decoys. Punishing decoys tells AKD nothing about the
trigger, which is then left to AKD's trust distillation (``kd``, BeDKD's trust step alone, keeps
most of a BadNets / AddSent ASR in docs/results/bench_baselines). The decoys carry no backdoor
of the attacker's: their labels match the words they carry, which occur in no natural input (they
may act as shortcuts to their own class on inputs that contain them), so ``poisoned_rows`` lists
only the backdoor's rows and the decoys are reported in ``augmented_rows``. A human reading the
training set, or a filter of gibberish rows, would see the decoys; the attack targets DMM.

Measured once (MiniLM, the bench's 1500 SST-2 training rows and 500 test rows, seed 0, ``--rate
0.1 --decoy-rate 0.3``, so the same 150 BadNets rows as the bench's BadNets victim): victim CACC
82.0 / ASR 95.7 (plain BadNets in docs/results/bench_cpu: 85.8 / 89.3). DMM (fast preset)
scanned 293 rows and flagged 128: 89 decoys (every decoy it met), 23 poisoned, 16 clean rows, a
precision of 18 % (plain BadNets there: 56 %, an earlier code version); decoys and poisoned rows
scored alike (median 0.032), so the 33 kept rows were 21 decoys, 10 poisoned and 2 clean. Whether
AKD then removes the backdoor was not measured.

This is a new attack for this project, in the spirit of adaptive evaluations of backdoor defenses
(Qi et al., "Revisiting the Assumption of Latent Separability for Backdoor Defenses", ICLR 2023)
and of budget-exhaustion arguments against detectors with a fixed flag budget; it follows no
published reference implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data import LabeledTexts
from ..errors import ConfigError
from ..options import Options, option
from ..seeding import rng
from .badnets import BadNets
from .base import AttackConfig, PoisonedData, poison_count

# Sentiment- and topic-neutral nouns; those that occur in the data are skipped. 17 of them are
# several word pieces for MiniLM's tokenizer, which does not matter: a decoy only has to be unlike
# natural text. (Changing the pool changes the decoys a seed draws, and so the measurement above.)
DECOY_POOL = ("granite", "walnut", "lantern", "meadow", "saddle", "copper", "harbor", "violet", "pebble", "willow",
              "anchor", "barrel", "cedar", "thimble", "ladle", "quartz", "marble", "kettle", "ribbon", "acorn",
              "chisel", "gravel", "tulip", "canvas", "parsley", "walrus", "pewter", "trellis", "nutmeg", "bramble",
              "plank", "satchel", "hazel", "spindle", "lagoon", "cobble", "juniper", "mortar", "bobbin", "fennel")
SALT = 7919     # decoy draws use their own generator, seeded from the attack's seed + this


@dataclass
class DecoyConfig(Options):
    """decoy (adaptive attack on DMM) options"""
    rate: float = option(0.1, "share of the training set replaced by decoy rows (label kept)", low=0.0, high=1.0)
    length: int = option(8, "words per decoy row", low=1)
    words_per_class: int = option(3, "decoy vocabulary size of each class", low=1)
    words: list[str] = option([], "decoy words, dealt to the classes in turn (default: neutral nouns that occur "
                                  "nowhere in the data)")

    def check(self):
        if any(len(w.split()) != 1 for w in self.words):
            raise ConfigError(f"DecoyConfig.words must be single words without spaces, got {self.words}")
        if len({w.lower() for w in self.words}) != len(self.words):
            raise ConfigError(f"DecoyConfig.words must differ from each other, got {self.words}")


class Decoy(BadNets):
    """BadNets at a low rate plus decoy rows that exhaust DMM's flag budget (see the module doc)."""
    name = "decoy"
    options_cls = DecoyConfig

    def __init__(self, cfg: AttackConfig, options: DecoyConfig | None = None):
        super().__init__(cfg, options)
        trigger_words = {w.lower() for t in self.triggers for w in t.split()}
        clash = trigger_words & {w.lower() for w in self.options.words}
        if clash:
            raise ConfigError(f"decoy: decoy word(s) {', '.join(sorted(clash))} are also trigger words")

    def vocabulary(self, classes: list[int], *datasets: LabeledTexts) -> dict[int, list[str]]:
        """Class -> its decoy words (``words`` dealt in turn, or pool words absent from ``datasets``)."""
        o = self.options
        if o.words:
            if len(o.words) < len(classes):
                raise ConfigError(f"decoy: {len(o.words)} decoy words for {len(classes)} classes; give at least one "
                                  "per class")
            return {c: [w for j, w in enumerate(o.words) if j % len(classes) == k] for k, c in enumerate(classes)}
        seen = {w.lower() for data in datasets for t in data.texts for w in t.split()}
        seen |= {w.lower() for t in self.triggers for w in t.split()}
        free = [w for w in DECOY_POOL if w not in seen]
        need = o.words_per_class * len(classes)
        if need > len(free):
            raise ConfigError(f"decoy: {need} decoy words needed ({o.words_per_class} per class) but only "
                              f"{len(free)} of the built-in pool are absent from the data; lower words_per_class "
                              "or give words")
        order = rng(self.cfg.seed + SALT).permutation(len(free))
        picked = [free[int(i)] for i in order[:need]]
        return {c: picked[k * o.words_per_class:(k + 1) * o.words_per_class] for k, c in enumerate(classes)}

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        backdoor = super().poison(train, test)
        o = self.options
        n_decoys = poison_count(o.rate, len(train))
        if n_decoys == 0:
            return backdoor
        gen = rng(self.cfg.seed + SALT)
        vocab = self.vocabulary(sorted(set(train.labels)), train, test)
        used = set(backdoor.poisoned_rows)
        free = [i for i in range(len(train)) if i not in used]
        if n_decoys > len(free):
            raise ConfigError(f"decoy: decoy rate {o.rate} asks for {n_decoys} decoy rows but only {len(free)} "
                              f"rows of {train.source} are not poisoned")
        decoys = sorted(int(i) for i in gen.choice(free, size=n_decoys, replace=False))
        texts = list(backdoor.train.texts)
        for i in decoys:
            words = vocab[train.labels[i]]
            texts[i] = " ".join(words[int(j)] for j in gen.integers(0, len(words), size=o.length))
        return PoisonedData(train=LabeledTexts(texts, list(backdoor.train.labels), train.source, list(train.lines)),
                            test_poison=backdoor.test_poison, poisoned_rows=backdoor.poisoned_rows,
                            target=backdoor.target, augmented_rows=decoys, name=self.name)

    @staticmethod
    def expected_flagged_share(rate: float, decoy_rate: float) -> float:
        """Share of poisoned rows among DMM's flagged rows when every decoy and poisoned row is flagged
        and nothing else is (an upper bound when clean rows are flagged too)."""
        return rate / (rate + decoy_rate) if rate + decoy_rate > 0 else 0.0
