"""DMM: the directional mapping module of BeDKD, a poisoned-sample detector.

Wu et al., "BeDKD: Backdoor Defense based on Dynamic Knowledge Distillation and Directional
Mapping Modulator", AAAI 2026 (arXiv:2508.01595).

A copy of the suspicious model is distilled on clean rows whose labels are flipped
(``y -> (y+1) mod K``). This destroys the clean mapping but leaves the trigger mapping alone,
so suspicious rows on which teacher and student still agree (mean |p_t - p_s| < threshold)
are flagged as poisoned. Flagged rows that the teacher predicts as their own label are kept
for AKD's punishment step: by default the lowest-scoring ones (``keep_order="score"``; on full
SST-2 this raised the precision of the kept rows from 76% to 91% (BadNets) and 94% (AddSent),
docs/results/sst2_core.md), or, as in the authors' code, the first ones scanned (``keep_order="scan"``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...data import LabeledTexts, check_labels, require_all_classes
from ...errors import ConfigError, InputError
from ...modeling import Classifier
from ...modeling.batching import encode
from ...modeling.inference import predict_proba_ids
from ...modeling.training import run_epochs
from ...options import option
from ...outputs import atomic_write_text
from ...seeding import rng, seed_everything
from ..base import DataFilter, Filtered
from ..clean_split import CleanBudget
from ..distillation import LossForm, LossOptions, distill_epoch, fixed_batches, teacher_targets


@dataclass
class DMMConfig(LossOptions):
    """DMM detection options (reference defaults)"""
    flip_per_class: int = option(80, "label-flipped clean rows per class", low=1)
    temperature: float = option(1.5, "distillation temperature", above=0.0)
    epochs: int = option(20, "distillation epochs on the flipped rows", low=1)
    lr: float = option(3e-5, "Adam learning rate", above=0.0)
    batch_size: int = option(16, "batch size", low=1)
    ce_weight: float = option(0.3, "weight of the CE term; distillation terms get 1 - this", low=0.0, high=1.0)
    flip: str = option("next", "label flip: y -> y+1 mod K (the authors'), or each class spread over all "
                              "others (K > 2)", choices=("next", "spread"))
    threshold: float = option(0.1, "flag a row when mean |p_teacher - p_student| is below this", above=0.0)
    max_flagged: int | None = option(128, "stop scanning after this many flagged rows", low=1)
    max_kept: int | None = option(33, "keep at most this many flagged rows for punishment", low=1)
    keep_order: str = option("score", "which eligible flagged rows to keep first: lowest score, or scan order "
                             "(the authors')", choices=("score", "scan"))
    scan_order: str = option("shuffled", "order in which the suspicious rows are scanned: seeded random, or file "
                             "order (the authors')", choices=("shuffled", "file"))
    seed: int = option(0, "random seed", low=0)


@dataclass
class Detection:
    """Scan result: one entry per scanned suspicious row, in scan order."""
    rows: np.ndarray           # row index in the suspicious data
    scores: np.ndarray         # mean |p_teacher - p_student|
    labels: np.ndarray         # label in the suspicious data
    teacher_pred: np.ndarray
    flagged: np.ndarray        # bool
    kept: np.ndarray           # bool: flagged, teacher predicts the label, within max_kept
    n_suspect: int
    seconds: dict = field(default_factory=dict)
    targets: list[int] | None = None  # kept rows were restricted to these labels

    @property
    def flagged_rows(self) -> list[int]:
        return self.rows[self.flagged].tolist()

    @property
    def kept_rows(self) -> list[int]:
        return self.rows[self.kept].tolist()

    @property
    def holdout_rows(self) -> list[int]:
        """Flagged rows the teacher predicts as their label that were not kept (beyond max_kept)."""
        mask = self.flagged & ~self.kept & (self.teacher_pred == self.labels)
        if self.targets is not None:
            mask &= np.isin(self.labels, self.targets)
        return self.rows[mask].tolist()

    def keep(self, max_kept: int | None, order: str = "score", labels: list[int] | None = None,
             candidates: np.ndarray | None = None, per_label: dict[int, int] | None = None) -> "Detection":
        """This detection with its kept rows chosen anew: flagged rows (or, given ``candidates``, a
        mask over the scanned rows, those) the teacher predicts as their label (and, given
        ``labels``, that carry one of them), the lowest scores first (``order="score"``) or in scan
        order, at most ``max_kept``, and at most ``per_label[c]`` of label ``c`` where given."""
        eligible = (self.flagged if candidates is None else candidates) & (self.teacher_pred == self.labels)
        if labels is not None:
            eligible &= np.isin(self.labels, labels)
        rows = np.flatnonzero(eligible)
        if order == "score":   # the surest first: poisoned rows score lowest
            rows = rows[np.argsort(self.scores[rows], kind="stable")]
        if per_label is not None:
            taken: dict[int, int] = {}
            within = []
            for r in rows.tolist():
                c = int(self.labels[r])
                taken[c] = taken.get(c, 0) + 1
                within.append(c not in per_label or taken[c] <= per_label[c])
            rows = rows[np.asarray(within, dtype=bool)]
        kept = np.zeros(len(self.flagged), dtype=bool)
        kept[rows[:max_kept]] = True
        return dataclasses.replace(self, kept=kept, targets=None if labels is None else list(labels))

    def metrics(self, poisoned_rows=None) -> dict:
        """Counts; given the poisoned rows, the precision and recall (in percent) of the flagged and
        kept rows (recall over the scanned poisoned rows and over all of them)."""
        out = {"suspect_rows": self.n_suspect, "scanned": int(len(self.rows)),
               "flagged": int(self.flagged.sum()), "kept": int(self.kept.sum())}
        if poisoned_rows is None:
            return out
        poisoned = np.zeros(self.n_suspect, dtype=bool)
        poisoned[list(poisoned_rows)] = True
        scanned_poison = int(poisoned[self.rows].sum())
        out.update(poisoned_total=int(poisoned.sum()), poisoned_scanned=scanned_poison)
        for name, mask in (("flagged", self.flagged), ("kept", self.kept)):
            hits = int(poisoned[self.rows[mask]].sum())
            out[f"{name}_true_poison"] = hits
            out[f"{name}_precision"] = 100.0 * hits / int(mask.sum()) if mask.any() else None
            out[f"{name}_recall_scanned"] = 100.0 * hits / scanned_poison if scanned_poison else None
            out[f"{name}_recall_all"] = 100.0 * hits / int(poisoned.sum()) if poisoned.any() else None
        return out

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "label", "teacher_pred", "score", "flagged", "kept"])
        for k in range(len(self.rows)):
            w.writerow([int(self.rows[k]), int(self.labels[k]), int(self.teacher_pred[k]),
                        f"{self.scores[k]:.6f}", int(self.flagged[k]), int(self.kept[k])])
        return buf.getvalue()

    def to_csv(self, path) -> None:
        atomic_write_text(path, self.to_csv_text())

    @classmethod
    def from_csv(cls, path, n_suspect: int) -> "Detection":
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "flags file not found")
        cols = {k: [] for k in ("row", "label", "teacher_pred", "score", "flagged", "kept")}
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in cols if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing column(s) {', '.join(missing)}", 1)
            for rec in reader:
                try:
                    for k in cols:
                        cols[k].append(float(rec[k]) if k == "score" else int(rec[k]))
                except (TypeError, ValueError):
                    raise InputError(path, "expected numbers in every column", reader.line_num) from None
                if not 0 <= cols["row"][-1] < n_suspect:
                    raise InputError(path, f"row {cols['row'][-1]} is outside the suspicious data "
                                           f"({n_suspect} rows)", reader.line_num)
        return cls(np.array(cols["row"], dtype=int), np.array(cols["score"]), np.array(cols["label"], dtype=int),
                   np.array(cols["teacher_pred"], dtype=int), np.array(cols["flagged"], dtype=bool),
                   np.array(cols["kept"], dtype=bool), n_suspect)


def flip_labels(labels, k: int, mode: str = "next") -> list[int]:
    """The authors' flip (``next``): every class moves to the next one, ``y -> (y + 1) mod K``.
    ``spread``: the rows of a class go to each other class in turn (the j-th row of class y to
    ``(y + 1 + j mod (K - 1)) mod K``), so no class keeps a single image; for K = 2 the same."""
    if mode == "next":
        return [(int(y) + 1) % k for y in labels]
    seen: dict[int, int] = {}
    out = []
    for y in labels:
        j = seen.get(int(y), 0)
        seen[int(y)] = j + 1
        out.append((int(y) + 1 + j % (k - 1)) % k)
    return out


class DMMDetector(DataFilter):
    """A data filter: (suspicious model, suspicious data, clean pool) -> the flagged rows
    (:meth:`filter`); :meth:`detect` gives the whole :class:`Detection` (scores, kept rows), which
    BeDKD's purifier punishes."""
    name = "dmm"

    def __init__(self, cfg: DMMConfig | None = None):
        self.cfg = cfg or DMMConfig()

    def filter(self, suspect_model: Classifier, suspect_data: LabeledTexts, clean: LabeledTexts | None = None,
               progress: bool = False) -> Filtered:
        """The flagged rows; scores (1 - mean |p_teacher - p_student|, higher = more suspicious) for
        every row when the whole set was scanned (``max_flagged=None``), else none."""
        if clean is None:
            raise ConfigError("DMM needs the defender's clean data (its rows are distilled with flipped labels)")
        det = self.detect(suspect_model, clean, suspect_data, progress=progress)
        scores: list[float] = []
        if len(det.rows) == det.n_suspect:
            full = np.zeros(det.n_suspect)
            full[det.rows] = 1.0 - det.scores
            scores = full.tolist()
        return Filtered(sorted(det.flagged_rows), scores, {"method": "DMM", "config": self.cfg.to_dict(),
                                                          **det.metrics(), "seconds": det.seconds})

    def flip_rows(self, clean: LabeledTexts, val_per_class: int = 0, order: str = "shuffled") -> list[int]:
        """DMM's rows of ``clean``: the first ``flip_per_class`` of each class after the held-out ones
        (the same rows in either clean layout)."""
        return CleanBudget(flip_per_class=self.cfg.flip_per_class, val_per_class=val_per_class, seed=self.cfg.seed,
                           order=order).split(clean).flip

    def fit_student(self, teacher: Classifier, clean: LabeledTexts, flip_rows: list[int],
                    progress: bool = True) -> Classifier:
        """Distil a copy of ``teacher`` on the label-flipped rows."""
        cfg, k = self.cfg, teacher.num_labels
        seed_everything(cfg.seed)
        flipped = flip_labels([clean.labels[i] for i in flip_rows], k, cfg.flip)
        ids = encode(teacher.tokenizer, [clean.texts[i] for i in flip_rows], cfg.max_length)
        pad = teacher.tokenizer.pad_token_id
        batches = fixed_batches(len(ids), cfg.batch_size, cfg.seed) if cfg.batch_order == "fixed" else None
        targets = teacher_targets(teacher.model, ids, flipped, pad, batches=batches)
        student = teacher.copy()
        opt = torch.optim.Adam(student.model.parameters(), lr=cfg.lr)
        form = LossForm.of(cfg)
        run_epochs(student.model, cfg.epochs,
                   lambda epoch: {"loss": distill_epoch(student.model, opt, targets, pad, form, batch_size=cfg.batch_size,
                                                        seed=cfg.seed * 1000 + epoch - 1)},
                   desc="DMM: flipped distillation", progress=progress)
        return student

    def score(self, teacher: Classifier, student: Classifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean |p_teacher - p_student|, teacher's prediction) for each text."""
        pad = teacher.tokenizer.pad_token_id
        ids = encode(teacher.tokenizer, texts, self.cfg.max_length)
        p_t = predict_proba_ids(teacher.model, ids, pad)
        p_s = predict_proba_ids(student.model, ids, pad)
        return np.abs(p_t - p_s).mean(axis=1), p_t.argmax(axis=1)

    def scan(self, teacher: Classifier, student: Classifier, suspect: LabeledTexts, chunk: int = 256,
             progress: bool = True) -> Detection:
        """Score suspicious rows in scan order until ``max_flagged`` rows are flagged (all rows: None)."""
        cfg = self.cfg
        order = rng(cfg.seed + 1).permutation(len(suspect)) if cfg.scan_order == "shuffled" \
            else np.arange(len(suspect))
        scores, preds, seen = [], [], 0
        flagged_so_far = 0
        bar = tqdm(total=len(order), desc="DMM: scanning", disable=not progress, unit="row")
        while seen < len(order) and (cfg.max_flagged is None or flagged_so_far < cfg.max_flagged):
            rows = order[seen:seen + chunk]
            s, pred = self.score(teacher, student, [suspect.texts[i] for i in rows])
            scores.append(s)
            preds.append(pred)
            flagged_so_far += int((s < cfg.threshold).sum())
            seen += len(rows)
            bar.update(len(rows))
        bar.close()
        scores_all = np.concatenate(scores) if scores else np.zeros(0)
        preds_all = np.concatenate(preds) if preds else np.zeros(0, dtype=int)
        flagged = scores_all < cfg.threshold
        if cfg.max_flagged is not None and flagged.sum() > cfg.max_flagged:
            cut = int(np.flatnonzero(flagged)[cfg.max_flagged - 1]) + 1   # stop right after the last one needed
            scores_all, preds_all, flagged = scores_all[:cut], preds_all[:cut], flagged[:cut]
        rows = order[:len(scores_all)]
        labels = np.asarray(suspect.labels)[rows]
        detection = Detection(rows, scores_all, labels, preds_all, flagged, np.zeros(len(flagged), dtype=bool),
                              len(suspect))
        return detection.keep(cfg.max_kept, cfg.keep_order)

    def detect(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts, flip_rows=None,
               progress: bool = True) -> Detection:
        k = teacher.num_labels
        check_labels(clean, k)
        check_labels(suspect, k)
        require_all_classes(clean, k, "the label flip of DMM")
        start = time.perf_counter()
        student = self.fit_student(teacher, clean, flip_rows if flip_rows is not None else self.flip_rows(clean),
                                   progress)
        mid = time.perf_counter()
        detection = self.scan(teacher, student, suspect, progress=progress)
        detection.seconds = {"dmm": mid - start, "scan": time.perf_counter() - mid}
        return detection
