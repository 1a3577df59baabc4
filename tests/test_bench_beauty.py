"""The Beauty benchmark trains each preset from its shipped config, and the joint run from the SASRec run."""

from benchmarks.bench_beauty import ROOT_CONFIGS, preset_config
from raygr.config import load_config


def test_presets_train_from_their_shipped_configs_and_joint_from_the_benchmarks_sasrec_run(tmp_path):
    shipped = load_config(ROOT_CONFIGS / "beauty_joint_warm.yaml")
    joint = preset_config("joint_warm", None, 1, [], tmp_path)
    assert joint.train.epochs == shipped.train.epochs  # the config's schedule, not a common budget
    assert joint.train.init_from == str(tmp_path / "beauty-sasrec")
    assert preset_config("sasrec", 3, 2, [], tmp_path).train.epochs == 3
    assert preset_config("sasrec", 3, 2, [], tmp_path).train.num_workers == 2
    mine = preset_config("joint_warm", None, 1, [f"train.init_from={tmp_path / 'x'}"], tmp_path)
    assert mine.train.init_from == str(tmp_path / "x")  # an absolute path is the user's: kept
    assert preset_config("tiger", None, 1, [], tmp_path).model.preset == "tiger"
    assert joint.model.preset == "joint" and joint.model.sid_residual  # beauty_joint.yaml's model, extended
