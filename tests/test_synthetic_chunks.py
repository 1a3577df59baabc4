"""benchmarks/synthetic_chunks.py: a dataset written a chunk of users at a time reads back as one dataset."""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic_chunks import mean_length, write_chunked
from raygr.data.dataset import load_dataset, read_manifest
from raygr.data.windows import count_train_windows, make_train_windows_csr


def test_chunks_read_back_as_one_dataset(tmp_path):
    m = write_chunked(tmp_path / "ds", 30_000, 200, avg_len=20.0, chunk=8_000, log=lambda _: None)
    assert m["source"]["chunks"] >= 4 and m["num_shards"] == 2 * m["source"]["chunks"]
    ds = load_dataset(tmp_path / "ds")
    seqs = ds.sequences
    assert ds.num_users == m["num_users"] and len(seqs.items) == m["num_interactions"]
    assert 25_000 < m["num_interactions"] < 35_000
    assert seqs.items.min() >= 1 and seqs.items.max() <= 200
    # each chunk has its own seed: the second chunk's users are not the first's again
    n = round(8_000 / mean_length(200, 20.0))  # users per chunk
    assert [tuple(seqs.sequence(u)) for u in range(20)] != [tuple(seqs.sequence(n + u)) for u in range(20)]
    # the manifest's histogram counts what the files hold (training steps come from it)
    hist = {int(k): v for k, v in read_manifest(tmp_path / "ds")["sequence_lengths"].items()}
    assert hist == {int(v): int(c) for v, c in zip(*np.unique(seqs.lengths(), return_counts=True))}
    windows = make_train_windows_csr(seqs.offsets, seqs.items, 20)
    assert count_train_windows(hist, 20) == len(windows["input"])
