"""benchmarks/reset_scope.py on the data pack's SST-2 rows and a workdir of one cached cell."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEDKD_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.mark.skipif(not (DATA / "sst2" / "clean").is_dir(), reason=f"no data pack at {DATA}")
def test_scope_lists_the_tables_words_and_each_cached_cells_found_words(tmp_path):
    cell = tmp_path / "work" / "cells" / "sst2" / "ep" / "abc" / "bedkd-guarded.json"
    cell.parent.mkdir(parents=True)
    hits = [{"words": ["jt"]}, {"words": ["cf"]}]
    cell.write_text(json.dumps({"details": {"report": {"verdict": {"trigger_search": {"hits": hits}}}}}))
    (cell.parent / "bki.json").write_text("{}")                    # not a BeDKD cell: left out
    out = tmp_path / "scope.md"
    assert load_benchmark("reset_scope").main(["--data-dir", str(DATA), "--datasets", "sst2", "--words", "JT",
                                               "--cells", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| sst2 | ")}
    assert "| kept | yes / yes |" in rows["jt"] and "| reset | no / no |" in rows["cf"]   # ##t is common on SST-2
    assert "| reset | no / no |" in rows["qv"]                     # a security-table word, rare pieces
    assert "| work | sst2 | ep | abc | bedkd-guarded | jt cf | jt | jt |" in text
    assert "bki" not in text
