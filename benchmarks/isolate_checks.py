"""The `--akd-isolate-keep` check of ablation runs, copied from their cell reports beside their results.

    python benchmarks/isolate_checks.py docs/results/ablation_isolate_words/lower/*/ \\
        --workdirs ~/.cache/bedkd/iso60w ~/.cache/bedkd/nt58w

For each bench output folder, the `bedkd` row's cached cell (the first of ``--workdirs`` that holds it,
``bench_runs.cell_file``) gives the report's ``isolate_check`` (the held-out trigger proxy without and
with the new tokens, since `paired` the rows moved off and onto the target, and whether they were
kept), the tokens kept, and the number of proxy rows (the check's own count, or for checks made
before it had one, the length of the start record's row effects).
Writes ``isolate_check.json`` in the folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import cell_file  # noqa: E402


def check_of(folder: Path, workdirs: list[Path]) -> dict | None:
    """The folder's isolate check from its cell report, or None (no `bedkd` row, cell or check)."""
    rows = json.loads((folder / "results.json").read_text())["rows"]
    row = next((r for r in rows if r.get("defense") == "bedkd"), None)
    for workdir in workdirs if row is not None else []:
        cell = cell_file(workdir, row)
        report = (cell or {}).get("details", {}).get("report", {})
        check = report.get("data", {}).get("isolate_check")
        if check is not None:
            effects = report.get("start", {}).get("trigger_row_effects") or ""
            return {"workdir": str(workdir), "victim_key": row.get("victim_key"), "isolate_check": check,
                    "isolated_words": report["data"].get("isolated_words", {}),
                    "proxy_rows": check.get("proxy_rows", len(effects))}        # the check's own since `paired`
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="bench output folders (each with results.json)")
    parser.add_argument("--workdirs", nargs="+", type=Path, required=True, help="the runs' bench workdirs")
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        try:
            check = check_of(folder, [w.expanduser() for w in args.workdirs])
        except (OSError, ValueError, KeyError) as exc:
            print(f"isolate_checks.py: {folder}: not a readable bench output ({exc})", file=sys.stderr)
            return 2
        if check is None:
            print(f"isolate_checks.py: {folder}: no isolate check in any workdir's cell", file=sys.stderr)
            status = 1
            continue
        (folder / "isolate_check.json").write_text(json.dumps(check, indent=1) + "\n")
        print(f"{folder}: {check['isolate_check']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
