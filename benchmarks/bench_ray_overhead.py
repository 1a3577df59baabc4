"""What Ray Train + Ray Data cost over the Ray-free loop: throughput ratio and input-wait share.

    python benchmarks/bench_ray_overhead.py [--epochs 5] [--repeats 2] [--num-users 2000] [--num-items 500]

Both sides train the same config on the same synthetic data with the same torch thread count: the
Ray-free ``fit`` over in-process windows (as ``train_local``), and ``run_training`` with one Ray Train
worker holding every core (``train.cpus_per_worker`` = cores) fed by Ray Data. Throughput is training
windows per second of the epochs' training loops (validation excluded on both sides), over the epochs
after the first (the first carries one-off warm-up on both sides; the all-epochs numbers are kept too).
Input wait is the time the worker spent blocked in the batch iterator, as a share of the loop's time.
Targets: ratio >= 0.9, input wait < 10%. Also reported: the one-off start-up cost of the Ray path
(``ray.init``, the worker group, materialising the windows) as whole-run wall times.

On a small shared machine other processes skew single epochs: ``--repeats N`` alternates the two sides
N times; the best epoch (least disturbed) and the median epoch are reported for each side, with the
1-minute load average before each run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import write_result
from raygr.config import load_config
from raygr.data.dataset import load_dataset, write_dataset
from raygr.data.synthetic import generate
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.checkpoint import read_checkpoint
from raygr.training.factory import build_model
from raygr.training.local import eval_split
from raygr.training.loop import TrainContext, fit, initialise


def epoch_times(runs: list[dict[str, Any]], skip_first: bool) -> list[float]:
    """Training-loop seconds of every epoch of every run (without each run's first, if asked)."""
    return [r["train_s"] for run in runs for r in run["history"][1 if skip_first else 0:]]


def run_local(cfg, ds, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _: None)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    state = fit(ctx, lambda e: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, e),
                eval_split(ds, cfg, "valid"), log=lambda _: None)
    return {"history": state.history, "wall_s": time.perf_counter() - start, "n_windows": len(w["input"])}


def run_ray(cfg, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    from raygr.distributed.session import ray_session
    from raygr.distributed.train import run_training

    start = time.perf_counter()
    with ray_session(log_to_driver=False):
        t_init = time.perf_counter() - start
        run_training(cfg, data_dir, run_dir, log=lambda _: None)
    meta = read_checkpoint(run_dir / "checkpoints" / "latest").meta
    return {"history": meta["train_state"]["history"], "input_wait_s": meta["run"]["input_wait_s"],
            "wall_s": time.perf_counter() - start, "ray_init_s": t_init}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--num-users", type=int, default=2000)
    ap.add_argument("--num-items", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2, help="alternate local and Ray runs this many times")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for both sides")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads on both sides (the Ray worker's train.cpus_per_worker); 0 = every core")
    ap.add_argument("--name", default="ray_overhead", help="result file name under benchmarks/results/")
    args = ap.parse_args()

    cores = args.threads or os.cpu_count() or 1
    overrides = [f"train.epochs={args.epochs}", "train.patience=1000", "train.log_every=0",
                 "data.num_eval_users=200", "train.num_workers=1", f"train.cpus_per_worker={cores}", *args.set]
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory(prefix="raygr-bench-") as tmp:
        items, seqs = generate(num_users=args.num_users, num_items=args.num_items, seed=0)
        write_dataset(Path(tmp) / "data", items, seqs, source={"format": "synthetic"}, name="synthetic")
        ds = load_dataset(Path(tmp) / "data")
        locals_, rays, loads = [], [], []
        for i in range(args.repeats):
            loads.append(os.getloadavg()[0])
            locals_.append(run_local(cfg, ds, threads=cores))
            loads.append(os.getloadavg()[0])
            rays.append(run_ray(cfg, Path(tmp) / "data", Path(tmp) / f"run{i}"))
    n = locals_[0]["n_windows"]
    out: dict[str, Any] = {"config": overrides, "dataset": {"users": args.num_users, "items": args.num_items,
                                                            "windows": n}, "torch_threads": cores,
                           "repeats": args.repeats, "load_avg_1min_before_runs": loads}
    for label, skip in (("after_first_epoch", True), ("all_epochs", False)):
        lt, rt = epoch_times(locals_, skip), epoch_times(rays, skip)
        waits = [w for run in rays for w in run["input_wait_s"][1 if skip else 0:]]
        out[label] = {
            # best epoch: the least disturbed by other processes; median: what a run typically sees
            "local_samples_per_s": {"best": n / min(lt), "median": n / statistics.median(lt)},
            "ray_samples_per_s": {"best": n / min(rt), "median": n / statistics.median(rt)},
            "ratio": {"best": min(lt) / min(rt), "median": statistics.median(lt) / statistics.median(rt)},
            "input_wait_fraction": sum(waits) / sum(rt),
        }
    out["wall_s"] = {"local": [r["wall_s"] for r in locals_], "ray": [r["wall_s"] for r in rays],
                     "ray_init": [r["ray_init_s"] for r in rays]}
    out["per_epoch"] = {"local_train_s": [[r["train_s"] for r in run["history"]] for run in locals_],
                        "ray_train_s": [[r["train_s"] for r in run["history"]] for run in rays],
                        "ray_input_wait_s": [run["input_wait_s"] for run in rays]}
    a = out["after_first_epoch"]
    print(f"samples/s (best epoch | median epoch): local {a['local_samples_per_s']['best']:.0f} | "
          f"{a['local_samples_per_s']['median']:.0f}, Ray Train 1 worker {a['ray_samples_per_s']['best']:.0f} | "
          f"{a['ray_samples_per_s']['median']:.0f}; ratio {a['ratio']['best']:.3f} | {a['ratio']['median']:.3f} "
          f"(target >= 0.9); input wait {100 * a['input_wait_fraction']:.1f}% (target < 10%); "
          f"wall per run: local {statistics.median(out['wall_s']['local']):.0f} s, "
          f"Ray {statistics.median(out['wall_s']['ray']):.0f} s")
    write_result(args.name, out)


if __name__ == "__main__":
    main()
