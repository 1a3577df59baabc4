"""Ray Tune on Amazon Scientific: which Gumbel decay / loss weighting wins, by how much over the defaults, at what cost.

    python benchmarks/bench_tune.py [--samples 10] [--epochs 5] [--eval-users 2000] [--work /tmp/raygr-bench]

Data: ../shared/data/amazon2018-scientific (8.3k users, 4.3k items), prepared once into --work.
Budget for a shared 2-core machine: a small joint model (dim 32, 64 codes x 3 levels), 1 worker per
trial, up to --epochs epochs, ASHA (grace 2, factor 2) over the default search space (decay strategy
and its parameters, loss weighting and its parameters, lr, batch size), validation on a fixed subset of
--eval-users users. The reference is the same base config without search, trained for the same epochs
(``raygr train``); both are then scored on the full test split by the same evaluation.
Writes benchmarks/results/tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, prepared, write_result
from raygr.config import load_config
from raygr.data.dataset import load_dataset
from raygr.distributed.session import LOCAL_ENV, QUIET_ENV, local_num_cpus, ray_session

SMALL = ["model.dim=32", "model.codes=64", "model.token_buckets=8192", "model.num_negatives=64",
         "train.beam_size=20", "train.num_candidates=20", "train.batch_size=256", "train.log_every=0",
         "train.num_workers=1", "train.patience=10", "tune.grace_period=2", "tune.reduction_factor=2"]
TEST_KEYS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=10, help="trials (random samples of the default space)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (ASHA's max_t) and of the reference")
    p.add_argument("--eval-users", type=int, default=2000, help="validation users (fixed seeded subset)")
    p.add_argument("--work", default="/tmp/raygr-bench", help="where the prepared data and the runs go")
    args = p.parse_args()

    work = Path(args.work)
    data = prepared("scientific", "letter", SHARED_DATA / "amazon2018-scientific", work)
    cfg = load_config(None, [*SMALL, f"train.epochs={args.epochs}", f"data.num_eval_users={args.eval_users}",
                             f"tune.num_samples={args.samples}"])
    out = work / f"tune-scientific-{args.samples}x{args.epochs}"

    own_local_ray()
    with ray_session() as where:
        from raygr.distributed.train import run_training
        from raygr.distributed.tune import run_tune
        from raygr.training.report import evaluate_checkpoint
        from raygr.tuning.report import BEST_CHECKPOINT

        print(f"bench_tune: {where}", flush=True)
        t0 = time.perf_counter()
        summary = run_tune(cfg, data, out / "search")
        tune_wall = time.perf_counter() - t0

        t0 = time.perf_counter()
        reference = run_training(cfg, data, out / "default")
        reference_wall = time.perf_counter() - t0

    # The tuned checkpoint on the full test split, with the evaluation run_training used for the reference.
    ev = evaluate_checkpoint(out / "search" / BEST_CHECKPOINT, load_dataset(data))
    records = summary.pop("trial_records")
    best = summary["best"]
    ref_valid, tuned_valid = reference["valid"]["ndcg@10"], best["valid_ndcg@10"]
    tuned_test = {k: ev["main"][k] for k in TEST_KEYS}
    ref_test = {k: reference["test"][k] for k in TEST_KEYS}
    result = {
        "dataset": "amazon2018-scientific", "budget": {"trials": args.samples, "max_epochs": args.epochs,
                                                      "eval_users": args.eval_users, "base": SMALL},
        "winner": {"strategy": best["assignment"].get("model.schedule.strategy"),
                   "weighting": best["assignment"].get("model.weighting"), "assignment": best["assignment"],
                   "trial": best["trial"], "epoch": best["epoch"], "status": best["status"]},
        "valid_ndcg@10": {"tuned": tuned_valid, "default": ref_valid,
                          "gain_rel": tuned_valid / ref_valid - 1 if ref_valid else None},
        "test": {"tuned": tuned_test, "default": ref_test,
                 "ndcg@10_gain_rel": tuned_test["ndcg@10"] / ref_test["ndcg@10"] - 1 if ref_test["ndcg@10"] else None,
                 "popularity": {k: reference["baselines"]["popularity"][k] for k in TEST_KEYS}},
        "best_by_strategy": summary["best_by_strategy"],
        "best_by_weighting": _best_by(records, "model.weighting"),
        "cost": {"search_wall_s": tune_wall, "reference_wall_s": reference_wall,
                 "epochs_trained": summary["epochs_trained"], "epochs_if_no_asha": args.samples * args.epochs,
                 "trials": summary["trials"], "concurrency": summary["concurrency"]},
        "trials": [{"trial": r["trial"], "status": r["status"], "best": r["best"], "epochs": len(r["curve"]),
                    "strategy": r["assignment"].get("model.schedule.strategy"),
                    "weighting": r["assignment"].get("model.weighting"), "lr": r["assignment"].get("train.lr"),
                    "batch_size": r["assignment"].get("train.batch_size")} for r in records],
        "outputs": str(out),
    }
    print(json.dumps({k: result[k] for k in ("winner", "valid_ndcg@10", "test", "cost")}, indent=1, default=str))
    write_result("tune", result)


def own_local_ray() -> None:
    """A local Ray of this process's own: a plain ``ray.init()`` joins a ``ray start`` cluster that another
    user left running on the machine (and then refuses num_cpus)."""
    for key, value in {**QUIET_ENV, **LOCAL_ENV}.items():
        os.environ.setdefault(key, value)
    import ray

    ray.init(address="local", num_cpus=local_num_cpus(), include_dashboard=True, logging_level="WARNING")


def _best_by(records: list[dict], key: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in records:
        if r["best"] is not None and key in r["assignment"]:
            name = str(r["assignment"][key])
            best[name] = max(best.get(name, -1.0), r["best"][1])
    return dict(sorted(best.items(), key=lambda kv: -kv[1]))


if __name__ == "__main__":
    main()
