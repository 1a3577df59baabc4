"""Reading a prepared dataset a bounded slice at a time: sequence lengths, and evaluation examples.

    lengths = user_lengths("datasets/big", manifest)                     # int32 [U], one shard at a time
    users = eval_selection(lengths, "valid", limit=0, seed=0)[rank::world]
    for chunk in EvalSource("datasets/big", manifest, "valid", 20, users):   # EvalExamples, <= chunk_users each
        ...

A Ray Train worker holds its shard of the training windows (Ray Data) and the item table; validation
users come from here, a chunk at a time, so that a worker's memory does not grow with the dataset
(only the per-user length array does: 4 bytes a user). The examples are exactly those of
``raygr.training.local.eval_split`` for the same users: the same sample for the same ``limit`` and seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raygr.data.dataset import SequenceData, _short, damaged, sequence_shard_paths
from raygr.data.split import EvalExamples, Split, eval_examples

BATCH_USERS = 8192  # users per Parquet record batch read


def iter_sequence_batches(root: str | Path, manifest: dict[str, Any], columns: tuple[str, ...] = ("user_idx", "items"),
                          batch_users: int = BATCH_USERS) -> Iterator[pa.RecordBatch]:
    """Record batches of the sequence shards, shard after shard (users ascending within a shard)."""
    root = Path(root)
    for path in sequence_shard_paths(root, manifest):
        try:
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_users, columns=list(columns))
        except (pa.ArrowException, OSError) as e:
            raise damaged(root, manifest, f"{path} cannot be read ({_short(e)})") from None


def _csr(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user_idx [n], offsets [n+1], items [nnz])`` of a record batch."""
    col = batch.column(batch.schema.get_field_index("items"))
    offsets = col.offsets.to_numpy().astype(np.int64)
    items = col.values.to_numpy()[offsets[0]:offsets[-1]]
    users = batch.column(batch.schema.get_field_index("user_idx")).to_numpy().astype(np.int64)
    return users, offsets - offsets[0], items


def user_lengths(root: str | Path, manifest: dict[str, Any]) -> np.ndarray:
    """Sequence length of every user, int32 [U], read one record batch at a time."""
    out = np.zeros(int(manifest["num_users"]), dtype=np.int32)
    for batch in iter_sequence_batches(root, manifest):
        users, offsets, _ = _csr(batch)
        out[users] = np.diff(offsets)
    return out


def eval_selection(lengths: np.ndarray, split: Split, limit: int, seed: int) -> np.ndarray:
    """The users ``eval_split`` evaluates (ascending user_idx): every eligible user, or the same seeded
    sample of ``limit`` of them."""
    back = {"valid": 2, "test": 1}[split]
    users = np.flatnonzero(np.asarray(lengths) >= back + 1).astype(np.int64)
    if limit and limit < len(users):
        users = users[np.sort(np.random.default_rng(seed).choice(len(users), limit, replace=False))]
    return users


class EvalSource:
    """Evaluation examples of ``users`` on ``split``, in chunks of at most ``chunk_users``.

    Held in memory when they fit in one chunk (a sample: read once), else re-read from the shards on
    every pass (bounded memory whatever the dataset's size).
    """

    def __init__(self, root: str | Path, manifest: dict[str, Any], split: Split, max_history: int,
                 users: np.ndarray, chunk_users: int = 65536):
        self.root, self.manifest, self.split, self.max_history = Path(root), manifest, split, max_history
        self.users = np.sort(np.asarray(users, dtype=np.int64))
        self.chunk_users = max(1, chunk_users)
        self._cached: EvalExamples | None = None
        if len(self.users) <= self.chunk_users:
            self._cached = _concat(list(self._read()), max_history)

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[EvalExamples]:
        if self._cached is not None:
            if len(self._cached):
                yield self._cached
            return
        pending: list[EvalExamples] = []
        n = 0
        for ex in self._read():
            pending.append(ex)
            n += len(ex)
            if n >= self.chunk_users:
                joined = _concat(pending, self.max_history)
                full = len(joined) // self.chunk_users * self.chunk_users
                for start in range(0, full, self.chunk_users):
                    yield joined.subset(np.arange(start, start + self.chunk_users))
                pending = [joined.subset(np.arange(full, len(joined)))]
                n = len(joined) - full
        if n:
            yield _concat(pending, self.max_history)

    def _read(self) -> Iterator[EvalExamples]:
        wanted = np.zeros(int(self.manifest["num_users"]), dtype=bool)
        wanted[self.users] = True
        for batch in iter_sequence_batches(self.root, self.manifest):
            users, offsets, items = _csr(batch)
            if not wanted[users].any():
                continue
            seqs = SequenceData(user_id=[], offsets=offsets, items=items, timestamps=np.zeros(0, np.int64))
            ex = eval_examples(seqs, self.split, self.max_history)  # user_idx local to the batch
            ex.user_idx = users[ex.user_idx]
            keep = np.flatnonzero(wanted[ex.user_idx])
            if len(keep):
                yield ex.subset(keep)


def _concat(parts: list[EvalExamples], max_history: int) -> EvalExamples:
    if not parts:
        return EvalExamples(np.zeros(0, np.int64), np.zeros((0, max_history), np.int64), np.zeros(0, np.int64))
    return EvalExamples(np.concatenate([p.user_idx for p in parts]), np.concatenate([p.history for p in parts]),
                        np.concatenate([p.target for p in parts]))


def streamed_training_item_counts(root: str | Path, manifest: dict[str, Any]) -> np.ndarray:
    """``raygr.data.split.training_item_counts`` read one record batch at a time: [num_items+1] int64."""
    from raygr.data.split import training_item_counts_csr

    num_items = int(manifest["num_items"])
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for batch in iter_sequence_batches(root, manifest):
        _, offsets, items = _csr(batch)
        counts += training_item_counts_csr(offsets, items, num_items)
    return counts
