"""Where the measured embedding reset (``--akd-reset-max-changed``) can act: found trigger words that
fail the share rule of ``--akd-reset-trigger-embeddings`` (a token in more than 1 % of the clean rows).

    python benchmarks/reset_scope.py --data-dir ../shared/data --datasets sst2 olid \\
        --cells ~/.cache/bedkd/sec --out docs/results/ablation_reset_changed/scope.md

Two tables, both from the same rule as ``bedkd.defenses.purifiers.bedkd.reset_trigger_embeddings``
(``word_shares``) over each dataset's clean pool (the dev split, as the bench uses it):

* every trigger word of the committed tables' attacks (the attacks' defaults, the robustness table's
  new triggers, the security table's backdoors; ``--words`` adds more), with each token's share;
* every cached BeDKD cell under ``--cells`` workdirs: the words its trigger search found (all hits,
  not only the best) and those the measured reset would consider (``pieces``: several pieces only).

A cell none of whose found words is measured computes exactly what it computes without the option:
the reset function then makes the same resets and no extra prediction.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

from transformers import AutoTokenizer

from bedkd.attacks import ATTACKS
from bedkd.datasets import load_dataset
from bedkd.defenses.purifiers.trigger_reset import RESET_MAX_CLEAN_SHARE, word_shares
from bedkd.modeling import default_backbone
from bedkd.outputs import atomic_write_text
from bedkd.provenance import code_version, code_version_id

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import TRIGGERS  # noqa: E402
from security import SECOND, TRIGGER  # noqa: E402

WORD_ATTACKS = ("badnets", "addsent", "ep", "sos")


def table_words() -> list[str]:
    """Every word of the word triggers the committed tables use, lower-cased, in first-seen order."""
    triggers = [" ".join(ATTACKS[a].default_triggers) for a in WORD_ATTACKS]
    triggers += [" ".join(t) if isinstance(t, (list, tuple)) else t for a in WORD_ATTACKS for t in TRIGGERS[a]]
    triggers += [" ".join(TRIGGER), SECOND[SECOND.index("--multi-second-trigger") + 1]]
    return list(dict.fromkeys(w.lower() for t in triggers for w in t.split()))


def shares_text(tok, w) -> str:
    return ", ".join(f"`{tok.convert_ids_to_tokens(p)}` {100 * s:.2f}" for p, s in zip(w.pieces, w.shares))


def word_table(tok, texts: dict[str, list[str]], words: list[str]) -> list[str]:
    lines = ["| dataset | word | tokens: share of the clean rows (%) | share rule | measured (all / pieces) |",
             "|---|---|---|---|---|"]
    for dataset, rows in texts.items():
        for w in word_shares(tok, words, rows):
            lines.append(f"| {dataset} | {w.word} | {shares_text(tok, w)} | {'reset' if w.rare else 'kept'} | "
                         f"{'yes' if w.measured(False) else 'no'} / {'yes' if w.measured(True) else 'no'} |")
    return lines


def cell_table(tok, texts: dict[str, list[str]], workdirs: list[Path]) -> list[str]:
    lines = ["| workdir | dataset | attack | victim | cell | found words | measured (all) | measured (pieces) |",
             "|---|---|---|---|---|---|---|---|"]
    cells = []                                  # (workdir, dataset, attack, victim, cell name, found words)
    for workdir in workdirs:
        for path in sorted((workdir / "cells").glob("*/*/*/bedkd*.json")):
            dataset, attack, victim = path.parts[-4:-1]
            if dataset not in texts:
                continue
            try:
                report = json.loads(path.read_text())["details"]["report"]
            except (ValueError, KeyError, TypeError):
                continue
            hits = ((report.get("verdict") or {}).get("trigger_search") or {}).get("hits") or []
            cells.append((workdir.name, dataset, attack, victim, path.stem,
                          list(dict.fromkeys(w for h in hits for w in h["words"]))))
    shares = {d: {w.word: w for w in word_shares(tok, [w for c in cells if c[1] == d for w in c[5]], rows)}
              for d, rows in texts.items()}     # the clean rows tokenized once per dataset
    for name, dataset, attack, victim, cell, found in cells:
        every = [w for w in found if shares[dataset][w].measured(False)]
        pieces = [w for w in found if shares[dataset][w].measured(True)]
        lines.append(f"| {name} | {dataset} | {attack} | {victim} | {cell} | {' '.join(found) or '-'} | "
                     f"{' '.join(every) or '-'} | {' '.join(pieces) or '-'} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "olid"])
    ap.add_argument("--words", nargs="*", default=[], help="more words to list beside the tables' triggers")
    ap.add_argument("--cells", nargs="*", type=Path, default=[], help="bench workdirs whose cached cells to list")
    ap.add_argument("--out", type=Path, default=None, help="markdown file (default: print)")
    args = ap.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(default_backbone())
    texts = {d: list(load_dataset(d, args.data_dir).dev.texts) for d in args.datasets}
    words = list(dict.fromkeys(table_words() + [w.lower() for w in args.words]))
    command = shlex.join(["python", "benchmarks/reset_scope.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"
             f" (code {code_version_id(code_version())}).", "",
             f"The share rule resets a found word when each of its tokens is in at most "
             f"{100 * RESET_MAX_CLEAN_SHARE:g} % of the clean rows; `--akd-reset-max-changed` measures the "
             "others (`--akd-reset-changed-words pieces`: only those of several pieces).", "",
             "## Trigger words of the committed tables", "", *word_table(tok, texts, words)]
    if args.cells:
        lines += ["", "## Cached BeDKD cells: the words their trigger search found", "",
                  *cell_table(tok, texts, args.cells)]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
