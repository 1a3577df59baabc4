"""Ray Data: the Ray prepare path writes the same dataset as the in-memory path; the training pipeline
yields torch batches whose windows equal the numpy window function's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raygr.data.dataset import DatasetError, load_dataset
from raygr.data.prepare import prepare
from raygr.data.windows import make_train_windows

pytestmark = pytest.mark.ray


def events(n: int = 3000, seed: int = 0) -> pa.Table:
    """String user ids, integer items, many timestamp ties, some exact duplicates, item text per row."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 150, n)
    t = pa.table({"uid": [f"user{u}" for u in rng.integers(0, 200, n)], "iid": item,
                  "ts": rng.integers(0, 40, n).astype(str),
                  "title": [f"Item {i % 17} shiny" for i in item], "brand": [f"B{i % 5}" for i in item]})
    return pa.concat_tables([t, t.slice(10, 50)])


def same_dataset(a, b) -> None:
    da, db = load_dataset(a, verify=True), load_dataset(b, verify=True)
    assert da.manifest["files"] == db.manifest["files"]  # byte-identical files
    assert da.manifest["fingerprint"] == db.manifest["fingerprint"]
    assert da.sequences.user_id == db.sequences.user_id and da.items.tokens == db.items.tokens
    assert np.array_equal(da.sequences.offsets, db.sequences.offsets)
    assert np.array_equal(da.sequences.items, db.sequences.items)
    assert np.array_equal(da.sequences.timestamps, db.sequences.timestamps)
    for key in ("rows", "duplicates_dropped", "items_without_content"):
        assert da.manifest["source"][key] == db.manifest["source"][key]
    # The per-split counts (the workers' step counts) are written by both paths alike.
    for key in ("sequence_lengths", "splits"):
        assert da.manifest[key] == db.manifest[key]


def test_ray_prepare_equals_in_memory_prepare(ray_cluster, tmp_path):
    d = tmp_path / "ev"
    d.mkdir()
    t = events()
    pq.write_table(t.slice(0, 1800), d / "part-0.parquet")  # two files: ties across file boundaries
    pq.write_table(t.slice(1800), d / "part-1.parquet")
    opts = {"user": "uid", "item": "iid", "time": "ts", "text": "title,brand"}
    mem = prepare("table", d, tmp_path / "mem", options={**opts, "use_ray": "false"}, num_shards=4)
    ray_m = prepare("table", d, tmp_path / "ray", options={**opts, "use_ray": "true"}, num_shards=4)
    assert ray_m["source"]["engine"] == "ray" and mem["source"]["engine"] == "in-memory"
    assert mem["source"]["duplicates_dropped"] >= 50
    same_dataset(tmp_path / "mem", tmp_path / "ray")
    # The same content, so the Ray path may re-run onto the in-memory output.
    prepare("table", d, tmp_path / "mem", options={**opts, "use_ray": "true"}, num_shards=4)


def test_ray_prepare_csv_with_item_table_and_errors(ray_cluster, tmp_path):
    t = events(800, seed=1).drop_columns(["title", "brand"])
    csv = tmp_path / "ev.csv"
    rows = zip(*[c.to_pylist() for c in t.columns])
    csv.write_text("uid,iid,ts\n" + "".join(f"{u},{i},{s}\n" for u, i, s in rows))
    (tmp_path / "items.csv").write_text("id,name\n" + "".join(f"{i},Name {i}\n" for i in range(150)))
    opts = {"user": "uid", "item": "iid", "time": "ts", "items": str(tmp_path / "items.csv"),
            "item_key": "id", "text": "name"}
    prepare("table", csv, tmp_path / "mem", options={**opts, "use_ray": "false"})
    prepare("table", csv, tmp_path / "ray", options={**opts, "use_ray": "true"})
    same_dataset(tmp_path / "mem", tmp_path / "ray")

    bad = tmp_path / "bad.csv"
    bad.write_text("uid,iid,ts\na,1,5\nb,2,later\n")
    opts = {"user": "uid", "item": "iid", "time": "ts", "use_ray": "true"}
    with pytest.raises(DatasetError, match=r"bad.csv: row with uid='b', iid='2': "
                                           r"field 'ts' is not a number or a date: 'later'"):
        prepare("table", bad, tmp_path / "bad", options=opts)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


@pytest.mark.parametrize("shuffle_buffer", [0, 100])
def test_pipeline_yields_the_numpy_windows(ray_cluster, tmp_path, shuffle_buffer):
    from raygr.distributed.pipeline import iter_train_batches, training_dataset

    prepare("synthetic", None, tmp_path / "syn", options={"num_users": "300", "num_items": "50"},
            num_shards=3)
    T = 6
    rows, sizes = [], []
    for batch in iter_train_batches(training_dataset(tmp_path / "syn", T), batch_size=64, drop_last=False,
                                    shuffle_buffer=shuffle_buffer, seed=1):
        assert batch["input"].dtype == batch["target"].dtype == torch.int64
        assert batch["input"].shape == batch["target"].shape and batch["input"].shape[1] == T
        sizes.append(len(batch["input"]))
        rows.append(np.concatenate([batch["input"].numpy(), batch["target"].numpy()], axis=1))
    got = np.concatenate(rows)
    seqs = load_dataset(tmp_path / "syn").sequences
    ref = make_train_windows([seqs.sequence(u) for u in range(seqs.num_users)], T)
    want = np.concatenate([ref["input"], ref["target"]], axis=1)
    assert got.shape == want.shape and len(got) > 300
    assert all(s == 64 for s in sizes[:-1]) and 0 < sizes[-1] <= 64  # full batches; only the last is short

    def canonical(a: np.ndarray) -> np.ndarray:  # block order may vary: compare as sorted multisets
        return a[np.lexsort(a.T[::-1])]

    assert np.array_equal(canonical(got), canonical(want))  # every window exactly once
    if shuffle_buffer:  # and not in the windows' own order
        assert not np.array_equal(got, want)


def test_window_blocks_stay_small_as_the_shards_grow(ray_cluster, tmp_path):
    """A read task reads a whole shard; without a cap its windows became one block as big as the shard's,
    which every Train worker then prefetched: worker memory grew with the data (docs/results.md, Scale)."""
    from raygr.distributed.pipeline import training_dataset

    prepare("synthetic", None, tmp_path / "syn", options={"num_users": "2000", "num_items": "50"},
            num_shards=2)
    small = training_dataset(tmp_path / "syn", 20, max_block_bytes=64 << 10).materialize()
    whole = training_dataset(tmp_path / "syn", 20, max_block_bytes=128 << 20).materialize()
    assert small.count() == whole.count() and whole.num_blocks() <= 4
    assert small.num_blocks() >= 4 * whole.num_blocks()
    sizes = [meta.size_bytes for bundle in small.iter_internal_ref_bundles() for meta in bundle.metadata]
    assert max(sizes) <= 2 * (64 << 10), sizes  # Ray splits once a block passes the target
