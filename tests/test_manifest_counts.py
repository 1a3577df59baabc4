"""The manifest's per-split counts: written at prepare time, equal to what building the windows and the
evaluation splits gives; an older manifest without them is counted from the shards (with a log line);
the streaming evaluation examples are exactly ``eval_split``'s; a catalogue load reads no sequence."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from raygr.data.dataset import LENGTHS_KEY, MANIFEST, length_histogram, load_catalogue, load_dataset, write_dataset
from raygr.data.split import eval_examples
from raygr.data.streaming import EvalSource, eval_selection, user_lengths
from raygr.data.synthetic import generate
from raygr.data.windows import count_train_windows, make_train_windows_csr
from raygr.training.local import eval_split
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    # min_len=1 and a wide length range: users too short for any split, and parts cut into several windows.
    items, seqs = generate(num_users=700, num_items=60, seed=3, min_len=1, avg_len=12, max_len=70)
    root = tmp_path_factory.mktemp("counts") / "d"
    write_dataset(root, items, seqs, source={"format": "synthetic"}, num_shards=3)
    return load_dataset(root)


@pytest.mark.parametrize("max_history", [1, 5, 20, 64])
def test_window_count_from_the_manifest_equals_the_built_windows(ds, max_history):
    hist = length_histogram(ds.root, ds.manifest)
    built = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, max_history)
    assert count_train_windows(hist, max_history) == len(built["input"])


def test_split_counts_equal_the_splits(ds):
    s = ds.manifest["splits"]
    seqs = ds.sequences
    assert s["valid"]["users"] == len(eval_examples(seqs, "valid", 5))
    assert s["test"]["users"] == len(eval_examples(seqs, "test", 5))
    built = make_train_windows_csr(seqs.offsets, seqs.items, 7)
    assert s["train"]["targets"] == int((built["target"] > 0).sum())
    assert s["train"]["interactions"] == int(np.maximum(seqs.lengths() - 2, 0).sum())
    assert sum(ds.manifest[LENGTHS_KEY].values()) == ds.num_users


def test_an_older_manifest_is_counted_from_the_shards_with_a_log_line(ds, tmp_path, caplog):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(ds.root, old)
    m = json.loads((old / MANIFEST).read_text())
    del m[LENGTHS_KEY], m["splits"]  # as written before the counts existed (the fingerprint covers files only)
    (old / MANIFEST).write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="raygr.data.dataset"):
        hist = length_histogram(old, m)
    assert hist == length_histogram(ds.root, ds.manifest)
    assert "predates the per-split counts" in caplog.text and str(old / MANIFEST) in caplog.text
    assert np.array_equal(user_lengths(old, m), ds.sequences.lengths())


@pytest.mark.parametrize("limit", [0, 123])
@pytest.mark.parametrize("chunk", [50, 100_000])
def test_streamed_evaluation_examples_are_eval_splits(ds, limit, chunk):
    cfg = tiny_config("data.max_history=6", f"data.num_eval_users={limit}")
    want = eval_split(ds, cfg, "valid")
    users = eval_selection(user_lengths(ds.root, ds.manifest), "valid", limit, cfg.train.seed)
    assert np.array_equal(users, want.user_idx)
    world = 2
    got = []
    for rank in range(world):
        src = EvalSource(ds.root, ds.manifest, "valid", 6, users[rank::world], chunk_users=chunk)
        chunks = list(src)
        assert all(len(c) <= chunk for c in chunks) or chunk >= len(users)
        got.extend(chunks)
    uid = np.concatenate([c.user_idx for c in got])
    order = np.argsort(uid)
    assert np.array_equal(uid[order], want.user_idx)
    assert np.array_equal(np.concatenate([c.history for c in got])[order], want.history)
    assert np.array_equal(np.concatenate([c.target for c in got])[order], want.target)


def test_a_catalogue_reads_no_sequence_until_asked(ds, caplog):
    cat = load_catalogue(ds.root)
    assert cat._sequences is None and len(cat.items) == ds.num_items
    with caplog.at_level(logging.WARNING, logger="raygr.data.dataset"):
        seqs = cat.sequences  # on first use, with a line saying so
    assert "into memory" in caplog.text
    assert np.array_equal(seqs.items, ds.sequences.items)
