"""The canonical prepared-dataset directory: what ``raygr data prepare`` writes and everything reads.

    DIR/
      manifest.json              counts, source, schema version, sha256 of every file
      items.parquet              item_idx (1..N), item_id (original), title, tokens (list<str>), [dense]
      users.parquet              user_idx (0..U-1), user_id (original)
      sequences/part-00000.parquet ...   user_idx, items (list<int32>, oldest first), timestamps (list<int64>)

Item indices are contiguous from 1; 0 is padding everywhere. Sequence shards hold the users with
``user_idx % num_shards == shard``, sorted by user_idx, so a reader never groups by user at train time.
Writes go to a temporary sibling directory renamed into place at the end: a failed write leaves
nothing that looks like a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PAD = 0


class DatasetError(ValueError):
    """A dataset directory or an input is unusable; the message names the file/row/field."""


@dataclass
class ItemTable:
    """Items in index order: row i is item_idx i+1."""

    item_id: list[str]  # original ids [N]
    tokens: list[list[str]]  # content tokens per item, e.g. ["title:lipstick", "brand:opi"]
    title: list[str] | None = None  # [N] display text
    dense: np.ndarray | None = None  # [N, F] float32 dense content features

    def __len__(self) -> int:
        return len(self.item_id)


@dataclass
class SequenceData:
    """Per-user item sequences in CSR form, oldest first; items are 1-based item_idx."""

    user_id: list[str]  # original ids [U]
    offsets: np.ndarray  # [U+1] int64
    items: np.ndarray  # [nnz] int32
    timestamps: np.ndarray  # [nnz] int64

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u]:self.offsets[u + 1]]


@dataclass
class Dataset:
    root: Path
    manifest: dict[str, Any]
    items: ItemTable
    sequences: SequenceData

    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def num_users(self) -> int:
        return int(self.manifest["num_users"])

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    def shard_paths(self) -> list[Path]:
        return sequence_shard_paths(self.root, self.manifest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_fingerprint(manifest: dict[str, Any]) -> str:
    """Identity of a dataset's content: checksums of its files (not the paths or creation time)."""
    files = manifest.get("files", {})
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}:{files[name]}\n".encode())
    return h.hexdigest()[:16]


def sequence_shard_paths(root: Path, manifest: dict[str, Any]) -> list[Path]:
    return [root / name for name in sorted(manifest["files"]) if name.startswith("sequences/")]


def items_to_arrow(items: ItemTable) -> pa.Table:
    n = len(items)
    cols = {
        "item_idx": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "item_id": pa.array([str(x) for x in items.item_id], pa.string()),
        "title": pa.array(items.title if items.title is not None else [None] * n, pa.string()),
        "tokens": pa.array(items.tokens, pa.list_(pa.string())),
    }
    if items.dense is not None:
        dense = np.asarray(items.dense, dtype=np.float32)
        if dense.ndim != 2 or dense.shape[0] != n:
            raise DatasetError(f"dense item features must be [num_items={n}, F], got {dense.shape}")
        cols["dense"] = pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)), dense.shape[1])
    return pa.table(cols)


def sequences_to_arrow(seqs: SequenceData, user_idx: np.ndarray) -> pa.Table:
    """Rows for the given users (ascending user_idx)."""
    starts, ends = seqs.offsets[user_idx], seqs.offsets[user_idx + 1]
    take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(user_idx) else np.zeros(0, int)
    offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int32)
    return pa.table({
        "user_idx": pa.array(user_idx.astype(np.int32)),
        "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(seqs.items[take].astype(np.int32))),
        "timestamps": pa.ListArray.from_arrays(pa.array(offsets), pa.array(seqs.timestamps[take].astype(np.int64))),
    })


def validate_contents(items: ItemTable, seqs: SequenceData, where: str) -> None:
    n = len(items)
    if n == 0:
        raise DatasetError(f"{where}: the item table is empty")
    if seqs.num_users == 0:
        raise DatasetError(f"{where}: no user has any interaction")
    lengths = seqs.lengths()
    if (lengths <= 0).any():
        u = int(np.argmax(lengths <= 0))
        raise DatasetError(f"{where}: user {seqs.user_id[u]!r} has an empty sequence")
    if len(seqs.items) and (seqs.items.min() < 1 or seqs.items.max() > n):
        bad = int(seqs.items[(seqs.items < 1) | (seqs.items > n)][0])
        raise DatasetError(f"{where}: a sequence refers to item index {bad}, outside 1..{n}")
    if len(set(map(str, items.item_id))) != n:
        raise DatasetError(f"{where}: item ids in the item table are not unique")
    if len(items.tokens) != n:
        raise DatasetError(f"{where}: {len(items.tokens)} token lists for {n} items")


