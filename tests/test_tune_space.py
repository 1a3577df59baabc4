"""The search space, the trial plan and the search report, without Ray: parsing, up-front validation
that names the key, the default space, concurrency from resources, and the trials table / plots."""

from __future__ import annotations

import csv
import typing

import numpy as np
import pytest
import yaml

from raygr.config import ConfigError, DecayStrategy, Weighting, dump_config, load_config
from raygr.tuning.plan import DRIVER_CPUS, max_concurrent, trial_resources
from raygr.tuning.report import (
    ASHA,
    COMPLETED,
    ERROR,
    PATIENCE,
    TrialRecord,
    best_record,
    error_line,
    health_metrics,
    outcome,
    plot_by_strategy,
    plot_curves,
    trials_table,
    write_outputs,
    write_trials_csv,
)
from raygr.tuning.space import Dimension, apply, as_overrides, default_space, parse_space, resolve_space, validate_space

BASE = load_config(None)


def space(text: str) -> tuple[Dimension, ...]:
    return parse_space(yaml.safe_load(text))


# -- parsing ----------------------------------------------------------------------------------------

def test_every_kind_parses_into_a_neutral_dimension():
    dims = space("""
        model.schedule.strategy: {choice: [cosine, sdud]}
        model.schedule.tau_end: {uniform: [0.05, 0.5]}
        train.lr: {loguniform: [1e-4, 1e-2]}      # PyYAML reads 1e-4 as a string: still a number here
        train.batch_size: {randint: [64, 257]}
        model.weighting: {grid: [fixed, adaptive]}
    """)
    assert dims == (
        Dimension("model.schedule.strategy", "choice", ("cosine", "sdud")),
        Dimension("model.schedule.tau_end", "uniform", (0.05, 0.5)),
        Dimension("train.lr", "loguniform", (1e-4, 1e-2)),
        Dimension("train.batch_size", "randint", (64, 257)),
        Dimension("model.weighting", "grid", ("fixed", "adaptive")),
    )
    validate_space(dims, BASE)
    assert dims[3].checked_values() == (64, 256)  # randint's high is excluded, as in Ray


@pytest.mark.parametrize("text, message", [
    ("train.lr: 0.001", r"tune.space\['train.lr'\] must be a mapping with exactly one of choice"),
    ("train.lr: {choice: [1], grid: [2]}", r"exactly one of"),
    ("train.lr: {between: [1, 2]}", r"exactly one of"),
    ("train.lr: {choice: []}", r"tune.space\['train.lr'\]: choice needs a non-empty list"),
    ("train.lr: {uniform: [0.1]}", r"uniform needs two numbers \[low, high\]"),
    ("train.lr: {uniform: [0.5, 0.1]}", r"needs low < high"),
    ("train.lr: {loguniform: [0, 0.1]}", r"loguniform needs low > 0"),
    ("train.batch_size: {randint: [64, 128.5]}", r"randint needs integer bounds"),
])
def test_malformed_entries_name_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        space(text)


# -- validation against the config ------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("model.schedule.stratgy: {choice: [cosine]}",
     r"tune.space key 'model.schedule.stratgy' is not a config key \(did you mean 'model.schedule.strategy'\?\)"),
    ("nope.lr: {choice: [1]}", r"tune.space key 'nope.lr' is not a config key.*known keys in '<root>'"),
    ("model.schedule: {choice: [1]}", r"'model.schedule' is a whole section"),
    ("model.dim.x: {choice: [1]}", r"'model.dim' is a value, not a section"),
    ("model.schedule.strategy: {choice: [cosine, cosin]}",
     r"tune.space\['model.schedule.strategy'\]: value 'cosin' is not valid.*allowed values: constant"),
    ("model.schedule.tau_end: {uniform: [-0.1, 0.5]}", r"tune.space\['model.schedule.tau_end'\]: value -0.1"),
    ("train.batch_size: {uniform: [64, 512]}", r"'train.batch_size' is an integer; use randint"),
    ("model.weighting: {randint: [0, 3]}", r"randint needs a numeric key.*one of fixed, scheduled, adaptive"),
    ("train.epochs: {choice: [1, 2]}", r"'train.epochs'\] cannot be searched \(it is the ASHA scheduler's max_t\)"),
    ("train.num_workers: {choice: [1, 2]}", r"cannot be searched"),
    ("tune.num_samples: {choice: [1]}", r"the 'tune' section is not searched"),
])
def test_bad_keys_and_values_fail_up_front_naming_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        validate_space(space(text), BASE)


def test_a_combination_of_searched_values_is_left_to_the_trial():
    # Each value is valid with the base config (dim 16, heads 2), so the space is accepted ...
    dims = space("{model.dim: {grid: [16, 18]}, model.num_heads: {choice: [4]}}")
    validate_space(dims, load_config(None, ["model.dim=16"]))
    # ... but one combination is not: that trial fails (recorded) and the others run.
    base = load_config(None, ["model.dim=16"])
    assert apply(base, {"model.dim": 16, "model.num_heads": 4}).model.num_heads == 4
    with pytest.raises(ConfigError, match="'model.dim' must be >= 8 and divisible by model.num_heads"):
        apply(base, {"model.dim": 18, "model.num_heads": 4})


