"""model.fix_sids_at_horizon: the learned tokenizer explores until the horizon, then every SID is fixed."""

import pytest
import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.checkpoint import DatasetIdentity, load_model, load_model_state, save_checkpoint
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, TrainState, initialise, train_step
from tests.helpers import tiny_config, tiny_dataset

HORIZON = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("fixsids"), num_users=150, num_items=50)


def trained(dataset, steps, *overrides):
    cfg = tiny_config("model.preset=joint", f"model.schedule.horizon_steps={HORIZON}", "train.lr=0.01",
                      *overrides)
    torch.manual_seed(0)
    model = build_model(cfg, dataset)
    initialise(model, cfg, lambda s: None)
    ctx = TrainContext.create(model, cfg, 10, verbose=False)
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    batches = (TrainBatch.from_mapping(b) for e in range(100) for b in iterate_windows(w, 32, 0, e))
    seen = []
    for step in range(steps):
        train_step(ctx, next(batches), step)
        seen.append((model.sids_fixed, model.item_codes()[0].clone(), model.encoder.bag.weight.detach().clone(),
                     model.quantizer.codebooks.detach().clone()))
    return ctx, seen


def test_sids_are_fixed_at_the_horizon_and_never_move_after_it(dataset):
    ctx, seen = trained(dataset, HORIZON + 8)
    fixed_at = [s[0] for s in seen].index(True)
    assert fixed_at == HORIZON - 1  # after the step that ends exploration
    codes_then = seen[fixed_at][1]
    for is_fixed, codes, enc, _books in seen[fixed_at + 1:]:
        assert is_fixed and torch.equal(codes, codes_then)
        assert torch.equal(enc, seen[fixed_at][2])  # the item encoder stopped training
    assert not torch.equal(seen[-1][3], seen[fixed_at][3])  # the code embeddings go on learning
    assert torch.equal(ctx.core.fixed_codes[1:], codes_then)
    assert ctx.core.table is not None and torch.equal(ctx.core.table.codes[1:], codes_then)


def test_without_it_the_encoder_keeps_moving_the_sids_after_the_horizon(dataset):
    _, seen = trained(dataset, HORIZON + 8, "model.fix_sids_at_horizon=false")
    assert not any(s[0] for s in seen)
    assert not torch.equal(seen[-1][2], seen[HORIZON][2])  # the encoder trains on


def test_a_checkpoint_after_the_fix_carries_the_sids_to_evaluation_and_to_a_resume(dataset, tmp_path):
    ctx, seen = trained(dataset, HORIZON + 2)
    save_checkpoint(tmp_path / "ckpt", ctx, TrainState(epoch=1, step=HORIZON + 2),
                    DatasetIdentity.from_manifest(dataset.manifest))
    model, _, _ = load_model(tmp_path / "ckpt", dataset)
    assert model.sids_fixed and torch.equal(model.item_codes()[0], seen[-1][1])
    fresh = build_model(ctx.cfg, dataset)  # what a resume builds from the run's config
    assert not fresh.sids_fixed
    load_model_state(tmp_path / "ckpt", fresh)
    assert fresh.sids_fixed and fresh.tokenizer_frozen and torch.equal(fresh.item_codes()[0], seen[-1][1])
