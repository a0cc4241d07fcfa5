"""Batched prediction."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import collate, encode, sorted_batches
from .io import Classifier

MAX_LENGTH = 128


@torch.no_grad()
def predict_proba_ids(model, ids: list[list[int]], pad_id: int, batch_size: int = 64,
                      desc: str | None = None) -> np.ndarray:
    """Class probabilities for pre-tokenised rows, in input order."""
    model.eval()
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    batches = sorted_batches([len(x) for x in ids], batch_size)
    for rows in tqdm(batches, desc=desc, disable=desc is None, leave=False, unit="batch"):
        logits = model(**collate([ids[i] for i in rows], pad_id, model.device)).logits
        out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def predict_proba(clf: Classifier, texts: list[str], batch_size: int = 64, desc: str | None = None,
                  max_length: int = MAX_LENGTH) -> np.ndarray:
    ids = encode(clf.tokenizer, texts, max_length)
    return predict_proba_ids(clf.model, ids, clf.tokenizer.pad_token_id, batch_size, desc)


def predict(clf: Classifier, texts: list[str], batch_size: int = 64, desc: str | None = None) -> np.ndarray:
    return predict_proba(clf, texts, batch_size, desc).argmax(axis=1)
