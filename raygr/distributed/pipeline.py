"""The Ray Data training input: sequence shards -> fixed-size left-padded training windows -> torch batches.

    ds = training_dataset("datasets/beauty", max_history=20)          # a lazy ray.data.Dataset
    for batch in iter_train_batches(ds, batch_size=256, device="cpu"):
        batch["input"], batch["target"]                                # int64 [B, T] each, 0 = padding

Inside a Ray Train worker, pass ``ray.train.get_dataset_shard("train")`` to ``iter_train_batches``.
The grouping by user happened once, at prepare time (shards hold whole, time-sorted sequences), so this
is a ``read_parquet`` plus one vectorised ``map_batches`` (``raygr.data.windows.make_train_windows``,
the same function the Ray-free loop uses); windows are fixed-size 2-D arrays, so the default collate
works and no custom ``collate_fn`` is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from raygr.data.dataset import check_files, read_manifest, sequence_shard_paths, verify_checksums
from raygr.data.windows import make_train_windows

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def data_context(**execution_options: Any) -> Iterator[None]:
    """Settings for the Ray Datasets created inside the block (each Dataset keeps a copy of the context).

    Always the V1 Parquet reader: with Ray 2.60 the default DataSource V2 spent 3-20 s per read in its
    ListFiles task here (68 ms of CPU, the rest blocked), V1 0.3-1.3 s for the same files.
    """
    ctx = ray.data.DataContext.get_current()
    saved = ctx.use_datasource_v2, {k: getattr(ctx.execution_options, k) for k in execution_options}
    ctx.use_datasource_v2 = False
    for k, v in execution_options.items():
        setattr(ctx.execution_options, k, v)
    try:
        yield
    finally:
        ctx.use_datasource_v2 = saved[0]
        for k, v in saved[1].items():
            setattr(ctx.execution_options, k, v)


def _windows(batch: dict[str, np.ndarray], max_history: int) -> dict[str, np.ndarray]:
    """Ray Data batch of sequences (an object array of item arrays) -> ``{"input", "target"}`` [n, T]."""
    return make_train_windows(batch["items"], max_history)


MAX_BLOCK_BYTES = 4 << 20  # the windows' blocks: what a worker buffers stays the same as the data grows


def training_dataset(dataset_dir: str | Path, max_history: int, *, verify: bool = False,
                     users_per_call: int = 1024, override_num_blocks: int | None = None,
                     max_block_bytes: int = MAX_BLOCK_BYTES) -> ray.data.Dataset:
    """Training windows of every user of a prepared dataset, as a lazy Ray Dataset.

    Args:
        max_history: window width T (``data.max_history``).
        verify: check the shard checksums against the manifest first.
        users_per_call: users per ``map_batches`` call (bounds the memory of one call).
        override_num_blocks: read parallelism (default: Ray Data decides, at least one block per shard).
        max_block_bytes: the largest block of windows. Ray Data's default (128 MiB) joins one read task's
            output into one block, and a read task reads a whole shard: the blocks, and what each Train
            worker prefetches and buffers, grew with the shards (20x from 1M to 20M interactions).
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    root = Path(dataset_dir).resolve()
    manifest = read_manifest(root)
    check_files(root, manifest)  # a damaged shard named here, not as a Ray Data task failure later
    if verify:
        verify_checksums(root, manifest)
    paths = [str(p) for p in sequence_shard_paths(root, manifest)]
    with data_context(), block_limit(max_block_bytes):
        ds = ray.data.read_parquet(paths, columns=["items"], override_num_blocks=override_num_blocks)
        return ds.map_batches(_windows, fn_kwargs={"max_history": max_history}, batch_size=users_per_call,
                              batch_format="numpy")


@contextlib.contextmanager
def block_limit(max_bytes: int) -> Iterator[None]:
    """Datasets created inside the block split their blocks at ``max_bytes`` (each keeps its copy)."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size
    ctx.target_max_block_size = max_bytes
    try:
        yield
    finally:
        ctx.target_max_block_size = saved


def iter_train_batches(ds: ray.data.Dataset | ray.data.DataIterator, batch_size: int,
                       device: str | torch.device = "cpu", *, shuffle_buffer: int = 0,
                       seed: int | None = None, drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Torch batches ``{"input": int64 [B, T], "target": int64 [B, T]}`` on ``device``.

    ``shuffle_buffer`` > 0 shuffles windows locally (a global ``random_shuffle`` would move every row
    between workers each epoch): rows stream into a buffer and each batch is drawn at random from it
    once it holds ``shuffle_buffer`` rows, so a row can travel far from its neighbours. These are the
    semantics of Ray Data's ``local_shuffle_buffer_size``, in numpy: Ray's own cost 13% of the training
    throughput with 2 torch threads on 2 cores (benchmarks/bench_ray_overhead.py).
    """
    import torch

    if shuffle_buffer <= 0:
        yield from ds.iter_torch_batches(batch_size=batch_size, device=device, dtypes=torch.int64,
                                         drop_last=drop_last)
        return

    def to_torch(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in rows.items()}

    rng = np.random.default_rng(seed)
    buf = {"input": np.zeros((0, 0), np.int64), "target": np.zeros((0, 0), np.int64)}
    for block in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if len(buf["input"]) == 0:
            buf = {k: np.asarray(block[k], np.int64) for k in buf}
        else:
            buf = {k: np.concatenate([buf[k], block[k]]) for k in buf}
        while len(buf["input"]) >= shuffle_buffer + batch_size:
            take = rng.choice(len(buf["input"]), batch_size, replace=False)
            keep = np.ones(len(buf["input"]), bool)
            keep[take] = False
            yield to_torch({k: v[take] for k, v in buf.items()})
            buf = {k: v[keep] for k, v in buf.items()}
    rest = rng.permutation(len(buf["input"]))  # the stream ended: drain the buffer in random order
    end = len(rest) if not drop_last else len(rest) // batch_size * batch_size
    for start in range(0, end, batch_size):
        yield to_torch({k: v[rest[start:start + batch_size]] for k, v in buf.items()})
