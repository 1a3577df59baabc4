"""Prepare a large Parquet/CSV interaction table with Ray Data; writes the same dataset as the in-memory path.

    prepare_table_ray("events/", "datasets/events", options={"user": "uid", "item": "iid", "time": "ts"},
                      num_shards=64)
    # or: raygr data prepare --format table --input events/ --output datasets/events \\
    #         --option user=uid --option item=iid --option time=ts --option use_ray=true

Memory is bounded by a block (Ray Data) or a shard, never by the whole table (the driver holds only the
id maps and item content, O(users + items)):
1. scan (Ray Data, parallel): per block, its distinct user and item ids, its timestamp kind and, when
   item text sits in the interaction rows, each item's first row. The driver merges them into
   ``IdMap``s; ids are numbered in natural order, so the mapping does not depend on how rows are split.
2. remap (Ray Data, parallel): ids -> indices, timestamps -> sort keys. The driver streams the blocks in
   file order (``preserve_order``) and appends each row to the spill file of its shard
   (``user_idx % num_shards``), so every shard keeps file order for stable ties.
3. sort (one Ray task per shard): a vectorised stable sort by (user, time) and duplicate removal
   (``formats.sort_interactions``, the same function as the in-memory path; no per-user groupby, see
   RAY_NOTES), then the shard written exactly as ``write_dataset`` writes it.
4. items.parquet, users.parquet and the manifest go into the temporary directory, which is renamed into
   place: a failure leaves no directory that looks like a dataset.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from raygr.data.dataset import (
    DatasetError,
    ItemTable,
    SequenceData,
    check_target,  # the same target checks and atomic swap as write_dataset
    finish_manifest,
    items_to_arrow,
    sequence_counts,
    sequences_to_arrow,
    swap_into_place,
)
from raygr.data.formats import (
    BadValue,
    IdMap,
    TableSpec,
    check_ids,
    content_from_table,
    csr_from_sorted,
    item_table,
    merge_time_kinds,
    read_time,
    sort_interactions,
    table_spec,
)
from raygr.distributed.pipeline import data_context
from raygr.distributed.session import ray_session

PATH_COL = "path"  # the input file of each row (Ray Data include_paths), for error messages
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    """Log how long a step took (``extra`` carries it for benchmarks/bench_prepare.py)."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    log.info("ray prepare: %s took %.2f s", name, seconds, extra={"phase": name, "seconds": seconds})


def _read(spec: TableSpec, columns: list[str]) -> ray.data.Dataset:
    paths = [str(f) for f in spec.files]
    with_paths = PATH_COL not in columns  # a user column called "path" wins over the file names
    if spec.is_csv:
        return ray.data.read_csv(paths, include_paths=with_paths, **spec.csv_args(columns))
    return ray.data.read_parquet(paths, columns=columns, include_paths=with_paths)


def _row_label(batch: pa.Table, spec: TableSpec, row: int) -> str:
    """A row of a block has no line number; name its file and its ids instead."""
    r = batch.slice(row, 1).to_pylist()[0]
    where = r.get(PATH_COL) if PATH_COL not in spec.columns() else ", ".join(map(str, spec.files))
    return f"{where}: row with {spec.user}={r.get(spec.user)!r}, {spec.item}={r.get(spec.item)!r}"


