"""BeDKD purification: DMM detection, then adversarial knowledge distillation (AKD).

Wu et al., "BeDKD: Backdoor Defense based on Dynamic Knowledge Distillation and Directional
Mapping Modulator", AAAI 2026 (arXiv:2508.01595).

A copy of the suspicious model (the student) is trained in cycles: *trust* distillation from the
frozen suspicious model on clean rows, then *punish* distillation on the rows DMM flagged and kept,
with the same loss negated.

Guard against divergence. The negated loss has no lower bound (CE and the hidden-state MSE grow
without limit as the student moves away), so an unguarded run can wreck the model. Three guards,
all options: (1) ``punish_cap`` clamps each punished sample's loss, so a sample stops pushing once
it is that far from the teacher, and the punish loss is bounded by the cap; (2) ``grad_clip``
bounds every update; (3) after each epoch the clean validation accuracy is checked, and the run
stops once it has been more than ``abort_cacc_drop`` points below the suspicious model's for two
epochs in a row (such epochs are never kept), or on a non-finite loss. The model kept is the best validated epoch, so an abort never returns a broken one.

Choosing the epoch never looks at a test set: it uses held-out clean rows (accuracy) and flagged
rows not used for punishment (share still predicted as their poisoned label, the "flag agreement").
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ...data import LabeledTexts, check_labels, require_all_classes
from ...errors import BedkdError, ConfigError
from ...modeling import Classifier
from ...modeling.batching import encode
from ...modeling.inference import MAX_LENGTH, predict_proba_ids
from ...options import Options, option
from ...seeding import seed_everything
from ..base import Purified, Purifier
from ..clean_split import LAYOUTS, ORDERS, CleanSplit, split_clean
from ..distillation import BATCH_ORDERS, LossForm, check_loss_options, distill_epoch, fixed_batches, teacher_targets
from ..data_filters.dmm import Detection, DMMConfig, DMMDetector


@dataclass
class AKDConfig(Options):
    """AKD purification options"""
    trust_per_class: int = option(320, "clean rows per class for trust distillation", low=1)
    val_per_class: int = option(50, "clean rows per class held out to choose the epoch", low=0)
    temperature: float = option(2.5, "distillation temperature", above=0.0)
    epochs: int = option(10, "maximum trust/punish cycles", low=1)
    lr: float = option(3e-5, "Adam learning rate", above=0.0)
    batch_size: int = option(16, "batch size", low=1)
    ce_weight: float = option(0.3, "weight of the CE term; distillation terms get 1 - this", low=0.0, high=1.0)
    punish_passes: int = option(3, "passes over the punished rows per cycle (the authors: 1)", low=1)
    punish_cap: float | None = option(10.0, "clamp each punished sample's loss at this value", above=0.0)
    grad_clip: float | None = option(1.0, "clip the gradient norm at this value", above=0.0)
    selection: str = option("validation", "which epoch to keep: best on validation, or the last",
                            choices=("validation", "last"))
    max_cacc_drop: float = option(2.0, "selection: allowed drop of clean validation accuracy (points)", low=0.0)
    abort_cacc_drop: float = option(15.0, "stop when clean validation accuracy drops this many points", above=0.0)
    patience: int | None = option(3, "stop after this many epochs without a better validated epoch", low=1)
    clean_layout: str = option("nested", "trust rows: the first rows of each class, DMM's included, or the rows "
                               "after DMM's (the authors' separate slices)", choices=LAYOUTS)
    clean_order: str = option("shuffled", "order in which each class's clean rows are taken: seeded random, or "
                              "file order (the authors')", choices=ORDERS)
    batch_order: str = option("reshuffle", "distillation batches: re-drawn each epoch (by length), or drawn once "
                              "and kept (the authors')", choices=BATCH_ORDERS)
    kl_t2: bool = option(True, "multiply the KL term by T^2 (the authors do not)")
    mse_padding: bool = option(False, "hidden-state MSE over the padded tensor, padding included (the authors'); "
                               "needs batch_order fixed")
    max_length: int = option(MAX_LENGTH, "tokens kept per text (the authors: 512)", low=8)
    seed: int = option(0, "random seed", low=0)

    def check(self):
        if self.selection == "validation" and self.val_per_class == 0:
            raise ConfigError("AKDConfig: selection='validation' needs val_per_class > 0")
        check_loss_options(self)


# The authors' released code (BeDKD/models/bedkd.py): disjoint file-order clean slices (80 + 320 per
# class, no held-out rows), the suspicious set scanned in file order, the first 33 eligible flagged
# rows punished, batches drawn once, their loss (no T^2, padded MSE), 512 tokens, 50 cycles with
# one punish pass, no guards, the last epoch kept.
_AUTHORS_LOSS = dict(batch_order="fixed", kl_t2=False, mse_padding=True, max_length=512)
PRESETS = {
    # This project's earlier default, kept as it was measured (docs/results/bench_cpu).
    "fast": (DMMConfig(), AKDConfig()),
    "reference": (DMMConfig(keep_order="scan", scan_order="file", **_AUTHORS_LOSS),
                  AKDConfig(epochs=50, punish_passes=1, punish_cap=None, grad_clip=None, selection="last",
                            patience=None, abort_cacc_drop=100.0, val_per_class=0, clean_layout="disjoint",
                            clean_order="file", **_AUTHORS_LOSS)),
}


@dataclass
class PurifyResult(Purified):
    """The purified classifier, its report, and the DMM detection it punished."""
    detection: Detection | None = None


class BeDKD(Purifier):
    """Purifier: suspicious model in, purified model out (the input is never modified)."""
    name = "bedkd"

    def __init__(self, dmm: DMMConfig | None = None, akd: AKDConfig | None = None):
        self.dmm = dmm or DMMConfig()
        self.akd = akd or AKDConfig()

    def split(self, clean: LabeledTexts) -> CleanSplit:
        """The clean pool's rows for DMM, trust and validation (the same for ``detect`` and ``purify``)."""
        cfg = self.akd
        return split_clean(clean, self.dmm.flip_per_class, cfg.trust_per_class, cfg.val_per_class, cfg.seed,
                           cfg.clean_layout, cfg.clean_order)

    def detect(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts,
               progress: bool = True) -> Detection:
        """DMM alone, on the rows ``purify`` would give it."""
        require_all_classes(clean, teacher.num_labels, "BeDKD")
        return DMMDetector(self.dmm).detect(teacher, clean, suspect, self.split(clean).flip, progress)

    def purify(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts,
               detection: Detection | None = None, poisoned_rows=None, progress: bool = True) -> PurifyResult:
        k, cfg = teacher.num_labels, self.akd
        check_labels(clean, k)
        check_labels(suspect, k)
        require_all_classes(clean, k, "BeDKD")
        t0 = time.perf_counter()
        split = self.split(clean)
        if detection is None:
            detection = DMMDetector(self.dmm).detect(teacher, clean, suspect, split.flip, progress)
        seconds = dict(detection.seconds)

        t1 = time.perf_counter()
        pad = teacher.tokenizer.pad_token_id
        tok = teacher.tokenizer
        fixed = cfg.batch_order == "fixed"
        trust = teacher_targets(teacher.model, encode(tok, [clean.texts[i] for i in split.trust], cfg.max_length),
                                [clean.labels[i] for i in split.trust], pad,
                                batches=fixed_batches(len(split.trust), cfg.batch_size, cfg.seed) if fixed else None)
        kept = detection.kept_rows
        punish = teacher_targets(teacher.model, encode(tok, [suspect.texts[i] for i in kept], cfg.max_length),
                                 [suspect.labels[i] for i in kept], pad,
                                 batches=fixed_batches(len(kept), cfg.batch_size, cfg.seed, shuffle=False)
                                 if fixed else None) if kept else None
        val_ids = encode(tok, [clean.texts[i] for i in split.val], cfg.max_length)
        val_labels = np.asarray([clean.labels[i] for i in split.val])
        probe_rows = detection.holdout_rows or kept
        probe_ids = encode(tok, [suspect.texts[i] for i in probe_rows], cfg.max_length)
        probe_labels = np.asarray([suspect.labels[i] for i in probe_rows])
        seconds["teacher_outputs"] = time.perf_counter() - t1

        def validate(model) -> dict:
            acc = _accuracy(model, val_ids, val_labels, pad)
            agree = _accuracy(model, probe_ids, probe_labels, pad)
            return {"val_acc": acc, "flag_agreement": agree}

        t2 = time.perf_counter()
        student = teacher.copy()
        run = _adversarial_cycles(student.model, trust, punish, pad, validate, cfg, progress)
        chosen, epochs, start, stop = run.chosen, run.epochs, run.start, run.stop_reason
        seconds["akd"] = time.perf_counter() - t2
        seconds["total"] = time.perf_counter() - t0
        report = {
            "method": "BeDKD",
            "config": {"dmm": self.dmm.to_dict(), "akd": cfg.to_dict()},
            "data": {"clean_rows": len(clean), "clean_empty": clean.num_empty, "suspect_rows": len(suspect),
                     "suspect_empty": suspect.num_empty, "flip_rows": len(split.flip),
                     "trust_rows": len(split.trust), "val_rows": len(split.val), "punish_rows": len(kept),
                     "flag_probe_rows": len(probe_rows),
                     "flag_probe": "held-out flagged rows" if detection.holdout_rows else "punished rows",
                     "clean_split": {"flip": split.flip, "trust": split.trust, "val": split.val}},
            "detection": detection.metrics(poisoned_rows),
            "start": start,
            "epochs": epochs,
            "selected_epoch": chosen,
            "stop_reason": stop,
            "seconds": seconds,
        }
        if not kept:
            report["warning"] = "DMM kept no rows: nothing was punished (the model may be clean)"
        return PurifyResult(student, report, detection)


