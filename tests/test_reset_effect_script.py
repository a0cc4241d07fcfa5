"""benchmarks/reset_effect.py end to end on a tiny model (the data pack's OLID rows)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEDKD_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.mark.skipif(not (DATA / "olid" / "clean").is_dir(), reason=f"no data pack at {DATA}")
@pytest.mark.parametrize("extra, per_model", [([], 1), (["--values", "mean", "clean", "--every-piece"], 2),
                                              (["--values", "base", "measured", "--base", "MODEL"], 2)])
def test_reset_effect_writes_both_models_before_and_after(tiny_model_dir, tmp_path, extra, per_model):
    out = tmp_path / "reset.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reset_effect.py"), "--dataset", "olid",
                           "--data-dir", str(DATA), "--seed", "1", "--target", "0", "--trigger", "zx", "vq",
                           "--train-limit", "50", "--clean-model", str(tiny_model_dir), "--victim",
                           str(tiny_model_dir), "--out", str(out),
                           *[str(tiny_model_dir) if e == "MODEL" else e for e in extra]], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| clean model") or
            line.startswith("| victim")]
    assert len(rows) == 2 * per_model and all(len(r.split("|")) == 9 for r in rows)
    values = [e for e in extra[1:] if not e.startswith("--") and e != "MODEL"] if extra else ["mean"]
    assert [r.split("|")[2].strip() for r in rows] == values * 2
    if "measured" in values:        # the tiny model is its own base: a base reset changes nothing
        base = [r.split("|") for r in rows if r.split("|")[2].strip() == "base"]
        assert all(r[3] == r[5] and r[4] == r[6] for r in base)


def _edited_model_rows(script: str, extra: list[str], tiny_model_dir, tmp_path) -> tuple[dict, str]:
    """Run ``script`` on the tiny model with the first piece of ``zx`` moved (``edited``) and on the
    tiny model itself (``same``), the tiny model as the base; (its table's rows by model, the piece)."""
    import torch
    from bedkd.modeling import load_classifier, save_classifier
    clf = load_classifier(str(tiny_model_dir))
    piece = clf.tokenizer("zx", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        clf.model.get_input_embeddings().weight[piece] *= 3.0
    edited = save_classifier(clf, tmp_path / "edited")
    out = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra, "--model", f"edited={edited}",
                           f"same={tiny_model_dir}", "--trigger", "edited=zx", "--base", str(tiny_model_dir),
                           "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    rows = {r.split("|")[1].strip(): r.split("|") for r in out.read_text().splitlines()
            if r.startswith("| edited") or r.startswith("| same")}
    return rows, clf.tokenizer.convert_ids_to_tokens(piece)


def test_embedding_drift_ranks_an_edited_row_first(tiny_model_dir, tmp_path):
    rows, name = _edited_model_rows("embedding_drift.py", [], tiny_model_dir, tmp_path)
    assert rows["edited"][5].strip().startswith(f"`{name}` 2.0000") and f"`zx:{name}` 2.0000 (0)" in rows["edited"][6]
    assert rows["same"][4].strip() == "0.0000" and rows["same"][6].strip() == "-"


@pytest.mark.skipif(not (DATA / "olid" / "clean").is_dir(), reason=f"no data pack at {DATA}")
def test_drift_search_tries_the_edited_rows_and_nothing_in_an_unchanged_model(tiny_model_dir, tmp_path):
    rows, name = _edited_model_rows("drift_search.py", ["--dataset", "olid", "--data-dir", str(DATA),
                                                        "--train-limit", "50"], tiny_model_dir, tmp_path)
    assert rows["edited"][3].strip() == f"`{name}` 2.000" and rows["edited"][2].strip() == "zx"
    assert rows["same"][3].strip() == "-" and rows["same"][5].strip() == rows["same"][4].strip()