def write_dataset(out_dir: str | Path, items: ItemTable, seqs: SequenceData, *, source: dict[str, Any],
                  num_shards: int = 4, name: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write a dataset directory atomically; returns its manifest.

    An existing directory is replaced only if it holds the same content (same fingerprint) or
    ``overwrite`` is set; a directory holding anything else is refused.
    """
    out = Path(out_dir).resolve()
    validate_contents(items, seqs, where=str(source.get("input", out)))
    num_shards = max(1, min(num_shards, seqs.num_users))
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pq.write_table(items_to_arrow(items), tmp / "items.parquet")
        pq.write_table(pa.table({"user_idx": pa.array(np.arange(seqs.num_users, dtype=np.int32)),
                                 "user_id": pa.array([str(u) for u in seqs.user_id], pa.string())}),
                       tmp / "users.parquet")
        (tmp / "sequences").mkdir()
        all_users = np.arange(seqs.num_users)
        for s in range(num_shards):
            pq.write_table(sequences_to_arrow(seqs, all_users[all_users % num_shards == s]),
                           tmp / "sequences" / f"part-{s:05d}.parquet")
        manifest = finish_manifest(tmp, {
            "name": name or out.name,
            "num_users": int(seqs.num_users),
            "num_items": int(len(items)),
            "num_interactions": int(len(seqs.items)),
            "num_shards": num_shards,
            "has_dense": items.dense is not None,
            "source": source,
        })
        swap_into_place(tmp, out, manifest, overwrite)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finish_manifest(tmp: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file under ``tmp`` and write manifest.json there (last, so it marks completeness)."""
    files = {p.relative_to(tmp).as_posix(): sha256_file(p)
             for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"schema_version": SCHEMA_VERSION, **fields, "files": files,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest["fingerprint"] = content_fingerprint(manifest)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if not (out / MANIFEST).is_file():
            raise DatasetError(f"output {out} is not empty and holds no raygr dataset; "
                               "choose an empty or new directory")


def swap_into_place(tmp: Path, out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
        if old.get("fingerprint") != manifest["fingerprint"] and not overwrite:
            raise DatasetError(
                f"output {out} already holds a different dataset ({old.get('name')!r}, "
                f"{old.get('num_interactions')} interactions); pass --overwrite or choose another directory")
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root} is not a prepared dataset: {MANIFEST} is missing "
                           f"(create one with `raygr data prepare --format ... --output {root}`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    for key in ("schema_version", "num_users", "num_items", "num_interactions", "files"):
        if key not in manifest:
            raise DatasetError(f"{path} lacks the key '{key}'")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(f"{path} has schema_version {manifest['schema_version']}, this raygr reads "
                           f"{SCHEMA_VERSION}; prepare the dataset again")
    return manifest


def verify_checksums(root: str | Path, manifest: dict[str, Any]) -> None:
    root = Path(root)
    for name, digest in manifest["files"].items():
        p = root / name
        if not p.is_file():
            raise DatasetError(f"{p} is listed in the manifest but missing")
        if sha256_file(p) != digest:
            raise DatasetError(f"{p} does not match its checksum in {root / MANIFEST}: the file changed")


def load_items(root: Path) -> ItemTable:
    t = pq.read_table(root / "items.parquet")
    dense = None
    if "dense" in t.column_names:
        col = t.column("dense").combine_chunks()
        dense = col.flatten().to_numpy().reshape(len(t), -1).astype(np.float32)
    return ItemTable(item_id=t.column("item_id").to_pylist(), tokens=t.column("tokens").to_pylist(),
                     title=t.column("title").to_pylist(), dense=dense)


def load_sequences(root: Path, manifest: dict[str, Any]) -> SequenceData:
    tables = [pq.read_table(p) for p in sequence_shard_paths(root, manifest)]
    t = pa.concat_tables(tables)
    order = np.argsort(t.column("user_idx").to_numpy(), kind="stable")
    t = t.take(pa.array(order))
    items_col = t.column("items").combine_chunks()
    ts_col = t.column("timestamps").combine_chunks()
    users = pq.read_table(root / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()
    offsets = items_col.offsets.to_numpy().astype(np.int64)
    return SequenceData(user_id=users, offsets=offsets - offsets[0],
                        items=items_col.flatten().to_numpy().astype(np.int32),
                        timestamps=ts_col.flatten().to_numpy().astype(np.int64))


def load_dataset(root: str | Path, verify: bool = False) -> Dataset:
    root = Path(root).resolve()
    manifest = read_manifest(root)
    if verify:
        verify_checksums(root, manifest)
    seqs = load_sequences(root, manifest)
    if seqs.num_users != manifest["num_users"]:
        raise DatasetError(f"{root}: manifest says {manifest['num_users']} users, shards hold {seqs.num_users}")
    return Dataset(root=root, manifest=manifest, items=load_items(root), sequences=seqs)
