"""Load benchmark of the Serve deployment graph over real HTTP on 127.0.0.1 (bounded: stops by itself).

    python benchmarks/bench_serve.py                                   # prepares + trains Beauty if needed
    python benchmarks/bench_serve.py --checkpoint /tmp/raygr-bench/run-joint --data /tmp/raygr-bench/beauty
    python benchmarks/bench_serve.py --quick                           # short phases (a smoke run)
    python benchmarks/bench_serve.py --modes batched --no-drills       # phase 1-2 batched only (a before/after)

Phases (each bounded in time and in requests), writing benchmarks/results/serve.json:
  1. latency: 1 client, then 16 concurrent clients (closed loop), batched (serve.max_batch_size=32,
     serve.batch_wait_timeout_s=--batch-wait-s)
  2. throughput with 16 and with 64 clients (64 saturates both modes), batched vs unbatched
     (max_batch_size=1), one replica per role; CPU milliseconds per request by process (/proc)
  3. steady: an open-loop constant rate (half the batched throughput) for 60 s, counting 5xx
  4. failure drills under load: a Retriever replica is killed (``ray.kill``) with 2 replicas per model role,
     then with 1; the share of failed requests and the time until Serve has replaced the replica

Requests are the test split's histories (Beauty: 22k users), k=10, serve.default_candidates=50. Without
--checkpoint, the dataset is prepared (``raygr data prepare --format s3rec``) and a short run is trained
(``raygr train``, --epochs, default 2: a serving benchmark needs a real model, not a good one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, write_result  # noqa: E402
from raygr.config import ServeConfig  # noqa: E402
from raygr.serving.client import Client  # noqa: E402

WORK = Path("/tmp/raygr-bench")


@dataclass
class Load:
    """Outcome of one load phase."""

    latencies_ms: list[float] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)  # completion times of 200s (monotonic)
    fail_times: list[float] = field(default_factory=list)  # completion times of everything else
    status: dict[str, int] = field(default_factory=dict)  # "200", "503", "error:ConnectionError", ...
    wall_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: str, ms: float, done: float) -> None:
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1
            if status == "200":
                self.latencies_ms.append(ms)
                self.ok_times.append(done)
            else:
                self.fail_times.append(done)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        total = sum(self.status.values())
        failed = total - self.status.get("200", 0)
        return {"requests": total, "ok": self.status.get("200", 0), "failed": failed,
                "failed_share": failed / max(total, 1),
                "status_counts": dict(sorted(self.status.items())),
                "server_5xx": sum(v for k, v in self.status.items() if k.startswith("5")),
                "throughput_rps": self.status.get("200", 0) / max(self.wall_s, 1e-9), "wall_s": self.wall_s,
                "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def _send(client: Client, body: dict[str, Any], load: Load) -> None:
    t0 = time.perf_counter()
    try:
        status, _ = client.post("/recommend", body)
        key = str(status)
    except Exception as e:  # a benchmark counts every failure, whatever it is
        key = f"error:{type(e).__name__}"
        client.close()
    load.record(key, (time.perf_counter() - t0) * 1000, time.monotonic())


def closed_loop(url: str, bodies: list[dict], clients: int, seconds: float, max_requests: int) -> Load:
    """``clients`` threads, each sending its next request when the previous one is answered."""
    load, stop_at, sent = Load(), time.monotonic() + seconds, [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        client, i = Client(url, timeout_s=30), w
        while time.monotonic() < stop_at:
            with lock:
                if sent[0] >= max_requests:
                    break
                sent[0] += 1
            _send(client, bodies[i % len(bodies)], load)
            i += clients
        client.close()

    return _run_threads(worker, clients, load)


def open_loop(url: str, bodies: list[dict], rate: float, seconds: float, threads: int = 8,
              during: Any = None) -> Load:
    """A constant offered rate: request j is due at start + j/rate; ``threads`` senders share the schedule.

    ``during(start)`` runs in its own thread meanwhile (the failure drills kill a replica from there).
    """
    load = Load()
    n = int(rate * seconds)
    start = time.monotonic() + 0.2
    give_up = start + seconds + 30  # a stalled service cannot keep the benchmark running
    next_j, lock = [0], threading.Lock()

    def worker(w: int) -> None:
        client = Client(url, timeout_s=30)
        while True:
            with lock:
                j = next_j[0]
                next_j[0] += 1
            if j >= n or time.monotonic() > give_up:
                break
            delay = start + j / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            _send(client, bodies[j % len(bodies)], load)
        client.close()

    side = threading.Thread(target=during, args=(start,), daemon=True) if during else None
    if side:
        side.start()
    _run_threads(worker, threads, load)
    if side:
        side.join(timeout=60)
    return load


def _run_threads(worker: Any, n: int, load: Load) -> Load:
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.wall_s = time.perf_counter() - t0
    return load


def model_roles_only(bodies: list[dict], ds: Any, in_flight: int, seconds: float, max_requests: int
                     ) -> dict[str, Any]:
    """Retriever then Ranker through their DeploymentHandles, ``in_flight`` requests at a time: the model
    deployments' throughput without the HTTP proxy and the ingress (what batching acts on)."""
    from ray import serve

    from raygr.distributed.serve import APP_NAME

    retriever = serve.get_deployment_handle("Retriever", app_name=APP_NAME)
    ranker = serve.get_deployment_handle("Ranker", app_name=APP_NAME)
    index = {item_id: i + 1 for i, item_id in enumerate(ds.items.item_id)}
    hist = [[index[x] for x in b["history"]] for b in bodies]
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds and done < max_requests:
        wave = [hist[(i + j) % len(hist)] for j in range(in_flight)]
        i += in_flight
        cands = [r.result()[0] for r in [retriever.retrieve.remote(h, 50) for h in wave]]
        for r in [ranker.rank.remote(h, c) for h, c in zip(wave, cands)]:
            r.result()
        done += in_flight
    wall = time.perf_counter() - t0
    return {"in_flight": in_flight, "requests": done, "wall_s": wall, "throughput_rps": done / wall}


