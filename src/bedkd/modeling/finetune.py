"""Supervised fine-tuning of a sequence classifier (victims, and plain fine-tuning)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import LabeledTexts
from ..options import Options, option
from ..seeding import seed_everything
from .batching import collate, encode, shuffled_batches
from .inference import MAX_LENGTH
from .io import Classifier


@dataclass
class TrainConfig(Options):
    """Fine-tuning options"""
    epochs: int = option(3, "passes over the training data", low=1)
    lr: float = option(5e-5, "AdamW learning rate", above=0.0)
    batch_size: int = option(32, "training batch size", low=1)
    weight_decay: float = option(0.01, "AdamW weight decay", low=0.0)
    warmup: float = option(0.06, "share of steps with linear warm-up", low=0.0, high=1.0)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed", low=0)


def finetune(clf: Classifier, data: LabeledTexts, cfg: TrainConfig, progress: bool = True) -> list[dict]:
    """Train ``clf`` in place with cross-entropy; returns one record per epoch."""
    seed_everything(cfg.seed)
    model = clf.model
    ids = encode(clf.tokenizer, data.texts, cfg.max_length)
    labels = torch.tensor(data.labels, dtype=torch.long, device=model.device)
    pad = clf.tokenizer.pad_token_id
    steps_per_epoch = -(-len(ids) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    history = []
    model.train()
    for epoch in range(cfg.epochs):
        start, loss_sum = time.perf_counter(), 0.0
        batches = shuffled_batches([len(x) for x in ids], cfg.batch_size, seed=cfg.seed * 1000 + epoch)
        bar = tqdm(batches, desc=f"train epoch {epoch + 1}/{cfg.epochs}", disable=not progress, unit="batch")
        for rows in bar:
            logits = model(**collate([ids[i] for i in rows], pad, model.device)).logits
            loss = F.cross_entropy(logits, labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(rows)
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(ids), "seconds": time.perf_counter() - start})
    model.eval()
    return history
