"""model.loss.listwise: the generator's whole-SID log-probabilities of the ranker's best items are pulled
towards the ranker's order. The scores it trains are beam search's (parity with ``retrieve``), they form
a distribution over the catalogue, and the term trains the generator and nothing of the ranker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raygr.config import ConfigError
from raygr.training.factory import build_model
from raygr.training.loop import initialise
from raygr.training.weighting import LossWeighter
from tests.helpers import quiet, tiny_config, tiny_dataset
from tests.test_gradients import first_batch


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    ds = tiny_dataset(tmp_path_factory.mktemp("listwise"), num_users=300, num_items=60)
    ds.items.dense = np.random.default_rng(3).normal(size=(ds.num_items, 8)).astype(np.float32)
    return ds


CONTENT = ["model.sid_source=content", "model.codes=8", "model.trie_softmax=true", "model.history_item_id=true",
           "model.ranker_codes=false", "model.shared_encoder=false", "model.num_negatives=1000"]


def model_for(ds, *overrides):
    cfg = tiny_config(*overrides)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    return cfg, model


@pytest.mark.parametrize("extra", [
    ["model.generator_layers=1", "model.node_embeddings=true"],  # the shipped recipe's generator
    ["model.generator_layers=0"],  # the per-level head
    ["model.sid_source=tokenizer", "model.codes=32", "model.generator_layers=1"],  # learned SIDs
])
def test_item_log_probs_are_beam_search_scores_and_a_distribution(ds, extra):
    _, model = model_for(ds, "model.preset=joint", *CONTENT, *extra)
    torch.manual_seed(0)
    if model.node_emb is not None:
        for emb in model.node_emb:  # trained-looking node vectors, so that they count
            emb.weight.data.normal_(0, 1.0)
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (4, 6))
    history[0, :3] = 0  # left padding
    items, scores = model.retrieve(history, k=10, beam=10)
    got = model.item_log_probs(history, items)
    assert torch.allclose(got, scores, atol=1e-4)
    # Every item of the catalogue, not only beam search's: with the trie softmax they sum to one.
    everything = torch.arange(1, model.num_items + 1).expand(4, -1)
    total = model.item_log_probs(history, everything).exp().sum(1)
    assert torch.allclose(total, torch.ones(4), atol=1e-4)


@pytest.mark.parametrize("with_target", [True, False])
def test_the_term_trains_the_generator_from_the_ranker_and_not_the_ranker(ds, with_target):
    cfg, model = model_for(ds, "model.preset=joint", *CONTENT, "model.generator_layers=1", "model.loss.listwise=1",
                           "model.listwise_candidates=5", "model.listwise_rows=16",
                           f"model.listwise_target={str(with_target).lower()}")
    model.train()
    batch = first_batch(ds, cfg)
    negatives = torch.arange(1, model.num_items + 1)
    torch.manual_seed(0)
    terms = model.losses(batch, step=0, negatives=negatives)
    assert torch.isfinite(terms["listwise"]) and terms["listwise"] > 0
    model.zero_grad(set_to_none=True)
    terms["listwise"].backward()
    gen = [p.grad for p in model.generator.parameters() if p.grad is not None]
    assert gen and any(g.abs().sum() > 0 for g in gen)
    assert all(p.grad is None or not p.grad.any() for p in model.ranker.parameters())  # the teacher
    assert all(p.grad is None or not p.grad.any() for p in model.seq.parameters())  # the ranker's encoder

    # A few steps of the term alone move the generator's order towards the ranker's: KL falls.
    opt = torch.optim.Adam([p for p in model.generator.parameters()], lr=1e-2)
    model.eval()  # no dropout: the same teacher and rows every step
    losses = []
    for _ in range(30):
        torch.manual_seed(0)
        kl = model.losses(batch, step=0, negatives=negatives)["listwise"]
        opt.zero_grad()
        kl.backward()
        opt.step()
        losses.append(float(kl.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_the_weight_ramps_in_and_zero_computes_nothing(ds):
    cfg, model = model_for(ds, "model.preset=joint", *CONTENT, "model.loss.listwise=0.5",
                           "model.listwise_warmup_steps=100", "model.weighting=fixed")
    w = LossWeighter(cfg.model, [])
    assert w.weights(0)["listwise"] == 0
    assert w.weights(50)["listwise"] == pytest.approx(0.25)
    assert w.weights(500)["listwise"] == pytest.approx(0.5)
    model.cfg = dataclasses.replace(cfg.model, loss=dataclasses.replace(cfg.model.loss, listwise=0.0))
    model.train()
    terms = model.losses(first_batch(ds, cfg), step=0, negatives=torch.arange(1, model.num_items + 1))
    assert "listwise" not in terms


@pytest.mark.parametrize("override, message", [
    ("model.loss.listwise=-1", "'model.loss.listwise' must be >= 0"),
    ("model.listwise_candidates=1", "'model.listwise_candidates' must be >= 2"),
    ("model.listwise_rows=0", "'model.listwise_rows' must be >= 1"),
])
def test_bad_listwise_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(override)


def test_listwise_needs_a_ranker():
    with pytest.raises(ConfigError, match="model.loss.listwise"):
        tiny_config("model.loss.listwise=1", "model.loss.ranker=0")
