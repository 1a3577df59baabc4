"""The canonical prepared-dataset directory: what ``raygr data prepare`` writes and everything reads.

    DIR/
      manifest.json              counts, source, schema version, sha256 of every file
      items.parquet              item_idx (1..N), item_id (original), title, tokens (list<str>), [dense]
      users.parquet              user_idx (0..U-1), user_id (original)
      sequences/part-00000.parquet ...   user_idx, items (list<int32>, oldest first), timestamps (list<int64>)

Item indices are contiguous from 1; 0 is padding everywhere. Sequence shards hold the users with
``user_idx % num_shards == shard``, sorted by user_idx, so a reader never groups by user at train time.
Writes go to a temporary sibling directory renamed into place at the end: a failed write leaves
nothing that looks like a dataset. Only a directory that holds a raygr manifest, and nothing raygr did
not write, is ever replaced (``--overwrite`` included): anything else in ``--output`` is refused.

Every reader goes through ``check_files`` (cheap: the manifest's file list, sizes, Parquet footers and
schemas, row counts) and reads each file through ``_read_table``, so a missing, truncated, replaced or
re-listed file becomes a ``DatasetError`` that names the file and says how to check and rebuild the
dataset, never a raw pyarrow error. ``verify_checksums`` (``--verify``) reads every byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
log = logging.getLogger(__name__)


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


class Dataset:
    """A prepared dataset: manifest and item table in memory; the sequences read on first use.

    ``load_catalogue`` gives one whose sequences stay on disk until something asks for them (a Ray Train
    worker needs only the catalogue-sized item table; its training windows come from its Ray Data shard).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], items: ItemTable,
                 sequences: SequenceData | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.items = items
        self._sequences = sequences

    @property
    def sequences(self) -> SequenceData:
        if self._sequences is None:
            log.warning("reading all %s interactions of %s into memory", f"{self.manifest['num_interactions']:,}",
                        self.root)
            self._sequences = load_checked_sequences(self.root, self.manifest)
        return self._sequences

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


# Columns each file must have (a superset is fine: later versions may add optional columns).
REQUIRED_COLUMNS = {
    "items.parquet": ("item_idx", "item_id", "title", "tokens"),
    "users.parquet": ("user_idx", "user_id"),
    "sequences/": ("user_idx", "items", "timestamps"),
}


