"""Original user/item ids -> indices in natural order (``IdMap``), and the check for empty or mistyped ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raygr.data.formats.timestamps import first_true

_INT_ID = r"^(0|-?[1-9][0-9]{0,17})$"  # no leading zeros: "007" and "7" must not merge


def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Dictionary and large-string columns as plain strings; ids must be integers or strings."""
    t = values.type
    if pa.types.is_dictionary(t):
        values, t = pc.cast(values, t.value_type), t.value_type
    if pa.types.is_large_string(t):
        values, t = pc.cast(values, pa.string()), pa.string()
    if not (pa.types.is_integer(t) or pa.types.is_string(t)):
        raise TypeError(f"ids must be integers or strings, not {t}")
    return values


@dataclass(frozen=True)
class IdMap:
    """Original ids <-> positions 0..n-1, in natural order: numeric if every id is an integer, else string."""

    keys: np.ndarray  # [n] sorted distinct ids: int64, or str (numpy unicode) when any id is not an integer

    @classmethod
    def build(cls, values: pa.Array | pa.ChunkedArray) -> IdMap:
        uniq = pc.unique(plain(values))
        if pa.types.is_integer(uniq.type):
            return cls(np.unique(uniq.to_numpy().astype(np.int64)))
        if len(uniq) and pc.all(pc.match_substring_regex(uniq, _INT_ID)).as_py():
            return cls(np.unique(pc.cast(uniq, pa.int64()).to_numpy()))
        return cls(np.unique(np.asarray(uniq.to_pylist(), dtype=str)))

    def __len__(self) -> int:
        return len(self.keys)

    def ids(self) -> list[str]:
        return [str(k) for k in self.keys.tolist()]

    def lookup(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Positions (int64) of ``values``; KeyError names the first value not in the map."""
        values = plain(values)
        if self.keys.dtype.kind != "i":  # strings: Arrow's hash lookup, no Python objects per row
            found = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(self.keys, pa.string()))
            if found.null_count:
                raise KeyError(str(values[first_true(pc.is_null(found))]))
            return found.to_numpy().astype(np.int64)
        vals = (values if pa.types.is_integer(values.type) else pc.cast(values, pa.int64())).to_numpy()
        vals = vals.astype(np.int64, copy=False)
        pos = np.minimum(np.searchsorted(self.keys, vals), max(len(self.keys) - 1, 0))
        miss = self.keys[pos] != vals if len(self.keys) else np.ones(len(vals), bool)
        if miss.any():
            raise KeyError(str(vals[int(np.argmax(miss))]))
        return pos.astype(np.int64)


def check_ids(values: pa.Array | pa.ChunkedArray, field: str) -> tuple[int, str] | None:
    """``(row, what is wrong)`` for the first null/empty id or a column of the wrong type, else None."""
    try:
        values = plain(values)
    except TypeError as e:
        return 0, f"field '{field}' has the wrong type: {e}"
    bad = pc.is_null(values)
    if pa.types.is_string(values.type):
        bad = pc.or_(bad, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
    bad_np = np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
    if bad_np.any():
        return int(np.argmax(bad_np)), f"field '{field}' is empty"
    return None
