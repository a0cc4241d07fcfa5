"""Moving a classifier's decision threshold back to a reference: per-class logit offsets, added to
the classification head's bias, that make the mean predicted class distribution on given inputs
equal a target distribution (e.g. the suspicious model's own mean prediction on clean inputs).

The offsets minimise the convex f(d) = mean_i logsumexp(z_i + d) - q.d (a weighted mean when rows
carry weights), whose gradient is the mean softmax(z_i + d) less q; Newton steps with step halving, offsets centred (softmax ignores a
common shift).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def logit_shift(proba: np.ndarray, target: np.ndarray, iters: int = 50, tol: float = 1e-6,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Offsets ``d`` with mean_i softmax(log proba_i + d) = ``target`` (rows of ``proba``: class
    probabilities; ``target``: a distribution with every entry > 0; ``weights``: the mean is
    weighted by these, e.g. to reweight balanced held-out rows to a natural class mix)."""
    target = np.asarray(target, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != target.shape[0] or len(proba) == 0:
        raise ValueError(f"logit_shift: probabilities of shape {proba.shape} do not match {target.shape[0]} classes")
    if (target <= 0).any() or abs(target.sum() - 1.0) > 1e-6:
        raise ValueError("logit_shift: the target must be a distribution with every class above 0")
    w = np.full(len(proba), 1.0 / len(proba)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(proba),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("logit_shift: weights must be one non-negative number per row, not all 0")
    w = w / w.sum()
    z = np.log(np.clip(proba.astype(np.float64), 1e-12, None))
    d = np.zeros(z.shape[1])

    def softmax_rows(offsets):
        s = z + offsets
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def objective(offsets):
        s = z + offsets
        top = s.max(axis=1, keepdims=True)
        return float(w @ (top[:, 0] + np.log(np.exp(s - top).sum(axis=1))) - target @ offsets)

    for _ in range(iters):
        p = softmax_rows(d)
        mean = w @ p
        grad = mean - target
        if np.abs(grad).max() < tol:
            break
        hess = np.diag(mean) - (p * w[:, None]).T @ p
        step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
        step -= step.mean()
        now, scale = objective(d), 1.0
        while scale > 1e-4 and objective(d + scale * step) > now:
            scale /= 2
        d = d + scale * step
    return d - d.mean()


def clean_mix_offsets(proba: np.ndarray, labels, shares: np.ndarray) -> np.ndarray:
    """Offsets that make the mean prediction on labelled rows, each class weighted to its share of
    the clean pool (``shares``), equal those shares: rows drawn with any class mix then count as the
    natural mix, and a model that leans towards one class is moved back to it."""
    labels = np.asarray(labels, dtype=int)
    target = np.clip(np.asarray(shares, dtype=np.float64), 1e-6, None)
    target = target / target.sum()
    counts = np.bincount(labels, minlength=len(target))
    return logit_shift(proba, target, weights=target[labels] / counts[labels])


def head_bias(model) -> torch.nn.Parameter:
    """The bias of the classification head: the last linear layer with one output per class."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
              and m.out_features == model.config.num_labels and m.bias is not None]
    if not layers:
        raise ConfigError(f"{type(model).__name__}: no linear classification head with a bias was found (needed to "
                          "shift the decision threshold)")
    return layers[-1].bias


@torch.no_grad()
def shift_head(model, offsets: np.ndarray) -> None:
    """Add ``offsets`` to the classification head's bias (the logits move by them)."""
    bias = head_bias(model)
    bias.add_(torch.as_tensor(offsets, dtype=bias.dtype, device=bias.device))
