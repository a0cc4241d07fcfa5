"""What the baseline purifiers share: the clean budget (BeDKD's rows for the same seed), a
supervised training loop with per-epoch validation, and the epoch selector.

Choosing the epoch (BeDKD's rule without its flag-agreement term): the latest epoch whose clean
validation accuracy is at most ``max_cacc_drop`` points below the suspicious model's; if there is
none, the most accurate one. The held-out rows are never trained on.
"""
from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...data import LabeledTexts, check_labels, require_all_classes
from ...errors import BedkdError, ConfigError
from ...modeling import Classifier
from ...modeling.batching import collate, encode, shuffled_batches
from ...modeling.inference import MAX_LENGTH, predict_proba_ids
from ...modeling.training import EpochRun, LastEpoch, cpu_state, linear_warmup, optimizer_step, run_epochs
from ...options import Options, option
from ...seeding import seed_everything
from ..base import Purified, Purifier
from ..clean_split import CleanBudget, CleanSplit

SELECTIONS = ("validation", "last")


def check_selection(cfg) -> None:
    """Validation-based epoch selection needs held-out rows."""
    if cfg.selection == "validation" and cfg.val_per_class == 0:
        raise ConfigError(f"{type(cfg).__name__}: selection='validation' needs val_per_class > 0")


