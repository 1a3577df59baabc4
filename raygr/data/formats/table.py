"""The ``table`` format: a Parquet/CSV interaction table with a column mapping (``TableSpec``, shared
with the Ray path in ``raygr.distributed.prepare``) and item content from table rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import ItemContent, column_prefix, content_tokens, is_word_column
from raygr.data.formats.files import PathLike, existing
from raygr.data.formats.ids import check_ids, plain
from raygr.data.formats.interactions import Interactions, MissingItems, build

_TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}


def _table_kind(path: Path) -> str | None:
    return _TABLE_SUFFIXES.get(Path(path.name.removesuffix(".gz")).suffix.lower())


def table_files(path: PathLike) -> list[Path]:
    """The Parquet/CSV files of a table: the file itself, or a directory's files in sorted name order."""
    p = existing(path, "input")
    files = sorted(f for f in p.iterdir() if f.is_file() and _table_kind(f)) if p.is_dir() else [p]
    if not files:
        raise DatasetError(f"{p} holds no .parquet or .csv files")
    kinds = {_table_kind(f) for f in files}
    if None in kinds:
        raise DatasetError(f"{p}: not a table; use a .parquet, .csv or .csv.gz file")
    if len(kinds) > 1:
        raise DatasetError(f"{p} mixes Parquet and CSV files; convert them to one kind")
    return files


@dataclass(frozen=True)
class TableSpec:
    """How to read a generic interaction table; shared by the in-memory and the Ray path."""

    files: tuple[Path, ...]
    user: str
    item: str
    time: str | None
    text: tuple[str, ...]  # item content columns (titles/descriptions as words, others as whole values)
    title: str | None  # display-title column
    items: Path | None  # separate item table (Parquet/CSV); else content comes from the interaction rows
    item_key: str  # the item column of ``items``
    delimiter: str
    missing_items: MissingItems

    @property
    def is_csv(self) -> bool:
        return _table_kind(self.files[0]) == "csv"

    def content_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.text, *([self.title] if self.title else [])]))

    def columns(self) -> list[str]:
        """Columns read from the interaction files."""
        inline = [] if self.items else self.content_columns()
        return list(dict.fromkeys([self.user, self.item, *([self.time] if self.time else []), *inline]))

    def csv_args(self, columns: list[str]) -> dict[str, Any]:
        """Arrow CSV options: every used column as a string, parsed by raygr (the same in both paths)."""
        return {"parse_options": pacsv.ParseOptions(delimiter=self.delimiter),
                "convert_options": pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                        include_columns=columns, strings_can_be_null=False)}

    def check_columns(self, path: Path, columns: list[str]) -> None:
        """Raise unless ``path`` has ``columns``, naming the option that chose a missing one."""
        csv = _table_kind(path) == "csv"
        try:
            if csv:
                parse = pacsv.ParseOptions(delimiter=self.delimiter)
                names = pacsv.open_csv(path, parse_options=parse).schema.names
            else:
                names = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(f"{path}: cannot read as {'CSV' if csv else 'Parquet'}: {e}") from None
        for c in columns:
            if c not in names:
                opt = self.option_of(path).get(c, "text")
                raise DatasetError(f"{path}: no column {c!r} (columns: {', '.join(names)}); "
                                   f"set --option {opt}=COLUMN")

    def read_file(self, path: Path, columns: list[str]) -> pa.Table:
        """Read ``columns`` of one file (CSV columns as strings)."""
        self.check_columns(path, columns)
        try:
            if _table_kind(path) == "csv":
                return pacsv.read_csv(path, **self.csv_args(columns))
            return pq.read_table(path, columns=columns)
        except pa.ArrowInvalid as e:
            raise DatasetError(f"{path}: cannot parse: {e}") from None

    def option_of(self, path: Path) -> dict[str, str]:
        """Column -> the option naming it, for messages about ``path``."""
        if path == self.items:
            return {self.item_key: "item_key", **({self.title: "title"} if self.title else {})}
        return {self.user: "user", self.item: "item", **({self.time: "time"} if self.time else {}),
                **({self.title: "title"} if self.title else {})}

    def item_content(self) -> dict[str, ItemContent] | None:
        """Content from the separate item table, if any (one row per item)."""
        if self.items is None:
            return None
        t = self.read_file(self.items, [self.item_key, *self.content_columns()])
        return content_from_table(t, self.item_key, self.text, self.title, str(self.items), unique=True)