def test_apply_takes_numpy_samples_and_the_result_round_trips_through_yaml(tmp_path):
    cfg = apply(BASE, {"train.lr": np.float64(1e-3), "train.batch_size": np.int64(128),
                       "model.schedule.strategy": np.str_("frqud")})
    assert (cfg.train.lr, cfg.train.batch_size, cfg.model.schedule.strategy) == (1e-3, 128, "frqud")
    assert type(cfg.train.batch_size) is int
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert as_overrides({"train.lr": 0.00123456, "model.weighting": "fixed"}) == ["train.lr=0.001235",
                                                                                   "model.weighting=fixed"]


def test_default_space_searches_the_decay_and_weighting_schedules():
    dims = {d.key: d for d in resolve_space(BASE, total_steps=1000)}  # tune.space is empty
    assert dims["model.schedule.strategy"].values == typing.get_args(DecayStrategy)
    assert dims["model.weighting"].values == typing.get_args(Weighting)
    for key in ("model.schedule.tau_start", "model.schedule.tau_end", "model.schedule.sigma_start",
                "model.schedule.horizon_steps", "model.schedule.sdud_lambda", "model.schedule.frqud_threshold",
                "model.ramp_steps", "model.gradnorm_alpha", "model.loss.ranker", "train.lr", "train.batch_size"):
        assert key in dims, key
    assert dims["model.schedule.horizon_steps"].values == (250, 500, 1000)  # a quarter, half, all of the run
    # A declared space replaces the default one; SASRec (no quantizer) only searches the optimiser.
    declared = load_config(None, ["tune.space={train.lr: {choice: [0.001]}}"])
    assert [d.key for d in resolve_space(declared, 1000)] == ["train.lr"]
    sasrec = load_config(None, ["model.preset=sasrec"])
    assert {d.key for d in default_space(sasrec, 1000)} == {"train.lr", "train.batch_size"}


# -- resources --------------------------------------------------------------------------------------

def test_concurrency_follows_the_cluster_and_the_per_trial_needs():
    one = load_config(None, ["train.num_workers=1"])
    assert trial_resources(one).cpus == DRIVER_CPUS + 1
    assert max_concurrent(one, {"CPU": 4}) == 2  # (1 driver + 1 worker) per trial
    assert max_concurrent(load_config(None, ["train.num_workers=2"]), {"CPU": 16}) == 5
    assert max_concurrent(load_config(None, ["tune.max_concurrent=1"]), {"CPU": 16}) == 1
    assert max_concurrent(one, {"CPU": 4}, data_cpus=1) == 1  # a streaming input keeps a CPU for Ray Data
    # GPUs: a trial's share is split over its workers; the scarcer resource decides.
    half = load_config(None, ["tune.gpus_per_trial=0.5"])
    assert trial_resources(half).gpus_per_worker == 0.5
    assert max_concurrent(half, {"CPU": 16, "GPU": 1}) == 2
    assert max_concurrent(load_config(None, ["train.use_gpu=true", "train.num_workers=2"]),
                          {"CPU": 16, "GPU": 4}) == 2


@pytest.mark.parametrize("overrides, cluster, message", [
    (["train.num_workers=4"], {"CPU": 4}, r"one trial needs 5 CPUs .* the Ray cluster has 4: lower train.num_workers"),
    (["tune.gpus_per_trial=1"], {"CPU": 4}, r"one trial needs 1 GPUs .* lower tune.gpus_per_trial"),
    (["tune.gpus_per_trial=2"], {"CPU": 4, "GPU": 2}, r"each of the train.num_workers=1 worker\(s\) 2 GPUs"),
])
def test_a_trial_that_cannot_fit_fails_before_the_search(overrides, cluster, message):
    with pytest.raises(ConfigError, match=message):
        max_concurrent(load_config(None, overrides), cluster)


# -- report -----------------------------------------------------------------------------------------

def records() -> list[TrialRecord]:
    return [
        TrialRecord("a", {"model.schedule.strategy": "cosine", "train.lr": 0.005}, COMPLETED,
                    [(1, 0.10), (2, 0.20), (3, 0.18)], {"code_util_mean": 0.9, "collision_rate": 0.05}),
        TrialRecord("b", {"model.schedule.strategy": "sdud", "train.lr": 1e-6}, ASHA, [(1, 0.05)]),
        TrialRecord("c", {"model.schedule.strategy": "frqud", "train.lr": 0.001}, ERROR,
                    error="ConfigError: config key 'model.dim' must be divisible"),
        TrialRecord("d", {"model.schedule.strategy": "sdud", "train.lr": 0.002}, PATIENCE, [(1, 0.3), (2, 0.1)]),
    ]


