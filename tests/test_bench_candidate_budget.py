"""The candidate-budget sweep (benchmarks/bench_candidate_budget.py) ranks as the evaluation does: it
scores every item once per batch and reads each setting's candidates from that, so it is checked
against ``evaluation_ranks`` run once per setting."""

import numpy as np
import pytest

from benchmarks.bench_candidate_budget import budget_ranks, parse_settings
from raygr.config import replace
from raygr.data.split import eval_examples
from raygr.metrics import MISS
from raygr.training.loop import evaluation_ranks
from tests.helpers import initialised_model, tiny_config, tiny_dataset


def test_the_sweep_ranks_as_evaluation_does(tmp_path):
    ds = tiny_dataset(tmp_path, num_users=150, num_items=120)
    cfg = tiny_config("model.preset=joint", "model.codes=8")
    model = initialised_model(ds, cfg)
    ex = eval_examples(ds.sequences, "test", cfg.data.max_history)
    settings = [(1, 2), (2, 10), (1, 8)]
    swept = budget_ranks(model, ex.history, ex.target, settings, batch_size=64)
    for levels, width in settings:
        keys = [f"train.prefix_levels={levels}", f"train.num_prefixes={width}", "train.eval_batch_size=64"]
        ref = evaluation_ranks(model, ex, replace(cfg, keys))
        got = swept[(levels, width)]
        # evaluation keeps the top 20: deeper ranks are misses there
        np.testing.assert_array_equal(np.where(got["rank"] < 20, got["rank"], MISS), ref["main"])
        np.testing.assert_array_equal(got["candidates"], ref["ranked"])
    assert (swept[(1, 8)]["rank"] != MISS).all()  # every prefix: the whole catalogue, no misses


def test_settings_are_checked():
    assert parse_settings("2x200, 1x16") == [(2, 200), (1, 16)]
    with pytest.raises(SystemExit, match="'2-200' is not LEVELSxWIDTH"):
        parse_settings("2-200")
