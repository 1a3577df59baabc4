"""Memory and throughput of one Ray Train epoch as the data grows over a fixed catalogue.

    python benchmarks/bench_scale.py                      # 1M, 5M and 20M interactions (long: hours on 2 cores)
    python benchmarks/bench_scale.py --sizes 0.05M        # a quick check of the script
    nice -n 19 python benchmarks/bench_scale.py --sizes 1M,5M

For each size: a synthetic dataset (``raygr.data.synthetic``) with about that many interactions over the
same 50k-item catalogue is prepared once into ``--data-dir``; then, in a fresh process with its own
local Ray, one epoch of SASRec with 2 Ray Train workers (``build_trainer(...).fit()``: the training and
the per-epoch validation on a fixed sample of users; the final test evaluation of ``raygr train`` is not
part of it). A thread samples every ``--interval`` seconds:

- per Train worker (processes of this Ray whose command line names ``RayTrainWorker``): peak RSS, read
  from the kernel's high-water mark (VmHWM), so a peak between two samples is not missed; and the sampled
  peaks of its private memory (RssAnon) and of the shared object-store pages it has touched (RssShmem,
  which RSS counts too: windows read from the object store show up there, not as the worker's own);
- the driver: its own VmHWM;
- the object store: "Plasma memory usage" of ``ray memory --stats-only`` (its peak over the samples);
- the other Ray worker processes (Ray Data read/window tasks, the controller): the peak of their summed RSS.

The goal (issue 23): per-worker peak memory flat (at most +10%) from the smallest to the largest size.
Results go to benchmarks/results/scale.json (sizes already there are kept unless measured again).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, write_result  # noqa: E402

MODEL = ["model.preset=sasrec", "model.dim=16", "model.num_layers=1", "model.num_heads=1",
         "data.max_history=20", "data.num_eval_users=2000", "train.epochs=1", "train.batch_size=128",
         "train.num_workers=2", "train.cpus_per_worker=1", "train.log_every=0", "train.patience=1"]
AVG_LEN = 10.0  # synthetic mean sequence length: users = interactions / mean length


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r}: a number of interactions such as 1M, 500k or 20000")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()])


def label(n: int) -> str:
    return f"{n / 10**6:g}M" if n >= 10**6 else f"{n / 10**3:g}k"


def prepare(size: int, num_items: int, data_dir: Path) -> Path:
    """The synthetic dataset of about ``size`` interactions (kept in ``data_dir`` for later runs)."""
    from raygr.data.dataset import write_dataset
    from raygr.data.synthetic import generate

    out = data_dir / f"synthetic-{label(size)}-{num_items}"
    if (out / "manifest.json").is_file():
        return out
    # Lengths are min_len + geometric, capped at max_len: their mean is a little under avg_len.
    probe = generate(num_users=20_000, num_items=num_items, seed=0, avg_len=AVG_LEN)[1]
    users = max(1, round(size / (len(probe.items) / probe.num_users)))
    t0 = time.perf_counter()
    items, seqs = generate(num_users=users, num_items=num_items, seed=0, avg_len=AVG_LEN)
    write_dataset(out, items, seqs, source={"format": "synthetic", "seed": 0, "bench": "scale"},
                  num_shards=16, name=out.name)
    print(f"prepared {out}: {users:,} users, {len(seqs.items):,} interactions in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Sampler(threading.Thread):
    """Peaks of this driver's Ray processes while training runs (see the module docstring)."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.workers: dict[int, int] = {}  # pid -> peak VmHWM (kB)
        self.private: dict[int, int] = {}  # pid -> peak RssAnon (kB): the worker's own memory
        self.shmem: dict[int, int] = {}  # pid -> peak RssShmem (kB): object-store pages it touched
        self.others_peak_kb = 0
        self.store_peak_mib = 0.0
        self.samples = 0

    def run(self) -> None:
        from raygr.distributed.session import _cmdline, ray_descendants

        last_store = 0.0
        while not self.stop.is_set():
            others = 0
            for pid in ray_descendants():
                cmd = _cmdline(pid)
                if "RayTrainWorker" in cmd:
                    self.workers[pid] = max(self.workers.get(pid, 0), _status_kb(pid, "VmHWM"))
                    self.private[pid] = max(self.private.get(pid, 0), _status_kb(pid, "RssAnon"))
                    self.shmem[pid] = max(self.shmem.get(pid, 0), _status_kb(pid, "RssShmem"))
                elif "ray::" in cmd or "default_worker" in cmd:
                    others += _status_kb(pid, "VmRSS")
            self.others_peak_kb = max(self.others_peak_kb, others)
            if time.monotonic() - last_store > 5.0:
                self.store_peak_mib = max(self.store_peak_mib, object_store_mib())
                last_store = time.monotonic()
            self.samples += 1
            self.stop.wait(self.interval)


def object_store_mib() -> float:
    import ray
    from ray._private.internal_api import memory_summary

    try:
        # This driver's own cluster: without an address Ray picks the newest one on the machine.
        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception:  # the cluster is shutting down
        return 0.0
    m = re.search(r"Plasma memory usage (\d+) MiB", text)
    return float(m.group(1)) if m else 0.0


