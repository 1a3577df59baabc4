"""The point of the project: the recommendation loss trains the tokenizer (and, for tiger, does not)."""

import pytest
import torch

from raygr.config import config_to_dict
from raygr.data.windows import make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.checkpoint import CheckpointError, CheckpointInfo, check_compatible
from raygr.training.factory import build_model
from raygr.training.loop import initialise
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("grad"))


def first_batch(dataset, cfg) -> TrainBatch:
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    return TrainBatch.from_mapping({k: v[:32] for k, v in w.items()})


def generator_grads(dataset, preset):
    cfg = tiny_config(f"model.preset={preset}", "train.tokenizer_epochs=1")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    model.train()
    batch = first_batch(dataset, cfg)
    terms = model.losses(batch, step=0, negatives=torch.arange(1, 20))
    model.zero_grad(set_to_none=True)
    if terms["generator"].requires_grad:
        terms["generator"].backward()  # the generator loss ALONE
    return model


def test_generator_loss_alone_reaches_encoder_and_every_codebook(dataset):
    model = generator_grads(dataset, "joint")
    enc = model.encoder.bag.weight.grad
    assert enc is not None and enc.abs().sum() > 0
    cb = model.quantizer.codebooks.grad
    assert cb is not None and (cb.abs().sum(dim=(1, 2)) > 0).all(), "every level's codebook gets a gradient"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.mlp.parameters())


@pytest.mark.parametrize("term", ["generator", "ranker"])
def test_rec_losses_reach_the_item_encoder_only_through_straight_through(dataset, term):
    """The codebooks are the generator's output layer, so they get a gradient with or without the
    straight-through assignment; the item encoder (what decides an item's codes) only gets one through
    it. With straight-through off the same loss leaves the encoder without gradient: this test fails if
    the recommendation losses stop training the tokenizer."""
    grads = []
    for st in (True, False):
        cfg = tiny_config("model.preset=joint")
        model = build_model(cfg, dataset)
        initialise(model, cfg, log=lambda s: None)
        model.quantizer.straight_through = st
        model.train()
        terms = model.losses(first_batch(dataset, cfg), step=0, negatives=torch.arange(1, 20))
        model.zero_grad(set_to_none=True)
        terms[term].backward()
        g = [p.grad for p in model.encoder.parameters() if p.requires_grad]
        grads.append(sum(float(x.abs().sum()) for x in g if x is not None))
        assert model.quantizer.codebooks.grad is not None  # the output layer: a gradient either way
    assert grads[0] > 0 and grads[1] == 0


def test_tiger_tokenizer_gets_no_gradient_from_the_generator(dataset):
    model = generator_grads(dataset, "tiger")
    assert model.quantizer.codebooks.grad is None and model.encoder.bag.weight.grad is None
    assert not model.quantizer.codebooks.requires_grad
    assert any(p.grad is not None for p in model.generator.parameters())


def test_reconstruction_loss_equals_the_dense_bag_cross_entropy(dataset):
    # The loss reads the token buckets off with a gather; the dense target it replaces is the reference.
    cfg = tiny_config("model.preset=joint")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    ids = torch.arange(1, model.num_items + 1)
    z = model.encoder(ids)
    qo = model.quantizer(z, explore=False)
    fast = model.tokenizer_losses(z, qo, ids, max_rows=len(ids))["reconstruction"]  # every row: order-free
    logits = model.recon(qo.quantized) @ model.encoder.bag.weight.T
    toks = model.encoder.tokens[ids]
    target = torch.zeros_like(logits).scatter_add_(1, toks, torch.ones_like(toks, dtype=logits.dtype))
    target[:, 0] = 0
    has = target.sum(1) > 0
    dense = -(torch.nn.functional.normalize(target[has], p=1, dim=1)
              * torch.log_softmax(logits[has], -1)).sum(-1).mean()
    assert has.any() and torch.allclose(fast, dense, atol=1e-5)


