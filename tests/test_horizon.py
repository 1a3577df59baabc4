"""The exploration horizon is resolved once per run, stored with it, and kept by a resume."""

import pytest
import yaml

from raygr.training.checkpoint import (
    CheckpointError,
    DatasetIdentity,
    check_compatible,
    keep_run_horizon,
    load_model_state,
    load_trainer_state,
    publish_run_config,
    read_checkpoint,
    save_checkpoint,
)
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, TrainState, initialise
from tests.helpers import tiny_config, tiny_dataset

STEPS_PER_EPOCH = 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("horizon"), num_users=120, num_items=40)


def context(dataset, cfg):
    model = build_model(cfg, dataset)
    initialise(model, cfg, lambda s: None)
    return TrainContext.create(model, cfg, STEPS_PER_EPOCH, verbose=False)


def test_the_horizon_is_resolved_once_and_everything_reads_the_same_value(dataset):
    ctx = context(dataset, tiny_config("train.epochs=6", "model.schedule.strategy=frqud"))
    assert ctx.cfg.model.schedule.horizon_steps == 30  # half of 6 x 10 steps
    model = ctx.core
    # The model's own config and its quantizer agree with the run's: no 0 left anywhere.
    assert model.cfg.schedule.horizon_steps == 30 and model.quantizer.schedule.horizon_steps == 30
    assert float(model.quantizer.noise_scales(30).max()) == 0 and float(model.quantizer.noise_scales(29).max()) > 0
    explicit = context(dataset, tiny_config("train.epochs=6", "model.schedule.horizon_steps=7"))
    assert explicit.cfg.model.schedule.horizon_steps == 7 and explicit.core.quantizer.schedule.horizon_steps == 7


def test_a_resume_with_other_epochs_keeps_the_horizon(dataset, tmp_path):
    cfg = tiny_config("train.epochs=6")
    ctx = context(dataset, cfg)
    save_checkpoint(tmp_path / "ckpt", ctx, TrainState(epoch=1, step=STEPS_PER_EPOCH),
                    DatasetIdentity.from_manifest(dataset.manifest))
    info = read_checkpoint(tmp_path / "ckpt")
    # Stored with the run: the checkpoint's meta.json and its config.yaml hold the resolved value.
    assert info.config.model.schedule.horizon_steps == 30
    saved_yaml = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    assert saved_yaml["model"]["schedule"]["horizon_steps"] == 30

    longer = tiny_config("train.epochs=20")  # 200 steps: alone it would resolve to 100
    check_compatible(info, longer, dataset.manifest)
    model = build_model(longer, dataset)
    load_model_state(tmp_path / "ckpt", model)
    resumed = TrainContext.create(model, longer, STEPS_PER_EPOCH, verbose=False)
    state = load_trainer_state(tmp_path / "ckpt", resumed)
    assert state.step == STEPS_PER_EPOCH
    assert resumed.cfg.model.schedule.horizon_steps == 30
    assert model.cfg.schedule.horizon_steps == 30 and model.quantizer.schedule.horizon_steps == 30
    assert resumed.cfg.train.epochs == 20  # the rest of the new config stands
    # What a resumed run writes as its config.yaml (the driver) keeps it too.
    assert keep_run_horizon(longer, info).model.schedule.horizon_steps == 30


def test_an_explicit_other_horizon_cannot_resume_the_run(dataset, tmp_path):
    ctx = context(dataset, tiny_config("train.epochs=6"))
    save_checkpoint(tmp_path / "ckpt", ctx, TrainState(), DatasetIdentity.from_manifest(dataset.manifest))
    info = read_checkpoint(tmp_path / "ckpt")
    check_compatible(info, tiny_config("model.schedule.horizon_steps=30"))
    with pytest.raises(CheckpointError, match="set model.schedule.horizon_steps=30 \\(or 0\\) to resume"):
        check_compatible(info, tiny_config("model.schedule.horizon_steps=50"))


def test_the_run_config_gets_the_resolved_horizon_from_the_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  schedule:\n    horizon_steps: 0\n")  # what the driver wrote
    ctx = context(dataset, tiny_config("train.epochs=4"))
    save_checkpoint(tmp_path / "ckpt", ctx, TrainState(), DatasetIdentity.from_manifest(dataset.manifest))
    publish_run_config(tmp_path / "ckpt", run)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["schedule"]["horizon_steps"] == 20
