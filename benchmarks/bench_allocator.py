"""Training-step time with and without ``train.keep_freed_memory`` (glibc keeps freed memory for reuse).

    python -m benchmarks.bench_allocator [--data DIR] [--config CFG] [--steps 20] [--pairs 3]
    python -m benchmarks.bench_allocator --trim --data DIR --steps 150 --pairs 1 [--set KEY=VALUE]

Each measurement is a fresh process (the allocator setting is per process): build the model, 3 warm-up
steps, then ``--steps`` timed steps on one torch thread; it reports wall time per step, the process's user
and system CPU seconds over the timed steps, and its peak RSS (VmHWM). The two settings alternate
(off, on, off, on, ...) so that the machine's load falls on both alike; compare the per-pair ratios.
Default data: Beauty prepared with the WordLlama text embedding (needs ../shared and the text extra),
else a synthetic set of the same shape. Results: benchmarks/results/allocator.json.

``--trim``: both processes keep freed memory; one never trims, the other gives the free pages back every
``train.trim_every_steps`` (100): the kept heap's growth over a longer run, and what trimming costs.
Results: benchmarks/results/allocator_trim.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parents[1]


def measure(data: str, config: str, steps: int, keep: bool, overrides: list[str]) -> dict:
    """One process's numbers (runs in the child)."""
    import torch

    torch.set_num_threads(1)
    from raygr.config import load_config
    from raygr.data.dataset import load_dataset
    from raygr.data.windows import iterate_windows, make_train_windows_csr
    from raygr.models.batch import TrainBatch
    from raygr.training.factory import build_model
    from raygr.training.loop import TrainContext, initialise, train_step

    ds = load_dataset(data)
    cfg = load_config(config, [f"train.keep_freed_memory={str(keep).lower()}", *overrides])
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda s: None)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    it = iterate_windows(w, cfg.train.batch_size, seed=0, epoch=0)
    batches = []
    for _ in range(steps + 3):  # a longer run than one epoch goes round again
        try:
            batches.append(TrainBatch.from_mapping(next(it), "cpu"))
        except StopIteration:
            it = iterate_windows(w, cfg.train.batch_size, seed=len(batches), epoch=0)
            batches.append(TrainBatch.from_mapping(next(it), "cpu"))
    for i in range(3):
        train_step(ctx, batches[i], i + 1)
    t0, c0 = time.perf_counter(), os.times()
    for i in range(3, steps + 3):
        train_step(ctx, batches[i], i + 1)
    t1, c1 = time.perf_counter(), os.times()
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
    return {"keep_freed_memory": keep, "trim_every_steps": cfg.train.trim_every_steps,
            "rss_end_mib": rss / 1024, "step_ms": (t1 - t0) / steps * 1000, "user_s": c1.user - c0.user,
            "system_s": c1.system - c0.system, "peak_rss_mib": hwm / 1024}


def child(data: str, config: str, steps: int, keep: bool, overrides: list[str] = ()) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_allocator", "--child", "--data", data,
                          "--config", config, "--steps", str(steps), "--keep", str(int(keep)),
                          *[x for kv in overrides for x in ("--set", kv)]],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_data(cache: Path) -> str:
    from benchmarks.common import prepared
    src = ROOT.parent / "shared" / "data" / "amazon-beauty"
    if src.is_dir():
        try:
            return str(prepared("beauty-wl", "s3rec", src, cache, {"embed": "wordllama"}))
        except Exception as e:  # noqa: BLE001 - no text extra: the synthetic stand-in below
            print(f"Beauty with WordLlama unavailable ({e}); synthetic data instead", flush=True)
    from raygr.data.prepare import prepare
    out = cache / "synthetic-beauty-shape"
    if not (out / "manifest.json").is_file():
        prepare("synthetic", None, out, options={"num_users": "22363", "num_items": "12101", "seed": "0"})
    return str(out)


def summarize(rows: list[dict]) -> dict:
    """Per pair: wall-time ratio (off / on) and CPU-time ratio; the latter holds when the load changes
    between the two processes of a pair (a process waiting for a core has wall time but no CPU time)."""
    off, on = rows[::2], rows[1::2]
    wall = [a["step_ms"] / b["step_ms"] for a, b in zip(off, on, strict=True)]
    cpu = [(a["user_s"] + a["system_s"]) / (b["user_s"] + b["system_s"]) for a, b in zip(off, on, strict=True)]
    return {"wall_speedup_per_pair": [round(x, 3) for x in wall],
            "wall_speedup_median": round(statistics.median(wall), 3),
            "cpu_time_ratio_per_pair": [round(x, 3) for x in cpu],
            "cpu_time_ratio_median": round(statistics.median(cpu), 3),
            "system_s_off": [round(r["system_s"], 2) for r in off],
            "system_s_on": [round(r["system_s"], 2) for r in on],
            "peak_rss_mib_off": [round(r["peak_rss_mib"]) for r in off],
            "peak_rss_mib_on": [round(r["peak_rss_mib"]) for r in on], "load_avg_end": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--config", default="jobs/configs/beauty_joint.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--keep", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--trim", action="store_true", help="compare never trimming with trimming (both keep)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.data, args.config, args.steps, bool(args.keep), args.set)))
        return
    data = args.data or default_data(Path(args.cache))
    if args.trim:
        rows = []
        for pair in range(args.pairs):
            for every in (0, 100):
                r = child(data, args.config, args.steps, True, [*args.set, f"train.trim_every_steps={every}"])
                rows.append({"pair": pair, **r})
                print(f"pair {pair} trim_every_steps={every:3d} {r['step_ms']:7.0f} ms/step  "
                      f"user {r['user_s']:5.1f} s  "
                      f"system {r['system_s']:5.1f} s  peak RSS {r['peak_rss_mib']:6.0f} MiB  "
                      f"RSS at the end {r['rss_end_mib']:6.0f} MiB", flush=True)
        write_result("allocator_trim", {"data": data, "config": args.config, "overrides": args.set,
                                        "steps": args.steps, "rows": rows,
                                        "command": " ".join(["python -m benchmarks.bench_allocator", *sys.argv[1:]])})
        return
    rows = []
    for pair in range(args.pairs):
        for keep in (False, True):
            r = child(data, args.config, args.steps, keep)
            rows.append({"pair": pair, **r})
            print(f"pair {pair} keep_freed_memory={keep!s:5s} {r['step_ms']:7.0f} ms/step  user {r['user_s']:5.1f} s  "
                  f"system {r['system_s']:5.1f} s  peak RSS {r['peak_rss_mib']:6.0f} MiB", flush=True)
    summary = summarize(rows)
    print(json.dumps(summary), flush=True)
    write_result("allocator", {"data": data, "config": args.config, "steps": args.steps, "rows": rows,
                               "summary": summary})


if __name__ == "__main__":
    main()
