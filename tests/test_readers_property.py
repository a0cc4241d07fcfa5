"""Property tests of the readers: whatever the bytes, ``read_labeled`` returns rows or raises the
project's own error (``BedkdError``; in practice ``InputError`` naming the file), never another
exception. One property per format (TSV, CSV, JSONL), fed both raw bytes and near-valid files.
"""
from __future__ import annotations

import json
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bedkd.data import LabeledTexts, read_labeled, write_tsv  # noqa: E402
from bedkd.errors import BedkdError, InputError  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that matter to the parsers, plus a few that often break naive ones (NUL, NEL,
# U+2028, a BOM, a lone CR, a surrogate-free astral character).
SPECIAL = "\t\n\r,\"'{}[]:\\ 0123456789-+._e\x00\x85\u2028\ufeff\U0001f600"
FIELD = st.one_of(st.sampled_from(["sentence", "text", "label", "", " label ", "1", "-3", "x"]),
                  st.text(alphabet=SPECIAL + "abcxyz", max_size=12))
TEXT_COLUMN = st.sampled_from([None, "sentence", "text", "missing"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("readers_property")


def check(path, content: bytes, text_column=None) -> None:
    """The property: rows that hang together, or a BedkdError naming the file."""
    path.write_bytes(content)
    try:
        data = read_labeled(path, text_column=text_column)
    except BedkdError as exc:
        if isinstance(exc, InputError):
            assert exc.path == str(path)
            assert exc.line is None or exc.line >= 1
        return
    assert isinstance(data, LabeledTexts) and len(data) >= 1
    assert len(data.texts) == len(data.labels) == len(data.lines)
    assert all(isinstance(t, str) for t in data.texts)
    assert all(isinstance(y, int) and not isinstance(y, bool) for y in data.labels)
    assert all(1 <= n for n in data.lines) and data.lines == sorted(data.lines)
    # what was read can be written in the project's TSV layout and read back
    again = path.with_name(path.stem + "-again.tsv")
    write_tsv(again, data)
    back = read_labeled(again)
    assert back.labels == data.labels
    assert back.texts == [re.sub(r"[\t\r\n]+", " ", t).strip() for t in data.texts]


def delimited(sep: str):
    """Files of a header and rows, near the expected layout, with junk mixed in."""
    row = st.lists(FIELD, min_size=1, max_size=4).map(sep.join)
    header = st.sampled_from([f"sentence{sep}label", f"label{sep}text", f"text{sep}label{sep}extra", "sentence",
                              f"\ufeffsentence{sep}label", ""])
    ending = st.sampled_from(["\n", "\r\n", "", "\n\n  \n", "\r"])
    return st.builds(lambda h, rows, end: (h + "\n" + "\n".join(rows) + end).encode("utf-8"),
                     header, st.lists(row, max_size=8), ending)


JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10))
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3)),
    max_leaves=8)
JSON_OBJECT = st.fixed_dictionaries({}, optional={"sentence": JSON_VALUE, "text": JSON_VALUE, "label": JSON_VALUE,
                                                  "other": JSON_VALUE})
JSON_LINE = st.one_of(JSON_OBJECT.map(json.dumps), JSON_VALUE.map(json.dumps), st.text(alphabet=SPECIAL, max_size=15),
                      st.builds(lambda t, y: json.dumps({"sentence": t, "label": y}), st.text(max_size=20),
                                st.integers(-5, 5)))
JSONL_FILE = st.builds(lambda lines, end: ("\n".join(lines) + end).encode("utf-8"),
                       st.lists(JSON_LINE, max_size=6), st.sampled_from(["", "\n", "\r\n"]))


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
@SETTINGS
@given(content=st.binary(max_size=400), text_column=TEXT_COLUMN)
@example(content=b"\xef\xbb\xbf", text_column=None)
@example(content=b"sentence\tlabel\n\xff\t1\n", text_column=None)
def test_any_bytes_parse_or_raise_input_error(folder, suffix, content, text_column):
    check(folder / f"raw{suffix}", content, text_column)


@SETTINGS
@given(content=delimited("\t"), text_column=TEXT_COLUMN)
@example(content=b"sentence\tlabel\n\t1\n", text_column=None)
@example(content=b"sentence\tlabel\nx\t" + b"1" * 5000 + b"\n", text_column=None)
def test_tsv_reader(folder, content, text_column):
    check(folder / "near.tsv", content, text_column)


@SETTINGS
@given(content=delimited(","), text_column=TEXT_COLUMN)
@example(content=b'sentence,label\n"unterminated,1\n', text_column=None)
@example(content=b'sentence,label\n"' + b"x" * 200_000 + b'",1\n', text_column=None)
@example(content=b"sentence,label\na\x00b,1\n", text_column=None)
def test_csv_reader(folder, content, text_column):
    check(folder / "near.csv", content, text_column)


@SETTINGS
@given(content=JSONL_FILE, text_column=TEXT_COLUMN)
@example(content=b'{"sentence": "a", "label": ' + b"1" * 5000 + b"}\n", text_column=None)
@example(content=b"[" * 100_000 + b"]" * 100_000 + b"\n", text_column=None)
@example(content=b'{"sentence": "a", "label": 1e999}\n', text_column=None)
@example(content=b'{"sentence": "\\ud800", "label": 1}\n', text_column=None)
def test_jsonl_reader(folder, content, text_column):
    check(folder / "near.jsonl", content, text_column)


@SETTINGS
@given(rows=st.lists(st.tuples(st.text(max_size=30), st.integers(-(10 ** 6), 10 ** 6)), min_size=1, max_size=8))
def test_write_tsv_then_read_keeps_rows(folder, rows):
    """What ``write_tsv`` writes reads back: texts with tabs/line breaks as spaces, then stripped."""
    path = folder / "round.tsv"
    write_tsv(path, LabeledTexts([t for t, _ in rows], [y for _, y in rows]))
    back = read_labeled(path)
    assert back.labels == [y for _, y in rows]
    assert back.texts == [re.sub(r"[\t\r\n]+", " ", t).strip() for t, _ in rows]


def test_float_labels_are_refused_not_truncated(folder):
    path = folder / "float.jsonl"
    path.write_text('{"sentence": "a", "label": 1.0}\n', encoding="utf-8")
    with pytest.raises(InputError, match="not an integer"):
        read_labeled(path)
