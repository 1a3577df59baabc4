"""The generator over fixed content SIDs (trie softmax, node embeddings, Transformer decoder) runs through
the same Ray Train path as every preset: 2 DDP workers train it, and the checkpoint loads into a model
that decodes with the same SIDs and the same node numbering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raygr.data.dataset import load_dataset, write_dataset
from raygr.data.synthetic import generate
from raygr.distributed.train import run_training
from raygr.training.checkpoint import load_model, read_checkpoint
from tests.helpers import quiet, tiny_config

pytestmark = pytest.mark.ray


def test_content_sid_generator_trains_on_two_workers_and_reloads(ray_cluster, tmp_path):
    items, seqs = generate(num_users=300, num_items=60, seed=1)
    items.dense = np.random.default_rng(1).normal(size=(len(items), 12)).astype(np.float32)
    write_dataset(tmp_path / "d", items, seqs, source={"format": "synthetic"}, num_shards=2)
    ds = load_dataset(tmp_path / "d")
    cfg = tiny_config("model.dim=16", "model.codes=8", "model.num_negatives=16", "data.num_eval_users=60",
                      "train.epochs=2", "train.num_workers=2", "train.num_candidates=20", "train.lr=5e-3",
                      "model.sid_source=content", "model.sid_collab_weight=1", "model.trie_softmax=true",
                      "model.node_embeddings=true", "model.generator_layers=1", "model.history_item_id=true")
    metrics = run_training(cfg, ds.root, tmp_path / "run", log=quiet)
    h = read_checkpoint(tmp_path / "run" / "checkpoints" / "latest").meta["train_state"]["history"]
    assert h[-1]["train"]["generator"] < h[0]["train"]["generator"]
    assert all(r["codebook"]["sid_changed"] == 0.0 for r in h)  # fixed SIDs: the targets never move
    assert metrics["codebook"]["collision_rate"] == 0.0
    assert len(h[-1]["valid"]["teacher_forced_accuracy"]) == 4  # 3 levels + the suffix
    model, _, _ = load_model(tmp_path / "run", ds)
    fresh = model.fixed_codes.clone()
    assert torch.equal(model.table.codes, fresh)
    items_out, _ = model.recommend(torch.tensor([[0, 3, 5, 7]]), k=5, num_candidates=20)
    assert (items_out > 0).all() and len(set(items_out[0].tolist())) == 5


def test_auto_weight_and_generator_selection_through_ray_train(ray_cluster, tmp_path):
    """model.sid_rec_weight_auto is resolved once by the driver (the run's config.yaml names the weight),
    and train.select_by=generator makes Ray keep the checkpoint of the generator's best validation epoch."""
    from raygr.config import load_config, replace
    from raygr.training.factory import pick_sid_rec_weight
    from raygr.training.local import train_local

    items, seqs = generate(num_users=300, num_items=60, seed=2)
    items.dense = np.random.default_rng(2).normal(size=(len(items), 12)).astype(np.float32)
    write_dataset(tmp_path / "d", items, seqs, source={"format": "synthetic"}, num_shards=2)
    ds = load_dataset(tmp_path / "d")
    train_local(tiny_config("model.preset=sasrec", "model.dim=16", "model.num_negatives=0", "train.epochs=1"),
                ds, log=quiet, checkpoint_dir=str(tmp_path / "sasrec"))
    cfg = tiny_config("model.dim=16", "model.codes=8", "model.num_negatives=16", "data.num_eval_users=60",
                      "train.epochs=3", "train.patience=3", "train.num_candidates=20", "train.lr=5e-3",
                      "model.sid_source=content", "model.sid_rec_weight_auto=true",
                      f"train.init_from={tmp_path / 'sasrec'}", "train.select_by=generator",
                      "model.history_item_id=true", "model.sid_residual=true")
    run_training(cfg, ds.root, tmp_path / "run", log=quiet)
    want, codes = pick_sid_rec_weight(cfg, ds, quiet)
    recorded = load_config(tmp_path / "run" / "config.yaml")
    assert recorded.model.sid_rec_weight == want and not recorded.model.sid_rec_weight_auto
    best = read_checkpoint(tmp_path / "run" / "checkpoints" / "best")
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "latest").meta["train_state"]
    curve = [h["valid"]["retrieval_only"]["ndcg@10"] for h in last["history"]]
    assert len(curve) == 3 and best.epoch == int(np.argmax(curve)) + 1 == last["best_epoch"]
    model, _, _ = load_model(tmp_path / "run", ds)
    assert (model.fixed_codes[1:].numpy() == codes).all()  # the SIDs of the picked weight
    # Resumed for one more epoch: the run keeps the weight it picked, without picking again.
    lines: list[str] = []
    run_training(replace(cfg, ["train.epochs=4"]), ds.root, tmp_path / "run", log=lines.append)
    assert not any("sid_rec_weight_auto:" in line for line in lines)
    assert load_config(tmp_path / "run" / "config.yaml").model.sid_rec_weight == want
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "latest").epoch == 4
