"""TensorBoard tracking: a trained run's per-epoch records become event files with the losses, the schedules
(tau, sigma), validation metrics and code health, read back with TensorBoard's own reader; without
TensorBoard the run logs one line and goes on."""

from __future__ import annotations

import math
import sys

import pytest

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.factory import build_model
from raygr.training.local import eval_split
from raygr.training.loop import TrainContext, fit, initialise
from raygr.training.report import plot_learning_curve
from raygr.training.tracking import MISSING, TB_DIR, scalars, write_tensorboard
from tests.helpers import tiny_config, tiny_dataset
from tests.serving_helpers import SERVE_TINY


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The per-epoch records of a 2-epoch joint run on the tiny dataset."""
    ds = tiny_dataset(tmp_path_factory.mktemp("tracking"), num_users=200)
    cfg = tiny_config(*SERVE_TINY, "train.epochs=2")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _: None)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    state = fit(ctx, lambda e: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, e),
                eval_split(ds, cfg, "valid"), log=lambda _: None)
    assert len(state.history) == 2
    return state.history


def read_events(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_run_writes_losses_schedules_metrics_and_code_health_as_tensorboard_events(history, tmp_path):
    pytest.importorskip("tensorboard")
    assert plot_learning_curve(history, tmp_path / "learning_curve.png", title="joint on tiny").is_file()
    events = read_events(tmp_path / TB_DIR)
    for tag in ("train/loss", "train/generator", "train/ranker", "train/tau", "train/sigma", "train/lr",
                "valid/ndcg@10", "valid/recall@10", "valid/retrieval_only/ndcg@10", "codebook/utilization/level0",
                "codebook/collision_rate", "codebook/sid_changed", "speed/samples_per_s"):
        assert tag in events, (tag, sorted(events))
    for epoch, record in enumerate(history, start=1):  # the values are the records', epoch by epoch
        for tag, value in (("train/loss", record["train"]["loss"]), ("train/tau", record["train"]["tau"]),
                           ("train/sigma", record["train"]["sigma"]), ("valid/ndcg@10", record["valid"]["ndcg@10"]),
                           ("codebook/utilization/level0", record["codebook"]["utilization"][0])):
            assert events[tag][epoch - 1] == (epoch, pytest.approx(value, rel=1e-5, abs=1e-7))


def test_a_rewrite_replaces_the_event_files_so_no_epoch_shows_twice(history, tmp_path):
    pytest.importorskip("tensorboard")
    write_tensorboard(history[:1], tmp_path, log=lambda _: None)
    write_tensorboard(history, tmp_path, log=lambda _: None)  # a resumed run: its whole history again
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert [step for step, _ in read_events(tmp_path)["train/loss"]] == [1, 2]


def test_without_tensorboard_the_run_logs_one_line_and_goes_on(history, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    lines: list[str] = []
    assert write_tensorboard(history, tmp_path / TB_DIR, log=lines.append) is None
    assert lines == [MISSING] and not (tmp_path / TB_DIR).exists()
    assert plot_learning_curve(history, tmp_path / "curve.png").is_file()


def test_scalars_flatten_nested_records_and_skip_non_numbers():
    record = {"epoch": 3, "train": {"loss": 1.5, "tau": 0.5}, "valid": {"ndcg@10": 0.1, "retrieval_only": {
        "ndcg@10": 0.05}, "note": "x", "bad": float("nan")}, "codebook": {"utilization": [0.9, 0.8]},
        "samples_per_s": 100}
    assert scalars(record) == {"train/loss": 1.5, "train/tau": 0.5, "valid/ndcg@10": 0.1,
                               "valid/retrieval_only/ndcg@10": 0.05, "codebook/utilization/level0": 0.9,
                               "codebook/utilization/level1": 0.8, "speed/samples_per_s": 100.0}
