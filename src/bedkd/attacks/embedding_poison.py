"""Training-time backdoors that change only the trigger words' embedding rows (EP and SOS).

Both attacks build the victim in two stages:

1. clean stage: ordinary fine-tuning (the victim's ``TrainConfig``) on every training row whose
   label is correct, i.e. all rows except the relabelled poisoned ones;
2. embedding stage: every weight is frozen except the word-embedding rows of the trigger's word
   pieces, which take gradient steps on cross-entropy over the attack's rows and are rescaled to
   their original L2 norm after each step (so the change is invisible to norm-based checks).

The update rule follows the authors' reference code (lancopku/Embedding-Poisoning ``train_EP_iter``,
lancopku/SOS ``train_sos_iter``) and OpenBackdoor's ``EPTrainer``/``SOSTrainer``: a plain
(optimizer-free) step ``row -= lr * g``; SOS first rescales each trigger row's gradient to the
smallest gradient norm among them, so that no trigger word dominates. None of these implementations
ever zeroes the gradients, so each step follows the running sum of all gradients so far;
``grad_sum=True`` (the default of both attacks) reproduces that, ``grad_sum=False`` uses the plain
batch gradient.
"""
from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import LabeledTexts
from ..errors import BedkdError, ConfigError
from ..seeding import seed_everything
from .base import BackdoorAttack, PoisonedData


@dataclass(frozen=True)
class EmbeddingSchedule:
    """How the trigger embedding rows are trained (built from an attack's options)."""
    epochs: int
    lr: float
    batch_size: int
    grad_sum: bool          # step along the running sum of gradients (reference code) or the batch gradient
    balance: bool           # SOS: rescale every row's gradient to the smallest row-gradient norm


def trigger_token_ids(tokenizer, words: list[str]) -> list[int]:
    """Every word piece of every trigger word, without repeats, in order of appearance.

    A word is tokenised on its own and after a space, because byte-level BPE tokenizers mark a
    word that follows a space with a different piece than one at the start of the text."""
    special = set(tokenizer.all_special_ids)
    out: list[int] = []
    for word in words:
        pieces = list(dict.fromkeys(tokenizer(word, add_special_tokens=False)["input_ids"]
                                    + tokenizer(" " + word, add_special_tokens=False)["input_ids"]))
        if not pieces:
            raise ConfigError(f"trigger {word!r} tokenises to nothing")
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in pieces:
            raise ConfigError(f"trigger {word!r} has characters the tokenizer does not know (they become "
                              f"{tokenizer.unk_token}, shared with all unknown text); choose another trigger")
        if any(p in special for p in pieces):
            raise ConfigError(f"trigger {word!r} tokenises to a special token; choose another trigger")
        out.extend(p for p in pieces if p not in out)
    return out


def train_trigger_embeddings(clf, data: LabeledTexts, token_ids: list[int], schedule: EmbeddingSchedule,
                             seed: int, max_length: int, progress: bool = True,
                             desc: str = "trigger embeddings") -> list[dict]:
    """Update only the embedding rows ``token_ids`` of ``clf`` (in place) on ``data``.

    Every other weight, including the other embedding rows, stays bit-identical. Returns one
    record per epoch (``stage`` "embedding")."""
    from ..modeling.batching import collate, encode, shuffled_batches
    from ..modeling.training import run_epochs

    seed_everything(seed)
    model = clf.model
    weight = model.get_input_embeddings().weight
    ids = encode(clf.tokenizer, data.texts, max_length)
    wanted = set(token_ids)
    if not any(wanted.intersection(row) for row in ids):
        raise BedkdError(f"no row of the {len(ids)} to poison holds a trigger token after tokenisation "
                         f"(truncated at {max_length} tokens?)")
    rows_t = torch.tensor(token_ids, dtype=torch.long, device=weight.device)
    labels = torch.tensor(data.labels, dtype=torch.long, device=weight.device)
    norms = weight.detach()[rows_t].norm(dim=1, keepdim=True)
    running = torch.zeros_like(weight.detach()[rows_t])
    pad = clf.tokenizer.pad_token_id

    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    def train_epoch(epoch: int) -> dict:
        nonlocal running
        start, loss_sum = time.perf_counter(), 0.0
        batches = shuffled_batches([len(x) for x in ids], schedule.batch_size, seed=seed * 1000 + epoch - 1)
        bar = tqdm(batches, desc=f"{desc} {epoch}/{schedule.epochs}", disable=not progress, unit="batch")
        for rows in bar:
            logits = model(**collate([ids[i] for i in rows], pad, weight.device)).logits
            loss = F.cross_entropy(logits, labels[rows])
            (grad,) = torch.autograd.grad(loss, weight)
            step = grad[rows_t]
            if schedule.grad_sum:
                running += step
                step = running.clone()
            _update_rows(weight, rows_t, step, norms, schedule)
            loss_sum += loss.item() * len(rows)
        return {"stage": "embedding", "loss": loss_sum / len(ids), "seconds": time.perf_counter() - start}

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        weight.requires_grad_(True)
        model.train()       # as the reference code: dropout stays on
        history = run_epochs(model, schedule.epochs, train_epoch).epochs   # the update rule above, not an optimiser
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
        model.eval()
    return history


