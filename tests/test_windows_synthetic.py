import numpy as np

from raygr.data.synthetic import generate
from raygr.data.windows import iterate_windows, make_train_windows, make_train_windows_csr


def test_every_training_target_once():
    seqs = [np.arange(1, 4), np.arange(4, 11), np.arange(11, 36)]
    w = make_train_windows(seqs, max_history=5)
    # user 0: training part [1] -> no target; user 1: [4..8] -> 4 targets; user 2: [11..33] -> 22 targets
    targets = sorted(w["target"][w["target"] > 0].tolist())
    assert targets == list(range(5, 9)) + list(range(12, 34))
    pairs = {(int(i), int(t)) for i, t in zip(w["input"].ravel(), w["target"].ravel()) if t}
    assert all(t == i + 1 for i, t in pairs)  # the input at a target's column is its predecessor
    assert w["input"].shape[1] == 5 and (w["input"][w["target"] == 0] == 0).all()


def test_iterate_windows_covers_rows_once_per_epoch():
    w = make_train_windows_csr(np.array([0, 10, 25]), np.arange(1, 26), 4)
    rows = [r for b in iterate_windows(w, 3, seed=0, epoch=1) for r in b["target"].tolist()]
    assert sorted(map(tuple, rows)) == sorted(map(tuple, w["target"].tolist()))
    shards = [sum(len(b["input"]) for b in iterate_windows(w, 2, 0, 0, rank=r, world=2)) for r in (0, 1)]
    assert sum(shards) == len(w["input"])


def test_synthetic_is_seeded_and_structured():
    a_items, a = generate(num_users=500, num_items=100, seed=3)
    _, b = generate(num_users=500, num_items=100, seed=3)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
    assert a.items.min() >= 1 and a.items.max() <= 100 and (a.lengths() >= 5).all()
    assert (np.diff(a.timestamps)[np.diff(np.repeat(np.arange(a.num_users), a.lengths())) == 0] > 0).all()
    # Order carries signal: the most frequent successor of an item recurs far more than chance.
    pairs = np.stack([a.items[:-1], a.items[1:]], 1)[np.diff(np.repeat(np.arange(500), a.lengths())) == 0]
    top_share = np.mean([np.bincount(pairs[pairs[:, 0] == i, 1]).max() / max((pairs[:, 0] == i).sum(), 1)
                         for i in np.unique(pairs[:, 0])])
    assert top_share > 0.3
    assert any(t.startswith("cat:") for t in a_items.tokens[0])
