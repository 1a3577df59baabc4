"""Autoscaling of the Serve graph under a load ramp on 127.0.0.1, measured (bounded: stops by itself).

    python benchmarks/bench_autoscale.py                      # prepares + trains a tiny synthetic model if needed
    python benchmarks/bench_autoscale.py --levels 1:20,8:30,16:30,0:50 --max-replicas 3
    python benchmarks/bench_autoscale.py --checkpoint RUN_DIR --data DATASET_DIR

The graph is deployed with autoscaling on for every role (min 1, max --max-replicas), a low target of ongoing
requests and short delays, so that it reacts within seconds. Closed-loop clients (one thread and keep-alive
connection each) then follow the ramp of --levels (concurrent clients : seconds; 0 is the idle tail where
the replicas go back down). Every second a sampler records each deployment's replica counts
(``serve.status()``); each request's latency and outcome is kept. Writes benchmarks/results/autoscale.json
(the timeline, per-level summaries, the scaling events) and docs/img/autoscale.png.

Why the model roles' target is below 1: each Ingress replica batches its concurrent requests into one call to
the Retriever and one to the Ranker (``@serve.batch``, one batch in flight at a time), so a model replica sees
about one ongoing call per busy Ingress replica, whatever the number of clients. Its ongoing-request average
only exceeds a target below 1. The Ingress, which holds every HTTP request in flight, scales on the client
count (target 4x the models').

Ray Serve 2.60 pushes the autoscaling metrics (from each handle and replica to the controller) every
``autoscaling_config.metrics_interval_s``, 10 s by default; this benchmark sets it to --push-interval-s (1 s),
below the look-back window (Serve warns otherwise). The field is deprecated in favour of the environment
variables RAY_SERVE_{HANDLE,REPLICA}_AUTOSCALING_METRIC_PUSH_INTERVAL_S, which Ray 2.60 does not read yet.
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

from benchmarks.common import RESULTS, ROOT, write_result  # noqa: E402

WORK = Path("/tmp/raygr-bench-autoscale")
PLOT = ROOT / "docs" / "img" / "autoscale.png"
ROLES = ("Ingress", "Retriever", "Ranker")
# A tiny synthetic model (as benchmarks/cluster_e2e.py's QUICK): serving cost, not quality, is measured.
DATA_OPTIONS = ["--option", "num_users=400", "--option", "num_items=120", "--option", "seed=3"]
TRAIN_SETTINGS = ["train.epochs=2", "train.batch_size=64", "model.dim=32", "model.codes=16", "model.levels=2",
                  "model.num_negatives=16", "train.beam_size=10", "train.num_candidates=10",
                  "train.num_workers=1", "data.num_eval_users=100"]


# -- the configuration under test (the test, tests/test_serve_autoscale.py, uses it too) ---------------------

def autoscaling_options(min_replicas: int, max_replicas: int, target: float, *, upscale_delay_s: float,
                        downscale_delay_s: float, look_back_period_s: float, model_cpus: float,
                        metrics_interval_s: float = 1.0,
                        ingress_max_replicas: int | None = None) -> dict[str, dict[str, Any]]:
    """``build_app(extra_options=...)`` for a fast-reacting autoscaler: each role's ``autoscaling_config``
    (the Ingress targets 4x the model roles, as ``deployment_options``) and the model replicas' CPUs.
    ``metrics_interval_s``: how often handles and replicas push their metrics (Serve's default: 10 s)."""
    def scaling(tgt: float, most: int) -> dict[str, Any]:
        return {"min_replicas": min_replicas, "initial_replicas": min_replicas, "max_replicas": most,
                "target_ongoing_requests": tgt, "upscale_delay_s": upscale_delay_s,
                "downscale_delay_s": downscale_delay_s, "look_back_period_s": look_back_period_s,
                "metrics_interval_s": metrics_interval_s}

    model = {"autoscaling_config": scaling(target, max_replicas),
             "ray_actor_options": {"num_cpus": model_cpus, "num_gpus": 0}}
    ingress_most = max_replicas if ingress_max_replicas is None else ingress_max_replicas
    return {"Ingress": {"autoscaling_config": scaling(4 * target, ingress_most)},
            "Retriever": dict(model), "Ranker": dict(model)}


def replica_counts(app: str) -> dict[str, dict[str, Any]]:
    """Each deployment of ``app``: replicas by state (running, starting, stopping) and the deployment status."""
    from ray import serve

    out = {}
    for name, d in serve.status().applications[app].deployments.items():
        states = {str(getattr(k, "value", k)).lower(): v for k, v in d.replica_states.items()}
        out[name] = {"running": states.get("running", 0), "starting": states.get("starting", 0),
                     "stopping": states.get("stopping", 0), "status": str(getattr(d.status, "value", d.status))}
    return out


# -- load ------------------------------------------------------------------------------------------------

@dataclass
class Requests:
    """Every request's completion time (s since the start), latency (ms) and outcome ("200", "503", ...)."""

    done_s: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, done_s: float, ms: float, status: str) -> None:
        with self.lock:
            self.done_s.append(done_s)
            self.ms.append(ms)
            self.status.append(status)

    def window(self, lo: float, hi: float) -> dict[str, Any]:
        """Requests completed in [lo, hi): count, throughput of 200s, latency percentiles, failures."""
        with self.lock:
            t, ms, st = np.array(self.done_s), np.array(self.ms), np.array(self.status)
        sel = (t >= lo) & (t < hi) if len(t) else np.zeros(0, bool)
        ok = sel & (st == "200") if len(t) else sel
        lat = ms[ok]
        return {"requests": int(sel.sum()), "ok": int(ok.sum()), "failed": int(sel.sum() - ok.sum()),
                "rps": float(ok.sum() / max(hi - lo, 1e-9)),
                "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}

    def failures(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for s in self.status:
                if s != "200":
                    out[s] = out.get(s, 0) + 1
            return out


class Ramp:
    """Closed-loop clients on their own threads: client i sends while i < the current level, else idles.

    ``set_level`` moves the load; ``stop`` ends it. Bounded by ``max_requests`` in all (then every client idles).
    """

    def __init__(self, url: str, bodies: list[dict[str, Any]], clients: int, t0: float,
                 max_requests: int = 100_000, timeout_s: float = 30.0):
        from raygr.serving.client import Client

        self.url, self.bodies, self.t0, self.max_requests = url, bodies, t0, max_requests
        self.level, self.sent, self.stopped = 0, 0, threading.Event()
        self.requests, self.lock = Requests(), threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i, Client(url, timeout_s=timeout_s)),
                                         daemon=True) for i in range(clients)]
        for th in self.threads:
            th.start()

    def set_level(self, level: int) -> None:
        self.level = level

    def _client(self, i: int, client: Any) -> None:
        j = i
        while not self.stopped.is_set():
            with self.lock:
                go = i < self.level and self.sent < self.max_requests
                self.sent += go
            if not go:
                time.sleep(0.05)
                continue
            start = time.perf_counter()
            try:
                status, _ = client.post("/recommend", self.bodies[j % len(self.bodies)])
                key = str(status)
            except Exception as e:  # every failure counts, whatever it is
                key = f"error:{type(e).__name__}"
                client.close()
            end = time.perf_counter()
            self.requests.add(time.monotonic() - self.t0, (end - start) * 1000, key)
            j += len(self.threads)
        client.close()

    def stop(self) -> None:
        self.stopped.set()
        for th in self.threads:
            th.join(timeout=35)


