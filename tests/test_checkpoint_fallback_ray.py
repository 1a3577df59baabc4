"""Resuming a Ray Train run whose checkpoints were damaged: a truncated copy in Ray's storage or in
RUN_DIR/checkpoints/latest is skipped for a whole one (the run continues where it was, not from epoch 1);
when every checkpoint is damaged the run stops before any work with an error naming the files."""

from __future__ import annotations

import shutil

import pytest

from raygr.distributed.train import run_training
from raygr.training.checkpoint import MODEL_FILE, CheckpointError, read_checkpoint
from tests.helpers import quiet, tiny_config

pytestmark = pytest.mark.ray

CFG = ["model.preset=sasrec", "model.dim=16", "data.num_eval_users=60", "train.num_workers=1",
       "train.patience=10"]


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def two_epochs(ray_cluster, data, tmp_path_factory):
    run = tmp_path_factory.mktemp("fallback") / "run"
    run_training(tiny_config(*CFG, "train.epochs=2"), data, run, log=quiet)
    return run


def epochs(run) -> list[int]:
    return [r["epoch"] for r in read_checkpoint(run / "checkpoints" / "latest").meta["train_state"]["history"]]


def test_damaged_copies_are_skipped_and_the_run_continues(two_epochs, data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    kept = sorted((run / "ray" / "train").glob("epoch-*"))
    assert kept and kept[-1].name == "epoch-0002"
    truncate(kept[-1] / MODEL_FILE)  # the copy Ray hands the workers: they fall back to checkpoints/latest
    metrics = run_training(tiny_config(*CFG, "train.epochs=3"), data, run, log=quiet)
    assert metrics["train"]["resumed_at"] == [2] and epochs(run) == [1, 2, 3]

    # Now RUN_DIR/checkpoints/latest (epoch 3): the driver names it and takes Ray's epoch-0003.
    truncate(run / "checkpoints" / "latest" / MODEL_FILE)
    lines: list[str] = []
    metrics = run_training(tiny_config(*CFG, "train.epochs=4"), data, run, log=lines.append)
    text = "\n".join(lines)
    assert str(run / "checkpoints" / "latest" / MODEL_FILE) in text and "damaged" in text
    assert metrics["train"]["resumed_at"] == [2, 3] and epochs(run) == [1, 2, 3, 4]


def test_every_checkpoint_damaged_stops_with_the_files_named(two_epochs, data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    damaged = [run / "checkpoints" / name / MODEL_FILE for name in ("latest", "best")]
    damaged += [d / MODEL_FILE for d in (run / "ray" / "train").glob("epoch-*")]
    for f in damaged:
        truncate(f)
    with pytest.raises(CheckpointError) as e:
        run_training(tiny_config(*CFG, "train.epochs=3"), data, run, log=quiet)
    for f in damaged:
        assert str(f) in str(e.value)
