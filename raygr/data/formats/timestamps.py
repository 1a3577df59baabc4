"""Timestamp columns: their kind (integers, decimals or dates), sort keys and stored int64 values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TimeKind = Literal["int", "float", "datetime"]
_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_DATE = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}"


class BadValue(ValueError):
    """A cell that cannot be parsed; ``index`` is its row within the column given."""

    def __init__(self, index: int, value: Any, why: str):
        super().__init__(f"row {index}: {why}: {value!r}")
        self.index, self.value, self.why = index, value, why


def first_true(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> int | None:
    m = mask if isinstance(mask, np.ndarray) else np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
    return int(np.argmax(m)) if m.any() else None


def _native_kind(t: pa.DataType) -> TimeKind | None:
    """The kind of a typed column; None for strings (their kind is found by parsing)."""
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return None
    raise BadValue(0, str(t), "has a type that is neither a number nor a date")


def read_time(col: pa.Array | pa.ChunkedArray, kind: TimeKind | None = None
              ) -> tuple[TimeKind, np.ndarray, np.ndarray]:
    """``(kind, sort key, stored int64)`` of a timestamp column; BadValue names the first bad row.

    ``kind`` None infers it: the column's type, or for strings the first of integers, decimals, dates
    that parses every value. The Ray path infers per block, merges (``merge_time_kinds``) and reads
    every block with the merged kind, so both paths agree.
    """
    if (i := first_true(pc.is_null(col))) is not None:
        raise BadValue(i, None, "is empty")
    kind = kind or _native_kind(col.type)
    if kind is not None:
        return kind, *_convert_time(col, kind)
    if (i := first_true(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0))) is not None:
        raise BadValue(i, col[i].as_py(), "is empty")
    for k in ("int", "float", "datetime"):
        try:
            return k, *_convert_time(col, k)  # type: ignore[return-value]
        except BadValue:
            continue
    ok = pc.or_(pc.match_substring_regex(col, _NUMBER), pc.match_substring_regex(col, _DATE))
    i = first_true(pc.invert(ok))
    if i is not None:
        raise BadValue(i, col[i].as_py(), "is not a number or a date")
    raise BadValue(0, col[0].as_py(), "mixes numbers and dates (timestamps must be all one kind)")


def merge_time_kinds(kinds: Iterable[TimeKind]) -> TimeKind:
    """The kind for a whole table read in parts: integers widen to decimals; dates mix with neither."""
    ks = set(kinds)
    if "datetime" in ks and len(ks) > 1:
        raise ValueError("timestamps mix numbers and dates")
    return "datetime" if "datetime" in ks else "float" if "float" in ks else "int"


def _to_datetime_ns(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return pc.cast(col, pa.timestamp("ns", tz=getattr(col.type, "tz", None)))
    try:
        return pc.cast(col, pa.timestamp("ns"))
    except pa.ArrowInvalid:  # "2020-01-01T10:00:00Z": has a zone offset
        return pc.cast(col, pa.timestamp("ns", tz="UTC"))


def _convert_time(col: pa.Array | pa.ChunkedArray, kind: TimeKind) -> tuple[np.ndarray, np.ndarray]:
    try:
        if kind == "int":
            key = pc.cast(col, pa.int64()).to_numpy()
            return key, key
        if kind == "float":
            key = pc.cast(col, pa.float64()).to_numpy()
            if (i := first_true(~np.isfinite(key))) is not None:
                raise BadValue(i, col[i].as_py(), "is not a finite number")
            return key, np.floor(key).astype(np.int64)
        key = pc.cast(_to_datetime_ns(col), pa.int64()).to_numpy()  # ns: ties finer than a second
        return key, key // 1_000_000_000
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pattern = _DATE if kind == "datetime" else _NUMBER
        s = pc.cast(col, pa.string())
        i = first_true(pc.invert(pc.match_substring_regex(s, pattern))) or 0
        what = {"int": "an integer", "float": "a number", "datetime": "a date"}[kind]
        raise BadValue(i, s[i].as_py(), f"is not {what}") from None