def batch_stats() -> dict[str, dict[str, float]]:
    """Cumulative batch sizes of the (single) Retriever and Ranker replicas."""
    from ray import serve

    from raygr.distributed.serve import APP_NAME

    return {role: serve.get_deployment_handle(role, app_name=APP_NAME).batch_stats.remote().result()
            for role in ("Retriever", "Ranker")}


def batch_sizes(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean batch size per role between two ``batch_stats()`` snapshots."""
    out = {}
    for role in after:
        b = after[role]["batches"] - before[role]["batches"]
        out[role] = (after[role]["requests"] - before[role]["requests"]) / max(b, 1)
    return out


def model_compute(checkpoint: Path, data: Path, bodies: list[dict], ds: Any) -> dict[str, float]:
    """In-process model cost per request (retrieve 50 + rank, one thread): batch 1 vs 32, no Serve at all;
    the history encoded by each stage (``encode_twice``) and once, handed from retrieval to ranking."""
    import torch

    from raygr.serving import engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a replica (Ray sets OMP_NUM_THREADS to its num_cpus)
    try:
        sm = engine.load_serving_model(str(checkpoint), str(data))
        index = {item_id: i + 1 for i, item_id in enumerate(ds.items.item_id)}
        hist = [[index[x] for x in b["history"]] for b in bodies[:256]]

        def twice(h: list[list[int]]) -> None:
            got = engine.retrieve_batch(sm, h, [50] * len(h))
            engine.rank_batch(sm, h, [items for items, _ in got])

        def once(h: list[list[int]]) -> None:
            got, states = engine.retrieve_encoded(sm, h, [50] * len(h))
            engine.rank_batch(sm, h, [items for items, _ in got], states=states)

        ways = {"encode_twice": twice}
        if hasattr(engine, "retrieve_encoded"):  # older raygr: only the first
            ways["encode_once"] = once
        out = {}
        for way, fn in ways.items():
            for size in (1, 32):
                best = float("inf")
                for _pass in range(3):  # the first pass warms up; the best of the others is kept
                    t0 = time.perf_counter()
                    for s in range(0, len(hist), size):
                        fn(hist[s:s + size])
                    if _pass:
                        best = min(best, time.perf_counter() - t0)
                out[f"{way}_ms_per_request_batch_{size}"] = best / len(hist) * 1000
        return out
    finally:
        torch.set_num_threads(threads)


# Where a phase's CPU went: process groups, matched on /proc/PID/cmdline (Ray retitles its workers
# "ray::ServeReplica:APP:DEPLOYMENT", "ray::ProxyActor", ...). First match wins.
CPU_GROUPS = (("Ingress", (":Ingress",)), ("Retriever", (":Retriever",)), ("Ranker", (":Ranker",)),
              ("Serve proxy", ("ProxyActor",)), ("Serve controller", ("ServeController",)),
              ("raylet", ("raylet",)), ("GCS", ("gcs_server",)), ("other Ray processes", ("ray::", "/ray/")))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process group; the load generator is this process."""
    out = {name: 0.0 for name, _ in CPU_GROUPS} | {"load generator (this process)": 0.0}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3 of stat(5)
        used = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        if int(entry) == me:
            out["load generator (this process)"] += used
            continue
        group = next((name for name, keys in CPU_GROUPS if any(k in cmd for k in keys)), None)
        if group:
            out[group] += used
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per answered request, by process group (processes that exited are not counted)."""
    per = {k: round(1000 * (after[k] - before[k]) / max(requests, 1), 2) for k in after}
    per["total"] = round(sum(per.values()), 2)
    return per


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- setup ------------------------------------------------------------------------------------------

def ensure_checkpoint(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    data = Path(args.data)
    if not (data / "manifest.json").is_file():
        subprocess.run(["raygr", "data", "prepare", "--format", "s3rec", "--input", str(SHARED_DATA / "amazon-beauty"),
                        "--output", str(data)], check=True)
    if args.checkpoint:
        return Path(args.checkpoint), data, {"trained_here": False}
    run = WORK / "run-joint"
    if not (run / "checkpoints" / "best" / "meta.json").is_file():
        t0 = time.perf_counter()
        subprocess.run(["raygr", "train", "--data", str(data), "--output", str(run), "--set",
                        f"train.epochs={args.epochs}", "--set", "data.num_eval_users=1000"], check=True)
        return run, data, {"trained_here": True, "train_wall_s": time.perf_counter() - t0}
    return run, data, {"trained_here": False}


class Service:
    """Deploys the app with a given ServeConfig (redeploying replaces it) on the bench's local Ray."""

    def __init__(self, checkpoint: Path, data: Path, port: int, batch_wait_s: float = 0.03):
        self.checkpoint, self.data, self.port, self.batch_wait_s = checkpoint, data, port, batch_wait_s
        self.url = f"http://127.0.0.1:{port}"

    def deploy(self, **overrides: Any) -> tuple[ServeConfig, float]:
        from raygr.distributed.serve import build_app, run_app

        cfg = ServeConfig(port=self.port, **overrides)
        t0 = time.perf_counter()
        run_app(build_app(self.checkpoint, self.data, cfg), cfg, log_level="WARNING")
        Client(self.url).wait_healthy()
        return cfg, time.perf_counter() - t0


def running_replicas(deployment: str) -> int:
    from ray import serve

    from raygr.distributed.serve import APP_NAME

    st = serve.status().applications[APP_NAME].deployments[deployment]
    return int(st.replica_states.get("RUNNING", 0))


def drill(service: Service, bodies: list[dict], replicas: int, rate: float, seconds: float) -> dict[str, Any]:
    """Kill one Retriever replica a third into an open-loop run; failures and the time to recover."""
    import ray

    from raygr.distributed.serve import replica_actors

    cfg, _ = service.deploy(max_batch_size=32, batch_wait_timeout_s=service.batch_wait_s, min_replicas=replicas,
                            max_replicas=replicas)
    deadline = time.monotonic() + 60
    while running_replicas("Retriever") < replicas and time.monotonic() < deadline:
        time.sleep(0.5)
    events: dict[str, Any] = {}

    def kill_then_watch(start: float) -> None:
        time.sleep(max(0.0, start + seconds / 3 - time.monotonic()))
        victims = replica_actors("Retriever")
        events["replicas_before"] = len(victims)
        events["t_kill"] = time.monotonic()
        ray.kill(victims[0], no_restart=True)
        # Recovered: Serve reports the target number of RUNNING replicas again, a new one among them.
        time.sleep(0.5)
        while time.monotonic() < events["t_kill"] + 120:
            if running_replicas("Retriever") >= replicas and len(replica_actors("Retriever")) >= replicas:
                events["t_replaced"] = time.monotonic()
                break
            time.sleep(0.25)

    load = open_loop(service.url, bodies, rate, seconds, during=kill_then_watch)
    out = {"replicas_per_model_role": replicas, "offered_rps": rate, **load.summary()}
    t_kill = events.get("t_kill")
    if t_kill is not None:
        ok_after = [t for t in load.ok_times if t > t_kill]
        gaps = np.diff([t_kill, *ok_after]) if ok_after else np.array([np.nan])
        out["replica_replaced_s"] = (events["t_replaced"] - t_kill) if "t_replaced" in events else None
        out["first_ok_after_kill_s"] = float(ok_after[0] - t_kill) if ok_after else None
        out["longest_gap_without_answers_s"] = float(np.max(gaps))
        out["failed_before_kill"] = sum(t < t_kill for t in load.fail_times)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="run or checkpoint dir trained on --data (default: train one)")
    p.add_argument("--data", default=str(WORK / "beauty"), help="prepared Beauty dataset (prepared if missing)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the short training run when no --checkpoint")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--phase-s", type=float, default=20.0, help="seconds of each latency/throughput phase")
    p.add_argument("--steady-s", type=float, default=60.0, help="seconds of the steady run")
    p.add_argument("--drill-s", type=float, default=30.0, help="seconds of each failure drill")
    p.add_argument("--max-requests", type=int, default=20_000, help="cap on requests per phase")
    p.add_argument("--batch-wait-s", type=float, default=0.03,
                   help="serve.batch_wait_timeout_s of the batched deployments (the unbatched ones do not wait)")
    p.add_argument("--quick", action="store_true", help="5 s phases (a check that the script works)")
    p.add_argument("--modes", default="batched,unbatched",
                   help="comma-separated phases 1-2 to run: batched, unbatched (the speed-ups need both)")
    p.add_argument("--no-drills", action="store_true", help="skip phases 3-4 (the steady run and the kill drills)")
    p.add_argument("--output", default="serve", help="results name: benchmarks/results/NAME.json")
    args = p.parse_args()
    if args.quick:
        args.phase_s, args.steady_s, args.drill_s = 5.0, 10.0, 12.0

    checkpoint, data, train_info = ensure_checkpoint(args)
    from raygr.data.dataset import load_dataset
    from raygr.distributed.session import ray_session
    from raygr.serving.client import example_requests
    from raygr.training.checkpoint import read_checkpoint

    info = read_checkpoint(checkpoint)
    ds = load_dataset(data)
    bodies = [b for b, _ in example_requests(ds, info.config.data.max_history, 2000, k=10)]
    train_info["epochs"] = info.epoch
    metrics = info.path.parents[1] / "metrics.json"  # RUN_DIR/metrics.json beside checkpoints/best
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        train_info.update({"test_ndcg@10": m.get("test", {}).get("ndcg@10"),
                           "test_recall@10": m.get("test", {}).get("recall@10"),
                           "train_wall_s": m.get("train", {}).get("wall_s", train_info.get("train_wall_s"))})
    result: dict[str, Any] = {
        "dataset": ds.name, "checkpoint": str(info.path), "preset": info.config.model.preset,
        "checkpoint_epoch": info.epoch, "train": train_info, "requests": "test-split histories, k=10, candidates=50",
        "loadavg_start": loadavg(), "phases": {}}
    print(f"{info.config.model.preset} epoch {info.epoch} on {ds.name}; load average {loadavg()}", flush=True)
    result["model_compute_in_process"] = model_compute(info.path, data, bodies, ds)
    print(f"model compute in-process: {result['model_compute_in_process']}", flush=True)

    # 8 logical CPUs on 2 cores: the drill with 2 replicas per model role reserves 2 x (1 + 1).
    with ray_session(num_cpus=8, log_to_driver=False):
        from ray import serve

        service = Service(checkpoint, data, args.port, args.batch_wait_s)
        phases = result["phases"]
        try:
            one = {"min_replicas": 1, "max_replicas": 1}
            modes = [(name, batch) for name, batch in (("batched", 32), ("unbatched", 1))
                     if name in args.modes.split(",")]
            for name, batch in modes:
                wait = {"batch_wait_timeout_s": args.batch_wait_s} if batch > 1 else {}
                cfg, deploy_s = service.deploy(max_batch_size=batch, **wait, **one)
                closed_loop(service.url, bodies, 4, 3.0, 200)  # warm-up (allocators, first batches)
                phase: dict[str, Any] = {"max_batch_size": batch, "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
                                         "replicas_per_role": 1, "deploy_s": deploy_s}
                for clients in (1, 16, 64):
                    la, before, cpu0 = loadavg(), batch_stats(), cpu_seconds()
                    load = closed_loop(service.url, bodies, clients, args.phase_s, args.max_requests)
                    cpu = cpu_per_request(cpu0, cpu_seconds(), load.status.get("200", 0))
                    phase[f"clients_{clients}"] = {**load.summary(), "loadavg": la, "cpu_ms_per_request": cpu,
                                                   "mean_batch_size": batch_sizes(before, batch_stats())}
                    s = phase[f"clients_{clients}"]
                    print(f"{name:9s} {clients:2d} clients: {s['throughput_rps']:6.1f} req/s  p50 {s['p50_ms']:6.1f} ms"
                          f"  p99 {s['p99_ms']:6.1f} ms  failed {s['failed']}  batches {s['mean_batch_size']} "
                          f"| load {la}\n          CPU ms/request: {cpu}", flush=True)
                la = loadavg()
                phase["model_roles_only"] = {**model_roles_only(bodies, ds, 32, args.phase_s / 2, args.max_requests),
                                             "loadavg": la}
                print(f"{name:9s} model roles only (handles, 32 in flight): "
                      f"{phase['model_roles_only']['throughput_rps']:6.1f} req/s | load {la}", flush=True)
                phases[name] = phase
            if len(modes) == 2:  # the speed-ups of batching
                speedup, speedup64 = ((phases["batched"][c]["throughput_rps"]
                                       / max(phases["unbatched"][c]["throughput_rps"], 1e-9))
                                      for c in ("clients_16", "clients_64"))
                result["batching_speedup_16_clients"] = speedup
                result["batching_speedup_64_clients"] = speedup64
                model_speedup = (phases["batched"]["model_roles_only"]["throughput_rps"]
                                 / max(phases["unbatched"]["model_roles_only"]["throughput_rps"], 1e-9))
                result["batching_speedup_model_roles_only"] = model_speedup
                print(f"batching speed-up: {speedup:.2f}x over HTTP with 16 clients, {speedup64:.2f}x with 64, "
                      f"{model_speedup:.2f}x for the model roles alone (single-request handle calls)", flush=True)

            if not args.no_drills and "batched" in phases:
                rate = round(0.5 * phases["batched"]["clients_16"]["throughput_rps"], 1)
                service.deploy(max_batch_size=32, batch_wait_timeout_s=args.batch_wait_s, **one)
                la = loadavg()
                steady = open_loop(service.url, bodies, rate, args.steady_s)
                phases["steady"] = {"offered_rps": rate, "max_batch_size": 32, **steady.summary(), "loadavg": la}
                s = phases["steady"]
                print(f"steady {rate} req/s for {args.steady_s:.0f} s: {s['requests']} requests, "
                      f"5xx {s['server_5xx']}, failed {s['failed']}, p50 {s['p50_ms']:.1f} ms "
                      f"p99 {s['p99_ms']:.1f} ms | load {la}", flush=True)

                drill_rate = round(0.4 * phases["batched"]["clients_16"]["throughput_rps"], 1)
                for replicas in (2, 1):
                    d = drill(service, bodies, replicas, drill_rate, args.drill_s)
                    d["loadavg"] = loadavg()
                    phases[f"kill_retriever_{replicas}_replicas"] = d
                    print(f"kill drill, {replicas} replica(s)/role at {drill_rate} req/s: failed {d['failed']}"
                          f"/{d['requests']} ({100 * d['failed_share']:.2f}%), replica replaced in "
                          f"{d.get('replica_replaced_s')} s, longest gap {d.get('longest_gap_without_answers_s'):.2f} s"
                          f" | {d['status_counts']}", flush=True)
        finally:
            serve.shutdown()
    result["loadavg_end"] = loadavg()
    result["notes"] = [
        "2 cores shared with other engineers' runs (see loadavg per phase); the load generator, Serve's HTTP proxy, "
        "the ingress and the model replicas all run on them, and Ray starts its workers at niceness 15, so "
        "they yield to other users' processes",
        "failures are what clients saw: the ingress retries a request whose model replica died (up to 2 times), "
        "so a killed replica shows up as latency, not as errors",
        "mean_batch_size: requests per batch the Retriever/Ranker replicas ran during the phase",
        "model_compute_in_process: retrieve(50)+rank per request in one thread without Serve, batch 1 vs 32, "
        "best of 2 timed passes; encode_twice: each stage encodes the history, encode_once: the ranker scores "
        "from the retriever's encoding (what the deployments do)",
        "cpu_ms_per_request: CPU time of each process group during the phase / answered requests (/proc stat)",
        "model_roles_only: single-request handle calls (retrieve, rank), batched by the model replicas alone; the "
        "ingress instead sends a whole batch per call (retrieve_many, rank_many)",
    ]
    write_result(args.output, result)


if __name__ == "__main__":
    main()
