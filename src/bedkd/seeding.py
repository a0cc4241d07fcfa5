"""The one seed helper: every run that draws random numbers calls this first."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng(seed: int) -> np.random.Generator:
    """A private generator, so sampling does not depend on global state."""
    return np.random.default_rng(seed)
