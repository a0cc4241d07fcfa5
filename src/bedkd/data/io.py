"""Read labelled text from TSV, CSV or JSONL; write the project's TSV layout.

TSV is read with quoting off and split on ``\\n`` only (the layout of the benchmark data:
``sentence<TAB>label`` with a header). CSV uses standard quoting. JSONL holds one object per
line. The text column is ``sentence`` or ``text``; the label column is ``label``.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..errors import InputError
from ..outputs import atomic_write_text
from .records import LabeledTexts

TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMN = "label"


def read_labeled(path, text_column: str | None = None, label_column: str = LABEL_COLUMN) -> LabeledTexts:
    """Load a labelled file; every problem raises :class:`InputError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw_line_of(path.read_bytes(), exc.start)
        raise InputError(path, f"not valid UTF-8 ({exc.reason})", line) from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, raw)
    elif suffix == ".csv":
        rows = _delimited_rows(path, raw, ",")
    elif suffix in (".tsv", ".txt"):
        rows = _delimited_rows(path, raw, "\t")
    else:
        raise InputError(path, f"unknown file type '{suffix}': use .tsv, .csv or .jsonl")
    return _to_records(path, rows, text_column, label_column)


def raw_line_of(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def _delimited_rows(path: Path, raw: str, delimiter: str):
    """Yield (line number, {column: value}); the first line is the header."""
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in raw.split("\n")]
    while lines and not lines[-1].strip():   # blank lines at the end of the file
        lines.pop()
    if not lines:
        raise InputError(path, "file is empty (a header line is required)", 1)
    if delimiter == "\t":
        records = [ln.split("\t") for ln in lines]
        starts = list(range(1, len(lines) + 1))
    else:
        reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=",")
        records, starts, previous = [], [], 0
        try:
            for rec in reader:
                starts.append(previous + 1)
                previous = reader.line_num
                records.append(rec)
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV: {exc}", reader.line_num) from None
    header = [h.strip() for h in records[0]]
    for line_no, rec in zip(starts[1:], records[1:]):
        if len(rec) != len(header):
            what = "tab-separated" if delimiter == "\t" else "comma-separated"
            raise InputError(path, f"expected {len(header)} {what} fields as in the header, found {len(rec)}",
                             line_no)
        yield line_no, dict(zip(header, rec)), header


def _jsonl_rows(path: Path, raw: str):
    for n, line in enumerate(raw.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc.msg}", n) from None
        except RecursionError:
            raise InputError(path, "invalid JSON: nested too deeply", n) from None
        except ValueError as exc:   # an integer past Python's digit limit for int(str)
            raise InputError(path, f"invalid JSON: {str(exc).split(':')[0]}", n) from None
        if not isinstance(obj, dict):
            raise InputError(path, "each line must be a JSON object", n)
        yield n, obj, list(obj.keys())


def _to_records(path: Path, rows, text_column, label_column) -> LabeledTexts:
    texts: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    for line_no, row, columns in rows:
        col = text_column or next((c for c in TEXT_COLUMNS if c in row), None)
        if col is None or col not in row:
            wanted = text_column or " or ".join(TEXT_COLUMNS)
            raise InputError(path, f"missing text column '{wanted}' (columns: {', '.join(map(str, columns))})",
                             line_no if path.suffix.lower() in (".jsonl", ".ndjson") else 1)
        if label_column not in row:
            raise InputError(path, f"missing label column '{label_column}' (columns: {', '.join(map(str, columns))})",
                             line_no if path.suffix.lower() in (".jsonl", ".ndjson") else 1)
        text = row[col]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InputError(path, f"text must be a string, got {type(text).__name__}", line_no)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:      # JSON "\ud800": a lone surrogate, which no UTF-8 file can hold
            raise InputError(path, "text holds an unpaired surrogate escape (\\ud800-\\udfff)", line_no) from None
        texts.append(text.strip())
        labels.append(_parse_label(path, row[label_column], line_no))
        lines.append(line_no)
    if not texts:
        raise InputError(path, "no data rows")
    return LabeledTexts(texts, labels, str(path), lines)


def _parse_label(path: Path, value, line_no: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:      # also a number past Python's digit limit for int(str)
            pass
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise InputError(path, f"label {shown} is not an integer", line_no)


def _clean_cell(text: str) -> str:
    """TSV has no escaping: tabs and line breaks inside a text become spaces."""
    return re.sub(r"[\t\r\n]+", " ", text)


def write_tsv(path, data: LabeledTexts) -> None:
    """Write ``sentence<TAB>label`` with a header, atomically (a temporary file and a rename)."""
    rows = "".join(f"{_clean_cell(text)}\t{label}\n" for text, label in zip(data.texts, data.labels))
    atomic_write_text(path, "sentence\tlabel\n" + rows)


def read_row_indices(path) -> list[int]:
    """A file of 0-based row numbers, one per line (``poisoned_rows.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = int(line.strip())
        except ValueError:
            raise InputError(path, f"row number {line.strip()!r} is not an integer", n) from None
        if value < 0:
            raise InputError(path, f"row number {value} is negative", n)
        rows.append(value)
    return rows
