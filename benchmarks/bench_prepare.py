"""Benchmark ``prepare`` on a large Parquet table: the in-memory path vs the Ray Data path.

    python benchmarks/bench_prepare.py          # >= 5 M interactions -> benchmarks/results/prepare.json
    python benchmarks/bench_prepare.py --users 20000 --out /tmp/bench.json      # a quick smoke run

The table is the synthetic generator's data (``raygr.data.synthetic.generate``) with its rows shuffled
(so the per-user time sort does real work), integer user ids, string item ids and int64 timestamps,
written as several Parquet files plus an item table with titles. Each path runs in its own
subprocess, so the peak memory of one does not hide in the other's: ``driver_peak_rss`` is the
subprocess's own high-water mark (``getrusage``), ``tree_peak_rss`` the highest sum of resident
memory over the subprocess and all its descendants (Ray's GCS, raylet and workers), sampled from
/proc every 0.2 s; shared pages (the object store) count once per process that maps them, so it is
an upper bound.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"
OPTIONS = {"user": "user", "item": "item", "time": "ts", "text": "title", "item_key": "item"}


def write_table(root: Path, num_users: int, num_items: int, num_files: int, seed: int) -> dict:
    from raygr.data.synthetic import generate

    items, seqs = generate(num_users=num_users, num_items=num_items, seed=seed)
    n = len(seqs.items)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    user = np.repeat(np.arange(seqs.num_users, dtype=np.int64) * 7 + 1000, seqs.lengths())[perm]
    item_ids = np.asarray(items.item_id)
    table = pa.table({"user": user, "item": pa.array(item_ids[seqs.items[perm] - 1]),
                      "ts": seqs.timestamps[perm]})
    (root / "events").mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(n), num_files)):
        pq.write_table(table.take(pa.array(part)), root / "events" / f"part-{k:03d}.parquet")
    pq.write_table(pa.table({"item": pa.array(items.item_id), "title": pa.array(items.title)}),
                   root / "items.parquet")
    size = sum(f.stat().st_size for f in (root / "events").iterdir())
    return {"interactions": n, "users": seqs.num_users, "items": len(items), "files": num_files,
            "parquet_bytes": size}


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of ``root_pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def run_path(root: Path, engine: str, num_shards: int) -> dict:
    """Run one path in a subprocess and sample its process tree's memory meanwhile."""
    out = root / f"out-{engine}"
    cmd = [sys.executable, __file__, "--child", engine, "--root", str(root), "--num-shards", str(num_shards)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} path failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["tree_peak_rss_mb"] = round(peak[0] / 2**20, 1)
    result["output"] = str(out)
    return result


def child(engine: str, root: Path, num_shards: int) -> None:
    """In the subprocess: time prepare() (Ray start-up timed separately) and print one JSON line."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from raygr.data.prepare import prepare

    phases: dict[str, float] = {}

    class Phases(logging.Handler):  # the Ray path logs each step's duration
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "phase"):
                phases[record.phase] = round(record.seconds, 2)

    logger = logging.getLogger("raygr.distributed.prepare")
    logger.setLevel(logging.INFO)
    logger.addHandler(Phases())
    ray_init_s = 0.0
    if engine == "ray":
        from raygr.distributed.session import ray_session

        t0 = time.perf_counter()
        session = ray_session(log_to_driver=False)
        session.__enter__()
        ray_init_s = time.perf_counter() - t0
    opts = {**OPTIONS, "items": str(root / "items.parquet"), "use_ray": str(engine == "ray").lower()}
    t0 = time.perf_counter()
    m = prepare("table", root / "events", root / f"out-{engine}", options=opts, num_shards=num_shards)
    wall = time.perf_counter() - t0
    rows = m["source"]["rows"]
    print(json.dumps({
        "engine": engine, "wall_s": round(wall, 2), "ray_init_s": round(ray_init_s, 2),
        "rows_per_s": round(rows / wall), "rows": rows,
        "duplicates_dropped": m["source"]["duplicates_dropped"],
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "phases_s": phases,
        "fingerprint": m["fingerprint"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=520_000)  # ~10 interactions each: > 5 M rows
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--num-shards", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", choices=["memory", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.root, args.num_shards)

    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews the timings
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = write_table(root, args.users, args.items, args.files, args.seed)
        data["write_s"] = round(time.perf_counter() - t0, 2)
        print(f"table: {data}", flush=True)
        paths = {}
        for engine in ("memory", "ray"):
            paths[engine] = run_path(root, engine, args.num_shards)
            print(f"{engine}: {paths[engine]}", flush=True)
        same = paths["memory"]["fingerprint"] == paths["ray"]["fingerprint"]
    result = {
        "benchmark": "prepare (table format, Parquet input, items table with titles)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "command": "python benchmarks/bench_prepare.py " + " ".join(sys.argv[1:]),
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "input": data, "num_shards": args.num_shards, "paths": paths, "same_dataset": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"same dataset from both paths: {same}; wrote {args.out}")


if __name__ == "__main__":
    main()