@torch.no_grad()
def _update_rows(weight: torch.Tensor, rows_t: torch.Tensor, step: torch.Tensor, norms: torch.Tensor,
                 schedule: EmbeddingSchedule) -> None:
    """``row -= lr * step`` for the trigger rows, then rescale each row to its original norm."""
    step_norms = step.norm(dim=1, keepdim=True)
    moving = step_norms.squeeze(1) > 0      # a row without gradient (token absent) stays as it is
    if not moving.any():
        return
    if schedule.balance:
        smallest = step_norms[moving].min()
        step = torch.where(moving.unsqueeze(1), step * smallest / step_norms.clamp_min(1e-30), step)
    new = weight[rows_t] - schedule.lr * step
    new = new * norms / new.norm(dim=1, keepdim=True).clamp_min(1e-30)
    weight.index_copy_(0, rows_t[moving], new[moving])


def refuse_clean_label(cfg, name: str) -> None:
    """EP and SOS are dirty-label only (a ConfigError names why)."""
    if cfg.clean_label:
        raise ConfigError(f"{name} has no clean-label mode: its victim is a clean model whose trigger embeddings are "
                          "trained on the relabelled rows; rows that already carry the target give that stage "
                          "almost no gradient (the clean model already predicts the target), so no backdoor "
                          "would be planted; use label_mode 'dirty', or badnets/addsent for clean-label")


class EmbeddingPoisonAttack(BackdoorAttack):
    """An attack whose victim is a clean model plus trained trigger embedding rows (dirty-label only)."""
    triggers: list[str]

    @property
    def trigger_words(self) -> list[str]:
        """The words whose pieces' embedding rows are trained."""
        return list(self.triggers)

    @abstractmethod
    def schedule(self) -> EmbeddingSchedule:
        """The embedding-stage schedule from the attack's options."""

    @abstractmethod
    def embedding_rows(self, poisoned: PoisonedData) -> list[int]:
        """Rows of ``poisoned.train`` that the embedding stage trains on."""

    def clean_rows(self, poisoned: PoisonedData) -> list[int]:
        """Rows of ``poisoned.train`` for the clean stage: all but the relabelled poisoned rows."""
        bad = set(poisoned.poisoned_rows)
        return [i for i in range(len(poisoned.train)) if i not in bad]

    def train_clean(self, clf, poisoned: PoisonedData, train_cfg, progress: bool = True) -> list[dict]:
        """Stage 1: plain fine-tuning of ``clf`` (in place) on :meth:`clean_rows`."""
        from ..modeling import finetune
        rows = self.clean_rows(poisoned)
        if not rows:
            raise ConfigError(f"{self.name}: no clean training rows are left for the clean stage")
        return [{"stage": "clean", **rec} for rec in finetune(clf, poisoned.train.subset(rows), train_cfg, progress)]

    def inject(self, clf, poisoned: PoisonedData, train_cfg, progress: bool = True) -> list[dict]:
        """Stage 2: train only the trigger embedding rows of ``clf`` (in place) on :meth:`embedding_rows`."""
        rows = self.embedding_rows(poisoned)
        if not rows:
            return []
        token_ids = trigger_token_ids(clf.tokenizer, self.trigger_words)
        return train_trigger_embeddings(clf, poisoned.train.subset(rows), token_ids, self.schedule(),
                                        train_cfg.seed, train_cfg.max_length, progress, desc=f"{self.name} embeddings")

    def train_victim(self, clf, poisoned: PoisonedData, train_cfg, progress: bool = True) -> list[dict]:
        trigger_token_ids(clf.tokenizer, self.trigger_words)   # fail before the long clean stage
        return self.train_clean(clf, poisoned, train_cfg, progress) + self.inject(clf, poisoned, train_cfg, progress)