def required_columns(name: str) -> tuple[str, ...]:
    return REQUIRED_COLUMNS["sequences/"] if name.startswith("sequences/") else REQUIRED_COLUMNS.get(name, ())


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
            **sequence_counts(seqs.lengths()),
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
    paths = [p for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST]
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in paths}
    # Sizes let every reader notice a truncated or replaced file without reading it (check_files).
    sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in paths}
    manifest = {"schema_version": SCHEMA_VERSION, **fields, "files": files, "sizes": sizes,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest["fingerprint"] = content_fingerprint(manifest)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def foreign_entries(out: Path) -> list[str]:
    """What ``out`` holds that raygr did not write: everything, if it has no readable manifest of ours."""
    entries = sorted(e.relative_to(out).as_posix() for e in out.rglob("*"))
    try:
        listed = set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return entries
    ours = listed | {MANIFEST} | {parent.as_posix() for name in listed for parent in Path(name).parents}
    return [e for e in entries if e not in ours]


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse an output that is not a directory raygr may replace. ``overwrite`` never widens this: it only
    lets a *different* raygr dataset be replaced (swap_into_place); a user's own files are never deleted."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {out} exists and is not a directory; choose another --output")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if not (out / MANIFEST).is_file():
        raise DatasetError(f"output {out} is not empty and holds no raygr dataset (found {shown}); raygr "
                           "replaces only a dataset it wrote, even with --overwrite: choose an empty or new "
                           "directory")
    raise DatasetError(f"output {out} holds a raygr dataset plus files raygr did not write ({shown}); raygr "
                       "will not delete them, even with --overwrite: move them out or choose another directory")


def swap_into_place(tmp: Path, out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    check_target(out, overwrite)  # again: the directory may have changed while the dataset was written
    if out.is_dir() and any(out.iterdir()):
        old = json.loads((out / MANIFEST).read_text())
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
    if not root.exists():
        raise DatasetError(f"dataset directory {root} does not exist "
                           f"(create one with `raygr data prepare --format ... --output {root}`)")
    if not path.is_file():
        raise DatasetError(f"{root} is not a prepared dataset: {MANIFEST} is missing "
                           f"(create one with `raygr data prepare --format ... --output {root}`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); {_remedy(root, None)}") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path} is not a JSON object; {_remedy(root, None)}")
    for key in ("schema_version", "num_users", "num_items", "num_interactions", "files"):
        if key not in manifest:
            raise DatasetError(f"{path} lacks the key '{key}'; {_remedy(root, manifest)}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(f"{path} has schema_version {manifest['schema_version']}, this raygr reads "
                           f"{SCHEMA_VERSION}; prepare the dataset again")
    if not isinstance(manifest["files"], dict) or not all(isinstance(v, str) for v in manifest["files"].values()):
        raise DatasetError(f"{path}: 'files' must map each file to its sha256; {_remedy(root, manifest)}")
    return manifest


def _remedy(root: Path, manifest: dict[str, Any] | None) -> str:
    """What to do about a damaged dataset: check it, then prepare it again from its source."""
    src = (manifest or {}).get("source") or {}
    fmt = src.get("format", "FORMAT") if isinstance(src, dict) else "FORMAT"
    inp = f" --input {src['input']}" if isinstance(src, dict) and src.get("input") else (
        "" if fmt == "synthetic" else " --input INPUT")
    return (f"check it with `raygr data describe --verify {root}` and rebuild it with "
            f"`raygr data prepare --format {fmt}{inp} --output {root} --overwrite`")


def damaged(root: Path, manifest: dict[str, Any] | None, what: str) -> DatasetError:
    return DatasetError(f"{what}: the dataset in {root} is damaged; {_remedy(root, manifest)}")


def check_files(root: str | Path, manifest: dict[str, Any]) -> None:
    """Cheap integrity check (milliseconds: sizes and Parquet footers, no data pages), run by every reader.

    Catches a missing or truncated file, a file replaced by one with other columns, and a manifest edited
    by hand (its file list no longer matching its fingerprint or the files' row counts). Byte-level
    corruption of the same size needs ``verify_checksums``.
    """
    root = Path(root)
    files = manifest["files"]
    if "fingerprint" in manifest and content_fingerprint(manifest) != manifest["fingerprint"]:
        raise damaged(root, manifest, f"{root / MANIFEST} was edited: its list of files and checksums no "
                                      f"longer matches its fingerprint {manifest['fingerprint']}")
    for name in ("items.parquet", "users.parquet"):
        if name not in files:
            raise damaged(root, manifest, f"{root / MANIFEST} does not list {name}")
    shards = [n for n in files if n.startswith("sequences/")]
    if not shards:
        raise damaged(root, manifest, f"{root / MANIFEST} lists no sequence shard (sequences/part-*.parquet)")
    if "num_shards" in manifest and manifest["num_shards"] != len(shards):
        raise damaged(root, manifest, f"{root / MANIFEST} says num_shards={manifest['num_shards']} but lists "
                                      f"{len(shards)} shard files")
    sizes = manifest.get("sizes", {})
    rows: dict[str, int] = {}
    for name in sorted(files):
        path = root / name
        if not path.is_file():
            raise damaged(root, manifest, f"{path} is missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if name in sizes and size != sizes[name]:
            raise damaged(root, manifest, f"{path} has {size:,} bytes, the manifest recorded {sizes[name]:,} "
                                          "(truncated or replaced)")
        if name.endswith(".parquet"):
            try:
                meta = pq.read_metadata(path)
            except (pa.ArrowException, OSError) as e:
                raise damaged(root, manifest, f"{path} is not a readable Parquet file ({_short(e)})") from None
            columns = set(meta.schema.to_arrow_schema().names)
            missing = [c for c in required_columns(name) if c not in columns]
            if missing:
                raise damaged(root, manifest, f"{path} lacks the column(s) {', '.join(missing)} (it has "
                                              f"{', '.join(sorted(columns))}): not the file raygr wrote")
            rows[name] = meta.num_rows
    for name, key in (("items.parquet", "num_items"), ("users.parquet", "num_users")):
        if rows[name] != manifest[key]:
            raise damaged(root, manifest, f"{root / MANIFEST} says {key}={manifest[key]} but {root / name} "
                                          f"has {rows[name]} rows")
    if sum(rows[n] for n in shards) != manifest["num_users"]:
        raise damaged(root, manifest, f"{root / MANIFEST} says num_users={manifest['num_users']} but the "
                                      f"sequence shards hold {sum(rows[n] for n in shards)} users")


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def verify_checksums(root: str | Path, manifest: dict[str, Any]) -> None:
    root = Path(root)
    for name, digest in manifest["files"].items():
        p = root / name
        if not p.is_file():
            raise damaged(root, manifest, f"{p} is missing (listed in {MANIFEST})")
        if sha256_file(p) != digest:
            raise damaged(root, manifest, f"{p} does not match its checksum in {root / MANIFEST}: the file changed")


def _read_table(root: Path, manifest: dict[str, Any], name: str, columns: list[str] | None = None) -> pa.Table:
    """``pq.read_table`` whose failures name the file and the remedy (after check_files: damage inside)."""
    path = root / name
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise damaged(root, manifest, f"{path} cannot be read ({_short(e)})") from None


def load_items(root: Path, manifest: dict[str, Any] | None = None) -> ItemTable:
    manifest = manifest if manifest is not None else read_manifest(root)
    t = _read_table(root, manifest, "items.parquet")
    dense = None
    try:
        if "dense" in t.column_names:
            col = t.column("dense").combine_chunks()
            dense = col.flatten().to_numpy().reshape(len(t), -1).astype(np.float32)
        return ItemTable(item_id=t.column("item_id").to_pylist(), tokens=t.column("tokens").to_pylist(),
                         title=t.column("title").to_pylist(), dense=dense)
    except (pa.ArrowException, KeyError, ValueError) as e:
        raise damaged(root, manifest, f"{root / 'items.parquet'} has unexpected contents ({_short(e)})") from None


def load_sequences(root: Path, manifest: dict[str, Any]) -> SequenceData:
    tables = [_read_table(root, manifest, p.relative_to(root).as_posix(), ["user_idx", "items", "timestamps"])
              for p in sequence_shard_paths(root, manifest)]
    try:
        t = pa.concat_tables(tables)
        order = np.argsort(t.column("user_idx").to_numpy(), kind="stable")
        t = t.take(pa.array(order))
        items_col = t.column("items").combine_chunks()
        ts_col = t.column("timestamps").combine_chunks()
        offsets = items_col.offsets.to_numpy().astype(np.int64)
        items = items_col.flatten().to_numpy().astype(np.int32)
        timestamps = ts_col.flatten().to_numpy().astype(np.int64)
    except (pa.ArrowException, KeyError, ValueError, AttributeError) as e:
        raise damaged(root, manifest, f"the sequence shards in {root / 'sequences'} have unexpected contents "
                                      f"({_short(e)})") from None
    users = _read_table(root, manifest, "users.parquet", ["user_id"]).column("user_id").to_pylist()
    return SequenceData(user_id=users, offsets=offsets - offsets[0], items=items, timestamps=timestamps)


def load_checked_sequences(root: Path, manifest: dict[str, Any]) -> SequenceData:
    """``load_sequences`` plus the checks that the shards hold what the manifest says."""
    seqs = load_sequences(root, manifest)
    if seqs.num_users != manifest["num_users"]:
        raise damaged(root, manifest, f"{root / MANIFEST} says {manifest['num_users']} users, the shards hold "
                                      f"{seqs.num_users}")
    if len(seqs.items) != manifest["num_interactions"]:
        raise damaged(root, manifest, f"{root / MANIFEST} says {manifest['num_interactions']} interactions, the "
                                      f"shards hold {len(seqs.items)}")
    if len(seqs.items) and (seqs.items.min() < 1 or seqs.items.max() > manifest["num_items"]):
        raise damaged(root, manifest, f"a sequence shard in {root / 'sequences'} refers to an item outside "
                                      f"1..{manifest['num_items']} (the item table)")
    return seqs


def load_catalogue(root: str | Path, verify: bool = False) -> Dataset:
    """Manifest and item table (catalogue-sized); the sequences stay on disk until ``.sequences`` is used."""
    root = Path(root).resolve()
    manifest = read_manifest(root)
    check_files(root, manifest)
    if verify:
        verify_checksums(root, manifest)
    return Dataset(root=root, manifest=manifest, items=load_items(root, manifest))


def load_dataset(root: str | Path, verify: bool = False) -> Dataset:
    """The whole dataset in memory (sequences included)."""
    ds = load_catalogue(root, verify)
    ds._sequences = load_checked_sequences(ds.root, ds.manifest)
    return ds


# -- per-split counts in the manifest ---------------------------------------------------------------

LENGTHS_KEY = "sequence_lengths"  # {"length": users}: every per-split count follows from it


def sequence_counts(lengths: np.ndarray) -> dict[str, Any]:
    """Manifest fields written at prepare time: the histogram of sequence lengths and the split sizes.

    Training windows depend on ``data.max_history``, so the manifest keeps the histogram they are
    counted from (``raygr.data.windows.count_train_windows``); it has one entry per distinct length.
    """
    values, counts = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)
    hist = {int(v): int(c) for v, c in zip(values, counts)}
    return {LENGTHS_KEY: {str(k): v for k, v in hist.items()}, "splits": split_counts(hist)}


def split_counts(hist: dict[int, int]) -> dict[str, dict[str, int]]:
    """Leave-one-out split sizes from a length histogram (``raygr.data.split``): the last item of a user is
    the test target, the second-last the validation target, every earlier position but the first a
    training target."""
    n = np.array(sorted(hist), dtype=np.int64)
    u = np.array([hist[int(k)] for k in n], dtype=np.int64)
    return {
        "train": {"users": int(u[n >= 4].sum()), "interactions": int((np.maximum(n - 2, 0) * u).sum()),
                  "targets": int((np.maximum(n - 3, 0) * u).sum())},
        "valid": {"users": int(u[n >= 3].sum())},
        "test": {"users": int(u[n >= 2].sum())},
    }


def length_histogram(root: str | Path, manifest: dict[str, Any]) -> dict[int, int]:
    """Users per sequence length: from the manifest, or (a dataset prepared before raygr stored it)
    counted from the shards, one shard at a time, with a log line saying so."""
    stored = manifest.get(LENGTHS_KEY)
    if isinstance(stored, dict) and stored:
        return {int(k): int(v) for k, v in stored.items()}
    root = Path(root)
    log.warning("%s predates the per-split counts in the manifest: counting sequence lengths from its %d "
                "shards (prepare the dataset again to store them)", root / MANIFEST,
                len(sequence_shard_paths(root, manifest)))
    from raygr.data.streaming import user_lengths

    values, counts = np.unique(user_lengths(root, manifest), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}
