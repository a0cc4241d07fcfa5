"""Reading and writing labelled text: bedkd.data.read_labeled, write_tsv, checks, row files."""
from __future__ import annotations

import json
import os

import pytest

from bedkd.data import (LabeledTexts, check_labels, check_rows, read_labeled, read_row_indices,
                        require_all_classes, write_tsv)
from bedkd.errors import BedkdError, InputError


# -- TSV ------------------------------------------------------------------------------------------
def test_tsv_basic_rows_lines_and_source(write_raw_file):
    path = write_raw_file("d.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\n")
    data = read_labeled(path)
    assert data.texts == ["good film", "bad film"]
    assert data.labels == [1, 0]
    assert data.lines == [2, 3]
    assert data.source == str(path)
    assert data.num_empty == 0
    assert data.class_counts() == {0: 1, 1: 1}


def test_tsv_without_trailing_newline(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\na\t1\nb\t0"))
    assert data.texts == ["a", "b"] and data.labels == [1, 0]


def test_tsv_quoting_is_off_leading_quote_kept_verbatim(write_raw_file):
    content = 'sentence\tlabel\n"quoted start\t1\nsays "hi" twice\t0\n"\t1\n'
    data = read_labeled(write_raw_file("d.tsv", content))
    assert data.texts == ['"quoted start', 'says "hi" twice', '"']
    assert data.labels == [1, 0, 1]
    assert data.lines == [2, 3, 4]


def test_tsv_u0085_inside_sentence_is_not_a_line_break(write_raw_file):
    content = "sentence\tlabel\nbefore\u0085after\t1\nnext\u2028row\t0\nlast\t1\n"
    data = read_labeled(write_raw_file("d.tsv", content))
    assert len(data) == 3
    assert data.texts[0] == "before\u0085after"
    assert data.texts[1] == "next\u2028row"
    assert data.labels == [1, 0, 1]
    assert data.lines == [2, 3, 4]


def test_tsv_crlf_line_endings(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\r\nfirst one\t1\r\nsecond\t0\r\n"))
    assert data.texts == ["first one", "second"]
    assert data.labels == [1, 0]
    assert data.lines == [2, 3]


def test_txt_suffix_is_read_as_tsv(write_raw_file):
    data = read_labeled(write_raw_file("d.TXT", "sentence\tlabel\nx, y\t0\n"))
    assert data.texts == ["x, y"] and data.labels == [0]


def test_tsv_text_column_named_text_and_columns_in_any_order(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "label\tid\ttext\n1\t7\thello there\n0\t8\tbye\n"))
    assert data.texts == ["hello there", "bye"]
    assert data.labels == [1, 0]


def test_tsv_explicit_text_column(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tbody\tlabel\nignored\tused\t0\n"),
                        text_column="body")
    assert data.texts == ["used"]


def test_tsv_label_surrounding_spaces_accepted(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\na\t 1 \nb\t0\r\n"))
    assert data.labels == [1, 0]


def test_empty_text_allowed_and_counted(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\n\t1\n   \t0\nsome text\t1\n"))
    assert len(data) == 3
    assert data.texts[:2] == ["", ""]
    assert data.num_empty == 2
    assert data.lines == [2, 3, 4]


# -- CSV ------------------------------------------------------------------------------------------
def test_csv_quoted_commas_and_quotes(write_raw_file):
    content = 'sentence,label\n"a, b, and c",1\n"he said ""no""",0\nplain,1\n'
    data = read_labeled(write_raw_file("d.csv", content))
    assert data.texts == ["a, b, and c", 'he said "no"', "plain"]
    assert data.labels == [1, 0, 1]
    assert data.lines == [2, 3, 4]


def test_csv_multiline_field_line_numbers(write_raw_file):
    content = 'text,label\n"two\nlines",1\nok,0\n'
    data = read_labeled(write_raw_file("d.csv", content))
    assert data.texts == ["two\nlines", "ok"]
    assert data.lines == [2, 4]


def test_csv_crlf(write_raw_file):
    data = read_labeled(write_raw_file("d.csv", 'sentence,label\r\n"x, y",0\r\nz,1\r\n'))
    assert data.texts == ["x, y", "z"] and data.labels == [0, 1]


def test_csv_wrong_field_count_after_multiline_field_names_its_line(write_raw_file):
    path = write_raw_file("d.csv", 'sentence,label\n"multi\nline",1\nno comma here\n')
    with pytest.raises(InputError) as info:
        read_labeled(path)
    assert info.value.line == 4
    assert "comma-separated" in info.value.problem


# -- JSONL ----------------------------------------------------------------------------------------
def test_jsonl_rows(write_raw_file):
    lines = [json.dumps({"text": "hello", "label": 1}),
             "",
             json.dumps({"sentence": "tab\there", "label": "0", "extra": [1, 2]}),
             json.dumps({"text": None, "label": 0})]
    data = read_labeled(write_raw_file("d.jsonl", "\n".join(lines) + "\n"))
    assert data.texts == ["hello", "tab\there", ""]
    assert data.labels == [1, 0, 0]
    assert data.lines == [1, 3, 4]
    assert data.num_empty == 1


def test_ndjson_suffix_and_crlf(write_raw_file):
    data = read_labeled(write_raw_file("d.ndjson", '{"text": "a", "label": 1}\r\n{"text": "b", "label": 0}\r\n'))
    assert data.texts == ["a", "b"] and data.labels == [1, 0]


# -- errors ---------------------------------------------------------------------------------------
def _error(path, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        read_labeled(path, **kwargs)
    err = info.value
    assert isinstance(err, BedkdError)
    assert err.path == str(path)
    where = f"{path}:{err.line}" if err.line is not None else str(path)
    assert str(err) == f"{where}: {err.problem}"
    return err


def test_missing_file(tmp_path):
    err = _error(tmp_path / "nope.tsv")
    assert err.line is None
    assert "not found" in err.problem


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.tsv").mkdir()
    err = _error(tmp_path / "dir.tsv")
    assert "not a regular file" in err.problem


def test_unknown_suffix(write_raw_file):
    err = _error(write_raw_file("data.xlsx", "sentence\tlabel\na\t1\n"))
    assert "unknown file type" in err.problem and ".xlsx" in err.problem


def test_invalid_utf8_names_line(write_raw_file):
    err = _error(write_raw_file("d.tsv", b"sentence\tlabel\nok\t1\nbad \xff byte\t0\n"))
    assert err.line == 3
    assert "UTF-8" in err.problem


def test_missing_text_column(write_raw_file):
    err = _error(write_raw_file("d.tsv", "review\tlabel\ngood\t1\n"))
    assert err.line == 1
    assert "missing text column" in err.problem
    assert "review" in err.problem  # lists the columns found


def test_missing_explicit_text_column(write_raw_file):
    err = _error(write_raw_file("d.tsv", "sentence\tlabel\ngood\t1\n"), text_column="body")
    assert "missing text column 'body'" in err.problem


def test_missing_label_column(write_raw_file):
    err = _error(write_raw_file("d.tsv", "sentence\tstars\ngood\t5\n"))
    assert err.line == 1
    assert "missing label column 'label'" in err.problem
    assert "stars" in err.problem


def test_jsonl_missing_label_names_the_line(write_raw_file):
    content = '{"text": "a", "label": 1}\n{"text": "b"}\n'
    err = _error(write_raw_file("d.jsonl", content))
    assert err.line == 2
    assert "missing label column" in err.problem


@pytest.mark.parametrize("bad_line, found", [("three\tfields\t1", 3), ("no tab at all", 1), ("", 1)])
def test_tsv_wrong_number_of_fields(write_raw_file, bad_line, found):
    content = f"sentence\tlabel\nfine\t1\nalso fine\t0\n{bad_line}\nafter\t1\n"
    err = _error(write_raw_file("d.tsv", content))
    assert err.line == 4  # header is line 1
    assert "expected 2 tab-separated fields" in err.problem
    assert f"found {found}" in err.problem


def test_tsv_wrong_fields_line_number_with_crlf(write_raw_file):
    err = _error(write_raw_file("d.tsv", "sentence\tlabel\r\nok\t1\r\nbad\r\n"))
    assert err.line == 3


@pytest.mark.parametrize("label", ["abc", "1.5", "", "1e0", "one"])
def test_non_integer_label(write_raw_file, label):
    err = _error(write_raw_file("d.tsv", f"sentence\tlabel\nok\t0\nbad\t{label}\n"))
    assert err.line == 3
    assert "not an integer" in err.problem
    assert repr(label) in err.problem


@pytest.mark.parametrize("label", [1.5, 1.0, True, None, "x", [1]])
def test_jsonl_non_integer_label(write_raw_file, label):
    content = json.dumps({"text": "a", "label": 0}) + "\n" + json.dumps({"text": "b", "label": label}) + "\n"
    err = _error(write_raw_file("d.jsonl", content))
    assert err.line == 2
    assert "not an integer" in err.problem


def test_jsonl_non_string_text(write_raw_file):
    err = _error(write_raw_file("d.jsonl", '{"text": 12, "label": 0}\n'))
    assert err.line == 1
    assert "text must be a string" in err.problem


def test_invalid_json_line(write_raw_file):
    content = '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1\n'
    err = _error(write_raw_file("d.jsonl", content))
    assert err.line == 3
    assert "invalid JSON" in err.problem


@pytest.mark.parametrize("line", ['["a", 1]', '"just a string"', "42", "null"])
def test_json_line_not_an_object(write_raw_file, line):
    err = _error(write_raw_file("d.jsonl", '{"text": "a", "label": 0}\n' + line + "\n"))
    assert err.line == 2
    assert "JSON object" in err.problem


@pytest.mark.parametrize("name, content", [("d.tsv", "sentence\tlabel\n"), ("d.csv", "sentence,label\n"),
                                           ("d.tsv", "sentence\tlabel")])
def test_only_a_header(write_raw_file, name, content):
    err = _error(write_raw_file(name, content))
    assert "no data rows" in err.problem


@pytest.mark.parametrize("name, content", [("d.tsv", ""), ("d.csv", ""), ("d.jsonl", ""), ("d.jsonl", "\n \n")])
def test_empty_file(write_raw_file, name, content):
    err = _error(write_raw_file(name, content))
    assert "empty" in err.problem or "no data rows" in err.problem


# -- checks against the model ---------------------------------------------------------------------
def test_check_labels_names_the_line_of_the_bad_label(write_raw_file):
    path = write_raw_file("d.tsv", "sentence\tlabel\na\t0\nb\t1\n\t1\nc\t2\nd\t0\n")
    data = read_labeled(path)
    check_labels(data, 3)  # fine with three classes
    with pytest.raises(InputError) as info:
        check_labels(data, 2)
    assert info.value.line == 5
    assert info.value.path == str(path)
    assert "label 2 is outside the model's classes 0..1" in str(info.value)
    assert str(info.value).startswith(f"{path}:5: ")


def test_check_labels_negative_label(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\na\t-1\n"))
    with pytest.raises(InputError) as info:
        check_labels(data, 2)
    assert info.value.line == 2
    assert "label -1" in str(info.value)


def test_check_labels_in_memory_data_has_no_line():
    data = LabeledTexts(["a", "b"], [0, 5])
    with pytest.raises(InputError) as info:
        check_labels(data, 2)
    assert info.value.line is None
    assert info.value.path == "<memory>"


def test_check_labels_after_subset_keeps_file_lines(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t7\n"))
    with pytest.raises(InputError) as info:
        check_labels(data.subset([2, 0]), 2)
    assert info.value.line == 4


def test_require_all_classes(write_raw_file):
    data = read_labeled(write_raw_file("d.tsv", "sentence\tlabel\na\t0\nb\t0\nc\t2\n"))
    require_all_classes(data, 1, "test")  # labels beyond num_labels are check_labels' business
    with pytest.raises(InputError) as info:
        require_all_classes(data, 3, "the label flip")
    message = str(info.value)
    assert "class 1 has no sample" in message
    assert "the label flip" in message
    assert "0..2" in message
    assert info.value.path == data.source


def test_require_all_classes_lists_every_missing_class():
    data = LabeledTexts(["a"], [1])
    with pytest.raises(InputError, match=r"class 0, 2, 3 has no sample"):
        require_all_classes(data, 4, "x")


def test_require_all_classes_passes_when_present():
    require_all_classes(LabeledTexts(["a", "b", "c"], [2, 0, 1]), 3, "x")


# -- row files ------------------------------------------------------------------------------------
def test_read_row_indices(write_raw_file):
    assert read_row_indices(write_raw_file("rows.txt", "3\n0\n\n 12 \n")) == [3, 0, 12]
    assert read_row_indices(write_raw_file("empty.txt", "")) == []


def test_read_row_indices_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        read_row_indices(tmp_path / "rows.txt")
    assert info.value.path == str(tmp_path / "rows.txt")
    assert "not found" in info.value.problem


@pytest.mark.parametrize("bad, problem", [("x", "not an integer"), ("1.5", "not an integer"),
                                          ("-2", "negative")])
def test_read_row_indices_bad_line(write_raw_file, bad, problem):
    path = write_raw_file("rows.txt", f"1\n\n{bad}\n4\n")
    with pytest.raises(InputError) as info:
        read_row_indices(path)
    assert info.value.line == 3
    assert problem in info.value.problem
    assert info.value.path == str(path)


def test_check_rows():
    check_rows([0, 4], 5, "rows.txt")
    with pytest.raises(InputError) as info:
        check_rows([0, 5], 5, "rows.txt")
    assert "row 5 is past the end" in str(info.value)
    assert info.value.path == "rows.txt"


# -- writing --------------------------------------------------------------------------------------
def test_write_tsv_round_trip(tmp_path):
    texts = ["plain", '"leading quote', "unicode é ü 漢字", "", "comma, and ; semicolon", "x\u0085y"]
    labels = [0, 1, 2, 0, 1, 2]
    out = tmp_path / "sub" / "out.tsv"
    write_tsv(out, LabeledTexts(texts, labels))
    back = read_labeled(out)
    assert back.texts == texts
    assert back.labels == labels
    assert back.num_empty == 1
    assert out.read_bytes().startswith(b"sentence\tlabel\n")
    assert sorted(os.listdir(out.parent)) == ["out.tsv"]  # no temporary file left behind


def test_write_tsv_replaces_tabs_and_line_breaks(tmp_path):
    out = tmp_path / "out.tsv"
    write_tsv(out, LabeledTexts(["a\tb", "line one\nline two", "cr\r\nlf", "many\t\t\n\ngaps"], [0, 1, 0, 1]))
    raw = out.read_text(encoding="utf-8")
    assert raw == "sentence\tlabel\na b\t0\nline one line two\t1\ncr lf\t0\nmany gaps\t1\n"
    back = read_labeled(out)
    assert back.texts == ["a b", "line one line two", "cr lf", "many gaps"]
    assert back.lines == [2, 3, 4, 5]


def test_write_tsv_overwrites_existing_file(tmp_path):
    out = tmp_path / "out.tsv"
    out.write_text("old content\n")
    write_tsv(out, LabeledTexts(["new"], [1]))
    assert read_labeled(out).texts == ["new"]
