"""Loading and saving classifiers: bedkd.modeling.load_classifier / save_classifier."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bedkd.errors import BedkdError, InputError
from bedkd.modeling import Classifier, load_classifier, predict_proba, save_classifier

TEXTS = ["a fine film", "awful", "", "the cast is wonderful and the plot is clever"]


def _dot_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith("."))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pickle_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its weights as a pickle checkpoint (pytorch_model.bin) and no safetensors."""
    clf = load_classifier(str(tiny_model_dir))
    out = tmp_path_factory.mktemp("pickle_model") / "model"
    out.mkdir()
    torch.save(clf.model.state_dict(), out / "pytorch_model.bin")
    clf.model.config.save_pretrained(out)
    clf.tokenizer.save_pretrained(out)
    assert not list(out.glob("*.safetensors"))
    return out


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model that a test may modify."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# -- loading --------------------------------------------------------------------------------------
def test_load_tiny_model(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir))
    assert isinstance(clf, Classifier)
    assert clf.num_labels == 2
    assert clf.source == str(tiny_model_dir)
    assert not clf.model.training
    assert clf.tokenizer.pad_token_id is not None
    assert clf.model.config.pad_token_id == clf.tokenizer.pad_token_id
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    state = clf.model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    probs = predict_proba(clf, TEXTS)
    assert probs.shape == (len(TEXTS), 2)
    assert torch.allclose(torch.from_numpy(probs).sum(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


def test_load_with_matching_num_labels(tiny_model_dir):
    assert load_classifier(str(tiny_model_dir), num_labels=2).num_labels == 2


def test_load_three_class_model(make_tiny_model_dir):
    d3 = make_tiny_model_dir(3)
    assert make_tiny_model_dir(3) == d3  # cached per class count
    clf = load_classifier(str(d3))
    assert clf.num_labels == 3
    assert predict_proba(clf, TEXTS).shape == (len(TEXTS), 3)


def test_load_with_other_num_labels_is_a_user_error(tiny_model_dir):
    with pytest.raises(BedkdError) as info:
        load_classifier(str(tiny_model_dir), num_labels=3)
    assert str(tiny_model_dir) in str(info.value)


def test_pickle_checkpoint_refused(pickle_model_dir):
    with pytest.raises(InputError) as info:
        load_classifier(str(pickle_model_dir))
    err = info.value
    assert err.path == str(pickle_model_dir / "pytorch_model.bin")
    assert "pickle" in err.problem
    assert "--allow-pickle" in err.problem


def test_pickle_checkpoint_loads_when_allowed(pickle_model_dir, tiny_model_dir):
    clf = load_classifier(str(pickle_model_dir), allow_pickle=True)
    ref = load_classifier(str(tiny_model_dir))
    assert clf.num_labels == 2
    for name, tensor in ref.model.state_dict().items():
        assert torch.equal(clf.model.state_dict()[name], tensor), name


def test_safetensors_preferred_over_pickle(model_copy):
    """With both present the pickle file is never read, even without allow_pickle."""
    (model_copy / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    clf = load_classifier(str(model_copy))
    assert clf.num_labels == 2


def test_missing_model_dir(tmp_path):
    with pytest.raises(InputError) as info:
        load_classifier(str(tmp_path / "nope"))
    assert info.value.path == str(tmp_path / "nope")
    assert "not found" in info.value.problem


def test_model_path_is_a_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a model directory"):
        load_classifier(str(f))


def test_model_dir_without_config(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(InputError) as info:
        load_classifier(str(model_copy))
    assert info.value.path == str(model_copy)
    assert "config.json is missing" in info.value.problem


def test_model_dir_without_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    for allow in (False, True):
        with pytest.raises(InputError) as info:
            load_classifier(str(model_copy), allow_pickle=allow)
        assert "no model weights" in info.value.problem
        assert info.value.path == str(model_copy)


def test_corrupt_weights_give_a_user_error(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(BedkdError) as info:
        load_classifier(str(model_copy))
    assert str(model_copy) in str(info.value)


# -- saving ---------------------------------------------------------------------------------------
def test_save_and_reload(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    out = save_classifier(clf, tmp_path / "saved", extra_files={"report.json": json.dumps({"k": 1})})
    assert out == tmp_path / "saved"
    assert json.loads((out / "report.json").read_text()) == {"k": 1}
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    back = load_classifier(str(out))
    assert torch.allclose(torch.from_numpy(predict_proba(back, TEXTS)), torch.from_numpy(predict_proba(clf, TEXTS)))
    assert _dot_entries(tmp_path) == []


def test_save_into_new_nested_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    out = save_classifier(clf, tmp_path / "a" / "b" / "saved")
    assert (out / "model.safetensors").is_file()
    assert _dot_entries(tmp_path / "a" / "b") == []


def test_save_into_empty_existing_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    (tmp_path / "empty").mkdir()
    save_classifier(clf, tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert _dot_entries(tmp_path) == []


def test_save_refuses_non_empty_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    (out / "sub").mkdir()
    (out / "sub" / "more.txt").write_text("more")
    before = _snapshot(out)
    with pytest.raises(BedkdError) as info:
        save_classifier(clf, out)
    assert "not empty" in str(info.value) and "--overwrite" in str(info.value)
    assert _snapshot(out) == before
    assert _dot_entries(tmp_path) == []


def test_save_refuses_a_file(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    (tmp_path / "out").write_text("a file")
    for overwrite in (False, True):
        with pytest.raises(BedkdError, match="not a directory"):
            save_classifier(clf, tmp_path / "out", overwrite=overwrite)
    assert (tmp_path / "out").read_text() == "a file"


def test_save_overwrite_replaces_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    save_classifier(clf, out, overwrite=True, extra_files={"new.txt": "new"})
    names = set(os.listdir(out))
    assert "stale.txt" not in names
    assert {"new.txt", "model.safetensors", "config.json"} <= names
    assert load_classifier(str(out)).num_labels == 2
    assert _dot_entries(tmp_path) == []


def test_save_refuses_the_model_source_dir(model_copy):
    clf = load_classifier(str(model_copy))
    before = _snapshot(model_copy)
    for overwrite in (False, True):
        with pytest.raises(BedkdError) as info:
            save_classifier(clf, model_copy, overwrite=overwrite)
        assert "replace an input" in str(info.value)
    # also when spelt differently (relative path with '..')
    detour = model_copy.parent / "x" / ".." / model_copy.name
    with pytest.raises(BedkdError, match="replace an input"):
        save_classifier(clf, detour, overwrite=True)
    assert _snapshot(model_copy) == before
    assert _dot_entries(model_copy.parent) == []


def test_save_refuses_a_protected_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    other = tmp_path / "input"
    other.mkdir()
    (other / "data.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(BedkdError, match="replace an input"):
        save_classifier(clf, other, overwrite=True, protect=(str(other),))
    assert (other / "data.tsv").is_file()


def test_failed_save_leaves_nothing_behind(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    # a name whose folder does not exist makes writing the extra file fail mid-way
    with pytest.raises(FileNotFoundError):
        save_classifier(clf, tmp_path / "out", extra_files={"missing/dir.txt": "x"})
    assert not (tmp_path / "out").exists()
    assert _dot_entries(tmp_path) == []


def test_failed_overwrite_keeps_the_old_dir(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        save_classifier(clf, out, overwrite=True, extra_files={"missing/dir.txt": "x"})
    assert sorted(os.listdir(out)) == ["old.txt"]
    assert _dot_entries(tmp_path) == []


def test_save_does_not_change_the_model(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    source_files = _snapshot(tiny_model_dir)
    save_classifier(clf, tmp_path / "out")
    after = clf.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _snapshot(tiny_model_dir) == source_files