def test_cached_negative_codes_train_the_ranker_and_refresh_on_schedule(dataset):
    # negative_codes_every: the negatives' code vectors come from a no-gradient table, so only the
    # batch's items are quantized with gradients; the table is rebuilt every N steps.
    cfg = tiny_config("model.preset=joint", "model.negative_codes_every=3", "model.num_negatives=1000")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    model.train()
    batch = first_batch(dataset, cfg)
    every_item = torch.arange(1, model.num_items + 1)
    terms = model.losses(batch, step=0, negatives=every_item)
    table = model._neg_codes[1]
    assert table.shape == (model.num_items + 1, cfg.model.levels, cfg.model.dim) and not table.requires_grad
    model.zero_grad(set_to_none=True)
    terms["ranker"].backward()
    assert model.ranker.item_id.weight.grad[every_item].abs().sum(1).gt(0).float().mean() > 0.9  # negatives learn
    assert model.encoder.bag.weight.grad.abs().sum() > 0  # the batch's own items reach the tokenizer
    with torch.no_grad():
        model.quantizer.codebooks.add_(0.5)  # parameters move: the table must follow on schedule
    codes, _ = model.item_codes()
    for level in range(cfg.model.levels):  # every code some item holds counts as used at the refresh
        assert (model.quantizer.last_used[level, codes[:, level]] == 0).all()
    model.losses(batch, step=2, negatives=every_item)
    assert model._neg_codes[1] is table
    model.losses(batch, step=3, negatives=every_item)
    assert model._neg_codes[0] == 3 and not torch.equal(model._neg_codes[1], table)
    codes, _ = model.item_codes()
    assert all((model.quantizer.last_used[lv, codes[:, lv]] == 3).all() for lv in range(cfg.model.levels))


def test_generator_encoder_grad_scales_only_what_reaches_the_shared_encoder(dataset):
    # The generator and the ranker read one user state; generator_encoder_grad scales the generator's
    # gradient into the sequence encoder and leaves its forward value and its own head untouched.
    import dataclasses

    from raygr.training.weighting import LossWeighter

    cfg = tiny_config("model.preset=joint")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    model.train()
    batch = first_batch(dataset, cfg)

    def generator_pass(g):
        model.cfg = dataclasses.replace(cfg.model, generator_encoder_grad=g)
        torch.manual_seed(0)  # same Gumbel noise and dropout for every g
        terms = model.losses(batch, step=0, negatives=torch.arange(1, 20))
        model.zero_grad(set_to_none=True)
        terms["generator"].backward(retain_graph=True)
        seq = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                         for p in model.seq.parameters()])
        head = torch.cat([p.grad.flatten() for p in model.generator.query.parameters()])
        return terms, seq, head, model.quantizer.codebooks.grad.clone()

    _, seq1, head1, cb1 = generator_pass(1.0)
    terms_q, seq_q, head_q, _ = generator_pass(0.25)
    terms0, seq0, head0, cb0 = generator_pass(0.0)
    assert seq1.abs().sum() > 0 and seq0.abs().sum() == 0
    assert torch.allclose(seq_q, 0.25 * seq1, atol=1e-7, rtol=1e-4)
    assert torch.allclose(head0, head1) and torch.allclose(head_q, head1)  # the head learns at full rate
    assert cb0.abs().sum() > 0  # the tied codebooks still learn from the generator
    # Adaptive weighting balances gradients on the shared encoder: a term cut off from it has nothing
    # to balance, so the weights stay at their base values instead of blowing up.
    weighter = LossWeighter(model.cfg, model.seq.shared_parameters(), every=1)
    weighter.combine(terms0, step=0)
    assert weighter.adaptive == {"generator": 1.0, "ranker": 1.0}