def run_one(dataset: Path, overrides: list[str], interval: float, stream: bool) -> dict[str, Any]:
    """One epoch on ``dataset`` in this process (a fresh local Ray); returns the measurements."""
    import raygr.distributed.train as train
    from raygr.config import load_config
    from raygr.data.dataset import read_manifest
    from raygr.distributed.session import ray_session
    from raygr.distributed.train import build_trainer, train_windows, windows_fit_in_store
    from raygr.training.checkpoint import prepare_run_dir

    if stream:
        train.CACHE_FRACTION = 0.0  # never materialise: the bounded-memory path of a large dataset

    cfg = load_config(None, [*MODEL, *overrides])
    manifest = read_manifest(dataset)
    run_dir = prepare_run_dir(Path(tempfile.mkdtemp(prefix="raygr-scale-run-")))
    with ray_session(num_cpus=4, log_to_driver=True):
        n_windows = train_windows(cfg, dataset, manifest)
        materialised = windows_fit_in_store(cfg, n_windows)
        sampler = Sampler(interval)
        sampler.start()
        t0 = time.perf_counter()
        try:
            result = build_trainer(cfg, dataset, run_dir, manifest, log=lambda m: print(m, flush=True)).fit()
        finally:
            sampler.stop.set()
            sampler.join()
        wall = time.perf_counter() - t0
    m = result.metrics or {}
    def mib(per_pid: dict[int, int]) -> list[float]:
        return sorted(round(kb / 1024, 1) for kb in per_pid.values())

    worker_mib = mib(sampler.workers)
    return {
        "interactions": int(manifest["num_interactions"]), "users": int(manifest["num_users"]),
        "items": int(manifest["num_items"]), "train_windows": n_windows,
        "input": "materialised in the object store" if materialised else "streamed",
        "fit_wall_s": round(wall, 1),
        "samples_per_s": round(m["samples_per_s"], 1) if m.get("samples_per_s") else None,
        "windows_per_s_wall": round(n_windows / wall, 1),
        "input_wait_s": m.get("input_wait_s"), "valid_ndcg@10": m.get("valid_ndcg@10"),
        "worker_peak_rss_mib": worker_mib,
        "worker_peak_private_mib": mib(sampler.private), "worker_peak_shmem_mib": mib(sampler.shmem),
        "driver_peak_rss_mib": round(_status_kb(os.getpid(), "VmHWM") / 1024, 1),
        "object_store_peak_mib": sampler.store_peak_mib,
        "other_ray_processes_peak_rss_mib": round(sampler.others_peak_kb / 1024, 1),
        "samples_taken": sampler.samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,5M,20M", help="comma-separated interaction counts (1M, 500k, ...)")
    ap.add_argument("--items", type=int, default=50_000, help="catalogue size, the same for every size")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "raygr-scale-data")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--stream", action="store_true",
                    help="stream the windows even when they would fit in the object store (no materialising)")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: measure this dataset, print JSON
    args = ap.parse_args()

    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args.one, args.set, args.interval, args.stream)), flush=True)
        return

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scale.json"
    runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    for size in sizes:
        dataset = prepare(size, args.items, args.data_dir)
        # A process per size: its driver peak and its Ray are its own.
        cmd = [sys.executable, __file__, "--one", str(dataset), "--interval", str(args.interval),
               *(["--stream"] if args.stream else []), *[x for kv in args.set for x in ("--set", kv)]]
        print(f"-- {label(size)}: {' '.join(cmd)}", flush=True)
        log_path = args.data_dir / f"run-{label(size)}{'-streamed' if args.stream else ''}.log"
        for attempt in range(3):
            with open(log_path, "w") as log_file:  # Ray's and the workers' lines; stdout carries the result
                proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True)
            # On a loaded machine Ray's node start can exceed its fixed 30 s wait: try again.
            if proc.returncode == 0 or "timed out during startup" not in log_path.read_text():
                break
            print(f"Ray's start timed out (attempt {attempt + 1}); trying again", flush=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-4000:])
            raise SystemExit(f"the {label(size)} run failed (exit {proc.returncode}); see {log_path}")
        # Runs with other overrides (a larger batch, say) are rows of their own, compared among themselves.
        key = label(size) + (" streamed" if args.stream else "") + (f" [{' '.join(args.set)}]" if args.set else "")
        runs[key] = {**json.loads(lines[-1][len("RESULT "):]), "load_avg_1m": os.getloadavg()[0],
                     "overrides": list(args.set),
                     "command": " ".join(["python benchmarks/bench_scale.py", "--sizes", label(size),
                                          *(["--stream"] if args.stream else []),
                                          *[x for kv in args.set for x in ("--set", kv)]])}
        print(json.dumps(runs[key], indent=2), flush=True)
        write_result("scale", {"command": " ".join(["python benchmarks/bench_scale.py", *sys.argv[1:]]),
                               "config": MODEL, "runs": runs, "summary": summary(runs)})


def summary(runs: dict[str, Any]) -> dict[str, Any]:
    """Per input mode and overrides: per-worker peak RSS (and private memory) of the largest size over the
    smallest's (the goal: at most 1.10)."""
    out = {}
    def group(r: dict[str, Any]) -> str:
        return r["input"] + (f" [{' '.join(r['overrides'])}]" if r.get("overrides") else "")

    for mode in sorted({group(r) for r in runs.values()}):
        order = sorted((r for r in runs.values() if group(r) == mode), key=lambda r: r["interactions"])
        if len(order) < 2:
            continue
        lo, hi = order[0], order[-1]
        ratio = {k: round(max(hi[k]) / max(lo[k]), 3) for k in ("worker_peak_rss_mib", "worker_peak_private_mib")
                 if lo.get(k) and hi.get(k)}
        out[mode] = {"from": lo["interactions"], "to": hi["interactions"], "ratio": ratio,
                     "flat_within_10pct": {k: v <= 1.10 for k, v in ratio.items()}}
    return out


if __name__ == "__main__":
    main()
