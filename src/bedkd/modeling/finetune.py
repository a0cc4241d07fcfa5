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
from .training import linear_warmup, optimizer_step, run_epochs


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
    """Train ``clf`` in place with cross-entropy (AdamW, :func:`.training.linear_warmup`, gradient
    norm clipped at 1); returns one record per epoch."""
    seed_everything(cfg.seed)
    model = clf.model
    ids = encode(clf.tokenizer, data.texts, cfg.max_length)
    labels = torch.tensor(data.labels, dtype=torch.long, device=model.device)
    pad = clf.tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = linear_warmup(opt, -(-len(ids) // cfg.batch_size) * cfg.epochs, cfg.warmup)

    def train_epoch(epoch: int) -> dict:
        start, loss_sum = time.perf_counter(), 0.0
        model.train()
        batches = shuffled_batches([len(x) for x in ids], cfg.batch_size, seed=cfg.seed * 1000 + epoch - 1)
        bar = tqdm(batches, desc=f"train epoch {epoch}/{cfg.epochs}", disable=not progress, unit="batch")
        for rows in bar:
            loss = F.cross_entropy(model(**collate([ids[i] for i in rows], pad, model.device)).logits, labels[rows])
            optimizer_step(model, opt, loss, grad_clip=1.0, scheduler=sched)
            loss_sum += loss.item() * len(rows)
        return {"loss": loss_sum / len(ids), "seconds": time.perf_counter() - start}

    return run_epochs(model, cfg.epochs, train_epoch).epochs
