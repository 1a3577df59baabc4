"""model.shared_encoder=false: the generator reads the history through a sequence encoder of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.models.decoding import beam_search
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, initialise, train_step
from tests.helpers import quiet, tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("genenc")
    ds = tiny_dataset(root, num_users=300, num_items=60)
    codes = np.random.default_rng(3).integers(0, 8, (ds.num_items, 3))
    path = root / "sids.json"
    path.write_text(json.dumps({k: [int(c) for c in row] for k, row in zip(ds.items.item_id, codes)}))
    base = ["model.sid_source=file", f"model.sid_file={path}", "model.codes=8", "model.trie_softmax=true",
            "model.history_item_id=true", "model.generator_layers=1", "model.weighting=fixed",
            "model.generator_distill=0.3"]
    return ds, base


def model_for(setup, *sets):
    ds, base = setup
    cfg = tiny_config(*base, *sets)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    return cfg, model


def batch_of(ds, cfg):
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    return TrainBatch.from_mapping(next(iter(iterate_windows(w, 64, 0, 0))))


def grads(model, loss) -> dict[str, bool]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    touched = lambda mod: any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())  # noqa: E731
    return {"seq": touched(model.seq), "gen_seq": model.gen_seq is not None and touched(model.gen_seq),
            "item_in": touched(model.item_in)}


def test_each_loss_trains_its_own_encoder_and_both_the_inputs(setup):
    cfg, model = model_for(setup, "model.shared_encoder=false")
    terms = model.losses(batch_of(setup[0], cfg), 0, torch.arange(1, model.num_items + 1))
    gen, rank = grads(model, terms["generator"]), grads(model, terms["ranker"])
    assert gen == {"seq": False, "gen_seq": True, "item_in": True}
    assert rank == {"seq": True, "gen_seq": False, "item_in": True}
    # The weighter balances on what both reach: the input projection, not one stage's encoder.
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(p) for p in model.item_in.parameters()}
    # Shared (the default): the generator's gradient reaches the one encoder.
    cfg, shared_model = model_for(setup)
    terms = shared_model.losses(batch_of(setup[0], cfg), 0, torch.arange(1, shared_model.num_items + 1))
    assert grads(shared_model, terms["generator"])["seq"]


def test_each_stage_reads_its_own_states(setup):
    _, model = model_for(setup, "model.shared_encoder=false")
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (5, 7))
    H = model.history_states(history)
    assert H.shape == (5, 7, 2 * model.cfg.dim)
    ranker_h, gen_h = model.split_states(H)
    assert torch.allclose(ranker_h, model.seq(model._item_inputs[history], history == 0), atol=1e-6)
    assert torch.allclose(gen_h, model.gen_seq(model._item_inputs[history], history == 0), atol=1e-6)
    # Retrieval depends on the generator's encoder only, ranking on the ranker's only.
    items, _ = model.retrieve(history, k=10, beam=10, states=H)
    cands = items.clamp(min=0)
    scores = model.rank(history, cands, states=H)
    with torch.no_grad():
        for p in model.seq.parameters():
            p.add_(torch.randn_like(p))
    H2 = model.history_states(history)
    assert torch.equal(model.retrieve(history, k=10, beam=10, states=H2)[0], items)
    assert not torch.allclose(model.rank(history, cands, states=H2), scores)
    assert torch.allclose(model.rank(history, cands), model.rank(history, cands, states=H2), atol=1e-5)
    with torch.no_grad():
        for p in model.gen_seq.parameters():
            p.add_(torch.randn_like(p))
    dec, s0 = model.step_decoder(history)
    moved, _ = beam_search(dec, s0, model.trie, beam=10, k=10, renormalize=True)
    assert not torch.equal(moved, items)
    top, _ = model.recommend(history, k=5, num_candidates=10)
    assert top.shape == (5, 5)


def test_training_with_encoders_of_their_own_lowers_both_losses(setup):
    ds, _ = setup
    # The ranker reads the candidates' codes here: scored by a fresh ID table alone (the default) it needs
    # more than these 80 steps on 60 items to move its loss by 0.1 (3.47 -> 3.38).
    cfg, model = model_for(setup, "model.shared_encoder=false", "train.lr=0.005", "model.ranker_codes=true")
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, 20)
    out = [train_step(ctx, TrainBatch.from_mapping(b), step)
           for step, b in enumerate(b for e in range(4) for b in iterate_windows(w, 64, 0, e))]
    for term in ("generator", "ranker"):
        values = [o[term] for o in out]
        assert np.mean(values[-5:]) < np.mean(values[:5]) - 0.1, term


def test_own_inputs_each_stage_projects_the_codes_itself_and_both_train_the_tables(setup):
    cfg, model = model_for(setup, "model.shared_encoder=false", "model.generator_inputs=own",
                           "model.sid_residual=true")
    terms = model.losses(batch_of(setup[0], cfg), 0, torch.arange(1, model.num_items + 1))
    touched = lambda mod: any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())  # noqa: E731
    for term, own, other in (("generator", "gen_item_in", "item_in"), ("ranker", "item_in", "gen_item_in")):
        model.zero_grad()
        terms[term].backward(retain_graph=True)
        assert touched(getattr(model, own)) and not touched(getattr(model, other)), term
        assert touched(model.history_id), term  # the ID table is what the two stages share
    assert [id(p) for p in model.shared_parameters()] == [id(model.history_id.weight)]
    # sid_residual zero-starts the ranker's code projection only: the generator reads the codes at step 0.
    assert model.item_in.weight.abs().sum() == 0 and model.gen_item_in.weight.abs().sum() > 0
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (4, 6))
    ranker_h, gen_h = model.split_states(model.history_states(history))
    x = model._item_inputs[history]  # [B, T, 2D]
    assert x.shape[-1] == 2 * cfg.model.dim
    assert torch.allclose(ranker_h, model.seq(x[..., :cfg.model.dim], history == 0), atol=1e-6)
    assert torch.allclose(gen_h, model.gen_seq(x[..., cfg.model.dim:], history == 0), atol=1e-6)
    top, _ = model.recommend(history, k=5, num_candidates=10)
    assert top.shape == (4, 5)


def test_separate_inputs_share_only_the_codebooks(setup):
    cfg, model = model_for(setup, "model.shared_encoder=false", "model.generator_inputs=separate",
                           "model.sid_residual=true", "model.loss.ranker=1")
    terms = model.losses(batch_of(setup[0], cfg), 0, torch.arange(1, model.num_items + 1))
    touched = lambda mod: any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())  # noqa: E731
    mine = {"generator": ("gen_item_in", "gen_history_id", "gen_seq"), "ranker": ("history_id", "seq")}
    for term, other in (("generator", "ranker"), ("ranker", "generator")):
        model.zero_grad()
        terms[term].backward(retain_graph=True)
        assert all(touched(getattr(model, name)) for name in mine[term]), term
        assert not any(touched(getattr(model, name)) for name in mine[other]), term
    assert [id(p) for p in model.shared_parameters()] == [id(model.quantizer.codebooks)]
    # The generator's history reads its own ID table: moving the ranker's changes retrieval not at all.
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (4, 6))
    items, _ = model.retrieve(history, k=10, beam=10)
    with torch.no_grad():
        model.history_id.weight.add_(torch.randn_like(model.history_id.weight))
    model.refresh()
    assert torch.equal(model.retrieve(history, k=10, beam=10)[0], items)
    with torch.no_grad():
        model.gen_history_id.weight.add_(torch.randn_like(model.gen_history_id.weight))
    model.refresh()
    assert not torch.equal(model.retrieve(history, k=10, beam=10)[0], items)


def test_own_inputs_need_encoders_of_their_own():
    from raygr.config import ConfigError
    with pytest.raises(ConfigError, match="model.generator_inputs.*shared_encoder=false"):
        tiny_config("model.generator_inputs=own")
    with pytest.raises(ConfigError, match="model.generator_inputs.*shared_encoder=false"):
        tiny_config("model.generator_inputs=separate")


def test_reading_the_ranker_hands_its_states_to_the_generator_and_no_gradient_back(setup):
    cfg, model = model_for(setup, "model.shared_encoder=false", "model.generator_reads_ranker=true")
    # Zero at the start: the generator's states are its own encoder's, as without the option.
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (5, 7))
    _, gen_h = model.split_states(model.history_states(history))
    assert torch.allclose(gen_h, model.gen_seq(model._item_inputs[history], history == 0), atol=1e-6)
    model.train()
    terms = model.losses(batch_of(setup[0], cfg), 0, torch.arange(1, model.num_items + 1))
    # The generator's loss trains the projection (its weight's gradient is the ranker's states: not zero)
    # and never the ranker's encoder; the ranker's loss does not reach the generator's side.
    gen, rank = grads(model, terms["generator"]), grads(model, terms["ranker"])
    model.zero_grad()
    terms["generator"].backward(retain_graph=True)
    assert model.gen_from_ranker.weight.grad.abs().sum() > 0
    assert gen["seq"] is False and gen["gen_seq"] is True
    assert rank["seq"] is True and rank["gen_seq"] is False
    # Once it has weight, retrieval moves with the ranker's encoder, and beam search keeps its parity.
    with torch.no_grad():
        model.gen_from_ranker.weight.normal_(0, 0.5)
    model.eval()
    model.refresh()
    items, scores = model.retrieve(history, k=10, beam=10)
    with torch.no_grad():
        for p in model.seq.parameters():
            p.add_(torch.randn_like(p))
    moved, moved_scores = model.retrieve(history, k=10, beam=10)
    assert not torch.equal(moved, items)
    # The no-training twin scores each retrieved item as beam search did.
    real = moved >= 1
    got = model.item_log_probs(history, moved.clamp(min=1))
    assert torch.allclose(got[real], moved_scores[real], atol=1e-4)


def test_reading_the_ranker_needs_encoders_of_their_own():
    from raygr.config import ConfigError
    with pytest.raises(ConfigError, match="model.generator_reads_ranker.*shared_encoder=false"):
        tiny_config("model.generator_reads_ranker=true")
