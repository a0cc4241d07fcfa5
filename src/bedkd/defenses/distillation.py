"""Knowledge distillation from a frozen teacher, as used by both BeDKD stages.

Per-batch loss of the authors' released code (CAU-ISS-Lab/Backdoor-Attack-Defense-LLMs,
``BeDKD/models/bedkd.py``, ``kd_step``)::

    0.3 * CE(s, y) + 0.7 * (KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) + MSELoss()(h_s, h_t))

with no T² factor on the KL term, and the MSE taken over the whole padded last-hidden-state tensor
(padding positions included). :func:`distill_loss` returns the per-sample terms whose batch mean is
exactly that loss. Two deviations are options (:class:`LossForm`): ``kl_t2`` multiplies the KL
term by T² (Hinton et al.'s gradient scaling), and ``mse_padding=False`` averages the MSE over the
real tokens only, which makes a row's loss independent of the rows it is batched with.

The teacher is frozen and in eval mode, so its outputs are computed once and reused every epoch:
per row (real tokens only) for batches that are re-drawn each epoch, or per batch (padded, exactly
as the authors' loop sees them) when the batches are fixed, as the authors' DataLoader with
``shuffle=False`` over a once-shuffled list makes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..modeling.batching import collate, shuffled_batches, sorted_batches
from ..modeling.inference import MAX_LENGTH
from ..modeling.training import optimizer_step
from ..options import Options, option
from ..seeding import rng

BATCH_ORDERS = ("reshuffle", "fixed")


@dataclass(frozen=True)
class LossForm:
    """How the distillation loss is formed (the authors': no T², padded MSE, fixed batches)."""
    temperature: float
    ce_weight: float = 0.3
    kl_t2: bool = False
    mse_padding: bool = True

    @classmethod
    def of(cls, cfg) -> "LossForm":
        """From an options record with ``temperature``, ``ce_weight``, ``kl_t2``, ``mse_padding``."""
        return cls(cfg.temperature, cfg.ce_weight, cfg.kl_t2, cfg.mse_padding)


@dataclass
class LossOptions(Options):
    """The options of how the loss is formed that DMM and AKD share (their defaults: this project's;
    the reference preset sets the authors')."""
    batch_order: str = option("reshuffle", "distillation batches: re-drawn each epoch (by length), or drawn once "
                              "and kept (the authors')", choices=BATCH_ORDERS)
    kl_t2: bool = option(True, "multiply the KL term by T^2 (the authors do not)")
    mse_padding: bool = option(False, "hidden-state MSE over the padded tensor, padding included (the authors'); "
                               "needs batch_order fixed")
    max_length: int = option(MAX_LENGTH, "tokens kept per text (the authors: 512)", low=8)

    def check(self) -> None:
        # the padded MSE needs the teacher's padded outputs, which exist only for fixed batches
        if self.mse_padding and self.batch_order != "fixed":
            raise ConfigError(f"{type(self).__name__}: mse_padding=True needs batch_order='fixed' "
                              "(padding positions depend on the batch)")


def fixed_batches(n: int, batch_size: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Rows shuffled once (or kept in order), then cut into consecutive batches, as a DataLoader
    with ``shuffle=False`` over a once-shuffled list."""
    order = rng(seed).permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


@dataclass
class TeacherTargets:
    """Frozen teacher outputs for a fixed set of rows, plus the labels used for the CE term.

    ``hidden`` holds each row's last hidden state over its real tokens; with ``batches`` set
    (fixed batches), ``batch_hidden[b]`` is the padded last hidden state of batch ``b``."""
    ids: list[list[int]]
    labels: torch.Tensor          # [N]
    logits: torch.Tensor          # [N, K]
    hidden: list[torch.Tensor]    # N tensors of shape [tokens_i, H]
    batches: list[list[int]] | None = None
    batch_hidden: list[torch.Tensor] | None = None
    weights: torch.Tensor | None = None       # [N] per-row loss weights (None: all 1)

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def teacher_targets(model, ids: list[list[int]], labels, pad_id: int, batch_size: int = 64,
                    batches: list[list[int]] | None = None) -> TeacherTargets:
    """The teacher's outputs for ``ids``; with ``batches``, computed on exactly those padded batches."""
    model.eval()
    n = len(ids)
    logits = torch.zeros((n, model.config.num_labels), device=model.device)
    hidden: list[torch.Tensor | None] = [None] * n
    batch_hidden = [] if batches is not None else None
    for rows in (batches if batches is not None else sorted_batches([len(x) for x in ids], batch_size)):
        rows = list(rows)
        out = model(**collate([ids[i] for i in rows], pad_id, model.device), output_hidden_states=True)
        logits[rows] = out.logits.float()
        last = out.hidden_states[-1]
        for j, i in enumerate(rows):
            hidden[i] = last[j, :len(ids[i])].clone()
        if batch_hidden is not None:
            batch_hidden.append(last.clone())
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=model.device)
    return TeacherTargets(list(ids), labels, logits, hidden, batches, batch_hidden)


def distill_terms(s_logits, t_logits, labels, s_hidden, t_hidden, mask, form: LossForm) -> torch.Tensor:
    """Per-sample loss, shape [B]; its mean over the batch is the authors' batch loss when
    ``form`` is theirs. ``t_hidden`` is padded like ``s_hidden``; ``mask`` marks real tokens."""
    temp = form.temperature
    ce = F.cross_entropy(s_logits, labels, reduction="none")
    t_log = F.log_softmax(t_logits / temp, dim=-1)
    s_log = F.log_softmax(s_logits / temp, dim=-1)
    kl = (t_log.exp() * (t_log - s_log)).sum(-1)
    if form.kl_t2:
        kl = kl * temp ** 2
    sq = (s_hidden - t_hidden) ** 2
    if form.mse_padding:
        mse = sq.mean(dim=(1, 2))
    else:
        m = mask.unsqueeze(-1).to(s_hidden.dtype)
        mse = (sq * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * s_hidden.shape[-1])
    return form.ce_weight * ce + (1 - form.ce_weight) * (kl + mse)


def distill_loss(student_out, targets: TeacherTargets, rows, mask: torch.Tensor, form: LossForm,
                 batch_index: int | None = None) -> torch.Tensor:
    """Per-sample loss of a student batch ``rows`` against the cached teacher outputs, shape [B]."""
    s_hidden = student_out.hidden_states[-1]
    if form.mse_padding:
        if batch_index is None or targets.batch_hidden is None:
            raise ValueError("the padded MSE needs the teacher's outputs of fixed batches")
        t_hidden = targets.batch_hidden[batch_index]
    else:
        t_hidden = torch.zeros_like(s_hidden)
        for j, i in enumerate(rows):
            t_hidden[j, :targets.hidden[i].shape[0]] = targets.hidden[i]
    return distill_terms(student_out.logits, targets.logits[rows], targets.labels[rows], s_hidden, t_hidden,
                         mask, form)


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None, rows) -> torch.Tensor:
    """The mean of ``per_sample``, each weighted by ``weights[rows]`` when there are weights."""
    if weights is None:
        return per_sample.mean()
    w = weights[torch.as_tensor(rows, device=weights.device)].to(per_sample.device)
    return (per_sample * w).sum() / w.sum()


