"""Which cached ``bedkd-guarded`` cells ``punish_when="backdoor"`` would have computed identically.

    python benchmarks/punish_when_reuse.py ~/.cache/bedkd/robust5

With ``punish_when="backdoor"`` a cycle skips its punish pass when the trigger proxy measured
before it (the start, or the previous epoch) is within ``proxy_tolerance`` of the clean level.
A run computed with ``punish_when="always"`` is therefore the same run when it punished no rows,
or when no record before its last epoch had a trigger proxy at or below the tolerance (nothing
else reads the option, and a skipped pass is the only difference). This script reads each cell's
epoch records and prints, per cell, whether it can be reused (``--reuse-any-version``) or must be
computed again. Exit 1 when any cell must be computed again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bedkd.defenses.purifiers.akd import punish_next_cycle
from bedkd.defenses.purifiers.bedkd import PRESETS

# guarded's AKD options with the punish pass on demand: the rule the run would have followed
ON_DEMAND = PRESETS["guarded"][1].replace(punish_when="backdoor")


def unchanged(report: dict) -> tuple[bool, str]:
    """Whether the run would be the same with punish_when='backdoor', and why."""
    if not report.get("epochs"):
        return True, "no cycles (no evidence)"
    if not report["data"].get("punish_rows"):
        return True, "no punished rows"
    before_last = [report["start"], *report["epochs"][:-1]]
    skipped = [i for i, r in enumerate(before_last) if not punish_next_cycle(r, ON_DEMAND)]
    if not skipped:
        return True, "trigger proxy above the tolerance before every cycle"
    return False, f"cycle {skipped[0] + 1} would skip its punish pass"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="a bench workdir (its cells/ folder is read)")
    p.add_argument("--defense", default="bedkd-guarded")
    args = p.parse_args()
    again = 0
    for path in sorted(Path(args.workdir).glob(f"cells/*/*/*/{args.defense}.json")):
        report = json.loads(path.read_text())["details"].get("report") or {}
        same, why = unchanged(report)
        again += not same
        print(f"{'reuse' if same else 'AGAIN'}  {path.relative_to(args.workdir)}: {why}")
    return 1 if again else 0


if __name__ == "__main__":
    sys.exit(main())
