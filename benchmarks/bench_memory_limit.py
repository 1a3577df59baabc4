"""A training run on a worker node whose memory limit is smaller than the prepared data (issue 23).

    python -m benchmarks.bench_memory_limit --interactions 200k --limit-mib 3072      # quick: sizes the node
    python -m benchmarks.bench_memory_limit --interactions 60M --limit-mib 1800       # windows > the limit
    python -m benchmarks.bench_memory_limit --interactions 250M --avg-len 40 --limit-mib 1800  # files > it too

The cluster is benchmarks/multinode.py's two `ray start` nodes on loopback. The worker node runs inside a
memory cgroup (benchmarks/memlimit.py), as a Ray pod under a Kubernetes memory limit: its raylet, agents,
object store and every worker it starts are charged to it, and past the limit the kernel OOM-kills one
of them. `raygr train --address GCS` runs one epoch of a small SASRec with 2 Ray Train workers placed
one per node (train.placement_strategy=SPREAD), so one of them lives under the limit, on data larger than
the limit: its training windows (int64 input + target, what a worker that materialised them would hold)
and, at the largest size, its prepared files (the result records both comparisons). It passes when the
run exits 0 with no OOM kill in the group.

Measured: the group's peak usage (the kernel's high-water mark, page cache included), the limited Train
worker's peak RSS (VmHWM), the head's Train worker's peak RSS, the prepared data on disk, the windows'
bytes, wall time, the run's metrics. Results: benchmarks/results/memory_limit.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_drills import Driver
from benchmarks.bench_scale import AVG_LEN, _status_kb, label, parse_size, prepare
from benchmarks.common import write_result
from benchmarks.multinode import Cluster, two_node_cluster
from benchmarks.synthetic_chunks import write_chunked
from raygr.config import load_config
from raygr.data.dataset import length_histogram
from raygr.data.windows import count_train_windows

MIB = 2**20
# A small model and a small catalogue: the point is the data's volume, and the 2 cores must get through
# an epoch of it. 2 Train workers of 1 CPU; each node has 3 logical CPUs, so Ray Data's read and window
# tasks find CPUs beside the workers (RAY_NOTES: more logical CPUs than cores, or Train + Data deadlock).
MODEL = ["model.preset=sasrec", "model.dim=16", "model.num_layers=1", "model.num_heads=1",
         "data.max_history=20", "data.num_eval_users=2000", "train.epochs=1", "train.batch_size=1024",
         "train.num_workers=2", "train.cpus_per_worker=1", "train.placement_strategy=SPREAD",
         "train.log_every=200", "train.patience=1"]
NODE_CPUS = 3


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class NodeSampler(threading.Thread):
    """Peak VmHWM of each node's Ray Train worker processes while the run goes on."""

    def __init__(self, cluster: Cluster, interval: float = 0.5):
        super().__init__(daemon=True)
        self.cluster, self.interval = cluster, interval
        self.stop = threading.Event()
        self.peak_kb: dict[str, dict[int, int]] = {}  # node -> pid -> VmHWM

    def run(self) -> None:
        while not self.stop.is_set():
            for name, node in self.cluster.nodes.items():
                if not node.running():
                    continue
                for pid in node.workers(r"^ray::RayTrainWorker"):
                    seen = self.peak_kb.setdefault(name, {})
                    seen[pid] = max(seen.get(pid, 0), _status_kb(pid, "VmHWM"))
            self.stop.wait(self.interval)


def prepare_data(interactions: int, items: int, data_dir: Path, avg_len: float) -> Path:
    """The scale benchmark's dataset; with another mean length, one generated a chunk of users at a time
    (benchmarks/synthetic_chunks.py: the 200M+ interactions whose files exceed the limit do not fit
    ``generate``'s memory in one piece; longer sequences also mean fewer users to evaluate)."""
    if avg_len == AVG_LEN:
        return prepare(interactions, items, data_dir)
    out = data_dir / f"synthetic-{label(interactions)}-{items}-len{avg_len:g}"
    if not (out / "manifest.json").is_file():
        write_chunked(out, interactions, items, avg_len)
    return out


