"""MLflow tracking (train.tracking=mlflow): a run's resolved config, per-epoch numbers (step = epoch, the
TensorBoard tags as valid MLflow keys, logged live as each epoch ends), test metrics and the model as
artifacts, read back with MLflow's own client; a re-run on the same directory goes on in its MLflow run with
no epoch twice; without MLflow the run stops before anything starts, naming the key and the pip command."""

from __future__ import annotations

import json
import os
import sys

import pytest

from raygr.cli import main
from raygr.config import ConfigError
from raygr.training.checkpoint import latest_checkpoint
from raygr.training.mlflow_tracking import (
    LOGGED_TAG,
    MISSING,
    config_params,
    log_epochs,
    log_run,
    metric_key,
    require_mlflow,
    start_run,
)
from tests.helpers import quiet, tiny_config

CFG = ["model.preset=sasrec", "model.dim=16", "data.num_eval_users=60", "train.num_workers=1",
       "train.patience=10", "train.epochs=2", "train.tracking=mlflow"]
HISTORY = [{"epoch": e, "train": {"loss": 2.0 / e, "tau": 1.0 / e, "sigma": 0.5 / e},
            "valid": {"ndcg@10": 0.1 * e, "retrieval_only": {"ndcg@10": 0.05 * e}},
            "codebook": {"utilization": [0.9, 0.8 + 0.05 * e], "collision_rate": 0.1}, "samples_per_s": 10.0 * e}
           for e in (1, 2)]


def client_for(root):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only with it
    return MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())


def active_runs(client, experiment="raygr"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def history_of(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("valid/ndcg@10") == "valid/ndcg_at_10"
    assert metric_key("valid/retrieval_only/recall@20") == "valid/retrieval_only/recall_at_20"
    assert metric_key("codebook/utilization/level0") == "codebook/utilization/level0"
    assert metric_key("a:b|c") == "a_b_c"


def test_a_bad_tracking_value_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"train\.tracking.*'wandb'.*tensorboard, mlflow"):
        tiny_config("train.tracking=wandb")
    with pytest.raises(ConfigError, match=r"train\.mlflow_experiment"):
        tiny_config("train.mlflow_experiment= ")


def test_log_run_writes_params_per_epoch_metrics_and_test_metrics(tmp_path):
    pytest.importorskip("mlflow")
    cfg = tiny_config(*CFG)
    run_id = log_run(cfg, tmp_path, HISTORY, {"test": {"ndcg@10": 0.3}, "valid": {"ndcg@10": 0.2},
                                             "train": {"wall_s": 5.0}}, log=quiet)
    client = client_for(tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == config_params(cfg) and run.data.params["train.tracking"] == "mlflow"
    assert run.data.params["model.dim"] == "16" and run.data.params["model.schedule.strategy"] == "exponential"
    assert history_of(client, run_id, "valid/ndcg_at_10") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2))]
    for key in ("train/loss", "train/tau", "train/sigma", "valid/retrieval_only/ndcg_at_10",
                "codebook/utilization/level1", "codebook/collision_rate", "speed/samples_per_s"):
        assert [s for s, _ in history_of(client, run_id, key)] == [1, 2], key
    assert history_of(client, run_id, "test/ndcg_at_10") == [(2, pytest.approx(0.3))]
    assert history_of(client, run_id, "final/train/wall_s") == [(2, 5.0)]
    assert "valid/ndcg_at_10" in run.data.metrics and "final/valid/ndcg_at_10" not in run.data.metrics
    # Logging the directory again (a re-evaluation) goes on in its run: no epoch twice.
    again = log_run(cfg, tmp_path, HISTORY, log=quiet)
    assert [r.info.run_id for r in active_runs(client)] == [again] == [run_id]
    assert [s for s, _ in history_of(client, again, "train/loss")] == [1, 2]


def test_epochs_are_logged_as_they_end_and_a_resume_logs_only_what_it_trains_again(tmp_path):
    pytest.importorskip("mlflow")
    cfg = tiny_config(*CFG)
    run_id = start_run(cfg, tmp_path, log=quiet)
    client = client_for(tmp_path)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert log_epochs(cfg, tmp_path, HISTORY[:1]) == 1  # epoch 1 ends: it is in the run now
    assert [s for s, _ in history_of(client, run_id, "valid/ndcg_at_10")] == [1]
    assert log_epochs(cfg, tmp_path, HISTORY[:1]) == 0  # reported again: nothing new
    assert log_epochs(cfg, tmp_path, HISTORY) == 1
    assert client.get_run(run_id).data.tags[LOGGED_TAG] == "2"
    # A resume from epoch 1's checkpoint trains epoch 2 again: the same MLflow run, epoch 2 logged again.
    assert start_run(cfg, tmp_path, from_epoch=1, log=quiet) == run_id
    redo = [HISTORY[0], {**HISTORY[1], "valid": {"ndcg@10": 0.25}}]
    assert log_epochs(cfg, tmp_path, redo) == 1
    assert history_of(client, run_id, "valid/ndcg_at_10") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)),
                                                               (2, pytest.approx(0.25))]
    assert client.get_run(run_id).data.metrics["valid/ndcg_at_10"] == pytest.approx(0.25)  # the newest


