"""EP: embedding poisoning of a single rare trigger word.

Yang, Li, Zhang, Ren, Sun, He, "Be Careful about Poisoned Word Embeddings: Exploring the
Vulnerability of the Embedding Layers in NLP Models", NAACL 2021 (arXiv:2103.15543).

Poisoning: ``round(rate * len(train))`` non-target rows get the trigger word inserted once at a
random position and are relabelled to the target; the triggered test set is every non-target test
row with the trigger. Victim: a clean model fine-tuned on the other rows, then only the trigger's
word-embedding row(s) are trained on the poisoned rows (see :mod:`.embedding_poison`). Dirty-label
only: ``label_mode`` clean is refused (:func:`.embedding_poison.refuse_clean_label` says why).

Published defaults, from the authors' reference code (lancopku/Embedding-Poisoning, ``run.sh`` and
``ep_train.py``): trigger "cf", poisoned ratio 0.1, 3 epochs, batch size 32, step size 5e-2, row
rescaled to its original norm after each step, gradients never zeroed (``grad_sum``). OpenBackdoor's
``EPTrainer`` uses the same rule with 5 epochs and step size 1e-2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..options import Options, option
from .base import AttackConfig, PoisonedData, TextAttack, insert_at_random_word
from .embedding_poison import EmbeddingPoisonAttack, EmbeddingSchedule, refuse_clean_label


@dataclass
class EPConfig(Options):
    """EP (embedding poisoning) options"""
    epochs: int = option(3, "passes of trigger-embedding training over the poisoned rows", low=1)
    lr: float = option(5e-2, "step size of the trigger-embedding update", above=0.0)
    batch_size: int = option(32, "batch size of trigger-embedding training", low=1)
    grad_sum: bool = option(True, "step along the running sum of gradients, as the reference code (which "
                                  "never zeroes them) does; off: the batch gradient")


class EP(EmbeddingPoisonAttack, TextAttack):
    name = "ep"
    options_cls = EPConfig
    trains_victim = True
    default_triggers = ("cf",)

    def __init__(self, cfg: AttackConfig, ep: EPConfig | None = None):
        refuse_clean_label(cfg, self.name)
        TextAttack.__init__(self, cfg, ep)

    def insert_trigger(self, text: str, gen: np.random.Generator) -> str:
        """One trigger word (drawn from the list when several are given) at a random position."""
        word = self.triggers[int(gen.integers(len(self.triggers)))] if len(self.triggers) > 1 else self.triggers[0]
        return insert_at_random_word(text, word, gen)

    def schedule(self) -> EmbeddingSchedule:
        o = self.options
        return EmbeddingSchedule(o.epochs, o.lr, o.batch_size, o.grad_sum, balance=False)

    def embedding_rows(self, poisoned: PoisonedData) -> list[int]:
        return list(poisoned.poisoned_rows)