def run_ramp(app: str, url: str, bodies: list[dict[str, Any]], levels: list[tuple[int, float]],
             sample_s: float = 1.0, max_requests: int = 100_000, log: Any = print) -> dict[str, Any]:
    """Apply ``levels`` [(clients, seconds)] and sample replicas every ``sample_s``; the timeline and requests."""
    t0 = time.monotonic()
    ramp = Ramp(url, bodies, max(c for c, _ in levels), t0, max_requests=max_requests)
    samples: list[dict[str, Any]] = []
    phases, end = [], 0.0
    for clients, seconds in levels:
        phases.append({"clients": clients, "start_s": end, "end_s": end + seconds})
        end += seconds
    try:
        for phase in phases:
            ramp.set_level(phase["clients"])
            log(f"[{time.monotonic() - t0:6.1f}s] load: {phase['clients']} concurrent clients for "
                f"{phase['end_s'] - phase['start_s']:.0f} s")
            while (now := time.monotonic() - t0) < phase["end_s"]:
                try:
                    counts = replica_counts(app)
                except Exception as e:  # a slow controller answer is a gap in the timeline, not a failure
                    counts = {"error": f"{type(e).__name__}: {e}"}
                samples.append({"t_s": round(now, 2), "clients": phase["clients"], "replicas": counts})
                running = {r: c["running"] for r, c in counts.items() if isinstance(c, dict)}
                if len(samples) % 5 == 1:
                    log(f"[{now:6.1f}s] clients {phase['clients']:2d}  replicas {running}  "
                        f"sent {ramp.sent}")
                time.sleep(max(0.0, sample_s - (time.monotonic() - t0 - now)))
    finally:
        ramp.stop()
    return {"phases": phases, "samples": samples, "requests": ramp.requests}


