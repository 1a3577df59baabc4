"""Checkpoints without Ray: a save/load round trip restores everything a resumed run needs, a checkpoint
refuses another dataset or a differently shaped model (naming what differs), the run directory is
checked before any work, and ``raygr evaluate`` reports from a checkpoint."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from raygr.cli import main
from raygr.data.dataset import write_dataset
from raygr.data.synthetic import generate
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.checkpoint import (
    CheckpointError,
    DatasetIdentity,
    RunDirError,
    check_compatible,
    load_model,
    load_model_state,
    load_trainer_state,
    prepare_run_dir,
    publish,
    read_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from raygr.training.factory import build_model
from raygr.training.local import eval_split
from raygr.training.loop import TrainContext, TrainState, evaluate, fit, initialise
from raygr.training.report import plot_learning_curve, results_table, run_metrics
from tests.helpers import tiny_config, tiny_dataset

CFG = ["model.dim=16", "model.codes=16", "model.num_negatives=16", "data.num_eval_users=50",
       "train.epochs=2", "train.beam_size=20", "train.num_candidates=20"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch Ray-free run with a checkpoint after each epoch (best and latest, as the Ray layer does)."""
    root = tmp_path_factory.mktemp("ckpt")
    ds = tiny_dataset(root)
    cfg = tiny_config(*CFG)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _: None)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    ident = DatasetIdentity.from_manifest(ds.manifest)
    run = root / "run"

    def on_epoch_end(state: TrainState, record: dict, is_best: bool) -> None:
        save_checkpoint(run / "tmp", ctx, state, ident, extra={"resumed_at": []})
        publish(run / "tmp", run / "checkpoints" / "latest")
        if is_best:
            publish(run / "tmp", run / "checkpoints" / "best")

    state = fit(ctx, lambda e: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, e),
                eval_split(ds, cfg, "valid"), on_epoch_end=on_epoch_end, log=lambda _: None)
    return {"ds": ds, "cfg": cfg, "ctx": ctx, "state": state, "run": run, "root": root}


def test_round_trip_restores_model_optimizer_weighter_miner_and_state(trained):
    ds, cfg, ctx = trained["ds"], trained["cfg"], trained["ctx"]
    latest = trained["run"] / "checkpoints" / "latest"
    fresh = build_model(cfg, ds)  # not initialised: every weight must come from the checkpoint
    info = load_model_state(latest, fresh)
    for k, v in ctx.core.state_dict().items():
        got = fresh.state_dict()[k]
        assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got.keys() == v.keys(), k
    assert torch.equal(fresh.table.codes, ctx.core.table.codes)  # the SID table rode in the extra state
    assert torch.equal(fresh.table.suffix, ctx.core.table.suffix)

    ctx2 = TrainContext.create(fresh, cfg, 10, verbose=False)
    state = load_trainer_state(latest, ctx2)
    assert state.to_dict() == json.loads(json.dumps(trained["state"].to_dict()))
    assert info.epoch == 2 and state.step == trained["state"].step
    saved_opt, got_opt = ctx.optimizer.state_dict(), ctx2.optimizer.state_dict()
    assert saved_opt["param_groups"] == got_opt["param_groups"]
    for k, s in saved_opt["state"].items():
        assert torch.equal(s["exp_avg"], got_opt["state"][k]["exp_avg"])
    assert ctx2.weighter.state_dict() == ctx.weighter.state_dict()
    assert torch.equal(ctx2.miner.pool, ctx.miner.pool)


def test_a_run_over_fixed_sids_resumes_with_the_optimizer_it_started_with(tmp_path):
    """Content (or file) SIDs: ``initialise`` freezes the unused tokenizer before the optimizer is built,
    so a resume, which does not initialise, must freeze it too or its parameter groups differ."""
    ds = tiny_dataset(tmp_path)
    ds.items.dense = np.random.default_rng(3).normal(size=(ds.num_items, 8)).astype(np.float32)
    cfg = tiny_config(*CFG, "model.sid_source=content")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _: None)
    ctx = TrainContext.create(model, cfg, 10, verbose=False)
    save_checkpoint(tmp_path / "ckpt", ctx, TrainState(epoch=1), DatasetIdentity.from_manifest(ds.manifest))
    fresh = build_model(cfg, ds)
    load_model_state(tmp_path / "ckpt", fresh)
    ctx2 = TrainContext.create(fresh, cfg, 10, verbose=False)
    load_trainer_state(tmp_path / "ckpt", ctx2)  # raised "a parameter group that doesn't match" before
    assert ctx2.optimizer.state_dict()["param_groups"] == ctx.optimizer.state_dict()["param_groups"]


def test_loaded_model_evaluates_like_the_original(trained):
    ds, cfg = trained["ds"], trained["cfg"]
    examples = eval_split(ds, cfg, "test", limit=60)
    model, cfg2, info = load_model(trained["run"] / "checkpoints" / "latest", ds)
    assert cfg2 == trained["ctx"].cfg  # the run's resolved config (e.g. the decay horizon) travels along
    assert info.dataset.fingerprint == ds.manifest["fingerprint"]
    assert evaluate(model, examples, cfg) == evaluate(trained["ctx"].core, examples, cfg)


def test_a_run_directory_means_its_best_checkpoint(trained):
    info = read_checkpoint(trained["run"])
    assert info.path.name == "best" and info.epoch == trained["state"].best_epoch


