"""Tracking of a Tune search: two tiny trials, each with its own TensorBoard event files (the epoch records'
tags, one point per epoch, the sampled values as hparams) under OUTPUT/ray/search/trial-<id>, and, with
train.tracking=mlflow, one MLflow run per trial (its resolved config as params, step = epoch), read back
with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import os

import pytest

from raygr.distributed.tune import EXPERIMENT, TRIALS_DIR, run_tune
from raygr.training.checkpoint import latest_checkpoint
from tests.helpers import quiet, tiny_config

pytestmark = pytest.mark.ray

TINY = ["model.dim=16", "model.codes=16", "model.token_buckets=1024", "model.num_negatives=16",
        "data.num_eval_users=60", "train.beam_size=20", "train.num_candidates=20", "train.warmup_steps=5",
        "train.num_workers=1", "train.patience=10", "train.epochs=2", "train.max_failures=0",
        "tune.grace_period=2", "tune.num_samples=1", "tune.max_concurrent=2",  # ASHA stops neither
        "tune.space={train.lr: {grid: [5.0e-3, 2.0e-3]}}", "train.tracking=mlflow"]
TAGS = ("train/loss", "train/tau", "train/sigma", "train/lr", "valid/ndcg@10", "codebook/collision_rate",
        "codebook/utilization/level0", "speed/samples_per_s")


@pytest.fixture(scope="module")
def search(ray_cluster, data, tmp_path_factory):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("tune-tracking") / "search"
    summary = run_tune(tiny_config(*TINY), data, out, log=quiet)
    assert len(summary["trial_records"]) == 2
    return out, summary


def tbx_tag(tag: str) -> str:
    """What Tune's TBXLoggerCallback names a result key (tensorboardX turns '@' into '_')."""
    return "ray/tune/" + tag.replace("@", "_")


def history(out, trial_id):
    return latest_checkpoint(out / TRIALS_DIR / trial_id).train_state().history


def test_each_trial_writes_tensorboard_events_with_the_epoch_records_and_its_hparams(search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, summary = search
    lrs = set()
    for record in summary["trial_records"]:
        trial_dir = out / "ray" / EXPERIMENT / f"trial-{record['trial']}"
        assert list(trial_dir.glob("events.out.tfevents.*")), sorted(p.name for p in trial_dir.iterdir())
        acc = EventAccumulator(str(trial_dir))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        for tag in TAGS:
            assert tbx_tag(tag) in tags, (tag, sorted(tags))
        epochs = history(out, record["trial"])
        assert [r["epoch"] for r in epochs] == [1, 2]
        for tag, value in (("train/loss", lambda r: r["train"]["loss"]), ("train/tau", lambda r: r["train"]["tau"]),
                           ("valid/ndcg@10", lambda r: r["valid"]["ndcg@10"])):
            got = [(e.step, e.value) for e in acc.Scalars(tbx_tag(tag))]
            assert got == [(r["epoch"], pytest.approx(value(r), rel=1e-5, abs=1e-7)) for r in epochs], tag
        # The trial's sampled values as hparams (TensorBoard's HParams tab: one row per trial).
        hparams = acc.PluginTagToContent("hparams")
        assert hparams and any(b"train.lr" in content for content in hparams.values())
        lrs.add(record["assignment"]["train.lr"])
    assert lrs == {5e-3, 2e-3}


def test_with_tracking_mlflow_each_trial_is_an_mlflow_run(search):
    from mlflow.tracking import MlflowClient

    out, summary = search
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only with it
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("raygr")
    runs = {r.data.tags["raygr.trial_id"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {r["trial"] for r in summary["trial_records"]}
    for record in summary["trial_records"]:
        run = runs[record["trial"]]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["train.lr"]) == record["assignment"]["train.lr"]
        assert run.data.params["model.dim"] == "16" and run.data.params["train.tracking"] == "mlflow"
        epochs = history(out, record["trial"])
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "valid/ndcg_at_10"))
        assert got == [(r["epoch"], pytest.approx(r["valid"]["ndcg@10"], rel=1e-6)) for r in epochs]
        for key in ("train/loss", "train/sigma", "codebook/collision_rate", "valid_ndcg_at_10"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
        assert "pid" not in run.data.metrics and "timestamp" not in run.data.metrics


def test_a_rerun_restores_the_search_with_its_trackers_and_logs_nothing_twice(search, data):
    from mlflow.tracking import MlflowClient

    out, summary = search
    again = run_tune(tiny_config(*TINY), data, out, log=quiet)  # Tune unpickles its callbacks, MLflow's too
    assert [r["trial"] for r in again["trial_records"]] == [r["trial"] for r in summary["trial_records"]]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("raygr").experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