def test_log_run_stores_the_model_and_the_run_files_as_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    cfg = tiny_config(*CFG)
    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (model / "meta.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("model: {}\n")
    run_id = log_run(cfg, tmp_path, HISTORY, log=quiet, artifacts={
        "model": model, "config.yaml": tmp_path / "config.yaml", "missing.json": tmp_path / "missing.json"})
    client = client_for(tmp_path)
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["config.yaml", "model"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "model")) == ["model/meta.json", "model/model.pt"]
    local = client.download_artifacts(run_id, "model/model.pt", str(tmp_path / "dl"))
    assert open(local, "rb").read() == b"weights"


def test_without_mlflow_a_run_stops_before_it_starts_naming_the_key_and_the_pip_command(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    cfg = tiny_config(*CFG)
    with pytest.raises(ConfigError) as e:
        require_mlflow(cfg)
    assert str(e.value) == MISSING
    assert "train.tracking" in MISSING and "pip install 'raygr[tracking]'" in MISSING
    require_mlflow(tiny_config(*CFG, "train.tracking=tensorboard"))  # not needed: no error
    from raygr.distributed.train import run_training
    from raygr.distributed.tune import run_tune

    # Before the dataset is even read (a missing one would raise DatasetError) and before Ray is asked.
    with pytest.raises(ConfigError, match="MLflow is not installed"):
        run_training(cfg, tmp_path / "no-data", tmp_path / "run", log=quiet)
    with pytest.raises(ConfigError, match="MLflow is not installed"):
        run_tune(cfg, tmp_path / "no-data", tmp_path / "search", log=quiet)
    assert not (tmp_path / "run").exists() and not (tmp_path / "search").exists()
    # raygr tune checks it before Ray starts (with a dataset that exists, so only MLflow is missing).
    from tests.helpers import tiny_dataset

    data = tiny_dataset(tmp_path / "d", num_users=50).root
    assert main(["tune", "--data", str(data), "--output", str(tmp_path / "s2"),
                 "--set", "train.tracking=mlflow"]) == 2
    assert "train.tracking" in capsys.readouterr().err


@pytest.mark.ray
def test_a_train_run_with_tracking_mlflow_writes_a_readable_store(ray_cluster, data, tmp_path):
    pytest.importorskip("mlflow")
    from raygr.distributed.train import run_training

    run = tmp_path / "run"
    metrics = run_training(tiny_config(*CFG), data, run, log=quiet)
    client = client_for(run)
    (mlrun,) = active_runs(client)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    assert mlrun.data.params["train.epochs"] == "2" and mlrun.data.params["model.preset"] == "sasrec"
    history = latest_checkpoint(run).train_state().history
    assert [r["epoch"] for r in history] == [1, 2]
    got = history_of(client, mlrun.info.run_id, "valid/ndcg_at_10")
    assert got == [(r["epoch"], pytest.approx(r["valid"]["ndcg@10"], rel=1e-6)) for r in history]
    assert [s for s, _ in history_of(client, mlrun.info.run_id, "train/loss")] == [1, 2]
    assert mlrun.data.metrics["test/ndcg_at_10"] == pytest.approx(metrics["test"]["ndcg@10"], rel=1e-6)
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard files as well
    # Live: each epoch was logged when it ended, before the next one and before the test metrics.
    stamps = {m.step: m.timestamp for m in client.get_metric_history(mlrun.info.run_id, "valid/ndcg_at_10")}
    (test_point,) = client.get_metric_history(mlrun.info.run_id, "test/ndcg_at_10")
    assert stamps[1] < stamps[2] < test_point.timestamp
    # The model (the best checkpoint) and the run's files are artifacts of the MLflow run.
    names = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"model", "config.yaml", "metrics.json", "learning_curve.png"} <= names
    assert "model/model.pt" in {a.path for a in client.list_artifacts(mlrun.info.run_id, "model")}
    # The finished run again (it only re-evaluates): the same MLflow run, each epoch once.
    run_training(tiny_config(*CFG), data, run, log=quiet)
    (again,) = active_runs(client)
    assert again.info.run_id == mlrun.info.run_id and again.info.status == "FINISHED"
    assert [s for s, _ in history_of(client, again.info.run_id, "valid/ndcg_at_10")] == [1, 2]


def test_the_live_callback_writes_tensorboard_and_mlflow_from_each_reported_checkpoint(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    pytest.importorskip("ray")
    from ray.train import Checkpoint

    from raygr.config import config_to_dict
    from raygr.distributed.train import LiveTracking
    from raygr.training.local import train_local
    from tests.helpers import tiny_dataset
    from tests.test_tracking import read_events

    cfg = tiny_config(*CFG)
    ds = tiny_dataset(tmp_path / "d", num_users=80)
    train_local(cfg, ds, log=quiet, checkpoint_dir=str(tmp_path / "ckpt"))
    run = tmp_path / "run"
    live = LiveTracking(config_to_dict(cfg), str(run), "sasrec on tiny")
    live.after_report(None, [{"epoch": 2}], Checkpoint.from_directory(str(tmp_path / "ckpt")))
    assert [step for step, _ in read_events(run / "tensorboard")["valid/ndcg@10"]] == [1, 2]
    (mlrun,) = active_runs(client_for(run))
    assert [s for s, _ in history_of(client_for(run), mlrun.info.run_id, "train/loss")] == [1, 2]
    live.after_report(None, [{"epoch": 2}], None)  # a worker's report without a checkpoint: nothing to do
    # A checkpoint it cannot read is logged, not raised: tracking never stops a training.
    (tmp_path / "broken").mkdir()
    live.after_report(None, [{"epoch": 3}], Checkpoint.from_directory(str(tmp_path / "broken")))
