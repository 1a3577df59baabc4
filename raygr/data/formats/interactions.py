"""Parsed interaction rows -> the canonical ``(ItemTable, SequenceData)``: remap ids, sort each user's rows
by time, drop exact duplicates, build the CSR sequences and attach item content (``build``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import ItemContent
from raygr.data.formats.ids import IdMap, check_ids
from raygr.data.formats.timestamps import BadValue, read_time

MissingItems = Literal["error", "empty"]


def sort_interactions(user: np.ndarray, item: np.ndarray, key: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Row order that groups users and sorts each by ``key`` stably, without exact duplicates.

    Returns ``(order, number of dropped duplicates)``. A duplicate is a row with the same user, key
    and item as an earlier row; the earliest is kept. Vectorised: a lexsort, then a second one over
    the tied rows only (usually few) to find duplicates inside each tie.
    """
    if key is None:  # rows are already each user's sequence in order
        return np.argsort(user, kind="stable"), 0
    order = np.lexsort((key, user))  # lexsort is stable: ties keep row (file) order
    u, k = user[order], key[order]
    tie = (u[1:] == u[:-1]) & (k[1:] == k[:-1])
    if not tie.any():
        return order, 0
    grouped = np.zeros(len(order), bool)
    grouped[1:] |= tie
    grouped[:-1] |= tie
    pos = np.flatnonzero(grouped)  # positions in `order` of rows that tie with a neighbour
    it = item[order[pos]]
    sub = np.lexsort((pos, it, k[pos], u[pos]))
    a, b, c = u[pos][sub], k[pos][sub], it[sub]
    dup = np.zeros(len(sub), bool)
    dup[1:] = (a[1:] == a[:-1]) & (b[1:] == b[:-1]) & (c[1:] == c[:-1])
    keep = np.ones(len(order), bool)
    keep[pos[sub[dup]]] = False
    return order[keep], int(dup.sum())


def csr_from_sorted(user: np.ndarray, item: np.ndarray, stored: np.ndarray | None,
                    num_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(offsets, items 1-based int32, timestamps int64)`` of rows sorted by user (no time: positions)."""
    counts = np.bincount(user, minlength=num_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if stored is None:
        stored = np.arange(len(user)) - np.repeat(offsets[:-1], counts)
    return offsets, (item + 1).astype(np.int32), np.asarray(stored, dtype=np.int64)


def item_table(ids: list[str], content: Mapping[str, ItemContent] | None, *, content_file: str,
               missing_items: MissingItems, first_seen: Callable[[int], str]) -> tuple[ItemTable, dict]:
    """The ItemTable of ``ids`` (item_idx order) from their content; also counts for the report."""
    if content is None:
        return ItemTable(item_id=ids, tokens=[[] for _ in ids], title=None), {}
    titles: list[str | None] = []
    tokens: list[list[str]] = []
    missing = 0
    for k, iid in enumerate(ids):
        c = content.get(iid)
        if c is None:
            if missing_items == "error":
                raise DatasetError(
                    f"{content_file} has no entry for item {iid!r}, which {first_seen(k)} refers to; add it, "
                    "or pass --option missing_items=empty to keep such items without content")
            missing += 1
            c = ItemContent(None, [])
        titles.append(c.title)
        tokens.append(c.tokens)
    stats = {"items_without_content": missing,
             "item_rows_without_interactions": len(content) - (len(ids) - missing)}
    return ItemTable(item_id=ids, tokens=tokens, title=titles), stats


@dataclass
class Interactions:
    """Parsed rows of an interaction file, in file order, before ids are remapped."""

    users: pa.Array | pa.ChunkedArray
    items: pa.Array | pa.ChunkedArray
    time: pa.Array | pa.ChunkedArray | None  # None: each user's rows are already in order
    where: Callable[[int], str]  # row -> "FILE:LINE" (or "FILE row N"), for messages
    source: str  # the file(s), for messages about the whole input
    user_field: str = "user"
    item_field: str = "item"
    time_field: str = "timestamp"


def build(inter: Interactions, content: Mapping[str, ItemContent] | None, *, content_file: str = "",
          missing_items: MissingItems = "error",
          report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """Remap ids, sort each user's rows by time, drop duplicates, and attach item content."""
    if len(inter.users) == 0:
        raise DatasetError(f"{inter.source}: no interactions")
    for values, field in ((inter.users, inter.user_field), (inter.items, inter.item_field)):
        if (bad := check_ids(values, field)) is not None:
            raise DatasetError(f"{inter.where(bad[0])}: {bad[1]}")
    users, items = IdMap.build(inter.users), IdMap.build(inter.items)
    u, i = users.lookup(inter.users), items.lookup(inter.items)
    key = stored = None
    if inter.time is not None:
        try:
            _, key, stored = read_time(inter.time)
        except BadValue as e:
            raise DatasetError(
                f"{inter.where(e.index)}: field '{inter.time_field}' {e.why}: {e.value!r}") from None

    def first_seen(k: int) -> str:
        return inter.where(int(np.argmax(i == k)))

    table, stats = item_table(items.ids(), content, content_file=content_file, missing_items=missing_items,
                              first_seen=first_seen)
    order, dups = sort_interactions(u, i, key)
    offsets, seq_items, ts = csr_from_sorted(u[order], i[order], None if stored is None else stored[order],
                                             len(users))
    if report is not None:
        report.update(rows=len(u), duplicates_dropped=dups, has_timestamps=inter.time is not None, **stats)
    return table, SequenceData(user_id=users.ids(), offsets=offsets, items=seq_items, timestamps=ts)


def strings(values: list[str]) -> pa.Array:
    return pa.array(values, pa.string())


def row_where(path: Path, lines: np.ndarray) -> Callable[[int], str]:
    return lambda r: f"{path}:{int(lines[r])}"


def filter_rating(ratings: list[str] | pa.Array | pa.ChunkedArray, min_rating: float,
                   where: Callable[[int], str], field: str) -> np.ndarray:
    """Rows whose rating is >= min_rating."""
    try:
        _, r, _ = read_time(strings(ratings) if isinstance(ratings, list) else ratings, "float")
    except BadValue as e:
        why = e.why.replace("finite ", "")
        raise DatasetError(f"{where(e.index)}: field '{field}' {why}: {e.value!r}") from None
    return np.flatnonzero(r >= min_rating)
