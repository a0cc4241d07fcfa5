"""RAP: robustness-aware perturbations.

Yang, Lin, Li, Zhou, Sun, "RAP: Robustness-Aware Perturbations for Defending against Backdoor
Attacks on NLP Models", EMNLP 2021 (arXiv:2110.07831); reference code lancopku/RAP
(``rap_defense.py``, ``evaluate_rap_performance.py``) and OpenBackdoor's ``RAPDefender``.

Construction: a rare word (the RAP trigger, default "cf") is put before each clean text of the
protected label, and only that word's embedding row is optimised so that the protected-label
probability drops by an amount in [``min_drop``, ``max_drop``]; the loss is
``scale·mean(relu(Δ + min_drop)) + mean(relu(-max_drop - Δ))`` with Δ = p(cf + x) - p(x), and
after each step the row is rescaled to its original norm. Poisoned inputs are far more robust
than clean ones, so their drop is smaller. Detection: an input predicted as the protected label
whose drop is below the threshold is rejected; the threshold is the ``frr`` percentile of the
drops of the clean rows of the protected label that the model predicts correctly. Inputs
predicted as another label are never rejected (the attack failed on them anyway).

The optimisation runs on a copy of the suspect model (``self.rap_model``); the classifier given
to ``fit`` is never modified.

Published defaults (the authors' ``run_rap.sh`` / OpenBackdoor): trigger "cf", 5 epochs, lr 1e-2,
batch size 32, probability range [-0.1, -0.3] (drop between 0.1 and 0.3), scale 1, FRR 1 %.

Deviations: (1) ``protect_label=None`` (the default here, since a defender rarely knows the
target) protects every label: each clean row's own label is its protected label during
construction, and each input's predicted label at test time; set ``protect_label`` for the paper's
single-label setting. (2) The model copy runs in eval mode during construction (the reference left
dropout on). (3) As in the reference, the trigger row's gradient is accumulated over steps (the
reference never zeroed gradients). (4) The trigger must be a single token of the model's tokenizer.

``Screened.scores`` is the negated probability drop (higher = more suspicious); texts are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data import LabeledTexts, check_labels
from ...errors import BedkdError, ConfigError
from ...modeling import Classifier
from ...modeling.batching import collate, encode
from ...modeling.inference import MAX_LENGTH, predict_proba
from ...modeling.training import run_epochs
from ...options import Options, option
from ...seeding import rng, seed_everything
from ..base import InputFilter, Screened


@dataclass
class RAPConfig(Options):
    """RAP options"""
    trigger: str = option("cf", "RAP trigger word (one rare token)")
    protect_label: int | None = option(None, "label to protect; none = every label", low=0)
    epochs: int = option(5, "construction epochs", low=1)
    lr: float = option(1e-2, "learning rate of the trigger embedding", above=0.0)
    batch_size: int = option(32, "batch size", low=1)
    min_drop: float = option(0.1, "lower end of the wanted drop of the protected-label probability", above=0.0, high=1.0)
    max_drop: float = option(0.3, "upper end of the wanted drop of the protected-label probability", above=0.0, high=1.0)
    scale: float = option(1.0, "weight of the too-small-drop term of the loss", above=0.0)
    frr: float = option(0.01, "false rejection rate allowed on the clean fitting rows", low=0.0, high=0.5)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed", low=0)

    def check(self):
        if self.min_drop >= self.max_drop:
            raise ConfigError(f"RAPConfig: min_drop ({self.min_drop}) must be below max_drop ({self.max_drop})")
        if not self.trigger.strip() or len(self.trigger.split()) != 1:
            raise ConfigError(f"RAPConfig.trigger must be one word, got {self.trigger!r}")


@dataclass
class ProbabilityDrops:
    """Per text: the label checked, whether it is the predicted label, and p(x) - p(trigger + x)."""
    label: np.ndarray
    predicted_as_label: np.ndarray
    drop: np.ndarray


def with_trigger(texts: list[str], trigger: str) -> list[str]:
    """Insert the RAP trigger as the first word (as the reference code does)."""
    return [" ".join([trigger] + t.split()) for t in texts]


class RAP(InputFilter):
    """Input filter that rejects inputs too robust to the RAP trigger."""
    name, options = "rap", RAPConfig

    def __init__(self, cfg: RAPConfig | None = None):
        super().__init__(cfg)
        self.rap_model: Classifier | None = None

    # -- construction -------------------------------------------------------------------------
    def _trigger_id(self, clf: Classifier) -> int:
        ids = clf.tokenizer(self.cfg.trigger, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"RAP trigger {self.cfg.trigger!r} is {len(ids)} tokens for this tokenizer; "
                              "choose a rare word that is one token")
        return int(ids[0])

    def construct(self, clf: Classifier, texts: list[str], labels: np.ndarray, progress: bool = False) -> Classifier:
        """A copy of ``clf`` whose trigger embedding is optimised on ``texts`` (protected ``labels``)."""
        cfg = self.cfg
        rap = clf.copy()
        model = rap.model
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        weight = model.get_input_embeddings().weight
        weight.requires_grad_(True)
        tid = self._trigger_id(rap)
        norm = weight.data[tid].norm().item()
        pad, dev = rap.tokenizer.pad_token_id, model.device
        ids = encode(rap.tokenizer, texts, cfg.max_length)
        rap_ids = encode(rap.tokenizer, with_trigger(texts, cfg.trigger), cfg.max_length)
        order = rng(cfg.seed).permutation(len(texts))
        accumulated = torch.zeros_like(weight.data[tid])

        def train_epoch(epoch: int) -> dict:
            nonlocal accumulated
            total, in_range = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                rows = order[start:start + cfg.batch_size]
                target = torch.as_tensor(labels[rows], dtype=torch.long, device=weight.device)
                with torch.no_grad():
                    p_ori = torch.softmax(model(**collate([ids[i] for i in rows], pad, dev)).logits.float(), -1)
                p_rap = torch.softmax(model(**collate([rap_ids[i] for i in rows], pad, dev)).logits.float(), -1)
                diff = (p_rap - p_ori).gather(1, target[:, None]).squeeze(1)
                loss = cfg.scale * torch.relu(diff + cfg.min_drop).mean() + torch.relu(-cfg.max_drop - diff).mean()
                (grad,) = torch.autograd.grad(loss, weight)
                accumulated += grad[tid]
                with torch.no_grad():
                    weight[tid] -= cfg.lr * accumulated
                    weight[tid] *= norm / weight[tid].norm().clamp_min(1e-12)
                total += loss.item() * len(rows)
                in_range += int(((-diff >= cfg.min_drop) & (-diff <= cfg.max_drop)).sum())
            return {"loss": total / len(order), "in_range": 100.0 * in_range / len(order)}

        # the update rule above (the published one: the summed gradient, norm kept), not an optimiser
        self.construction_log = run_epochs(model, cfg.epochs, train_epoch, desc="RAP construction",
                                           progress=progress).epochs
        weight.requires_grad_(False)
        return rap

    # -- scoring ------------------------------------------------------------------------------
    def drops(self, texts: list[str], progress: bool = False) -> ProbabilityDrops:
        cfg, clf = self.cfg, self.rap_model
        desc = "RAP" if progress else None
        p = predict_proba(clf, texts, cfg.batch_size, desc, cfg.max_length)
        p_rap = predict_proba(clf, with_trigger(texts, cfg.trigger), cfg.batch_size, desc, cfg.max_length)
        if len(texts) == 0:
            return ProbabilityDrops(np.zeros(0, int), np.zeros(0, bool), np.zeros(0))
        predicted = p.argmax(axis=1)
        label = predicted if cfg.protect_label is None else np.full(len(texts), cfg.protect_label)
        rows = np.arange(len(texts))
        return ProbabilityDrops(label, predicted == label, p[rows, label] - p_rap[rows, label])

    def fit(self, suspect_model: Classifier, clean: LabeledTexts, progress: bool = False) -> "RAP":
        cfg = self.cfg
        check_labels(clean, suspect_model.num_labels)
        if cfg.protect_label is not None and cfg.protect_label >= suspect_model.num_labels:
            raise ConfigError(f"RAPConfig.protect_label {cfg.protect_label} is not a label of this "
                              f"{suspect_model.num_labels}-class model")
        seed_everything(cfg.seed)
        self.model = suspect_model
        labels = np.asarray(clean.labels)
        rows = np.flatnonzero(labels == cfg.protect_label) if cfg.protect_label is not None else np.arange(len(clean))
        if rows.size == 0:
            raise BedkdError(f"RAP.fit: no clean rows of the protected label {cfg.protect_label}")
        texts = [clean.texts[i] for i in rows]
        self.rap_model = self.construct(suspect_model, texts, labels[rows], progress)
        measured = self.drops(texts, progress)
        correct = measured.predicted_as_label & (measured.label == labels[rows])
        if not correct.any():
            raise BedkdError("RAP.fit: the model predicts none of the protected clean rows correctly")
        self.threshold = float(np.nanpercentile(measured.drop[correct], 100.0 * cfg.frr))
        self.fit_report = {"threshold": self.threshold, "construction_rows": int(rows.size),
                           "threshold_rows": int(correct.sum()),
                           "clean_frr": 100.0 * float((measured.drop[correct] < self.threshold).mean()),
                           "construction": self.construction_log}
        if self.threshold < 0:
            self.fit_report["note"] = "threshold < 0: the RAP authors advise a larger scale"
        return self

    def screen(self, texts: list[str], progress: bool = False) -> Screened:
        if self.threshold is None or self.rap_model is None:
            raise BedkdError("RAP.screen called before fit(): call fit(suspect_model, clean) first")
        texts = list(texts)
        d = self.drops(texts, progress)
        rejected = d.predicted_as_label & (d.drop < self.threshold)
        return Screened(texts, [bool(r) for r in rejected], [float(-x) for x in d.drop])
