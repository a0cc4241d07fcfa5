"""A new task from a pack dataset: the rows of some of its classes, relabelled 0, 1, ... in the order given.

    python benchmarks/class_subset.py --data-dir ../shared/data --dataset agnews --classes 2 3 \\
        --name agnews-bs --out ~/.cache/bedkd/userdata

writes ``OUT/NAME/clean/{train,dev,test}.tsv`` (AG News Business -> 0, Sci/Tech -> 1 above), a folder
that ``bedkd bench --data-dir OUT --datasets NAME`` reads as a user dataset. Each line is copied as it
is but for its label, so the texts are byte for byte the pack's. The output is derived from
third-party data: keep it outside the checkout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bedkd.errors import BedkdError
from bedkd.outputs import atomic_dir

SPLITS = ("train", "dev", "test")


class SubsetError(Exception):
    """Bad input or output, with the file (and line) it concerns."""


def subset_lines(path: Path, classes: list[int]) -> list[str]:
    """The header, then each line of a class in ``classes`` with its label replaced by its index there."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or "\t" not in lines[0]:
        raise SubsetError(f"{path}:1: expected a 'sentence<TAB>label' header")
    out, new = [lines[0]], {str(c): i for i, c in enumerate(classes)}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or not label.strip().lstrip("-").isdigit():
            raise SubsetError(f"{path}:{number}: expected 'sentence<TAB>label', got {line[:60]!r}")
        if label.strip() in new:
            out.append(f"{text}\t{new[label.strip()]}")
    missing = [c for c in classes if not any(line.endswith(f"\t{new[str(c)]}") for line in out[1:])]
    if missing:
        raise SubsetError(f"{path}: no row of class {', '.join(map(str, missing))}")
    return out


def write_subset(data_dir: Path, dataset: str, classes: list[int], name: str, out: Path,
                 overwrite: bool = False) -> dict[str, int]:
    """Write the three splits into ``out/name/clean/`` in one rename (an existing non-empty folder is
    refused unless ``overwrite``); rows per split."""
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise SubsetError(f"--classes needs two or more different classes, got {classes}")
    splits = {s: subset_lines(data_dir / dataset / "clean" / f"{s}.tsv", classes) for s in SPLITS}
    with atomic_dir(out / name / "clean", overwrite) as staging:
        for split, lines in splits.items():
            (staging / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {split: len(lines) - 1 for split, lines in splits.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, type=Path, help="the data pack")
    p.add_argument("--dataset", required=True, help="a dataset of the pack, e.g. agnews")
    p.add_argument("--classes", required=True, type=int, nargs="+", help="its classes to keep, new label order")
    p.add_argument("--name", required=True, help="the new dataset's name (its folder)")
    p.add_argument("--out", required=True, type=Path, help="the data directory to write it into")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/NAME/clean folder")
    args = p.parse_args(argv)
    try:
        counts = write_subset(args.data_dir, args.dataset, args.classes, args.name, args.out, args.overwrite)
    except (SubsetError, BedkdError, OSError) as exc:
        print(f"class_subset: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / args.name / 'clean'}: " + ", ".join(f"{s} {n} rows" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