def test_tied_item_ids_are_one_table_the_ranker_trains_for_the_history(dataset):
    # model.tie_item_ids: the ranker scores candidates with the history's item-ID table, so the ranker's
    # gradient on an item that is only a negative (never in a batch history) reaches what the history reads.
    cfg = tiny_config("model.preset=joint", "model.history_item_id=true", "model.sid_residual=true",
                      "model.tie_item_ids=true")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    assert model.ranker.item_id.weight is model.history_id.weight
    model.train()
    batch = first_batch(dataset, cfg)
    seen = set(batch.input.unique().tolist()) | set(batch.target.unique().tolist())
    only_negative = [i for i in range(1, model.num_items + 1) if i not in seen][:5]
    model.losses(batch, step=0, negatives=torch.tensor(only_negative))["ranker"].backward()
    assert model.history_id.weight.grad[only_negative].abs().sum(-1).min() > 0

    reloaded = build_model(cfg, dataset)  # the state dict holds the table twice; loading keeps one
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.ranker.item_id.weight is reloaded.history_id.weight
    assert torch.equal(reloaded.history_id.weight, model.history_id.weight)
    # An untied checkpoint's two tables cannot become one: the config key is named.
    untied = CheckpointInfo(None, {"config": config_to_dict(tiny_config(
        "model.preset=joint", "model.history_item_id=true", "model.sid_residual=true"))})
    with pytest.raises(CheckpointError, match="config key 'model.tie_item_ids' is True"):
        check_compatible(untied, cfg)


def test_sid_residual_starts_as_an_id_model_and_its_sid_branches_learn(dataset):
    # With model.sid_residual the ranker scores <h, item-ID embedding> and history items enter as their
    # ID embeddings at step 0 (SASRec), while the zero-initialised SID branches still get gradients.
    cfg = tiny_config("model.preset=joint", "model.history_item_id=true", "model.sid_residual=true",
                      "model.ranker_codes=true")  # the ranker's item branch exists to learn only then
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    ids = torch.arange(1, model.num_items + 1)
    codes = model.quantizer(model.encoder(ids), explore=False).code_vecs  # [N, L, D]
    h = torch.randn(5, cfg.model.dim)
    assert torch.equal(model.ranker.user_state(h), h)
    assert torch.equal(model.ranker.item_vectors(codes, ids), model.ranker.item_id(ids))
    assert torch.equal(model.history_inputs(codes, ids), model.history_id(ids))

    model.train()
    batch = first_batch(dataset, cfg)
    terms = model.losses(batch, step=0, negatives=torch.arange(1, 20))
    (terms["ranker"] + terms["generator"]).backward()
    for name, layer in [("user", model.ranker.user[-1]), ("item", model.ranker.item[-1]), ("item_in", model.item_in)]:
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, f"{name} branch gets no gradient"
    # The ranker's SID branches are zero at step 0, so the tokenizer learns from the generator until they grow.
    assert model.quantizer.codebooks.grad.abs().sum() > 0


def test_without_the_tokenizer_in_the_ranker_its_loss_leaves_the_item_encoder_alone(dataset):
    """model.ranker_codes=false (the ablation of DIG's tokenizer-in-ranker): candidates are scored by their
    ID embedding only; the ranker loss still reaches the item encoder through the history's code vectors,
    but no longer through the candidates'."""
    enc_grads = {}
    for codes in ("true", "false"):
        cfg = tiny_config("model.preset=joint", f"model.ranker_codes={codes}", "model.history_item_id=true")
        torch.manual_seed(0)
        model = build_model(cfg, dataset)
        initialise(model, cfg, log=lambda s: None)
        model.train()
        batch = first_batch(dataset, cfg)
        items = torch.arange(1, 20)
        assert torch.equal(model.ranker.item_vectors(torch.zeros(len(items), cfg.model.levels, cfg.model.dim), items),
                           model.ranker.item_id(items)) == (codes == "false")
        terms = model.losses(batch, step=0, negatives=items)
        model.zero_grad(set_to_none=True)
        terms["ranker"].backward()
        assert all(p.grad is None for p in model.ranker.item.parameters()) == (codes == "false")
        enc_grads[codes] = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)
    assert enc_grads["true"] > enc_grads["false"] > 0


def test_a_ranker_without_codes_needs_its_id_table():
    from raygr.config import ConfigError
    with pytest.raises(ConfigError, match="model.ranker_codes.*model.ranker_item_id=true"):
        tiny_config("model.ranker_codes=false", "model.ranker_item_id=false")
