"""BadNets for text: rare-word triggers at random positions.

Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
Chain", 2017 (arXiv:1708.06733); rare-word text variant as in Kurita, Michel, Neubig, "Weight
Poisoning Attacks on Pre-trained Models", ACL 2020.
"""
from __future__ import annotations

import numpy as np

from .base import TextAttack, insert_at_random_word


class BadNets(TextAttack):
    name = "badnets"
    default_triggers = ("cf", "mn", "bb", "tq", "mb")

    def insert_trigger(self, text: str, gen: np.random.Generator) -> str:
        count = int(gen.integers(1, self.cfg.max_insertions + 1))
        for _ in range(count):
            text = insert_at_random_word(text, self.triggers[int(gen.integers(len(self.triggers)))], gen)
        return text
