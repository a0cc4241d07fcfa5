"""AddSent: a fixed sentence inserted at a random position.

Dai, Chen, Li, "A Backdoor Attack Against LSTM-based Text Classification Systems", IEEE Access
2019 (arXiv:1905.12457).
"""
from __future__ import annotations

import numpy as np

from .base import TextAttack, insert_at_random_word


class AddSent(TextAttack):
    name = "addsent"
    default_triggers = ("I watch this 3D movie",)

    def insert_trigger(self, text: str, gen: np.random.Generator) -> str:
        sentence = self.triggers[int(gen.integers(len(self.triggers)))]
        return insert_at_random_word(text, sentence, gen)
