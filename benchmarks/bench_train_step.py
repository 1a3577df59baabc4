"""Training-step throughput of each preset (pure PyTorch, no Ray), with model FLOPs per sample.

    python benchmarks/bench_train_step.py [--device cuda] [--steps 20]

Data: Amazon Beauty from ../shared/data when present, else a synthetic set of the same shape.
A sample is one training window (a user history of up to data.max_history items, every position
a target). FLOPs are counted by torch's FlopCounterMode over forward + backward of one step
(matmuls/attention; elementwise ops are not counted), so the achieved rate is a lower bound.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_beam import dataset
from benchmarks.common import write_result
from raygr.config import load_config
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, initialise, train_step

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def bench(preset: str, ds, device: str, steps: int, batch_size: int) -> dict:
    cfg = load_config(None, [f"model.preset={preset}", f"train.batch_size={batch_size}", "train.tokenizer_epochs=1"])
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    model = build_model(cfg, ds).to(device)
    initialise(model, cfg, log=lambda s: None)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / batch_size), device=device, verbose=False)
    it = iterate_windows(w, batch_size, seed=0, epoch=0)
    batches = [TrainBatch.from_mapping(next(it), device) for _ in range(steps + 3)]
    for i in range(3):  # warm-up (allocator, autotuning)
        train_step(ctx, batches[i], i + 1)
    flops = FlopCounterMode(display=False)
    with flops:
        train_step(ctx, batches[3], 4)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(4, steps + 3):
        train_step(ctx, batches[i], i + 1)
    sync()
    dt = (time.perf_counter() - t0) / (steps - 1)
    per_sample = flops.get_total_flops() / batch_size
    out = {"preset": preset, "batch_size": batch_size, "step_ms": dt * 1000, "samples_per_s": batch_size / dt,
           "targets_per_sample": float((w["target"] > 0).sum() / len(w["target"])),
           "gflops_per_sample": per_sample / 1e9, "achieved_gflops_per_s": per_sample * batch_size / dt / 1e9}
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            out["fraction_of_peak"] = out["achieved_gflops_per_s"] / (peak * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--presets", default="joint,tiger,sasrec")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    args = ap.parse_args()
    ds, name = dataset(Path(args.cache))
    rows = []
    for preset in args.presets.split(","):
        r = bench(preset, ds, args.device, args.steps, args.batch_size)
        rows.append(r)
        print(f"{preset:7s} {r['step_ms']:8.1f} ms/step {r['samples_per_s']:8.0f} samples/s "
              f"{r['gflops_per_sample']:.4f} GFLOP/sample {r['achieved_gflops_per_s']:.1f} GFLOP/s", flush=True)
    write_result(f"train_step_{args.device.split(':')[0]}", {"dataset": name, "device": args.device, "rows": rows})


if __name__ == "__main__":
    main()
