"""Semantic IDs from a file: an upstream system's (or a paper's) SIDs, fixed for the whole run.

    codes = load_sids("sids.json", dataset.items.item_id)   # [N, L] int64, row i = item_idx i+1

Accepted files, keyed by the dataset's *original* item id (the ``item_id`` column of items.parquet):
- JSON: ``{"item id": [12, 7, 201], ...}``; a code may also be a token string whose last run of digits
  is the code, as LETTER and TIGER releases write them (``"<a_12>"``).
- Parquet: columns ``item_id`` and ``sid`` (a list of integers per row).
Every item of the dataset needs a SID of the same length; ids the dataset does not have are an error
(a mismatched key convention, e.g. 0-based against 1-based ids, would otherwise go unnoticed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from raygr.data.dataset import DatasetError

_DIGITS = re.compile(r"(\d+)\D*$")


def _code(value: object, path: Path, key: str, level: int) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"{path}: item {key!r}, code {level}: {value!r} is not a code")
    if isinstance(value, int):
        code = value
    else:
        m = _DIGITS.search(str(value))
        if m is None:
            raise DatasetError(f"{path}: item {key!r}, code {level}: {value!r} holds no code number "
                               "(use integers, or tokens such as \"<a_12>\")")
        code = int(m.group(1))
    if code < 0:
        raise DatasetError(f"{path}: item {key!r}, code {level}: {code} is negative")
    return code


def _read(path: Path) -> dict[str, list]:
    if not path.exists():
        raise DatasetError(f"SID file {path} does not exist (model.sid_file)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            t = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DatasetError(f"{path}: not a readable Parquet file ({e})") from e
        missing = {"item_id", "sid"} - set(t.column_names)
        if missing:
            raise DatasetError(f"{path}: needs columns item_id and sid, missing {sorted(missing)} "
                               f"(has {t.column_names})")
        ids = [str(x) for x in t.column("item_id").to_pylist()]
        sids = t.column("sid").to_pylist()
        out: dict[str, list] = {}
        for row, (k, s) in enumerate(zip(ids, sids)):
            if k in out:
                raise DatasetError(f"{path}: row {row}: item {k!r} appears twice")
            out[k] = s if s is not None else []
        return out
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: must be a JSON object {{item id: [codes]}}, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def load_sids(path: str | Path, item_ids: list[str]) -> np.ndarray:
    """SIDs [N, L] int64 for the dataset's items in index order (row i = item_idx i+1)."""
    path = Path(path)
    raw = _read(path)
    known = set(item_ids)
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise DatasetError(f"{path}: {len(unknown)} item ids are not in the dataset (first: {unknown[:3]}); "
                           "keys must be the dataset's original item ids (raygr data describe lists them)")
    missing = [k for k in item_ids if k not in raw]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} of the dataset's {len(item_ids)} items have no SID "
                           f"(first: {missing[:3]})")
    length = None
    out = []
    for key in item_ids:
        sid = raw[key]
        if not isinstance(sid, list | tuple) or not sid:
            raise DatasetError(f"{path}: item {key!r}: the SID must be a non-empty list of codes, got {sid!r}")
        if length is None:
            length = len(sid)
        elif len(sid) != length:
            raise DatasetError(f"{path}: item {key!r} has {len(sid)} codes, earlier items {length}: "
                               "every SID needs the same length")
        out.append([_code(v, path, key, level) for level, v in enumerate(sid)])
    return np.asarray(out, dtype=np.int64)


def write_sids(path: str | Path, item_ids: list[str], codes: np.ndarray) -> Path:
    """Write SIDs [N, L] (row i = item ``item_ids[i]``) as a JSON SID file ``load_sids`` reads back; the
    file appears whole or not at all."""
    path = Path(path)
    if len(item_ids) != len(codes):
        raise ValueError(f"{len(item_ids)} item ids for {len(codes)} SIDs")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: [int(c) for c in row] for k, row in zip(item_ids, codes, strict=True)}))
    tmp.replace(path)
    return path
