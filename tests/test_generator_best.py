"""train_local(generator_best=True): the generator alone is also scored at its own best validation epoch."""

import numpy as np
import pytest

from raygr.training.local import train_local
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("genbest"), num_users=400, num_items=120)


def test_the_generator_is_scored_at_its_own_best_epoch_and_the_main_result_is_unchanged(dataset):
    cfg = tiny_config("model.preset=joint", "train.epochs=5", "train.patience=5", "model.enhancer_every=0")
    _, state, plain = train_local(cfg, dataset, log=lambda s: None)
    _, state2, test = train_local(cfg, dataset, log=lambda s: None, generator_best=True)
    assert "generator_best" not in plain
    # The run itself, its main checkpoint choice and its test figures do not move.
    assert state2.best_epoch == state.best_epoch
    assert {k: v for k, v in test.items() if k != "generator_best"} == plain
    gen_curve = [h["valid"]["retrieval_only"]["ndcg@10"] for h in state2.history]
    best = test["generator_best"]
    assert best["epoch"] == int(np.argmax(gen_curve)) + 1
    # On this seeded data the two curves peak at different epochs (4 and 5), so the generator's own
    # checkpoint is reloaded and scored: its figure is not the main checkpoint's.
    assert best["epoch"] != state2.best_epoch
    assert best["retrieval_only"]["ndcg@10"] != test["retrieval_only"]["ndcg@10"]
    assert set(best["retrieval_only"]) >= {"ndcg@10", "recall@10"}
