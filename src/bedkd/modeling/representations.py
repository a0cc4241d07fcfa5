"""A sequence classifier's encoder output as one vector per text (BKI, CUBE, the scan's label check)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import BedkdError
from .batching import collate, encode, sorted_batches
from .inference import MAX_LENGTH
from .io import Classifier

POOLINGS = ("cls", "pooler", "mean")


@torch.no_grad()
def representations(clf: Classifier, texts: list[str], *, pooling: str = "cls", batch_size: int = 64,
                    max_length: int = MAX_LENGTH, desc: str | None = None) -> np.ndarray:
    """The encoder's last layer per text: the hidden state at the first token ([CLS], ``"cls"``),
    the pooler's output (``"pooler"``), or the mean over the text's tokens (``"mean"``, what
    sentence encoders such as all-MiniLM-L6-v2 are trained for). Rows in input order; the model is
    run in eval mode and its train/eval flag restored afterwards."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    model = clf.model
    ids = encode(clf.tokenizer, texts, max_length)
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    device = next(model.parameters()).device
    pad = clf.tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    try:
        for rows in tqdm(sorted_batches([len(x) for x in ids], batch_size), desc=desc, disable=desc is None,
                         leave=False, unit="batch"):
            batch = {k: v.to(device) for k, v in collate([ids[i] for i in rows], pad).items()}
            enc = model.base_model(**batch)
            if pooling == "pooler":
                h = getattr(enc, "pooler_output", None)
                if h is None:
                    raise BedkdError(f"{clf.source}: the model has no pooler; use the [CLS] representation")
            elif pooling == "mean":
                mask = batch["attention_mask"].unsqueeze(-1).to(enc.last_hidden_state.dtype)
                h = (enc.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            else:
                h = enc.last_hidden_state[:, 0]
            out[rows] = h.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