def class_weights(labels, prior) -> torch.Tensor:
    """Per-row weights that make rows drawn with any class mix count as ``prior`` (the clean pool's
    class shares): a row of class c weighs prior[c] / (its class's share of ``labels``)."""
    labels = np.asarray(labels, dtype=int)
    share = np.bincount(labels, minlength=len(prior)) / max(len(labels), 1)
    return torch.tensor([prior[y] / share[y] for y in labels], dtype=torch.float32)


def distill_epoch(model, optimizer, targets: TeacherTargets, pad_id: int, form: LossForm, *, batch_size: int,
                  seed: int, sign: float = 1.0, cap: float | None = None, grad_clip: float | None = None,
                  desc: str | None = None, max_rows: int | None = None) -> float:
    """One pass over ``targets``; ``sign=-1`` maximises the loss (punishment). Returns the mean loss.

    Fixed batches (``targets.batches``) are visited in their order; otherwise batches of similar
    length are re-drawn from ``seed``. With ``cap`` set, each sample's loss is clamped at ``cap``
    before the sign is applied, so a sample stops contributing gradient once it is that far from
    the teacher. With ``max_rows`` (re-drawn batches only), the pass takes a seeded draw of that
    many rows instead of all of them.
    """
    model.train()
    total, count = 0.0, 0
    rows = None
    if max_rows is not None and targets.batches is None and max_rows < len(targets.ids):
        rows = np.sort(rng(seed).choice(len(targets.ids), max_rows, replace=False))
    lengths = [len(targets.ids[i]) for i in (range(len(targets.ids)) if rows is None else rows)]
    batches = targets.batches if targets.batches is not None else \
        [b.tolist() if rows is None else rows[b].tolist() for b in shuffled_batches(lengths, batch_size, seed)]
    for b, rows in enumerate(tqdm(batches, desc=desc, disable=desc is None, leave=False, unit="batch")):
        batch = collate([targets.ids[i] for i in rows], pad_id, model.device)
        out = model(**batch, output_hidden_states=True)
        per_sample = distill_loss(out, targets, rows, batch["attention_mask"], form,
                                  b if targets.batches is not None else None)
        if cap is not None:
            per_sample = torch.clamp(per_sample, max=cap)
        loss = sign * weighted_mean(per_sample, targets.weights, rows)
        optimizer_step(model, optimizer, loss, grad_clip)
        total += per_sample.detach().sum().item()
        count += len(rows)
    model.eval()
    return total / max(count, 1)