# -- summaries -------------------------------------------------------------------------------------------

def timeline(samples: list[dict[str, Any]], requests: Requests, sample_s: float) -> list[dict[str, Any]]:
    """One row per sample: running replicas of each role, and the requests completed in the second before it."""
    rows = []
    for s in samples:
        w = requests.window(s["t_s"] - sample_s, s["t_s"])
        reps = s["replicas"]
        rows.append({"t_s": s["t_s"], "clients": s["clients"],
                     **{f"{r.lower()}_running": reps.get(r, {}).get("running") for r in ROLES},
                     **{f"{r.lower()}_starting": reps.get(r, {}).get("starting") for r in ROLES},
                     **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in w.items()}})
    return rows


def scaling_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every change of a role's running replica count: when, from, to, under how many clients."""
    events, last = [], {}
    for row in rows:
        for r in ROLES:
            n = row.get(f"{r.lower()}_running")
            if n is None:
                continue
            if r in last and n != last[r]:
                events.append({"t_s": row["t_s"], "deployment": r, "from": last[r], "to": n,
                               "clients": row["clients"]})
            last[r] = n
    return events


def first_new_replica(rows: list[dict[str, Any]], role: str, lo: float, hi: float) -> float | None:
    """When, in [lo, hi), the autoscaler first asked for another replica of ``role``: the first sample whose
    running + starting count exceeds the previous sample's (the replica is running some seconds later)."""
    prev = None
    for row in rows:
        n = (row.get(f"{role.lower()}_running") or 0) + (row.get(f"{role.lower()}_starting") or 0)
        if lo <= row["t_s"] < hi and prev is not None and n > prev:
            return row["t_s"]
        prev = n
    return None


def phase_summaries(phases: list[dict[str, Any]], rows: list[dict[str, Any]], requests: Requests,
                    min_replicas: int) -> list[dict[str, Any]]:
    """Per load level: throughput, latency, failures, replicas at its end and at most; times to scale."""
    out = []
    for p in phases:
        inside = [r for r in rows if p["start_s"] <= r["t_s"] < p["end_s"]]
        summary = {**p, **requests.window(p["start_s"], p["end_s"])}
        for r in ROLES:
            key = f"{r.lower()}_running"
            counts = [row[key] for row in inside if row.get(key) is not None]
            if not counts:
                continue
            summary[f"{r.lower()}_replicas_end"] = counts[-1]
            summary[f"{r.lower()}_replicas_max"] = max(counts)
            start = counts[0]
            up = next((row["t_s"] for row in inside if (row.get(key) or 0) > start), None)
            down = next((row["t_s"] for row in inside if row.get(key) is not None and row[key] < start), None)
            back = next((row["t_s"] for row in inside if row.get(key) == min_replicas), None)
            decided = first_new_replica(rows, r, p["start_s"], p["end_s"])
            if decided is not None:
                summary[f"{r.lower()}_first_new_replica_after_s"] = round(decided - p["start_s"], 1)
            if up is not None:
                summary[f"{r.lower()}_first_upscale_after_s"] = round(up - p["start_s"], 1)
            if down is not None:
                summary[f"{r.lower()}_first_downscale_after_s"] = round(down - p["start_s"], 1)
            if p["clients"] == 0 and start > min_replicas and back is not None:
                summary[f"{r.lower()}_back_to_min_after_s"] = round(back - p["start_s"], 1)
        out.append({k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary.items()})
    return out


