"""raygr/models/sid_predictability.py: the vectorised count against a slow reference, and what it ranks."""

from collections import Counter, defaultdict

import numpy as np

from benchmarks.sid_predictability import summarise
from raygr.models.sid_predictability import prefix_predictability


def _reference(offsets, items, codes, depth):
    """Per-user loops: successor counts from training transitions, then the top successor (ties: smallest)."""
    key = lambda i: tuple(codes[i - 1, :depth])  # noqa: E731
    seqs = [items[offsets[u]:offsets[u + 1]] for u in range(len(offsets) - 1)]
    succ = defaultdict(Counter)
    for s in seqs:
        for a, b in zip(s[:-3], s[1:-2]):
            succ[key(a)][key(b)] += 1
    hits = n = 0
    for s in seqs:
        if len(s) < 3:
            continue
        n += 1
        c = succ.get(key(s[-3]))
        if c:
            top = max(c.values())
            hits += min(k for k, v in c.items() if v == top) == key(s[-2])
    return hits / n


def _data(seed, users=60, num_items=30, levels=3, codes_per_level=4):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, num_items + 1, int(lengths.sum())).astype(np.int32)
    codes = rng.integers(0, codes_per_level, (num_items, levels))
    return offsets, items, codes


def test_matches_the_slow_reference_at_every_depth():
    for seed in range(5):
        offsets, items, codes = _data(seed)
        for depth in (1, 2, 3):
            assert prefix_predictability(offsets, items, codes, depth) == _reference(offsets, items, codes, depth)


def test_sids_that_follow_the_transitions_score_higher():
    # Items walk a cycle 1 -> 2 -> ... -> 8 -> 1; SIDs whose first code follows the cycle are predictable.
    n = 8
    seqs = [[(s + k) % n + 1 for k in range(7)] for s in range(40)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    items = np.concatenate(seqs).astype(np.int32)
    walk = np.array([[i % 4, i // 4] for i in range(n)])  # consecutive items: consecutive first codes
    rng = np.random.default_rng(0)
    shuffled = walk[rng.permutation(n)]
    assert prefix_predictability(offsets, items, walk, 1) == 1.0
    assert prefix_predictability(offsets, items, shuffled, 1) < 1.0
    row = summarise(offsets, items, walk)
    assert row["levels"] == 2 and row["unique_sids"] == n and row["first_level_codes_used"] == 4
    assert row["predictability"][1] == 1.0  # the full SID: the next item itself
