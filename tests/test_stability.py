"""Training stays finite where it used to break, and stops with a clear error when it does not."""

import math

import pytest
import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.factory import build_model
from raygr.training.loop import NonFiniteLoss, TrainContext, initialise, train_step
from tests.helpers import tiny_config, tiny_dataset


def steps(tmp_path, *overrides, n=6, steps_per_epoch=100):
    ds = tiny_dataset(tmp_path, num_users=200, num_items=40)
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    model = build_model(cfg, ds)
    initialise(model, cfg, lambda s: None)
    ctx = TrainContext.create(model, cfg, steps_per_epoch, verbose=False)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    it = iterate_windows(w, 32, 0, 0)
    return ctx, [TrainBatch.from_mapping(next(it)) for _ in range(n)]


def test_more_codes_than_items_trains_finite(tmp_path):
    # 40 items, 256 codes: k-means gives each item its own level-0 code and leaves the deeper
    # codebooks at zero, which once made the generator's logit normalisation NaN from step 2.
    ctx, batches = steps(tmp_path, "model.codes=256")
    assert ctx.core.quantizer.codebooks[1:].abs().max() < 1e-6, "the case this test is about"
    for i, b in enumerate(batches):
        out = train_step(ctx, b, i + 1)
        assert math.isfinite(out["loss"]), (i, out)


def test_a_non_finite_loss_stops_training_naming_the_term(tmp_path, monkeypatch):
    ctx, batches = steps(tmp_path, n=1)
    forward = ctx.model.forward

    def poisoned(*args, **kwargs):
        terms = forward(*args, **kwargs)
        terms["reconstruction"] = terms["reconstruction"] * float("nan")
        return terms

    monkeypatch.setattr(ctx.model, "forward", poisoned)
    before = [p.detach().clone() for p in ctx.model.parameters()]
    with pytest.raises(NonFiniteLoss, match=r"step 1 .*reconstruction"):
        train_step(ctx, batches[0], 1)
    assert all(torch.equal(a, p) for a, p in zip(before, ctx.model.parameters())), "a NaN step changed weights"


def test_codes_no_batch_uses_are_reseeded_from_items(tmp_path):
    ctx, batches = steps(tmp_path, "model.codes=16", "model.dead_code_steps=3", n=7)
    q = ctx.core.quantizer
    with torch.no_grad():
        q.codebooks[0, 5] = 100.0  # far from every item: never chosen again
    revived = [train_step(ctx, b, i + 1)["revived"] for i, b in enumerate(batches)]
    assert revived[:3] == [0, 0, 0] and sum(revived) >= 1, revived
    z = ctx.core.encoder(torch.arange(1, ctx.core.num_items + 1))
    assert torch.cdist(q.codebooks[0, 5][None], z).min() < 5.0, "the dead code was not moved back to the items"


def test_no_code_is_revived_after_the_exploration_horizon(tmp_path):
    ctx, batches = steps(tmp_path, "model.codes=16", "model.dead_code_steps=3", "model.schedule.horizon_steps=2",
                         n=7)
    with torch.no_grad():
        ctx.core.quantizer.codebooks[0, 5] = 100.0  # dead, as in the test above, which revives it
    revived = [train_step(ctx, b, i + 1)["revived"] for i, b in enumerate(batches)]
    assert revived == [0] * 7


def test_batch_init_seeds_codes_from_items_without_kmeans(tmp_path):
    ctx, _ = steps(tmp_path, "model.codes=16", "model.init=batch", n=1)
    z = ctx.core.encoder(torch.arange(1, ctx.core.num_items + 1)).detach()
    level0 = ctx.core.quantizer.codebooks[0].detach()
    assert torch.cdist(level0, z).min(1).values.max() < 1e-3, "every level-0 code is one of the items"


def test_train_step_holds_the_rate_for_train_lr_hold_epochs(tmp_path):
    # 3 epochs of 2 steps, warm-up 1, held for 2 epochs: peak for steps 1-3, then the cosine of 6 steps.
    ctx, batches = steps(tmp_path, "train.epochs=3", "train.warmup_steps=1", "train.lr_floor=0",
                         "train.lr_hold_epochs=2", "train.lr=0.01", n=6, steps_per_epoch=2)
    lrs = [train_step(ctx, b, i)["lr"] for i, b in enumerate(batches)]
    cosine = [0.01 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 5)) for s in range(6)]
    assert lrs[:4] == pytest.approx([0.01] * 4)
    assert lrs[4:] == pytest.approx(cosine[4:])