def run(interactions: int, items: int, limit_mib: int, data_dir: Path, workdir: Path,
        extra: list[str], log=print, avg_len: float = AVG_LEN) -> dict[str, Any]:
    dataset = prepare_data(interactions, items, data_dir, avg_len)
    manifest = json.loads((dataset / "manifest.json").read_text())
    # The training windows as a worker that materialised them would hold: int64 input + target, [n, T].
    history = load_config(None, [*MODEL, *extra]).data.max_history
    windows_bytes = 16 * count_train_windows(length_histogram(dataset, manifest), history) * history
    disk = dir_bytes(dataset)
    log(f"data: {manifest['num_interactions']:,} interactions, {disk / MIB:,.0f} MiB prepared, "
        f"~{windows_bytes / MIB:,.0f} MiB of training windows; worker node limit {limit_mib} MiB")
    run_dir = workdir / "run"
    sets = [x for kv in [*MODEL, *extra] for x in ("--set", kv)]
    with two_node_cluster(workdir / "cluster", head_cpus=NODE_CPUS, worker_cpus=NODE_CPUS,
                          worker_memory_bytes=limit_mib * MIB, log=log) as cluster:
        group = cluster.nodes["worker"].memory
        assert group is not None
        sampler = NodeSampler(cluster)
        sampler.start()
        cmd = [sys.executable, "-m", "raygr.cli", "train", "--data", str(dataset), "--output", str(run_dir),
               "--address", cluster.address, *sets]
        driver = Driver("train", cmd, workdir / "train.log", cluster.env)
        t0 = time.monotonic()
        try:
            rc = driver.process.wait()
        finally:
            driver.stop()
            sampler.stop.set()
            sampler.join()
        wall = time.monotonic() - t0
        stats = group.stats()
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    peaks = {node: sorted(round(kb / 1024, 1) for kb in pids.values()) for node, pids in sampler.peak_kb.items()}
    out = {
        "interactions": int(manifest["num_interactions"]), "users": int(manifest["num_users"]),
        "avg_sequence_length": round(manifest["num_interactions"] / manifest["num_users"], 2),
        "items": int(manifest["num_items"]),
        "prepared_mib": round(disk / MIB, 1), "training_windows_mib": round(windows_bytes / MIB, 1),
        "worker_node_limit_mib": limit_mib, "worker_node_cgroup": stats,
        "train_worker_peak_rss_mib": peaks, "exit_status": rc, "wall_s": round(wall, 1),
        # SPREAD put one worker on each node: one of them trained under the limit
        "train_workers_per_node": {node: len(pids) for node, pids in peaks.items()},
        "completed": rc == 0 and stats["oom_kills"] == 0 and len(peaks.get("worker", [])) >= 1,
        "prepared_larger_than_limit": disk > limit_mib * MIB,
        "windows_larger_than_limit": windows_bytes > limit_mib * MIB,
        "samples_per_s": metrics.get("train", {}).get("samples_per_s"),
        "valid_ndcg@10": metrics.get("valid", {}).get("ndcg@10"), "train_log": str(driver.log),
    }
    log(json.dumps(out, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", type=parse_size, default=parse_size("250M"))
    ap.add_argument("--avg-len", type=float, default=AVG_LEN,
                    help="users' mean sequence length (the synthetic geometric's; capped at 50)")
    ap.add_argument("--items", type=int, default=2000, help="catalogue size (small: the data's volume is the point)")
    ap.add_argument("--limit-mib", type=int, default=1800, help="memory limit of the worker node")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "raygr-scale-data")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="raygr-memlimit-"))
    out = run(args.interactions, args.items, args.limit_mib, args.data_dir, workdir, args.set,
              avg_len=args.avg_len)
    key = f"{label(args.interactions)} limit {args.limit_mib} MiB"
    if args.avg_len != AVG_LEN:
        key += f" avg length {args.avg_len:g}"
    path = Path(__file__).resolve().parent / "results" / "memory_limit.json"
    runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    runs[key] = out
    write_result("memory_limit", {"command": " ".join(["python -m benchmarks.bench_memory_limit", *sys.argv[1:]]),
                                  "config": [*MODEL, *args.set], "default_avg_sequence_length": AVG_LEN, "runs": runs})
    if not out["completed"]:
        raise SystemExit(f"the run did not complete under the limit (exit {out['exit_status']}, OOM kills "
                         f"{out['worker_node_cgroup']['oom_kills']}, Train workers per node "
                         f"{out['train_workers_per_node']}); see {out['train_log']}")


if __name__ == "__main__":
    main()
