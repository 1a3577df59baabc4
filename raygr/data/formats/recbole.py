"""The ``recbole`` format: RecBole atomic files, X.inter (+ X.item), tab-separated with a name:type header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import (
    TITLE_COLUMNS,
    ItemContent,
    column_prefix,
    content_tokens,
    is_word_column,
)
from raygr.data.formats.files import PathLike, existing, find, iter_lines, sibling
from raygr.data.formats.interactions import Interactions, MissingItems, build, filter_rating

_ATOMIC_TYPES = {"token", "token_seq", "float", "float_seq"}


def _atomic_header(path: Path) -> tuple[list[str], list[str]]:
    """Names and types of a RecBole atomic file's ``name:type`` header."""
    first = next(iter_lines(path), None)
    if first is None:
        raise DatasetError(f"{path}: the file is empty")
    n, line = first
    names, kinds = [], []
    for field in line.split("\t"):
        name, _, kind = field.partition(":")
        if not name or kind not in _ATOMIC_TYPES:
            raise DatasetError(f"{path}:{n}: header field {field!r} is not name:type with type one of "
                               f"{', '.join(sorted(_ATOMIC_TYPES))} (RecBole atomic files start with "
                               "such a header)")
        names.append(name)
        kinds.append(kind)
    return names, kinds


def _read_tsv(path: Path, names: list[str], include: list[str]) -> pa.Table:
    """Selected columns (as strings) of a tab-separated file with a one-line header; fast, via Arrow."""
    try:
        return pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in include},
                                                 include_columns=include, strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        for n, line in iter_lines(path):  # slow path, only to say which line is wrong
            if n > 1 and len(line.split("\t")) != len(names):
                raise DatasetError(f"{path}:{n}: expected {len(names)} tab-separated fields "
                                   f"({', '.join(names)}), found {len(line.split(chr(9)))}") from None
        raise DatasetError(f"{path}: cannot parse: {e}") from None


def _data_line(path: Path, row: int) -> str:
    """``FILE:LINE`` of data row ``row`` (0-based, after a one-line header; blank lines skipped)."""
    for k, (n, _) in enumerate(iter_lines(path)):
        if k == row + 1:
            return f"{path}:{n}"
    return f"{path} row {row + 1}"


def _recbole_items(path: Path, item_field: str) -> dict[str, ItemContent]:
    names, kinds = _atomic_header(path)
    if item_field not in names:
        raise DatasetError(f"{path}:1: header has no '{item_field}' column (columns: {', '.join(names)})")
    key = names.index(item_field)
    title_col = next((k for k, c in enumerate(names) if c in TITLE_COLUMNS or "title" in c), None)
    content: dict[str, ItemContent] = {}
    first_line: dict[str, int] = {}
    for n, line in iter_lines(path):
        if n == 1:
            continue
        parts = line.split("\t")
        if len(parts) != len(names):
            raise DatasetError(f"{path}:{n}: expected {len(names)} tab-separated fields "
                               f"({', '.join(names)}), found {len(parts)}")
        iid = parts[key].strip()
        if not iid:
            raise DatasetError(f"{path}:{n}: field '{item_field}' is empty")
        if iid in first_line:
            raise DatasetError(f"{path}:{n}: item {iid!r} appears again (first on line {first_line[iid]})")
        first_line[iid] = n
        values, texts = [], []
        for k, (name, kind) in enumerate(zip(names, kinds)):
            if k == key or kind.startswith("float"):
                continue
            if is_word_column(name):
                if k != title_col:
                    texts.append((column_prefix(name), parts[k]))
            else:
                values.append((column_prefix(name), parts[k].split(" ") if kind == "token_seq" else parts[k]))
        title = (parts[title_col].strip() or None) if title_col is not None else None
        content[iid] = ItemContent(title, content_tokens(title, values, texts))
    return content


def read_recbole(path: PathLike, *, user: str = "user_id", item: str = "item_id", time: str = "timestamp",
                 rating: str = "rating", min_rating: float | None = None,
                 missing_items: MissingItems = "error",
                 report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """RecBole atomic files: X.inter (+ X.item), tab-separated with a name:type header; input = the
    directory or the .inter file (.gz accepted). Without a time column, rows are in order per user."""
    p = existing(path, "input")
    inter = find(p, ["*.inter", "*.inter.gz"], "RecBole .inter") if p.is_dir() else p
    assert inter is not None
    item_path = sibling(inter, ".inter", [".item", ".item.gz"])
    names, _ = _atomic_header(inter)
    for field in (user, item):
        if field not in names:
            raise DatasetError(f"{inter}:1: header has no '{field}' column (columns: {', '.join(names)}); "
                               f"name it with --option {'user' if field == user else 'item'}=COLUMN")
    if min_rating is not None and rating not in names:
        raise DatasetError(f"{inter}:1: min_rating needs a '{rating}' column (columns: {', '.join(names)})")
    has_time = time in names
    cols = [user, item] + ([time] if has_time else []) + ([rating] if min_rating is not None else [])
    t = _read_tsv(inter, names, cols)
    num_read = t.num_rows
    rows = np.arange(num_read)
    if min_rating is not None:
        rows = filter_rating(t[rating], min_rating, lambda r: _data_line(inter, r), rating)
        t = t.take(pa.array(rows))
    data = Interactions(t[user], t[item], t[time] if has_time else None,
                        lambda r: _data_line(inter, int(rows[r])), str(inter), user, item, time)
    content = _recbole_items(item_path, item) if item_path else None
    if report is not None:
        report["files"] = [str(x) for x in (inter, item_path) if x]
        report["rows_filtered"] = num_read - len(rows)
    return build(data, content, content_file=str(item_path), missing_items=missing_items, report=report)
