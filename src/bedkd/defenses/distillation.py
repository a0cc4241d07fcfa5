"""Knowledge distillation from a frozen teacher, as used by both BeDKD stages.

Per-sample loss (the authors' reference): ``w·CE(student, y) + (1-w)·(T²·KL(p_t^T || p_s^T) + MSE)``
with ``w = 0.3``, where MSE compares the last hidden states over the non-padding tokens. The
teacher is frozen and run in eval mode, so its logits and hidden states are computed once per
row and reused in every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..modeling.batching import collate, shuffled_batches, sorted_batches


@dataclass
class TeacherTargets:
    """Frozen teacher outputs for a fixed set of rows, plus the labels used for the CE term."""
    ids: list[list[int]]
    labels: torch.Tensor          # [N]
    logits: torch.Tensor          # [N, K]
    hidden: list[torch.Tensor]    # N tensors of shape [tokens_i, H]

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def teacher_targets(model, ids: list[list[int]], labels, pad_id: int, batch_size: int = 64) -> TeacherTargets:
    model.eval()
    n = len(ids)
    logits = torch.zeros((n, model.config.num_labels), device=model.device)
    hidden: list[torch.Tensor | None] = [None] * n
    for rows in sorted_batches([len(x) for x in ids], batch_size):
        out = model(**collate([ids[i] for i in rows], pad_id, model.device), output_hidden_states=True)
        logits[rows] = out.logits.float()
        last = out.hidden_states[-1]
        for j, i in enumerate(rows):
            hidden[i] = last[j, :len(ids[i])].clone()
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=model.device)
    return TeacherTargets(list(ids), labels, logits, hidden)


def distill_loss(student_out, targets: TeacherTargets, rows, mask: torch.Tensor, temperature: float,
                 ce_weight: float) -> torch.Tensor:
    """Per-sample distillation loss, shape [B]."""
    s_logits = student_out.logits
    t_logits = targets.logits[rows]
    ce = F.cross_entropy(s_logits, targets.labels[rows], reduction="none")
    t_log = F.log_softmax(t_logits / temperature, dim=-1)
    s_log = F.log_softmax(s_logits / temperature, dim=-1)
    kl = (t_log.exp() * (t_log - s_log)).sum(-1) * temperature ** 2
    s_hidden = student_out.hidden_states[-1]
    t_hidden = torch.zeros_like(s_hidden)
    for j, i in enumerate(rows):
        t_hidden[j, :targets.hidden[i].shape[0]] = targets.hidden[i]
    m = mask.unsqueeze(-1).to(s_hidden.dtype)
    mse = (((s_hidden - t_hidden) ** 2) * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * s_hidden.shape[-1])
    return ce_weight * ce + (1 - ce_weight) * (kl + mse)


def distill_epoch(model, optimizer, targets: TeacherTargets, pad_id: int, *, temperature: float,
                  ce_weight: float, batch_size: int, seed: int, sign: float = 1.0, cap: float | None = None,
                  grad_clip: float | None = None, desc: str | None = None) -> float:
    """One pass over ``targets``; ``sign=-1`` maximises the loss (punishment). Returns the mean loss.

    With ``cap`` set, each sample's loss is clamped at ``cap`` before the sign is applied, so a
    sample stops contributing gradient once it is that far from the teacher.
    """
    model.train()
    total, count = 0.0, 0
    for rows in tqdm(shuffled_batches([len(x) for x in targets.ids], batch_size, seed), desc=desc,
                     disable=desc is None, leave=False, unit="batch"):
        rows = rows.tolist()
        batch = collate([targets.ids[i] for i in rows], pad_id, model.device)
        out = model(**batch, output_hidden_states=True)
        per_sample = distill_loss(out, targets, rows, batch["attention_mask"], temperature, ce_weight)
        if cap is not None:
            per_sample = torch.clamp(per_sample, max=cap)
        loss = sign * per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += per_sample.detach().sum().item()
        count += len(rows)
    model.eval()
    return total / max(count, 1)
