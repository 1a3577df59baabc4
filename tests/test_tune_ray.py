"""Ray Tune on the shared local cluster: one small search where ASHA stops a weak trial and a bad
combination fails without stopping the search; its best config loads and trains; a re-run restores
the finished search instead of repeating it; a bad space fails before any trial starts."""

from __future__ import annotations

import csv
import dataclasses
import json
import time

import pytest

from raygr.cli import main
from raygr.config import ConfigError, load_config
from raygr.distributed.tune import run_tune
from raygr.training.checkpoint import read_checkpoint
from raygr.training.local import train_local
from raygr.tuning.report import ASHA, BEST_CHECKPOINT, BEST_CONFIG, COMPLETED, ERROR, SUMMARY, TRIALS_CSV
from tests.helpers import quiet, tiny_config

pytestmark = pytest.mark.ray

# One worker per trial, a tiny model, two epochs: ASHA's only rung is epoch 1 (grace 1, factor 2).
TINY = ["model.dim=16", "model.codes=16", "model.token_buckets=1024", "model.num_negatives=16",
        "data.num_eval_users=120", "train.beam_size=20", "train.num_candidates=20", "train.warmup_steps=5",
        "train.num_workers=1", "train.patience=10", "train.epochs=2", "train.max_failures=0",
        "tune.grace_period=1", "tune.reduction_factor=2", "tune.num_samples=1"]
# 2 x 2 grid, run one trial at a time so the order is fixed: the good lr reaches the rung first, so the
# lr=1e-6 trial (it learns nothing) is below the rung's median and stopped. dim=18 is valid alone (with
# 2 heads) but not with the searched 4 heads: those trials fail when they start, and the search goes on.
SPACE = ("tune.space={model.dim: {grid: [16, 18]}, train.lr: {grid: [5.0e-3, 1.0e-6]}, "
         "model.num_heads: {choice: [4]}, model.schedule.strategy: {choice: [frqud]}, "
         "model.weighting: {choice: [scheduled]}}")


def cfg(*overrides: str):
    return tiny_config(*TINY, SPACE, "tune.max_concurrent=1", *overrides)


@pytest.fixture(scope="module")
def search(ray_cluster, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "search"
    start = time.perf_counter()
    summary = run_tune(cfg(), data, out, log=quiet)
    return out, summary, time.perf_counter() - start


def by_values(summary: dict) -> dict[tuple[int, float], dict]:
    return {(t["assignment"]["model.dim"], t["assignment"]["train.lr"]): t for t in summary["trial_records"]}


def test_asha_stops_the_weak_trial_and_a_failed_trial_is_recorded(search, ray_cluster):
    out, summary, _ = search
    trials = by_values(summary)
    assert len(trials) == 4
    good, weak = trials[(16, 5e-3)], trials[(16, 1e-6)]
    assert good["status"] == COMPLETED and [e for e, _ in good["curve"]] == [1, 2]
    assert weak["status"] == ASHA and [e for e, _ in weak["curve"]] == [1]  # stopped at the epoch-1 rung
    assert weak["curve"][0][1] < good["curve"][0][1]
    for dim18 in (trials[(18, 5e-3)], trials[(18, 1e-6)]):
        assert dim18["status"] == ERROR and dim18["curve"] == []
        assert "'model.dim' must be >= 8 and divisible by model.num_heads (4)" in dim18["error"]
    assert summary["trials"] == {"completed": 1, "early-stopped": 0, "stopped-by-asha": 1, "error": 2,
                                 "unfinished": 0}
    # Code health travels with every epoch's report.
    assert 0 < good["last"]["code_util_mean"] <= 1 and 0 <= good["last"]["collision_rate"] <= 1
    rows = list(csv.DictReader((out / TRIALS_CSV).open()))
    assert sorted(r["status"] for r in rows) == sorted([COMPLETED, ASHA, ERROR, ERROR])
    assert {"model.dim", "train.lr", "best_ndcg@10", "error"} <= set(rows[0])
    for png in ("valid_ndcg10_by_epoch.png", "ndcg10_by_strategy.png"):
        assert (out / png).stat().st_size > 5000
    # Stopped and failed trials gave their resources back (Train workers included).
    deadline = time.time() + 90  # the GCS removes a killed trial's placement group; slow on a loaded machine
    while ray_cluster.available_resources().get("CPU", 0) < ray_cluster.cluster_resources()["CPU"]:
        assert time.time() < deadline, ray_cluster.available_resources()
        time.sleep(0.5)


def test_best_config_loads_and_trains(search, data):
    out, summary, _ = search
    assert summary["best"]["assignment"] == {"model.dim": 16, "train.lr": 5e-3, "model.num_heads": 4,
                                             "model.schedule.strategy": "frqud", "model.weighting": "scheduled"}
    best = load_config(out / BEST_CONFIG, ["train.epochs=1"])
    assert (best.model.num_heads, best.model.schedule.strategy, best.model.weighting) == (4, "frqud", "scheduled")
    assert best.train.lr == 5e-3 and best.data.path == str(data)
    ckpt = read_checkpoint(out / BEST_CHECKPOINT)  # the best trial's (its horizon resolved to steps)
    assert ckpt.config.model == dataclasses.replace(best.model, schedule=ckpt.config.model.schedule)
    assert ckpt.config.model.schedule.strategy == "frqud"
    assert ckpt.meta["train_state"]["best_metric"] == pytest.approx(summary["best"]["valid_score"])
    _, state, test = train_local(best, str(data), log=quiet)
    assert state.epoch == 1 and 0 <= test["ndcg@10"] <= 1
    assert json.loads((out / SUMMARY).read_text())["best"]["trial"] == summary["best"]["trial"]


def test_rerun_restores_the_finished_search_and_refuses_another_config(search, data):
    out, summary, first_wall = search
    start = time.perf_counter()
    again = run_tune(cfg(), data, out, log=quiet)
    assert time.perf_counter() - start < max(20.0, first_wall / 3)  # nothing trained again
    assert {t["trial"]: t["status"] for t in again["trial_records"]} == \
        {t["trial"]: t["status"] for t in summary["trial_records"]}
    with pytest.raises(ConfigError, match=r"holds a search started with train.seed=0, but this command has "
                                          r"train.seed=1.*or choose a new --output"):
        run_tune(cfg("train.seed=1"), data, out, log=quiet)


def test_bad_space_fails_before_any_trial(ray_cluster, data, tmp_path, capsys):
    out = tmp_path / "bad"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"tune.space key 'model.schedule.tau_ned' is not a config key "
                                          r"\(did you mean 'model.schedule.tau_end'\?\)"):
        run_tune(cfg("tune.space={model.schedule.tau_ned: {uniform: [0.1, 0.5]}}"), data, out, log=quiet)
    assert time.perf_counter() - start < 5 and not out.exists()
    # The CLI turns it into one line and exit status 2.
    code = main(["tune", "--data", str(data), "--output", str(out),
                 "--set", "tune.space={model.weighting: {choice: [fixed, adaptiv]}}"])
    assert code == 2
    assert "tune.space['model.weighting']: value 'adaptiv' is not valid" in capsys.readouterr().err