def _list_of(values: pa.Array) -> pa.Array:
    """One list cell holding ``values`` (zero-copy)."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)


def _scan_block(batch: pa.Table, spec: TableSpec, inline: list[str]) -> pa.Table:
    """Step 1, one row per block: distinct ids, timestamp kind, each item's first row; or an error.

    Errors travel as data (the ``error`` column) so the driver raises a plain DatasetError.
    """
    error, kind = None, None
    for col in (spec.user, spec.item):
        if error is None and (bad := check_ids(batch[col], col)) is not None:
            error = f"{_row_label(batch, spec, bad[0])}: {bad[1]}"
    if error is None and spec.time:
        try:
            kind = read_time(batch[spec.time])[0]
        except BadValue as e:
            error = f"{_row_label(batch, spec, e.index)}: field '{spec.time}' {e.why}: {e.value!r}"
    if error is not None:
        return pa.table({"error": [error]})
    out = {"error": pa.array([None], pa.string()), "kind": pa.array([kind], pa.string()),
           "users": _list_of(pc.unique(batch[spec.user].combine_chunks())),
           "items": _list_of(pc.unique(batch[spec.item].combine_chunks()))}
    if inline:
        codes = pc.index_in(batch[spec.item], value_set=pc.unique(batch[spec.item])).to_numpy()
        first = np.sort(np.unique(codes, return_index=True)[1])
        rows = batch.select([spec.item, *inline]).take(pa.array(first))
        out["content"] = _list_of(rows.to_struct_array().combine_chunks())
    return pa.table(out)


def _remap_block(batch: pa.Table, spec: TableSpec, kind: str | None, user_keys: ray.ObjectRef,
                 item_keys: ray.ObjectRef, num_shards: int) -> pa.Table:
    """Step 2: user/item indices, the time sort key and stored value, and the shard of each row."""
    users, items = IdMap(ray.get(user_keys)), IdMap(ray.get(item_keys))  # zero-copy from the object store
    u = users.lookup(batch[spec.user])
    out = {"u": u.astype(np.int32), "i": items.lookup(batch[spec.item]).astype(np.int32)}
    if spec.time:
        _, out["key"], out["ts"] = read_time(batch[spec.time], kind)  # type: ignore[arg-type]
    out["shard"] = (u % num_shards).astype(np.int32)
    return pa.table(out)


def _spill(remapped: ray.data.Dataset, spill_dir: Path, num_shards: int) -> int:
    """Stream remapped blocks, in file order, into one Parquet spill file per shard; returns the rows."""
    writers: dict[int, pq.ParquetWriter] = {}
    rows = 0
    try:
        for batch in remapped.iter_batches(batch_format="pyarrow", batch_size=None):
            shard = batch["shard"].to_numpy()
            counts = np.bincount(shard, minlength=num_shards)
            batch = batch.drop_columns(["shard"]).take(pa.array(np.argsort(shard, kind="stable")))
            start = 0
            for s in np.flatnonzero(counts):  # stable sort above: file order within each shard
                if s not in writers:
                    writers[s] = pq.ParquetWriter(spill_dir / f"{s:05d}.parquet", batch.schema)
                writers[s].write_table(batch.slice(start, counts[s]))
                start += counts[s]
            rows += batch.num_rows
    finally:
        for w in writers.values():
            w.close()
    return rows


@ray.remote
def _sort_shard(spill: str, out: str, shard: int, num_shards: int, num_users: int) -> tuple[int, np.ndarray]:
    """Step 3: sort one shard's rows by (user, time), drop duplicates, write it; returns the duplicates and
    the shard's sequence lengths (for the manifest's per-split counts)."""
    t = pq.read_table(spill)
    u, i = t["u"].to_numpy().astype(np.int64), t["i"].to_numpy().astype(np.int64)
    key = t["key"].to_numpy() if "key" in t.column_names else None
    order, dups = sort_interactions(u, i, key)
    stored = t["ts"].to_numpy()[order] if key is not None else None
    offsets, seq_items, ts = csr_from_sorted(u[order], i[order], stored, num_users)
    seqs = SequenceData(user_id=[], offsets=offsets, items=seq_items, timestamps=ts)
    users = np.arange(shard, num_users, num_shards)
    pq.write_table(sequences_to_arrow(seqs, users), out)
    return dups, (offsets[users + 1] - offsets[users]).astype(np.int32)


def _scan(ds: ray.data.Dataset, spec: TableSpec, inline: list[str]) -> pa.Table:
    scanned = ds.map_batches(_scan_block, fn_args=(spec, inline), batch_size=None, batch_format="pyarrow")
    parts = list(scanned.iter_batches(batch_format="pyarrow", batch_size=None))
    scan = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({"error": []})
    if errors := [e for e in scan["error"].to_pylist() if e]:
        raise DatasetError(errors[0])
    return scan


def prepare_table_ray(input: str | Path, output: str | Path, *, options: dict[str, Any], num_shards: int = 8,
                      overwrite: bool = False, name: str | None = None) -> dict[str, Any]:
    """The ``table`` format via Ray Data; ``options`` as for ``formats.read_table``. Returns the manifest.

    Uses the running Ray, or starts a local one (``ray_session``: more logical CPUs than cores).
    """
    spec = table_spec(input, **options)
    out = Path(output).resolve()
    check_target(out, overwrite)  # fail before the work, not after
    for f in spec.files:
        spec.check_columns(f, spec.columns())
    with ray_session():
        with data_context(preserve_order=True):  # blocks in file order: stable ties, each item's first row
            ds = _read(spec, spec.columns())
        inline = [] if spec.items else spec.content_columns()
        with _phase("scan"):
            scan = _scan(ds, spec, inline)
        if scan.num_rows == 0 or len(pc.list_flatten(scan["users"])) == 0:
            raise DatasetError(f"{', '.join(map(str, spec.files))}: no interactions")
        users = IdMap.build(pc.list_flatten(scan["users"]))
        items = IdMap.build(pc.list_flatten(scan["items"]))
        try:
            kind = merge_time_kinds(scan["kind"].to_pylist()) if spec.time else None
        except ValueError as e:
            raise DatasetError(f"{', '.join(map(str, spec.files))}: field '{spec.time}': {e}") from None
        content = spec.item_content()
        if content is None and inline:
            firsts = pa.Table.from_struct_array(pc.list_flatten(scan["content"]))
            content = content_from_table(firsts, spec.item, spec.text, spec.title, str(spec.files[0]),
                                         unique=False)
        table, stats = item_table(items.ids(), content, content_file=str(spec.items),
                                  missing_items=spec.missing_items,
                                  first_seen=lambda _: "the interaction table")
        num_shards = max(1, min(num_shards, len(users)))  # as write_dataset
        remapped = ds.map_batches(_remap_block, batch_size=None, batch_format="pyarrow",
                                  fn_args=(spec, kind, ray.put(users.keys), ray.put(items.keys), num_shards))
        source = {"format": "table", "input": str(Path(input).resolve()),
                  "options": {k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
                              for k, v in options.items()},
                  "files": [str(f.resolve()) for f in (*spec.files, *([spec.items] if spec.items else []))],
                  "has_timestamps": spec.time is not None, **stats, "engine": "ray"}
        return _write(out, remapped, users, table, num_shards, overwrite, name, source)


def _write(out: Path, remapped: ray.data.Dataset, users: IdMap, table: ItemTable, num_shards: int,
           overwrite: bool, name: str | None, source: dict[str, Any]) -> dict[str, Any]:
    """Steps 2-4 into a temporary sibling directory, renamed into place at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    spill = Path(tempfile.mkdtemp(prefix=f".{out.name}.spill-", dir=out.parent))
    try:
        with _phase("remap+spill"):
            rows = _spill(remapped, spill, num_shards)
        (tmp / "sequences").mkdir()
        shards = [(str(spill / f"{s:05d}.parquet"), str(tmp / "sequences" / f"part-{s:05d}.parquet"))
                  for s in range(num_shards)]
        with _phase("sort shards"):
            sorted_shards = ray.get([_sort_shard.remote(a, b, s, num_shards, len(users))
                                     for s, (a, b) in enumerate(shards)])
        dups = int(sum(d for d, _ in sorted_shards))
        lengths = np.concatenate([n for _, n in sorted_shards])
        pq.write_table(items_to_arrow(table), tmp / "items.parquet")
        # Exactly as write_dataset writes users.parquet, so both paths give the same checksums.
        pq.write_table(pa.table({"user_idx": pa.array(np.arange(len(users), dtype=np.int32)),
                                 "user_id": pa.array(users.ids(), pa.string())}), tmp / "users.parquet")
        manifest = finish_manifest(tmp, {
            "name": name or out.name, "num_users": len(users), "num_items": len(table),
            "num_interactions": rows - dups, "num_shards": num_shards, **sequence_counts(lengths),
            "has_dense": False,
            "source": {**source, "rows": rows, "duplicates_dropped": dups}})
        swap_into_place(tmp, out, manifest, overwrite)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(spill, ignore_errors=True)
