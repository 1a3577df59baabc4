"""The end-of-training test evaluation reads the prepared dataset a chunk of users at a time
(``evaluate_checkpoint_streamed``): the same numbers as the in-memory path, with any chunk size."""

from __future__ import annotations

import pytest

from raygr.training.report import evaluate_checkpoint, evaluate_checkpoint_streamed, popularity_metrics
from tests.helpers import tiny_dataset
from tests.serving_helpers import SERVE_TINY, tiny_checkpoint


@pytest.mark.parametrize("preset", ["joint", "sasrec"])
def test_streamed_test_evaluation_equals_the_in_memory_one(tmp_path, preset):
    ds = tiny_dataset(tmp_path, num_users=300, num_items=60)
    run = tiny_checkpoint(ds, tmp_path / "run", *SERVE_TINY, f"model.preset={preset}")
    best = run / "checkpoints" / "best"
    want = evaluate_checkpoint(best, ds)
    want_pop = popularity_metrics(ds, _config(best))
    for chunk in (37, 100_000):  # many chunks (the last one short), and all users in one
        got = evaluate_checkpoint_streamed(best, ds.root, chunk_users=chunk)
        assert got["num_users"] == want["num_users"] == 300
        for key in ("main", "retrieval_only", "decoding", "candidates_per_user", "codebook", "epoch"):
            assert got[key] == pytest.approx(want[key]), (chunk, key)
        assert got["baselines"]["popularity"] == pytest.approx(want_pop)


def _config(checkpoint):
    from raygr.training.checkpoint import read_checkpoint

    return read_checkpoint(checkpoint).config
