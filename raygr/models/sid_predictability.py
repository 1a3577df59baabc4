"""How predictable a set of Semantic IDs makes the next item, before any generator trains on it.

    p = prefix_predictability(offsets, items, codes, depth=1)    # share of validation targets, 0..1

For a SID prefix depth d: the share of validation targets (every user's second-to-last item) whose first
d codes equal the prefix most often seen after the previous item's first d codes in the training
transitions (each sequence without its last two items). A first-order, count-based stand-in for the
generator's level-d teacher-forced accuracy, which a trained generator does not exceed by much at level 1
(docs/results.md, session 21): SIDs that score higher here gave the generator more across sessions 12-22.
Seconds on Beauty; nothing trains. ``model.sid_rec_weight_auto`` picks the recommender block's weight by
it; ``benchmarks/sid_predictability.py`` reports it for any SID file or config.
"""

from __future__ import annotations

import numpy as np

from raygr.models.content_sids import training_transitions


def prefix_keys(codes: np.ndarray, depth: int) -> np.ndarray:
    """One int64 per item for the first ``depth`` codes of its SID (``codes`` [N, L], row i = item i+1)."""
    base = int(codes.max()) + 1
    keys = np.zeros(len(codes), dtype=np.int64)
    for level in range(depth):
        keys = keys * base + codes[:, level].astype(np.int64)
    return keys


def prefix_predictability(offsets: np.ndarray, items: np.ndarray, codes: np.ndarray, depth: int) -> float:
    """Share of validation targets whose depth-``depth`` prefix is the most frequent successor prefix of
    the previous item's in the training transitions. ``items`` are 1-based, CSR by ``offsets``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keys = prefix_keys(np.asarray(codes), depth)
    lengths = np.diff(offsets)
    prev_items, next_items = training_transitions(offsets, items)
    a, b = keys[prev_items - 1], keys[next_items - 1]
    pairs, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    # Most frequent successor per source prefix (ties: the smallest prefix, deterministic).
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    best = dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist()))
    users = np.flatnonzero(lengths >= 3)
    prev = keys[items[offsets[users + 1] - 3] - 1]
    target = keys[items[offsets[users + 1] - 2] - 1]
    guess = np.array([best.get(k, -1) for k in prev.tolist()], dtype=np.int64)
    return float((guess == target).mean()) if len(users) else 0.0