def table_spec(path: PathLike, *, user: str | None = None, item: str | None = None, time: str | None = None,
               text: tuple[str, ...] = (), title: str | None = None, items: PathLike | None = None,
               item_key: str | None = None, delimiter: str = ",",
               missing_items: MissingItems = "error") -> TableSpec:
    if not user or not item:
        raise DatasetError("format 'table' needs the column names: --option user=COLUMN --option item=COLUMN "
                           "(and usually --option time=COLUMN)")
    # A literal tab is awkward on a command line: accept the spelled-out forms too.
    delimiter = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(delimiter, delimiter)
    if delimiter == "," and all(f.name.endswith((".tsv", ".tsv.gz")) for f in table_files(path)):
        delimiter = "\t"  # .tsv means tab-separated unless the user says otherwise
    if len(delimiter) != 1:
        raise DatasetError(f"option delimiter must be one character (or 'tab'), got {delimiter!r}")
    items_path = existing(items, "item table") if items else None
    if items_path and not _table_kind(items_path):
        raise DatasetError(f"item table {items_path}: use a .parquet, .csv or .csv.gz file")
    return TableSpec(tuple(table_files(path)), user, item, time or None, tuple(text), title or None,
                     items_path, item_key or item, delimiter, missing_items)


def _cell_list(col: pa.ChunkedArray | pa.Array, rows: np.ndarray) -> list[Any]:
    return col.take(pa.array(rows)).to_pylist()


def content_from_table(t: pa.Table, key: str, text: tuple[str, ...], title: str | None, where: str,
                       unique: bool) -> dict[str, ItemContent]:
    """Item content from table rows: one row per item (``unique``) or each item's first row."""
    if (bad := check_ids(t[key], key)) is not None:
        raise DatasetError(f"{where} row {bad[0] + 1}: {bad[1]}")
    keys = pc.cast(plain(t[key]), pa.string())
    codes = pc.index_in(keys, value_set=pc.unique(keys)).to_numpy()
    _, first = np.unique(codes, return_index=True)
    if unique and len(first) < len(codes):
        seen = np.zeros(len(first), bool)
        for r, c in enumerate(codes):  # only on error: find the first repeated row
            if seen[c]:
                raise DatasetError(f"{where} row {r + 1}: item {keys[r].as_py()!r} appears again")
            seen[c] = True
    rows = np.sort(first)
    ids = _cell_list(keys, rows)
    cols = {c: _cell_list(t[c], rows) for c in dict.fromkeys([*text, *([title] if title else [])])}
    title_col = title or next((c for c in text if column_prefix(c) == "title"), None)
    content = {}
    for k, iid in enumerate(ids):
        values = [(column_prefix(c), cols[c][k]) for c in text if not is_word_column(c)]
        texts = [(column_prefix(c), cols[c][k]) for c in text if is_word_column(c)]
        name = cols[title_col][k] if title_col else None
        name = str(name) if name not in (None, "") else None
        tokens = content_tokens(None, values, [(p, None if v is None else str(v)) for p, v in texts])
        content[iid] = ItemContent(name, tokens)
    return content


def read_table(path: PathLike, *, user: str | None = None, item: str | None = None, time: str | None = None,
               text: tuple[str, ...] = (), title: str | None = None, items: PathLike | None = None,
               item_key: str | None = None, delimiter: str = ",", missing_items: MissingItems = "error",
               report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """A Parquet or CSV table (a file or a directory of them) with a column mapping: user=, item=,
    time= (optional), text=a,b (content columns), title= (display), items=FILE with item_key= (a
    separate item table; else content comes from each item's first row)."""
    spec = table_spec(path, user=user, item=item, time=time, text=text, title=title, items=items,
                      item_key=item_key, delimiter=delimiter, missing_items=missing_items)
    tables = [spec.read_file(f, spec.columns()) for f in spec.files]
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    bounds = np.cumsum([0] + [x.num_rows for x in tables])

    def where(r: int) -> str:
        f = int(np.searchsorted(bounds, r, side="right")) - 1
        return f"{spec.files[f]} row {r - bounds[f] + 1}"

    content = spec.item_content()
    if content is None and spec.content_columns():
        content = content_from_table(t, spec.item, spec.text, spec.title, str(spec.files[0]), unique=False)
    data = Interactions(t[spec.user], t[spec.item], t[spec.time] if spec.time else None, where,
                        ", ".join(map(str, spec.files)), spec.user, spec.item, spec.time or "time")
    if report is not None:
        report["files"] = [str(f) for f in (*spec.files, *([spec.items] if spec.items else []))]
    return build(data, content, content_file=str(spec.items), missing_items=missing_items, report=report)
