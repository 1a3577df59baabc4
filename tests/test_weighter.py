"""The gradient-guided weighter (UniGRF) balances the generator and ranker losses on parameters both reach."""

import dataclasses

import pytest
import torch

from raygr.data.windows import make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.factory import build_model
from raygr.training.loop import initialise
from raygr.training.weighting import LossWeighter
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("weighter"), num_users=150, num_items=50)


def terms_of(dataset, *overrides):
    cfg = tiny_config("model.weighting=adaptive", *overrides)
    torch.manual_seed(0)
    model = build_model(cfg, dataset)
    initialise(model, cfg, lambda s: None)
    model.train()
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    batch = TrainBatch.from_mapping({k: v[:32] for k, v in w.items()})
    return cfg, model, model.losses(batch, step=0, negatives=torch.arange(1, 20))


@pytest.mark.parametrize("shared_encoder", ["true", "false"])
def test_both_losses_reach_the_parameters_it_balances_on(dataset, shared_encoder):
    cfg, model, terms = terms_of(dataset, f"model.shared_encoder={shared_encoder}")
    weighter = LossWeighter(cfg.model, model.shared_parameters(), every=1)
    weighter.combine(terms, step=0)
    assert set(weighter.norms) == {"generator", "ranker"}
    assert all(g > 0 for g in weighter.norms.values()), weighter.norms


def test_a_loss_with_a_larger_gradient_gets_a_smaller_weight(dataset):
    cfg, model, terms = terms_of(dataset)
    alpha = cfg.model.gradnorm_alpha

    def multipliers(t):
        weighter = LossWeighter(cfg.model, model.shared_parameters(), every=1, momentum=0.0)  # no smoothing
        _, w = weighter.combine(t, step=0)
        assert w["ranker"] == pytest.approx(cfg.model.loss.ranker * weighter.adaptive["ranker"])
        return weighter.adaptive, weighter.norms

    base, norms = multipliers(terms)
    scaled, norms10 = multipliers({**terms, "ranker": 10 * terms["ranker"]})
    assert norms10["ranker"] == pytest.approx(10 * norms["ranker"], rel=1e-4)
    assert scaled["ranker"] < base["ranker"] and scaled["generator"] > base["generator"]
    # GradNorm-style: the weights' ratio moves by exactly the gradients' ratio to the power -alpha.
    ratio = (scaled["ranker"] / scaled["generator"]) / (base["ranker"] / base["generator"])
    assert ratio == pytest.approx(10 ** -alpha, rel=1e-4)
    # Balanced, the weighted gradient norms are closer than the raw ones.
    raw = norms10["ranker"] / norms10["generator"]
    weighted = raw * scaled["ranker"] / scaled["generator"]
    assert abs(torch.log(torch.tensor(weighted))) < abs(torch.log(torch.tensor(raw)))


def test_a_loss_cut_off_from_the_shared_parameters_is_reported_once(dataset):
    cfg, model, terms = terms_of(dataset, "model.generator_encoder_grad=0")
    said = []
    weighter = LossWeighter(cfg.model, model.shared_parameters(), every=1, log=said.append)
    for step in range(3):
        weighter.combine(terms, step)
    assert weighter.norms["generator"] == 0 and weighter.norms["ranker"] > 0
    assert weighter.adaptive == {"generator": 1.0, "ranker": 1.0}  # nothing to balance: base weights
    assert len(said) == 1 and "generator loss has no gradient" in said[0]
    assert "model.generator_encoder_grad" in said[0]
    # With both losses reaching the parameters, nothing is said.
    cfg, model, terms = terms_of(dataset)
    quiet = []
    LossWeighter(dataclasses.replace(cfg.model), model.shared_parameters(), every=1, log=quiet.append).combine(terms, 0)
    assert quiet == []
