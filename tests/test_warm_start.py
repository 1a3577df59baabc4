"""Warm start (``train.init_from``): a SASRec checkpoint starts the joint model as that SASRec, and a
checkpoint that cannot start this run is refused before any work, naming the key and what differs."""

from __future__ import annotations

import math

import pytest
import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.checkpoint import CheckpointError, DatasetIdentity, save_checkpoint
from raygr.training.factory import build_model
from raygr.training.local import eval_split, train_local
from raygr.training.loop import TrainContext, fit, initialise
from raygr.training.warm_start import check_warm_start, resolve_warm_start
from tests.helpers import quiet, tiny_config, tiny_dataset

SASREC = ["model.preset=sasrec", "train.epochs=1", "data.num_eval_users=50"]
JOINT = ["model.preset=joint", "model.history_item_id=true", "model.ranker_item_id=true",
         "model.sid_residual=true", "train.epochs=1", "data.num_eval_users=50"]


def trained_sasrec(root, ds, *overrides: str):
    """A 1-epoch SASRec checkpoint on ``ds`` (so its tables are not at their initial values)."""
    cfg = tiny_config(*SASREC, *overrides)
    model = build_model(cfg, ds)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    state = fit(ctx, lambda epoch: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, epoch),
                eval_split(ds, cfg, "valid"), log=quiet)
    return save_checkpoint(root / "sasrec", ctx, state, DatasetIdentity.from_manifest(ds.manifest)), model


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("warm"))


@pytest.mark.parametrize("tied", [True, False])
def test_joint_starts_as_the_sasrec_it_is_given(ds, tmp_path, tied):
    torch.manual_seed(0)
    ckpt, sasrec = trained_sasrec(tmp_path, ds, f"model.tie_embeddings={str(tied).lower()}")
    cfg = tiny_config(*JOINT, f"train.init_from={ckpt}")
    assert check_warm_start(cfg, ds.manifest) is not None
    joint = build_model(cfg, ds)
    initialise(joint, cfg, log=quiet)
    joint.eval(), sasrec.eval()
    joint.refresh()
    history = torch.as_tensor(ds.sequences.items[:40]).view(4, 10)  # [B, T], real items, no padding
    everything = torch.arange(1, ds.num_items + 1).expand(len(history), -1)  # [B, N]
    # The SID branches start at zero, so the ranker's scores are SASRec's, over every item.
    torch.testing.assert_close(joint.rank(history, everything), sasrec.scores(history)[:, 1:], atol=1e-5, rtol=1e-5)
    cold = build_model(tiny_config(*JOINT), ds)
    initialise(cold, tiny_config(*JOINT), log=quiet)
    cold.eval(), cold.refresh()
    assert not torch.allclose(cold.rank(history, everything), sasrec.scores(history)[:, 1:], atol=1e-3)


def test_a_warm_started_run_trains(ds, tmp_path):
    ckpt, _ = trained_sasrec(tmp_path, ds)
    cfg = tiny_config(*JOINT, "model.tie_item_ids=true", f"train.init_from={ckpt}")
    lines: list[str] = []
    _, state, test = train_local(cfg, ds, log=lines.append)
    assert any(line.startswith("warm start from") for line in lines)
    assert state.epoch == 1 and test["ndcg@10"] > 0


def test_a_joint_checkpoint_starts_a_joint_run_with_all_its_weights(ds, tmp_path):
    cfg = tiny_config(*JOINT)
    source = build_model(cfg, ds)
    initialise(source, cfg, log=quiet)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(source, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    state = fit(ctx, lambda epoch: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, epoch),
                eval_split(ds, cfg, "valid"), log=quiet)
    ckpt = save_checkpoint(tmp_path / "joint", ctx, state, DatasetIdentity.from_manifest(ds.manifest))
    warm = build_model(tiny_config(*JOINT, f"train.init_from={ckpt}"), ds)
    initialise(warm, tiny_config(*JOINT, f"train.init_from={ckpt}"), log=quiet)
    theirs = source.state_dict()
    for name, tensor in warm.state_dict().items():
        if isinstance(tensor, torch.Tensor):  # the codebooks too: k-means did not replace them
            torch.testing.assert_close(tensor, theirs[name], msg=name)
    assert torch.equal(warm.table.codes, source.table.codes)  # rebuilt from those codebooks


def test_refused_before_any_work(ds, tmp_path):
    ckpt, _ = trained_sasrec(tmp_path, ds)
    with pytest.raises(CheckpointError, match=r"train.init_from: .*model.dim=32, this run model.dim=16"):
        check_warm_start(tiny_config(*JOINT, "model.dim=16", f"train.init_from={ckpt}"), ds.manifest)
    with pytest.raises(CheckpointError, match=r"train.init_from: checkpoint .*missing.* does not exist"):
        train_local(tiny_config(*JOINT, f"train.init_from={tmp_path / 'missing'}"), ds, log=quiet)
    other = tiny_dataset(tmp_path / "other", num_items=60, seed=1)
    with pytest.raises(CheckpointError, match=r"train.init_from: checkpoint .* trained on dataset .*give train"):
        check_warm_start(tiny_config(*JOINT, f"train.init_from={ckpt}"), other.manifest)


def test_a_relative_path_is_resolved_for_the_workers(ds, tmp_path, monkeypatch):
    ckpt, _ = trained_sasrec(tmp_path, ds)
    monkeypatch.chdir(tmp_path)
    cfg = resolve_warm_start(tiny_config(*JOINT, "train.init_from=sasrec"), ds.manifest)
    assert cfg.train.init_from == str(ckpt.resolve())
    assert resolve_warm_start(tiny_config(*JOINT), ds.manifest).train.init_from is None