ABORT_AFTER = 2   # consecutive collapsed epochs that end an AKD run


@dataclass
class _CycleRun:
    chosen: int
    epochs: list[dict]
    start: dict
    stop_reason: str


def _adversarial_cycles(model, trust, punish, pad: int, validate, cfg: AKDConfig, progress: bool) -> _CycleRun:
    """Trust/punish cycles on ``model`` in place; leaves it at the chosen epoch's weights."""
    seed_everything(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    common = dict(form=LossForm.of(cfg), batch_size=cfg.batch_size, grad_clip=cfg.grad_clip)
    start = validate(model)
    epochs, best, best_key, since_best, low_streak, stop = [], None, None, 0, 0, "completed all epochs"
    bar = tqdm(range(1, cfg.epochs + 1), desc="AKD: trust/punish", disable=not progress, unit="epoch")
    for epoch in bar:
        seed = cfg.seed * 1000 + epoch - 1
        trust_loss = distill_epoch(model, opt, trust, pad, seed=seed, **common)
        punish_loss = None
        for p in range(cfg.punish_passes if punish is not None else 0):
            punish_loss = distill_epoch(model, opt, punish, pad, seed=seed * 10 + p, sign=-1.0,
                                        cap=cfg.punish_cap, **common)
        record = {"epoch": epoch, "trust_loss": trust_loss, "punish_loss": punish_loss, **validate(model)}
        epochs.append(record)
        bar.set_postfix(val_acc=_fmt(record["val_acc"]), flag_agree=_fmt(record["flag_agreement"]))
        # Divergence guard: a collapsed epoch is never a candidate; two in a row end the run (the
        # first cycle often dips and recovers, as punishment starts before trust has caught up).
        if not all(math.isfinite(x) for x in (trust_loss, punish_loss or 0.0)):
            stop = f"non-finite loss at epoch {epoch}"
            break
        collapsed = start["val_acc"] is not None and record["val_acc"] is not None and \
            record["val_acc"] < start["val_acc"] - cfg.abort_cacc_drop / 100
        low_streak = low_streak + 1 if collapsed else 0
        if low_streak >= ABORT_AFTER:
            stop = (f"clean validation accuracy was more than {cfg.abort_cacc_drop} points below the start "
                    f"for {ABORT_AFTER} epochs (epoch {epoch})")
            break
        key = _selection_key(record, start, cfg)
        if not collapsed and (best_key is None or key > best_key):
            best_key, best, since_best = key, (epoch, copy.deepcopy(model.state_dict())), 0
        else:
            since_best += 1
        if cfg.patience is not None and since_best >= cfg.patience:
            stop = f"no better validated epoch for {cfg.patience} epochs"
            break
    bar.close()
    if cfg.selection == "last" and stop == "completed all epochs":
        chosen = len(epochs)
    elif best is None:
        raise BedkdError(f"AKD found no usable epoch ({stop}); lower --akd-lr or set --akd-punish-cap")
    else:
        chosen, state = best
        model.load_state_dict(state)
    model.eval()
    return _CycleRun(chosen, epochs, start, stop)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _accuracy(model, ids, labels, pad) -> float | None:
    if not ids:
        return None
    return float((predict_proba_ids(model, ids, pad).argmax(axis=1) == labels).mean())


def _selection_key(record: dict, start: dict, cfg: AKDConfig) -> tuple:
    """Larger is better: within the allowed accuracy drop first, then least flag agreement (to 0.01:
    finer differences are a row or two of the probe), then the later epoch (more punishment)."""
    acc = record["val_acc"] if record["val_acc"] is not None else 0.0
    floor = (start["val_acc"] or 0.0) - cfg.max_cacc_drop / 100
    agree = record["flag_agreement"] if record["flag_agreement"] is not None else 0.0
    return (acc >= floor - 1e-9, -round(agree, 2), record["epoch"])
