"""Ray Train on the shared local cluster: 2 DDP workers learn, a re-run resumes instead of restarting,
an injected worker failure is retried from the last checkpoint, and bad inputs fail before any work."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from raygr.cli import main
from raygr.config import ConfigError
from raygr.data.dataset import DatasetError, write_dataset
from raygr.data.synthetic import generate
from raygr.distributed.train import FAULT_ENV, run_training
from raygr.training.checkpoint import CheckpointError, RunDirError, read_checkpoint
from tests.helpers import quiet, tiny_config

pytestmark = pytest.mark.ray

# Tiny and quick: 16-d model, 16 codes, a 120-user validation subset.
TINY = ["model.dim=16", "model.codes=16", "model.token_buckets=1024", "model.num_negatives=16",
        "data.num_eval_users=120", "train.beam_size=20", "train.num_candidates=20", "train.lr=5e-3",
        "train.warmup_steps=5", "train.num_workers=2", "train.patience=10"]


def cfg(*overrides: str):
    return tiny_config(*TINY, *overrides)


@pytest.fixture(scope="module")
def first_run(ray_cluster, data, tmp_path_factory):
    """Two workers, three epochs: the run the learning and resume tests look at."""
    run = tmp_path_factory.mktemp("runs") / "first"
    metrics = run_training(cfg("train.epochs=3"), data, run, log=quiet)
    return run, metrics


def history(run) -> list[dict]:
    return read_checkpoint(run / "checkpoints" / "latest").meta["train_state"]["history"]


def test_two_workers_learn_and_write_the_run_directory(first_run):
    run, metrics = first_run
    h = history(run)
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["train"]["loss"] < h[0]["train"]["loss"]
    assert all(r["valid"]["num_users"] == 120 for r in h)  # each worker ranked half; all_gather joined them
    assert metrics["train"]["hardware"]["workers"] == 2 and metrics["train"]["resumed_at"] == []
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("test", "valid", "retrieval_only", "baselines"):
        assert set(on_disk[key] if key != "baselines" else on_disk[key]["popularity"]) == {
            "recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    assert len(on_disk["codebook"]["utilization"]) == 3 and on_disk["train"]["samples_per_s"] > 0
    best = read_checkpoint(run)
    assert best.epoch == on_disk["train"]["best_epoch"] == max(h, key=lambda r: r["valid"]["ndcg@10"])["epoch"]
    assert (run / "config.yaml").is_file() and (run / "learning_curve.png").stat().st_size > 0


def test_rerun_resumes_from_the_latest_checkpoint(first_run, data, tmp_path):
    run = tmp_path / "resumed"
    # A copy (the module's run stays untouched for the other tests) without Ray's own record of the run:
    # RUN_DIR/checkpoints/latest alone must be enough to resume, e.g. for a run directory moved elsewhere.
    shutil.copytree(first_run[0], run, ignore=shutil.ignore_patterns("ray"))
    before = history(run)
    metrics = run_training(cfg("train.epochs=4"), data, run, log=quiet)
    h = history(run)
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and metrics["train"]["resumed_at"] == [3]
    assert h[:3] == before  # epochs 1-3 were not trained again

    start = time.perf_counter()  # finished: a re-run only re-evaluates (no Train workers started)
    again = run_training(cfg("train.epochs=4"), data, run, log=quiet)
    assert again["test"] == metrics["test"] and history(run) == h
    assert time.perf_counter() - start < 30


def test_injected_worker_failure_is_retried_from_the_last_checkpoint(ray_cluster, data, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "epoch=2,rank=1")
    run = tmp_path / "faulty"
    metrics = run_training(cfg("train.epochs=2", "train.max_failures=1"), data, run, log=quiet)
    assert (run / ".injected-failure").exists()  # the failure did happen
    assert metrics["train"]["resumed_at"] == [1]  # the new worker group started from epoch 1's checkpoint
    assert [r["epoch"] for r in history(run)] == [1, 2] and metrics["train"]["epochs"] == 2


def test_a_run_warm_started_from_a_relative_path_completes(first_run, data, tmp_path, monkeypatch):
    monkeypatch.chdir(first_run[0].parent)  # the workers' working directory is not this one
    run = tmp_path / "warm"
    metrics = run_training(cfg("train.epochs=1", f"train.init_from={first_run[0].name}"), data, run, log=quiet)
    assert metrics["train"]["epochs"] == 1 and (run / "metrics.json").is_file()
    saved = read_checkpoint(run).config.train.init_from
    assert saved == str(read_checkpoint(first_run[0]).path)  # resolved on the driver, as the workers read it


def test_bad_inputs_fail_before_any_work(ray_cluster, first_run, data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(first_run[0], run)
    checks = [
        (lambda: run_training(cfg(), tmp_path / "nowhere", tmp_path / "x", log=quiet), DatasetError,
         "does not exist"),
        (lambda: run_training(cfg(), data, tmp_path / "x" / "metrics.json" / "y", log=quiet), RunDirError,
         "not writable"),
        (lambda: run_training(cfg("model.dim=32"), data, run, log=quiet), CheckpointError, "'model.dim'"),
        (lambda: run_training(cfg("train.num_workers=64"), data, tmp_path / "big", log=quiet), ConfigError,
         "needs 64 CPUs"),
        (lambda: run_training(cfg(f"train.init_from={tmp_path / 'none'}"), data, tmp_path / "w", log=quiet),
         CheckpointError, "train.init_from: checkpoint .* does not exist"),
    ]
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text("{}")
    items, seqs = generate(num_users=300, num_items=50, seed=5)
    write_dataset(tmp_path / "other", items, seqs, source={"format": "synthetic"}, name="other")
    checks.append((lambda: run_training(cfg(), tmp_path / "other", run, log=quiet), CheckpointError,
                   "trained on dataset 'tiny'"))
    for call, error, message in checks:
        start = time.perf_counter()
        with pytest.raises(error, match=message):
            call()
        assert time.perf_counter() - start < 5  # refused up front, not after starting workers

    # The CLI turns them into one line and exit status 2.
    assert main(["train", "--data", str(data), "--output", str(run), "--set", "model.nope=1"]) == 2
    assert "unknown config key 'model.nope'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "other"), "--output", str(run)]) == 2
    assert "trained on dataset 'tiny'" in capsys.readouterr().err
