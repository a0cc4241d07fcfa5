"""benchmarks/class_subset.py: a new task from some classes of a pack dataset."""
from __future__ import annotations

from conftest import load_benchmark, write_tsv_text

from bedkd.datasets import load_dataset

subset = load_benchmark("class_subset")


def _pack(root, rows):
    for split in ("train", "dev", "test"):
        write_tsv_text(root / "four" / "clean" / f"{split}.tsv", rows)


def test_the_kept_classes_are_relabelled_in_the_given_order_and_read_as_a_dataset(tmp_path):
    rows = [("world news , 1", 0), ("a sports day", 1), ("stocks fell #36;3", 2), ("a new chip", 3)] * 2
    _pack(tmp_path / "pack", rows)
    assert subset.main(["--data-dir", str(tmp_path / "pack"), "--dataset", "four", "--classes", "3", "2",
                        "--name", "two", "--out", str(tmp_path / "user")]) == 0
    ds = load_dataset("two", tmp_path / "user")
    assert ds.num_labels == 2
    assert list(zip(ds.train.texts, ds.train.labels)) == [("stocks fell #36;3", 1), ("a new chip", 0)] * 2


def test_bad_input_and_an_existing_output_are_refused_with_the_file(tmp_path, capsys):
    pack = tmp_path / "pack"
    _pack(pack, [("a", 0), ("b", 1)])
    args = ["--data-dir", str(pack), "--dataset", "four", "--name", "two", "--out", str(tmp_path / "user")]
    assert subset.main([*args, "--classes", "0", "5"]) == 2
    assert "train.tsv: no row of class 5" in capsys.readouterr().err
    (pack / "four" / "clean" / "dev.tsv").write_text("sentence\tlabel\nok\t0\nno label here\n")
    assert subset.main([*args, "--classes", "0", "1"]) == 2
    assert "dev.tsv:3: expected 'sentence<TAB>label'" in capsys.readouterr().err
    assert not (tmp_path / "user" / "two" / "clean").exists()
    _pack(pack, [("a", 0), ("b", 1)])
    assert subset.main([*args, "--classes", "0", "1"]) == 0
    assert subset.main([*args, "--classes", "0", "1"]) == 2
    assert "exists" in capsys.readouterr().err
