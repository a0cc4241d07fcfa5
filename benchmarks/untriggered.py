"""Several bench outputs' rows side by side with their untriggered ASR, as one markdown table.

    python benchmarks/untriggered.py docs/results/untriggered/*/ > table.md

An ASR above the clean model's floor is a backdoor left behind only when the defended model's
*untriggered ASR* (the same test rows without the trigger that it sends to the target anyway) stays
near the floor; when it is as high as the ASR, the model leans to the target class instead. The
clean model's own untriggered ASR (where the run measured it) is what a model that ignores the
trigger scores; above the floor, inserting the trigger moves even the clean model away from the target.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import fmt, pair  # noqa: E402


def table(folders: list[Path]) -> str:
    lines = ["| cell | row | CACC | ASR | clean-model floor | untriggered ASR | the clean model's untriggered ASR | "
             "code version |", "|---|---|---|---|---|---|---|---|"]
    for folder in folders:
        for r in json.loads((folder / "results.json").read_text())["rows"]:
            lines.append(f"| {folder.name} | {r['defense']} | {fmt(r.get('cacc'))} | "
                         f"{pair(r.get('asr'), r.get('second_asr'))} | "
                         f"{pair(r.get('floor_asr'), r.get('second_floor_asr'))} | "
                         f"{pair(r.get('untriggered_asr'), r.get('second_untriggered_asr'))} | "
                         f"{pair(r.get('floor_untriggered_asr'), r.get('second_floor_untriggered_asr'))} | "
                         f"{r.get('code_version')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    folders = [Path(a) for a in argv]
    missing = [str(p) for p in folders if not (p / "results.json").is_file()]
    if not folders or missing:
        print(f"usage: {__doc__.splitlines()[2].strip()}" + (f"\nno results.json in: {', '.join(missing)}"
                                                               if missing else ""), file=sys.stderr)
        return 2
    sys.stdout.write(table(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
