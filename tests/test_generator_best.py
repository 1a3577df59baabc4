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


def test_select_by_generator_keeps_the_generators_best_epoch(dataset):
    """train.select_by=generator: the checkpoint (and early stopping) follow the generator's validation
    curve, and the test scores the model of that epoch: the same figures generator_best reported for it."""
    base = ("model.preset=joint", "train.epochs=5", "train.patience=5", "model.enhancer_every=0")
    _, main_state, main_test = train_local(tiny_config(*base), dataset, log=lambda s: None, generator_best=True)
    _, state, test = train_local(tiny_config(*base, "train.select_by=generator"), dataset, log=lambda s: None)
    gen_curve = [h["valid"]["retrieval_only"]["ndcg@10"] for h in state.history]
    assert state.best_epoch == int(np.argmax(gen_curve)) + 1 == main_test["generator_best"]["epoch"]
    assert state.best_epoch != main_state.best_epoch  # the two choices differ on this data (see above)
    assert state.best_metric == pytest.approx(max(gen_curve))
    assert test["retrieval_only"] == pytest.approx(main_test["generator_best"]["retrieval_only"])


def test_select_by_generator_early_stops_on_the_generator_curve(dataset):
    cfg = tiny_config("model.preset=joint", "train.epochs=6", "train.patience=1", "model.enhancer_every=0",
                      "train.select_by=generator")
    _, state, _ = train_local(cfg, dataset, log=lambda s: None)
    gen_curve = [h["valid"]["retrieval_only"]["ndcg@10"] for h in state.history]
    # It stopped at the first epoch whose generator figure did not improve, whatever the ranker did.
    first_drop = next((i for i in range(1, len(gen_curve)) if gen_curve[i] <= max(gen_curve[:i])), None)
    assert state.stopped_early == (first_drop is not None)
    assert len(gen_curve) == (first_drop + 1 if first_drop is not None else 6)


def test_select_by_generator_needs_a_generator():
    from raygr.config import ConfigError

    with pytest.raises(ConfigError, match="train.select_by.*sasrec has no generator"):
        tiny_config("model.preset=sasrec", "train.select_by=generator")