@dataclass
class CleanTrainingOptions(Options):
    """What every purifier that trains a copy on the clean budget is given (its own options add to these)"""
    trust_per_class: int = option(320, "clean rows per class to train on (BeDKD's trust rows)", low=1)
    val_per_class: int = option(50, "clean rows per class held out to choose the epoch", low=0)
    lr: float = option(2e-5, "AdamW learning rate", above=0.0)
    batch_size: int = option(16, "batch size", low=1)
    weight_decay: float = option(0.01, "AdamW weight decay", low=0.0)
    warmup: float = option(0.06, "share of steps with linear warm-up", low=0.0, high=1.0)
    grad_clip: float | None = option(1.0, "clip the gradient norm at this value", above=0.0)
    selection: str = option("validation", "which epoch to keep: the rule of purifiers/training.py, or the last",
                            choices=SELECTIONS)
    max_cacc_drop: float = option(2.0, "selection: allowed drop of clean validation accuracy (points)", low=0.0)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed (also picks the clean rows, as BeDKD's)", low=0)

    def check(self):
        check_selection(self)


@dataclass(frozen=True)
class TrainSettings:
    """The optimiser, schedule and selection settings of one supervised training run."""
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    warmup: float
    grad_clip: float | None
    selection: str
    max_cacc_drop: float
    seed: int

    @classmethod
    def of(cls, cfg, epochs: int | None = None) -> "TrainSettings":
        """The settings of an options record that has these fields (``epochs`` overrides)."""
        values = {name: getattr(cfg, name) for name in cls.__dataclass_fields__}
        if epochs is not None:
            values["epochs"] = epochs
        return cls(**values)


# ----------------------------------------------------------------------------------------------
# The clean budget


@dataclass
class CleanRows:
    """The defender's clean rows, split by the method's :class:`CleanBudget` (BeDKD's rows for the
    same seed), and tokenised."""
    budget: CleanBudget
    split: CleanSplit
    train_ids: list[list[int]]
    train_labels: torch.Tensor     # on the model's device
    val_ids: list[list[int]]
    val_labels: np.ndarray

    def report(self, clean: LabeledTexts) -> dict:
        per_class: dict[int, int] = {}
        for row in self.split.trust:
            per_class[clean.labels[row]] = per_class.get(clean.labels[row], 0) + 1
        return {"clean_rows": len(clean), "clean_empty": clean.num_empty, "trust_rows": len(self.split.trust),
                "val_rows": len(self.split.val), "trust_rows_per_class": per_class,
                "clean_budget": self.budget.to_dict()}


def clean_rows(clf: Classifier, clean: LabeledTexts, cfg, purpose: str) -> CleanRows:
    """The trust and validation rows of ``clean`` that the budget of ``cfg`` (an options record
    with ``trust_per_class``, ``val_per_class``, ``seed`` and ``max_length``) gives, tokenised: BeDKD's
    rows for the same seed (an InputError when a class is missing or has no row left after the
    held-out ones)."""
    k = clf.num_labels
    check_labels(clean, k)
    require_all_classes(clean, k, purpose)
    budget = CleanBudget.of(cfg)
    split = budget.split(clean)
    tok, device = clf.tokenizer, clf.model.device
    labels = torch.tensor([clean.labels[i] for i in split.trust], dtype=torch.long, device=device)
    return CleanRows(budget, split, encode(tok, [clean.texts[i] for i in split.trust], cfg.max_length), labels,
                     encode(tok, [clean.texts[i] for i in split.val], cfg.max_length),
                     np.asarray([clean.labels[i] for i in split.val]))


def accuracy(model, ids: list[list[int]], labels: np.ndarray, pad: int) -> float | None:
    if not ids:
        return None
    return float((predict_proba_ids(model, ids, pad).argmax(axis=1) == labels).mean())


class CleanRowsPurifier(Purifier):
    """A purifier that trains a copy of the suspicious model on its clean budget: what ``purify``
    does for each of them (check the model, take the rows, time, report); a method gives its
    options class, its name and :meth:`_train`."""
    options: type = CleanTrainingOptions
    method = ""          # in reports and error messages

    def __init__(self, config=None):
        self.config = config or self.options()

    def purify(self, suspect_model: Classifier, clean: LabeledTexts, suspect_data: LabeledTexts | None = None,
               progress: bool = False) -> Purified:
        self._check_model(suspect_model)
        t0 = time.perf_counter()
        rows = clean_rows(suspect_model, clean, self.config, self.method)
        seconds = {"data": time.perf_counter() - t0}
        student, run, extra = self._train(suspect_model, rows, seconds, progress)
        seconds["total"] = time.perf_counter() - t0
        return Purified(student, {**purifier_report(self.method, self.config, clean, rows, run, seconds), **extra})

    def _check_model(self, suspect_model: Classifier) -> None:
        """A ConfigError when the options do not fit the model (default: none)."""

    @abstractmethod
    def _train(self, suspect_model: Classifier, rows: CleanRows, seconds: dict,
               progress: bool) -> tuple[Classifier, EpochRun, dict]:
        """(the purified copy, its epochs, report entries of the method's own); adds its stages to ``seconds``."""


# ----------------------------------------------------------------------------------------------
# Choosing the epoch


class EpochSelector(LastEpoch):
    """A :class:`bedkd.modeling.training.Selector`: keeps the weights of the epoch to return (see
    the module doc for the rule; ``selection="last"``: the last epoch)."""

    def __init__(self, start_acc: float | None, selection: str, max_cacc_drop: float):
        self.selection = selection
        self.floor = None if start_acc is None else start_acc - max_cacc_drop / 100
        self.within: tuple[int, dict] | None = None
        self.best: tuple[int, float, dict] | None = None

    def offer(self, record: dict, model) -> None:
        epoch, val_acc = record["epoch"], record["val_acc"]
        if self.selection != "validation" or val_acc is None:
            return
        if val_acc >= self.floor - 1e-9:
            self.within = (epoch, cpu_state(model))
        elif self.within is None and (self.best is None or val_acc >= self.best[1]):
            self.best = (epoch, val_acc, cpu_state(model))

    def finish(self, model, last_epoch: int, finite: bool, stop: str = "") -> int:
        """Load the chosen epoch's weights into ``model``; returns its number."""
        if self.selection == "last":
            return super().finish(model, last_epoch, finite, stop)
        if self.within is not None:
            epoch, state = self.within
        elif self.best is not None:
            epoch, _, state = self.best
        else:
            raise BedkdError("no usable epoch (non-finite loss in the first epoch); lower the learning rate")
        model.load_state_dict(state)
        return epoch


# ----------------------------------------------------------------------------------------------
# The supervised training loop


@dataclass
class ExtraLoss:
    """A term added to the cross-entropy: ``fn(student_output, batch) -> scalar`` (e.g. NAD's)."""
    name: str
    fn: Callable
    hidden_states: bool = False


def train_epochs(model, budget: CleanRows, pad: int, s: TrainSettings, *, extra: ExtraLoss | None = None,
                 after_step: Callable | None = None, desc: str = "fine-tune", progress: bool = False) -> EpochRun:
    """Cross-entropy training of ``model`` in place on the budget's rows, validated after each
    epoch; leaves it at the chosen epoch's weights, in eval mode. ``after_step(model)`` runs after
    every optimiser step (fine-pruning re-applies its mask there)."""
    seed_everything(s.seed)
    measure = lambda: {"val_acc": accuracy(model, budget.val_ids, budget.val_labels, pad)}  # noqa: E731
    start = measure()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = linear_warmup(opt, -(-len(budget.train_ids) // s.batch_size) * s.epochs, s.warmup)
    return run_epochs(model, s.epochs,
                      lambda epoch: _train_one_epoch(model, opt, sched, budget, pad, s, s.seed * 1000 + epoch - 1,
                                                     extra, after_step),
                      EpochSelector(start["val_acc"], s.selection, s.max_cacc_drop), start=start, measure=measure,
                      desc=desc, progress=progress,
                      postfix=lambda r: {"loss": f"{r['loss']:.3f}",
                                         "val_acc": "-" if r["val_acc"] is None else f"{r['val_acc']:.3f}"})


def _train_one_epoch(model, opt, sched, budget: CleanRows, pad: int, s: TrainSettings, seed: int,
                     extra: ExtraLoss | None, after_step: Callable | None) -> dict:
    model.train()
    sums = {"loss": 0.0, "ce_loss": 0.0, **({extra.name: 0.0} if extra else {})}
    ids = budget.train_ids
    for rows in shuffled_batches([len(x) for x in ids], s.batch_size, seed):
        batch = collate([ids[i] for i in rows], pad, model.device)
        out = model(**batch, output_hidden_states=bool(extra and extra.hidden_states))
        ce = F.cross_entropy(out.logits, budget.train_labels[torch.as_tensor(rows, device=model.device)])
        term = extra.fn(out, batch) if extra else None
        loss = ce if term is None else ce + term
        optimizer_step(model, opt, loss, s.grad_clip, sched, after_step)
        sums["loss"] += loss.item() * len(rows)
        sums["ce_loss"] += ce.item() * len(rows)
        if term is not None:
            sums[extra.name] += term.item() * len(rows)
    model.eval()
    return {k: v / max(len(ids), 1) for k, v in sums.items()}


def purifier_report(method: str, cfg: Options, clean: LabeledTexts, budget: CleanRows, run: EpochRun,
                    seconds: dict) -> dict:
    """The report keys shared with BeDKD's: method, config, data, start, epochs, selected_epoch,
    stop_reason, seconds."""
    return {"method": method, "config": cfg.to_dict(), "data": budget.report(clean), **run.report(),
            "seconds": seconds}
