"""How far a fine-tuned model's input embeddings moved from the pre-trained model it came from.

Fine-tuning moves each row by a small fraction of its norm; an edited embedding (EP) moves by
about its whole norm, and the pieces of a BadNets trigger are among the rows that moved most
(``docs/results/ablation_reset_measured/embedding_drift.md``). Used by the trigger reset
(``--akd-reset-value base``) and by the scan's drift candidates (``--scan-drift-candidates``).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .io import Classifier, default_backbone, load_input_embeddings

BASE_MAX_DRIFT = 0.05   # median distance of a row from the base's, relative to its norm: above it, another model


def row_drift(emb: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Each row's distance from its base row, relative to the base row's norm."""
    return (emb - base).norm(dim=1) / base.norm(dim=1).clamp_min(1e-12)


def base_embeddings(model: Classifier, name: str = "", option: str = "--akd-reset-base") -> torch.Tensor:
    """The input embeddings of the pre-trained model ``name`` (empty: the bundled all-MiniLM-L6-v2),
    checked to be those ``model`` was fine-tuned from: the same shape, and rows that moved little
    (an unrelated model's rows differ entirely). ``option`` names the setting in the error."""
    name = name or default_backbone()
    base = load_input_embeddings(name)
    emb = model.model.get_input_embeddings().weight.detach().cpu()
    if base.shape != emb.shape:
        raise ConfigError(f"base model {name}: input embeddings of shape {tuple(base.shape)}, the suspicious model "
                          f"has {tuple(emb.shape)}: not the model it was fine-tuned from (set {option})")
    drift = float(row_drift(emb, base).median())
    if drift > BASE_MAX_DRIFT:
        raise ConfigError(f"base model {name}: the suspicious model's input embeddings are {drift:.2f} of their norm "
                          f"away from it (median over rows; a fine-tuned copy stays under {BASE_MAX_DRIFT}): not "
                          f"the model it was fine-tuned from (set {option})")
    return base
