"""Knowledge distillation without punishment: BeDKD's trust step alone (an ablation baseline).

BeDKD (Wu et al., AAAI 2026, arXiv:2508.01595) alternates *trust* distillation on clean rows with
*punish* distillation on the rows its DMM detector flagged. This purifier runs only the trust
step: a copy of the suspicious model is distilled from the frozen suspicious model on the same
clean trust rows (``clean_split.CleanBudget``, same seed), with BeDKD's loss (``distillation.distill_loss``:
``0.3·CE + 0.7·(KL + hidden-state MSE)``, KL times T² unless ``kl_t2`` is off), optimiser (Adam) and settings (temperature 2.5,
lr 3e-5, batch 16, gradient norm clipped at 1, at most 10 epochs; ``KDConfig.matching`` copies
them from an ``AKDConfig``). The epoch is chosen on the held-out clean rows by BeDKD's rule
without its flag-agreement term (see ``finetuning``). Comparing it with BeDKD isolates what
detection and punishment add.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ...modeling.inference import MAX_LENGTH
from ...modeling.training import EpochRun, run_epochs
from ...options import Options, option
from ...seeding import seed_everything
from ..distillation import LossForm, distill_epoch, teacher_targets
from .akd import AKDConfig
from .training import SELECTIONS, CleanRowsPurifier, EpochSelector, accuracy, check_selection


@dataclass
class KDConfig(Options):
    """Knowledge-distillation purifier options"""
    trust_per_class: int = option(320, "clean rows per class to distil on (BeDKD's trust rows)", low=1)
    val_per_class: int = option(50, "clean rows per class held out to choose the epoch", low=0)
    temperature: float = option(2.5, "distillation temperature", above=0.0)
    epochs: int = option(10, "passes over the clean rows (BeDKD's cycles)", low=1)
    lr: float = option(3e-5, "Adam learning rate", above=0.0)
    batch_size: int = option(16, "batch size", low=1)
    ce_weight: float = option(0.3, "weight of the CE term; distillation terms get 1 - this", low=0.0, high=1.0)
    grad_clip: float | None = option(1.0, "clip the gradient norm at this value", above=0.0)
    kl_t2: bool = option(True, "multiply the KL term by T^2 (the authors do not); the MSE is over real tokens")
    selection: str = option("validation", "which epoch to keep: see the module doc, or the last", choices=SELECTIONS)
    max_cacc_drop: float = option(2.0, "selection: allowed drop of clean validation accuracy (points)", low=0.0)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed (also picks the clean rows, as BeDKD's)", low=0)

    def check(self):
        check_selection(self)

    @classmethod
    def matching(cls, akd: AKDConfig) -> "KDConfig":
        """The trust step of a BeDKD run with ``akd``: same rows, loss, optimiser settings and epochs."""
        shared = {name: getattr(akd, name) for name in cls.__dataclass_fields__ if hasattr(akd, name)}
        if shared.get("selection") == "guarded":      # KD has no backdoor proxy: the accuracy rule alone
            shared["selection"] = "validation"
        shared["val_per_class"] = max(shared.get("val_per_class", 0), 1) if shared["selection"] != "last" \
            else shared.get("val_per_class", 0)
        return cls.from_dict(shared)


class KnowledgeDistillation(CleanRowsPurifier):
    """Distil a copy of the suspicious model from itself on clean rows (the input is never modified)."""
    name, method, options = "kd", "KD", KDConfig

    def _train(self, suspect_model, rows, seconds, progress):
        t0 = time.perf_counter()
        pad = suspect_model.tokenizer.pad_token_id
        trust = teacher_targets(suspect_model.model, rows.train_ids, rows.train_labels.tolist(), pad)
        seconds["teacher_outputs"] = time.perf_counter() - t0
        student = suspect_model.copy()
        run = _distil(student.model, trust, rows, pad, self.config, progress)
        seconds["kd"] = run.seconds
        return student, run, {}


def _distil(model, trust, budget, pad: int, cfg: KDConfig, progress: bool) -> EpochRun:
    """Trust-only distillation epochs, seeded as BeDKD's; leaves ``model`` at the chosen epoch."""
    seed_everything(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    measure = lambda: {"val_acc": accuracy(model, budget.val_ids, budget.val_labels, pad)}  # noqa: E731
    start = measure()
    form = LossForm(cfg.temperature, cfg.ce_weight, cfg.kl_t2, mse_padding=False)
    return run_epochs(model, cfg.epochs,
                      lambda epoch: {"trust_loss": distill_epoch(model, opt, trust, pad, form, batch_size=cfg.batch_size,
                                                                 seed=cfg.seed * 1000 + epoch - 1,
                                                                 grad_clip=cfg.grad_clip)},
                      EpochSelector(start["val_acc"], cfg.selection, cfg.max_cacc_drop), start=start, measure=measure,
                      desc="KD: trust", progress=progress, postfix=lambda r: {"loss": f"{r['trust_loss']:.3f}"})
