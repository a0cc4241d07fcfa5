"""Where `--akd-isolate-trigger-words` could change a `guarded` run already made: a model-free screen.

    python benchmarks/isolate_screen.py --results docs/results/robustness/results.json ... \\
        [--data-dir ../shared/data] --out docs/results/ablation_isolate_words/screen

The option acts after the cycles, on the found trigger words of several pieces that the embedding
reset's share rule kept (a piece in more than 1 % of the clean rows) and that are rare as words
(:func:`bedkd.defenses.purifiers.trigger_tokens.words_to_isolate`). Both rules read the defender's
clean pool alone, so for each `bedkd-guarded` row with a found trigger, the cell's clean pool is
rebuilt from the run's recorded `bedkd bench` command and the row's recorded trigger (`trigger_found`:
the strongest hit; a table does not record the others; with ``--workdirs``, every hit of the cell's
report where a bench workdir still holds it) is put through them. A row with no such word returns
what it returned. Every row is also put through them with every word its trigger search could have
found (*candidates*: the over-represented words of every label, rebuilt from the data alone,
:func:`bedkd.defenses.scanning.trigger_search.candidate_words`; the search of `guarded` tries no
drift words): where none of them gets a token (``could_isolate`` empty), the option cannot act on
the run whatever its hits were (``bench_runs.isolate_cannot_act``). Writes ``results.json`` and
``results.md``.
"""
from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import write_screen  # noqa: E402
from trigger_runs_screen import recorded_cells, screen_parser  # noqa: E402
from unexplained_screen import cell_report, rebuilt_cell  # noqa: E402


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """The bundled backbone's tokenizer (every recorded cell ran on it), read once."""
    from bedkd.modeling import default_backbone
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(default_backbone())


def screened(command: str, dataset: str, attack: str, words: list[str], data_dir: str | None) -> dict:
    """Each found word's pieces and their clean-row shares, what the share rule resets, what is isolated;
    the trigger search's candidate words and those of them that would be isolated, were they found (the
    reset and the token rule decide word by word on the clean pool, so one count of its pieces serves both)."""
    from bedkd.defenses.purifiers.trigger_reset import word_shares
    from bedkd.defenses.purifiers.trigger_tokens import words_to_isolate
    from bedkd.defenses.scanning.scan import search_settings
    from bedkd.defenses.scanning.trigger_search import Trigger, candidate_words
    plan, suspect, guarded = rebuilt_cell(command, dataset, attack, data_dir, keep_data_dir=True)
    tok, texts = _tokenizer(), plan.pool.texts
    held_out = plan.pool.subset(guarded.split(plan.pool).budget)
    candidates = candidate_words(suspect, held_out, plan.ds.num_labels, search_settings(guarded.scan_cfg))
    shares = word_shares(tok, [*words, *candidates], texts)
    reset = [f"{w.word}:{p}" for w in shares if w.rare for p in w.pieces]
    found = [w for w in shares if w.word in set(words)]
    return {"pieces": {w.word: {tok.convert_ids_to_tokens(p): round(100 * s, 2) for p, s in zip(w.pieces, w.shares)}
                       for w in found},
            "reset": [w.word for w in found if w.rare],
            "isolated": words_to_isolate(tok, [Trigger(words, True, 0, 1.0, 0)], texts, reset),
            "candidates": candidates,
            "could_isolate": words_to_isolate(tok, [Trigger(candidates, True, 0, 1.0, 0)], texts, reset)}


def flag_value(command: str, flag: str) -> str | None:
    """The value after ``flag`` in a recorded bench command (a table row without a target or seed of its own)."""
    words = shlex.split(command)
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def target_and_seed(row: dict, command: str) -> dict:
    """The row's target and seed, or (a table row without them) those its recorded bench command gives."""
    return {k: flag_value(command, flag) if row.get(k) is None else row[k]
            for k, flag in (("target", "--attack-target"), ("seed", "--seed"))}


def found_words(row: dict, workdirs: list[Path]) -> tuple[list[str], str]:
    """The words of every hit in the row's cell report, where a workdir holds it; else the strongest hit's."""
    cell = cell_report(workdirs, row) if workdirs else None
    search = (((cell or {}).get("details", {}).get("report", {}).get("verdict") or {}).get("trigger_search") or {})
    hits = [w for hit in search.get("hits", []) for w in hit["words"]]
    if hits:
        return list(dict.fromkeys(hits)), "every hit"
    return row["trigger_found"].split(), "strongest hit"


def markdown(rows: list[dict], meta: dict) -> str:
    machine = meta["machine"]
    hit = [r for r in rows if r["isolated"]]
    lines = [f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, "
             f"{machine['cpu_model']} ({machine['cpus_usable']} CPUs).", "",
             f"{len(rows)} `guarded` cells with a found trigger screened; in {len(hit)} the option gives a found word "
             "a token of its own (every other cell returns what it returned, as far as its strongest trigger goes). "
             f"With every candidate word of the trigger search, it could act in {sum(bool(r['could_isolate']) for r in rows)} "
             "(*could isolate*; in the others it cannot, whatever the run found).", "",
             "| table | dataset | attack | target | seed | found trigger (words screened) | pieces (% of clean rows) | reset | isolated "
             "| could isolate (of the candidates) | ASR | floor | ΔCACC |", "|" + "---|" * 13]
    for r in rows:
        pieces = "; ".join(f"{w}: " + " ".join(f"{p} {s:g}" for p, s in ps.items()) for w, ps in r["pieces"].items())
        lines.append(f"| {r['table']} | {r['dataset']} | {r['attack']} | {r.get('target', '–')} | {r.get('seed', '–')} | "
                     f"{r['trigger_found']} ({r['words_from']}) | {pieces} | {' '.join(r['reset']) or '–'} | "
                     f"{' '.join(r['isolated']) or '–'} | {' '.join(r['could_isolate']) or '–'} "
                     f"({len(r['candidates'])}) | {r['asr']:.1f} | "
                     f"{'–' if r.get('floor_asr') is None else format(r['floor_asr'], '.1f')} | {r['cacc_change']:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = screen_parser(__doc__)
    parser.add_argument("--workdirs", nargs="*", default=[], metavar="WORKDIR",
                        help="bench workdirs whose cell reports give every hit of a row, not only the strongest")
    args = parser.parse_args(argv)
    cells = recorded_cells(args.results, "isolate_screen.py")
    if cells is None:
        return 2
    rows = []
    for path, row, command in cells:
        if row["defense"] != "bedkd-guarded" or not row.get("trigger_found"):
            continue
        words, source = found_words(row, [Path(w).expanduser() for w in args.workdirs])
        rows.append({"table": path, **{k: row.get(k) for k in ("dataset", "attack", "trigger_found", "asr",
                                                               "floor_asr", "cacc_change", "victim_asr",
                                                               "victim_key")},
                     **target_and_seed(row, command), "words_from": source, "command": command,
                     **screened(command, row["dataset"], row["attack"], words, args.data_dir)})
        print(f"{row['dataset']}/{row['attack']} {row['trigger_found']}: isolated {rows[-1]['isolated']}, "
              f"could isolate {rows[-1]['could_isolate']}", file=sys.stderr)
    write_screen(args.out, "isolate_screen.py", argv, rows, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