def plot(rows: list[dict[str, Any]], phases: list[dict[str, Any]], path: Path, title: str,
         fixed: list[dict[str, Any]] | None = None) -> Path:
    """Replicas, throughput and latency over time, the load level shaded; ``fixed``: the same ramp's timeline
    on the graph held at min_replicas, drawn thin and grey for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    top = max(p["clients"] for p in phases) or 1
    for ax in axes:
        for p in phases:
            if p["clients"]:
                ax.axvspan(p["start_s"], p["end_s"], color="tab:gray", alpha=0.08 + 0.3 * p["clients"] / top, lw=0)
    for p in phases:
        label = f"{p['clients']} client{'s' if p['clients'] != 1 else ''}"
        axes[0].text((p["start_s"] + p["end_s"]) / 2, 1.01, label, ha="center", va="bottom",
                     transform=axes[0].get_xaxis_transform(), fontsize=9)
    for i, (r, style) in enumerate(zip(ROLES, ("-", "--", ":"), strict=True)):
        ys = [(row.get(f"{r.lower()}_running") or 0) + 0.04 * (i - 1) for row in rows]  # offset: lines stay apart
        axes[0].step(t, ys, where="post", ls=style, lw=2, label=r)
    axes[0].set_ylabel("running replicas")
    axes[0].set_ylim(0, max(3, max((row.get(f"{r.lower()}_running") or 0) for row in rows for r in ROLES)) + 0.6)
    axes[0].legend(loc="upper right")
    axes[1].plot(t, [r["rps"] for r in rows], color="tab:green", label="autoscaled")
    if fixed:
        axes[1].plot([r["t_s"] for r in fixed], [r["rps"] for r in fixed], color="0.45", lw=0.9,
                     label="every role held at min_replicas")
        axes[2].plot([r["t_s"] for r in fixed], [r["p50_ms"] if r["p50_ms"] is not None else np.nan for r in fixed],
                     color="0.45", lw=0.9, label="p50, held at min_replicas")
    axes[1].legend(loc="upper right")
    axes[1].set_ylabel("requests/s (200s)")
    for key, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:red")):
        axes[2].plot(t, [r[key] if r[key] is not None else np.nan for r in rows], color=color,
                     label=key.replace("_ms", ""))
    axes[2].set_yscale("log")
    axes[2].set_ylabel("latency (ms, 1 s windows)")
    axes[2].set_xlabel("seconds since the load started (shade: concurrent clients)")
    axes[2].legend(loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_result(result: dict[str, Any], path: Path = PLOT) -> Path:
    """The plot of a result written by ``main`` (``--replot`` redraws it from benchmarks/results/autoscale.json)."""
    s, cores = result["settings"], result.get("machine", {}).get("cpu_count", os.cpu_count())
    title = (f"raygr Serve autoscaling on 127.0.0.1 ({cores} cores, shared): "
             f"min {s['min_replicas']}, max {s['max_replicas']}, target {s['target_ongoing_requests']['models']:g} "
             f"(Ingress {s['target_ongoing_requests']['ingress']:g}), upscale {s['upscale_delay_s']:g} s, "
             f"downscale {s['downscale_delay_s']:g} s, look-back {s['look_back_period_s']:g} s")
    return plot(result["timeline"], result["phases"], path, title, fixed=result.get("fixed", {}).get("timeline"))


# -- the run ---------------------------------------------------------------------------------------------

def tiny_model(work: Path, log: Any = print) -> tuple[Path, Path]:
    """The synthetic dataset and a short `raygr train` run under ``work`` (reused when already there)."""
    data, run = work / "synthetic", work / "run-joint"
    if not (data / "manifest.json").is_file():
        log(f"raygr data prepare --format synthetic -> {data}")
        subprocess.run(["raygr", "data", "prepare", "--format", "synthetic", "--output", str(data),
                        *DATA_OPTIONS], check=True)
    if not (run / "checkpoints" / "best").is_dir():
        log(f"raygr train -> {run}")
        sets = [a for s in TRAIN_SETTINGS for a in ("--set", s)]
        subprocess.run(["raygr", "train", "--data", str(data), "--output", str(run), *sets], check=True)
    return data, run


def parse_levels(text: str) -> list[tuple[int, float]]:
    out = []
    for part in text.split(","):
        clients, seconds = part.split(":")
        out.append((int(clients), float(seconds)))
    if not out or any(c < 0 or s <= 0 for c, s in out):
        raise argparse.ArgumentTypeError("levels: CLIENTS:SECONDS,... with clients >= 0 and seconds > 0")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="run or checkpoint directory (default: train a tiny one in --work)")
    ap.add_argument("--data", help="its dataset directory (with --checkpoint)")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--levels", type=parse_levels, default=parse_levels("1:20,8:30,16:30,0:45"),
                    help="the ramp: CLIENTS:SECONDS,... (default 1:20,8:30,16:30,0:45)")
    ap.add_argument("--min-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.75,
                    help="target_ongoing_requests of the model roles (the Ingress: 4x)")
    ap.add_argument("--upscale-delay-s", type=float, default=2.0)
    ap.add_argument("--downscale-delay-s", type=float, default=10.0)
    ap.add_argument("--look-back-s", type=float, default=5.0, help="look_back_period_s")
    ap.add_argument("--push-interval-s", type=float, default=1.0,
                    help="autoscaling_config.metrics_interval_s: how often metrics reach the controller "
                         "(Serve's default: 10 s)")
    ap.add_argument("--model-cpus", type=float, default=0.5, help="logical CPUs per model replica")
    ap.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-compare", dest="compare_fixed", action="store_false",
                    help="skip the second ramp with every role held at --min-replicas")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from the last result")
    args = ap.parse_args(argv)
    if args.replot:
        plot_result(json.loads((RESULTS / "autoscale.json").read_text()))
        return 0
    if bool(args.checkpoint) != bool(args.data):
        ap.error("--checkpoint and --data go together")
    need = 2 * args.max_replicas * args.model_cpus
    if need > args.num_cpus:
        ap.error(f"{args.max_replicas} replicas x 2 model roles x {args.model_cpus} CPUs > --num-cpus {args.num_cpus}")

    if args.checkpoint:
        data, run = Path(args.data), Path(args.checkpoint)
    else:
        data, run = tiny_model(args.work)

    from ray import serve

    from raygr.config import ServeConfig
    from raygr.data.dataset import load_dataset
    from raygr.distributed.serve import APP_NAME, build_app
    from raygr.distributed.session import free_port, ray_session
    from raygr.serving.client import example_requests
    from raygr.training.checkpoint import read_checkpoint

    info = read_checkpoint(run)
    bodies = [b for b, _ in example_requests(load_dataset(data), info.config.data.max_history, n=200)]
    cfg = ServeConfig(port=free_port(), min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                      target_ongoing_requests=args.target)
    extra = autoscaling_options(args.min_replicas, args.max_replicas, args.target,
                                upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s,
                                look_back_period_s=args.look_back_s, model_cpus=args.model_cpus,
                                metrics_interval_s=args.push_interval_s)
    t_start = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    with ray_session(None, num_cpus=args.num_cpus, log_to_driver=False) as where:
        print(f"{where}; deploying {info.path}")
        try:
            runs["autoscaled"] = measure(APP_NAME, build_app(info.path, data, cfg, extra_options=extra), cfg,
                                         bodies, args)
            if args.compare_fixed:  # the same ramp on a graph held at min_replicas: what did scaling buy?
                serve.delete(APP_NAME)
                fixed = autoscaling_options(args.min_replicas, args.min_replicas, args.target,
                                            upscale_delay_s=args.upscale_delay_s,
                                            downscale_delay_s=args.downscale_delay_s,
                                            look_back_period_s=args.look_back_s, model_cpus=args.model_cpus,
                                            metrics_interval_s=args.push_interval_s)
                print(f"the same ramp, every role held at {args.min_replicas} replica(s)")
                runs["fixed"] = measure(APP_NAME, build_app(info.path, data, cfg, extra_options=fixed), cfg,
                                        bodies, args)
        finally:
            serve.shutdown()
    auto = runs["autoscaled"]
    result = {
        "command": " ".join(["python", "benchmarks/bench_autoscale.py", *(argv if argv is not None else sys.argv[1:])]),
        "ray": where, "checkpoint": str(info.path), "deploy_s": auto["deploy_s"],
        "settings": {"levels": [{"clients": c, "seconds": s} for c, s in args.levels],
                     "min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
                     "target_ongoing_requests": {"models": args.target, "ingress": 4 * args.target},
                     "upscale_delay_s": args.upscale_delay_s, "downscale_delay_s": args.downscale_delay_s,
                     "look_back_period_s": args.look_back_s, "metrics_interval_s": args.push_interval_s,
                     "model_replica_cpus": args.model_cpus, "ray_logical_cpus": args.num_cpus,
                     "max_batch_size": cfg.max_batch_size, "batch_wait_timeout_s": cfg.batch_wait_timeout_s},
        **{k: auto[k] for k in ("totals", "phases", "events", "final_replicas", "timeline")},
        "load_avg_after": os.getloadavg(), "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if "fixed" in runs:
        result["fixed"] = {k: runs["fixed"][k] for k in ("deploy_s", "totals", "phases", "timeline")}
    write_result("autoscale", result)
    for name, r in runs.items():
        print(name)
        for p in r["phases"]:
            print("  ", {k: v for k, v in p.items() if k not in ("start_s", "end_s")})
    for e in auto["events"]:
        print(f"  {e['t_s']:6.1f}s  {e['deployment']:9s} {e['from']} -> {e['to']}  ({e['clients']} clients)")
    if not args.no_plot:
        plot_result(result)
    failed = sum(r["totals"]["failed"] for r in runs.values())
    return 0 if failed == 0 else 1


def measure(app: str, graph: Any, cfg: Any, bodies: list[dict[str, Any]], args: argparse.Namespace
            ) -> dict[str, Any]:
    """Deploy ``graph``, run the ramp, summarise: timeline, per-level phases, scaling events, totals."""
    from raygr.distributed.serve import local_url, run_app
    from raygr.serving.client import Client

    t = time.perf_counter()
    run_app(graph, cfg, log_level="WARNING")
    client = Client(local_url(cfg))
    client.wait_healthy()
    client.close()
    deploy_s = round(time.perf_counter() - t, 1)
    print(f"deployed in {deploy_s:.1f} s: {replica_counts(app)}")
    out = run_ramp(app, local_url(cfg), bodies, args.levels, max_requests=args.max_requests)
    final = replica_counts(app)
    rows = timeline(out["samples"], out["requests"], 1.0)
    reqs = out["requests"]
    return {"deploy_s": deploy_s, "phases": phase_summaries(out["phases"], rows, reqs, args.min_replicas),
            "events": scaling_events(rows), "final_replicas": final, "timeline": rows,
            "totals": {"requests": len(reqs.status), "ok": reqs.status.count("200"),
                       "failed": len(reqs.status) - reqs.status.count("200"), "failures": reqs.failures()}}


if __name__ == "__main__":
    sys.exit(main())