def test_another_dataset_is_refused_with_both_names(trained, tmp_path):
    items, seqs = generate(num_users=600, num_items=80, seed=7)
    write_dataset(tmp_path / "other", items, seqs, source={"format": "synthetic"}, name="other")
    from raygr.data.dataset import read_manifest

    info = read_checkpoint(trained["run"])
    with pytest.raises(CheckpointError, match="trained on dataset 'tiny'.*given dataset is 'other'"):
        check_compatible(info, trained["cfg"], read_manifest(tmp_path / "other"))


@pytest.mark.parametrize("override,key", [("model.dim=32", "model.dim"), ("model.levels=2", "model.levels"),
                                          ("data.max_history=10", "data.max_history"),
                                          ("model.preset=sasrec", "model.preset"),
                                          ("model.input_norm=false", "model.input_norm"),
                                          ("model.tie_embeddings=false", "model.tie_embeddings")])
def test_a_differently_shaped_model_is_refused_naming_the_key(trained, override, key):
    info = read_checkpoint(trained["run"])
    with pytest.raises(CheckpointError, match=f"config key '{key}' is .* trained with"):
        check_compatible(info, tiny_config(*CFG, override), trained["ds"].manifest)


def test_a_checkpoint_written_before_input_norm_loads_with_it_off(trained, tmp_path):
    # Checkpoints from before model.input_norm existed were trained without it: loading must not
    # silently switch it on (the default now), or the same weights would score differently.
    import shutil

    old = tmp_path / "old"
    shutil.copytree(read_checkpoint(trained["run"]).path, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["config"]["model"]["input_norm"]
    (old / "meta.json").write_text(json.dumps(meta))
    assert read_checkpoint(trained["run"]).config.model.input_norm is True
    assert read_checkpoint(old).config.model.input_norm is False
    model, cfg, _ = load_model(old, trained["ds"])
    assert cfg.model.input_norm is False and model.seq.input_norm is False


def test_training_keys_may_change(trained):
    info = read_checkpoint(trained["run"])
    check_compatible(info, tiny_config(*CFG, "train.epochs=9", "train.lr=0.01", "train.num_workers=4"),
                     trained["ds"].manifest)


def test_missing_or_broken_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        read_checkpoint(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(tmp_path)


def test_run_dir_checks(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        prepare_run_dir(tmp_path / "a-file" / "run")  # a parent that is a file: mkdir fails
    with pytest.raises(RunDirError, match="is not a directory"):
        prepare_run_dir(tmp_path / "a-file")
    with pytest.raises(RunDirError, match="holds no raygr run"):
        prepare_run_dir(tmp_path)  # non-empty, not a run
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RunDirError, match="not writable"):
            prepare_run_dir(ro / "run")
    run = prepare_run_dir(tmp_path / "new" / "run")
    (run / "config.yaml").write_text("{}")
    assert prepare_run_dir(run) == run  # an existing run is fine (resume)


def test_json_is_written_atomically_and_readable(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"x": np.float32(0.5), "v": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 0.5, "v": [0, 1]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp files left behind
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) & 0o044  # readable by others, unlike mkstemp's


def test_metrics_document_plot_and_table(trained, tmp_path):
    history = trained["state"].history
    ev = {"main": {"recall@10": 0.2, "ndcg@10": 0.1}, "retrieval_only": {"recall@10": 0.1, "ndcg@10": 0.05},
          "codebook": {"utilization": [1.0, 0.5], "perplexity": [10.0, 4.0], "collision_rate": 0.1}}
    m = run_metrics(ev, history, preset="joint", dataset="tiny",
                    train={"wall_s": 1.0, "samples_per_s": 2.0, "epochs": 2, "best_epoch": 1, "hardware": {}},
                    baselines={"popularity": {"recall@10": 0.05, "ndcg@10": 0.02}})
    assert set(m) >= {"preset", "dataset", "test", "valid", "retrieval_only", "codebook", "train", "baselines"}
    assert set(m["valid"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    assert m["valid"]["ndcg@10"] == max(r["valid"]["ndcg@10"] for r in history)
    png = plot_learning_curve(history, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = results_table(m)
    assert "popularity (test)" in table and "retrieval only (test)" in table and "joint (test)" in table


def test_cli_evaluate(trained, capsys, tmp_path):
    ds_dir = trained["root"] / "tiny"
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(trained["run"]), "--data", str(ds_dir), "--num-users", "40",
               "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "retrieve-then-rank" in text and "retrieval only" in text and "popularity" in text
    assert "utilisation" in text
    ev = json.loads(out.read_text())
    assert ev["num_users"] == 40 and set(ev["main"]) == set(ev["retrieval_only"]) and ev["codebook"]

    items, seqs = generate(num_users=300, num_items=50, seed=3)
    write_dataset(tmp_path / "other", items, seqs, source={"format": "synthetic"})
    rc = main(["evaluate", "--checkpoint", str(trained["run"]), "--data", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert rc == 2 and "trained on dataset 'tiny'" in err
    rc = main(["evaluate", "--checkpoint", str(trained["run"]), "--data", str(tmp_path)])
    assert rc == 2 and "manifest.json is missing" in capsys.readouterr().err
    rc = main(["evaluate", "--checkpoint", str(trained["run"]), "--data", str(ds_dir), "--set", "model.dim=8"])
    assert rc == 2 and "config key 'model.dim'" in capsys.readouterr().err
