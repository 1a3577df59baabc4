from pathlib import Path

import pytest

from raygr.config import ConfigError, config_to_dict, dump_config, load_config, replace


def test_defaults_are_the_joint_preset():
    cfg = load_config(None)
    assert cfg.model.preset == "joint" and cfg.model.levels == 3 and cfg.model.codes == 256


def test_yaml_file_and_dotted_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  preset: tiger\n  dim: 32\ntrain:\n  epochs: 3\n")
    cfg = load_config(f, ["train.epochs=7", "model.schedule.strategy=sdud", "train.use_gpu=true"])
    assert (cfg.model.preset, cfg.model.dim, cfg.train.epochs) == ("tiger", 32, 7)
    assert cfg.model.schedule.strategy == "sdud" and cfg.train.use_gpu is True
    assert cfg.model.loss.ranker == 0.0  # the tiger preset's own default


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["model.levels=4", "tune.space={train.lr: {loguniform: [0.0001, 0.01]}}"])
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg
    assert replace(cfg, ["train.epochs=2"]).train.epochs == 2
    assert config_to_dict(cfg)["model"]["levels"] == 4


@pytest.mark.parametrize("override, message", [
    ("model.levelz=3", "unknown config key 'model.levelz'"),
    ("model.schedule.strategy=foo", "allowed values: constant, linear, exponential, cosine, sdud, frqud"),
    ("train.epochs=abc", "'train.epochs' must be an integer"),
    ("model.dim=33", "divisible by model.num_heads"),
    ("model.preset=bert4rec", "allowed values: joint, tiger, sasrec"),
    ("train.use_gpu=maybe", "must be true or false"),
    ("nosection=1", "unknown config key 'nosection'"),
    ("model.sid_residual=true", "needs model.ranker_item_id=true and model.history_item_id=true"),
    ("model.tie_item_ids=true", "'model.tie_item_ids' needs model.ranker_item_id=true and model.history_item_id"),
    ("model.generator_distill=1.5", "'model.generator_distill' must be in"),
    ("model.preset=tiger model.generator_distill=0.5", "needs model.loss.ranker > 0"),
    ("train.max_candidates=10", "'train.max_candidates' must be 0 (no limit) or at least 20"),
    ("train.lr_hold_epochs=-1", "'train.lr_hold_epochs' must be >= 0"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, override.split())


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    f = tmp_path / "bad.yaml"
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(f)
    f.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"'train.epochs' must be >= 1 \(in .*bad.yaml\)"):
        load_config(f)


JOB_CONFIGS = Path(__file__).parents[1] / "jobs" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in JOB_CONFIGS.glob("*.yaml")))
def test_every_shipped_job_config_loads(name):
    assert load_config(JOB_CONFIGS / name).train.epochs >= 1


def test_a_file_extends_another_and_lists_only_what_it_changes(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  preset: tiger\n  dim: 32\ntrain:\n  epochs: 3\n  lr: 0.01\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "variant.yaml").write_text("extends: ../base.yaml\ntrain:\n  epochs: 5\n")
    cfg = load_config(tmp_path / "sub" / "variant.yaml", ["train.lr=0.02"])
    assert (cfg.model.preset, cfg.model.dim, cfg.train.epochs, cfg.train.lr) == ("tiger", 32, 5, 0.02)
    (tmp_path / "gone.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml \(extended by .*gone.yaml\) does not exist"):
        load_config(tmp_path / "gone.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "num.yaml").write_text("extends: 3\n")
    with pytest.raises(ConfigError, match="'extends' must be the path of another config file"):
        load_config(tmp_path / "num.yaml")
