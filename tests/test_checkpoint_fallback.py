"""A damaged checkpoint (truncated weights, half-written meta.json) is noticed before loading: resume takes
the newest whole checkpoint and says which file it skipped, or stops with an error naming every damaged
file; it never starts again from scratch silently. Pure PyTorch: no Ray."""

from __future__ import annotations

import json
import math

import pytest

from raygr.data.windows import make_train_windows_csr
from raygr.training.checkpoint import (
    META_FILE,
    MODEL_FILE,
    TRAINER_FILE,
    CheckpointError,
    DatasetIdentity,
    checkpoint_damage,
    resumable_checkpoint,
    save_checkpoint,
)
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, TrainState
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture()
def checkpoints(tmp_path):
    """Checkpoints of epochs 1, 2, 3 of a tiny SASRec, newest first (as ``resume_candidates`` orders them)."""
    ds = tiny_dataset(tmp_path, num_users=100, num_items=30)
    cfg = tiny_config("model.preset=sasrec", "model.dim=8")
    model = build_model(cfg, ds)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    ident = DatasetIdentity.from_manifest(ds.manifest)
    paths = []
    for epoch in (1, 2, 3):
        paths.append(save_checkpoint(tmp_path / f"epoch-{epoch}", ctx, TrainState(epoch=epoch, step=epoch), ident))
    return paths[::-1]


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_whole_checkpoints_pass_and_the_newest_is_taken(checkpoints):
    assert all(checkpoint_damage(c) is None for c in checkpoints)
    lines: list[str] = []
    assert resumable_checkpoint(checkpoints, lines.append).epoch == 3
    assert lines == []  # nothing to say


@pytest.mark.parametrize("name", [MODEL_FILE, TRAINER_FILE])
def test_a_truncated_latest_falls_back_to_the_previous_one_and_names_the_file(checkpoints, name):
    truncate(checkpoints[0] / name)
    assert str(checkpoints[0] / name) in checkpoint_damage(checkpoints[0])
    lines: list[str] = []
    info = resumable_checkpoint(checkpoints, lines.append)
    assert info.epoch == 2 and info.path == checkpoints[1]
    text = "\n".join(lines)
    assert str(checkpoints[0] / name) in text and "truncated" in text and "epoch 2" in text


def test_a_changed_byte_of_the_same_size_is_caught_by_the_checksum(checkpoints):
    f = checkpoints[0] / MODEL_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert "sha256" in checkpoint_damage(checkpoints[0])
    assert resumable_checkpoint(checkpoints, lambda _: None).epoch == 2


def test_a_half_written_meta_json_falls_back(checkpoints):
    truncate(checkpoints[0] / META_FILE, 0.3)
    lines: list[str] = []
    assert resumable_checkpoint(checkpoints, lines.append).epoch == 2
    assert str(checkpoints[0] / META_FILE) in "\n".join(lines)


def test_every_checkpoint_damaged_is_an_error_naming_each_file(checkpoints):
    for c in checkpoints:
        truncate(c / MODEL_FILE)
    with pytest.raises(CheckpointError) as e:
        resumable_checkpoint(checkpoints, lambda _: None)
    for c in checkpoints:
        assert str(c / MODEL_FILE) in str(e.value)
    assert "new output directory" in str(e.value)


def test_no_checkpoint_at_all_is_a_new_run(tmp_path):
    assert resumable_checkpoint([tmp_path / "latest", tmp_path / "best"], lambda _: None) is None


def test_a_checkpoint_written_before_file_records_is_checked_as_a_zip(checkpoints):
    for c in checkpoints[:2]:  # as written by an older raygr: no "files" in meta.json
        meta = json.loads((c / META_FILE).read_text())
        del meta["files"]
        (c / META_FILE).write_text(json.dumps(meta))
    assert checkpoint_damage(checkpoints[1]) is None
    truncate(checkpoints[0] / MODEL_FILE, 0.9)
    assert "not a complete torch file" in checkpoint_damage(checkpoints[0])
    assert resumable_checkpoint(checkpoints, lambda _: None).epoch == 2