def test_outcome_tells_asha_from_patience_and_errors():
    assert outcome(error=False, epochs=3, max_epochs=3, stopped_early=False) == COMPLETED
    assert outcome(error=False, epochs=1, max_epochs=3, stopped_early=False) == ASHA
    assert outcome(error=False, epochs=2, max_epochs=3, stopped_early=True) == PATIENCE
    assert outcome(error=True, epochs=2, max_epochs=3, stopped_early=False) == ERROR


def test_best_record_and_table_rank_by_best_epoch_not_last(tmp_path):
    recs = records()
    assert best_record(recs).trial_id == "d"  # 0.3 at epoch 1 beats a's 0.2
    assert recs[0].best == (2, 0.20) and recs[2].best is None and recs[0].epochs == 3
    table = trials_table(recs, ["model.schedule.strategy", "train.lr"]).splitlines()
    assert table[0].split()[:5] == ["trial", "status", "epochs", "best_ndcg@10", "best_epoch"]
    assert [line.split()[0] for line in table[1:]] == ["d", "a", "b", "c"]  # errors last
    assert "stopped-by-asha" in table[3] and "ConfigError: config key 'model.dim'" in table[4]
    path = write_trials_csv(recs, ["model.schedule.strategy", "train.lr"], tmp_path / "trials.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["status"] for r in rows] == [PATIENCE, COMPLETED, ASHA, ERROR]
    assert rows[1]["model.schedule.strategy"] == "cosine" and float(rows[1]["best_ndcg@10"]) == 0.2
    assert rows[3]["error"].startswith("ConfigError") and rows[3]["best_ndcg@10"] == ""


def test_plots_are_written(tmp_path):
    assert plot_curves(records(), tmp_path / "c.png").stat().st_size > 5000
    assert plot_by_strategy(records(), tmp_path / "s.png").stat().st_size > 5000
    assert plot_by_strategy([], tmp_path / "empty.png").is_file()


def test_health_metrics_flatten_an_epoch_record():
    record = {"codebook": {"utilization": [1.0, 0.5], "perplexity": [10.0, 6.0], "collision_rate": 0.1,
                           "unreachable_items": 2},
              "valid": {"ndcg@10": 0.2, "retrieval_only": {"ndcg@10": 0.15},
                        "decoding": {"invalid_rate": 0.0, "duplicate_rate": 0.01}}}
    assert health_metrics(record) == {"code_util_min": 0.5, "code_util_mean": 0.75, "code_perplexity_mean": 8.0,
                                      "collision_rate": 0.1, "unreachable_items": 2.0,
                                      "valid_retrieval_ndcg@10": 0.15, "invalid_rate": 0.0, "duplicate_rate": 0.01}
    assert health_metrics({"valid": {}}) == {}  # SASRec: no codebook


def test_error_line_finds_the_exception_under_rays_wrapping():
    text = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    raise ConfigError(...)\n"
            "ray.exceptions.RayTaskError(ConfigError): ray::ImplicitFunc.train() (pid=1)\n"
            "raygr.config.ConfigError: config key 'model.dim' must be divisible by model.num_heads (4)\n")
    assert error_line(text) == text.splitlines()[-1]
    assert error_line("something broke") == "something broke"


def test_write_outputs_gives_a_loadable_best_config_and_copies_its_checkpoint(tmp_path):
    recs = records()
    best_run = tmp_path / "trials" / "d"
    (best_run / "checkpoints" / "best").mkdir(parents=True)
    (best_run / "checkpoints" / "best" / "meta.json").write_text("{}")
    recs[3].path = str(best_run)
    dims = space("{model.schedule.strategy: {choice: [cosine, sdud, frqud]}, train.lr: {loguniform: [1e-6, 1e-2]}}")
    out = tmp_path / "out"
    out.mkdir()
    summary = write_outputs(recs, BASE, dims, tmp_path / "data", out, extra={"wall_s": 1.0}, log=lambda _m: None)
    best = load_config(out / "best_config.yaml")
    assert (best.model.schedule.strategy, best.train.lr, best.data.path) == ("sdud", 0.002, str(tmp_path / "data"))
    assert (out / "best_config.yaml").read_text().startswith("# best of 4 trials")
    assert (out / "best_checkpoint" / "meta.json").is_file()
    assert summary["best"]["trial"] == "d" and summary["best"]["epoch"] == 1 and summary["wall_s"] == 1.0
    assert summary["trials"] == {COMPLETED: 1, PATIENCE: 1, ASHA: 1, ERROR: 1, "unfinished": 0}
    assert summary["best_by_strategy"] == {"sdud": 0.3, "cosine": 0.2}  # the error trial has no score
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 4

    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_outputs([recs[2]], BASE, dims, tmp_path, empty, {}, log=lambda _m: None)["best"] is None
    assert not (empty / "best_config.yaml").exists()
