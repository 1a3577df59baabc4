"""Training windows: every training target of every user, as fixed-size left-padded rows.

A user's training part is the sequence without its last two items (validation, test). A causal
model reads ``input[t]`` and predicts ``target[t]`` (the next item) at every position, so one row
of width T carries up to T targets. Parts longer than T+1 are cut into several rows, newest first,
so that every training target appears exactly once. Pure numpy and vectorised: it runs inside Ray
Data ``map_batches`` and in the Ray-free loop alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def make_train_windows_csr(offsets: np.ndarray, items: np.ndarray, max_history: int) -> dict[str, np.ndarray]:
    """Windows from CSR sequences (``items[offsets[u]:offsets[u+1]]`` is user u, oldest first).

    Returns ``{"input": [n, T] int64, "target": [n, T] int64}``; 0 is padding / no target.
    """
    T = max_history
    offsets = np.asarray(offsets, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    starts = offsets[:-1]
    m = np.maximum(offsets[1:] - starts - 2, 0)  # training-part lengths
    n_targets = np.maximum(m - 1, 0)
    n_windows = (n_targets + T - 1) // T  # [U]
    if n_windows.sum() == 0:
        z = np.zeros((0, T), dtype=np.int64)
        return {"input": z, "target": z.copy()}
    user = np.repeat(np.arange(len(m)), n_windows)
    k = np.arange(len(user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # window index, newest = 0
    last = m[user] - 1 - k * T  # position (within the user) of the window's last target
    tpos = last[:, None] - T + 1 + np.arange(T)[None, :]  # [n, T] target positions
    valid = tpos >= 1
    base = starts[user][:, None]
    target = np.where(valid, items[np.clip(base + tpos, 0, len(items) - 1)], 0)
    inp = np.where(valid, items[np.clip(base + tpos - 1, 0, len(items) - 1)], 0)
    return {"input": inp.astype(np.int64), "target": target.astype(np.int64)}


def count_train_windows(length_histogram: Mapping[int, int], max_history: int) -> int:
    """How many rows ``make_train_windows_csr`` gives, from ``{sequence length: users}`` alone (the manifest's
    ``sequence_lengths``): no window is built."""
    T = max_history
    return int(sum(users * ((max(int(n) - 3, 0) + T - 1) // T) for n, users in length_histogram.items()))


def make_train_windows(sequences: Sequence[np.ndarray], max_history: int) -> dict[str, np.ndarray]:
    """Same as ``make_train_windows_csr`` for a list of per-user item arrays (a Ray Data column)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0)
    return make_train_windows_csr(offsets, flat, max_history)


def iterate_windows(windows: dict[str, np.ndarray], batch_size: int, seed: int, epoch: int,
                    rank: int = 0, world: int = 1):
    """Shuffled batches of window rows for one epoch; with ``world`` > 1, this worker's share."""
    n = len(windows["input"])
    order = np.random.default_rng((seed, epoch)).permutation(n)[rank::world]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield {k: v[idx] for k, v in windows.items()}
