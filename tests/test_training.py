"""A few hundred steps on tiny synthetic data: losses fall and every preset beats popularity."""

import numpy as np
import pytest

from raygr.data.split import eval_examples, training_item_counts
from raygr.metrics import metrics_from_ranks, popularity_ranking, ranks_from_lists
from raygr.training.local import train_local
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("train"), num_users=1500, num_items=300, popularity_exponent=0.4)


@pytest.fixture(scope="module")
def popularity(dataset):
    ex = eval_examples(dataset.sequences, "test", 20)
    top = popularity_ranking(training_item_counts(dataset.sequences, dataset.num_items), 20)
    return metrics_from_ranks(ranks_from_lists(np.tile(top, (len(ex), 1)), ex.target))


@pytest.mark.parametrize("preset, epochs, falling, extra", [
    # The enhancer off: its mined negatives get harder as the model improves, so with it the ranker's
    # loss may rise while the ranker gets better (tests/test_enhancer.py covers the mining).
    # The tokenizer's own losses are only computed while it trains: its SIDs stay learnable to the end here.
    ("joint", 12, ["generator", "ranker", "reconstruction", "cost", "loss"],
     ["model.enhancer_every=0", "model.fix_sids_at_horizon=false"]),
    ("joint", 12, ["generator", "ranker", "loss"],  # the fast path: negatives' codes from a cached table
     ["model.enhancer_every=0", "model.negative_codes_every=10", "model.history_item_id=true"]),
    # The Beauty recipe: residual SID branches, MLP generator steps, the encoder trained by the ranker alone.
    ("joint", 12, ["generator", "ranker", "loss"],
     ["model.enhancer_every=0", "model.negative_codes_every=10", "model.history_item_id=true",
      "model.sid_residual=true", "model.generator_mlp=true", "model.generator_encoder_grad=0"]),
    # The same with the Transformer code decoder; a smaller retrieval and validation set keep it quick.
    ("joint", 12, ["generator", "ranker", "loss"],
     ["model.enhancer_every=0", "model.negative_codes_every=10", "model.history_item_id=true",
      "model.sid_residual=true", "model.generator_encoder_grad=0", "model.generator_layers=2",
      "train.num_candidates=20", "data.num_eval_users=300"]),
    ("tiger", 30, ["generator"], []),  # cheaper steps: same wall time, more of them
    ("sasrec", 30, ["generator"], []),
    ("sasrec", 30, ["generator"], ["model.tie_embeddings=false"]),  # a separate output table
])
def test_learns_and_beats_popularity(dataset, popularity, preset, epochs, falling, extra):
    cfg = tiny_config(f"model.preset={preset}", f"train.epochs={epochs}", f"train.patience={epochs}", *extra)
    model, state, test = train_local(cfg, dataset, log=lambda s: None)
    assert state.step >= 200
    first, last = state.history[0]["train"], state.history[-1]["train"]
    for term in falling:
        assert last[term] < first[term], f"{term} did not fall: {first[term]:.4f} -> {last[term]:.4f}"
    assert test["recall@10"] > 1.3 * popularity["recall@10"], (test["recall@10"], popularity["recall@10"])
    assert test["decoding"] == {"invalid_rate": 0.0, "duplicate_rate": 0.0}
