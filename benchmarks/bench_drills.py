"""Failure drills on a real two-node Ray cluster on this machine (issue 23): real SIGKILLs, by PID.

    python -m benchmarks.bench_drills [--workdir DIR] [--drills baseline,process,node,serve,tune] [--epochs 4]

The cluster is benchmarks/multinode.py's: a head and a worker node, each its own `ray start --block`
process with its own temp dir, loopback address (127.0.0.2, 127.0.0.3, ...) and a custom resource naming
it (node_head, node_worker). Each node has 1 logical CPU, so the 2 Ray Train workers (1 CPU each) must
land one on each node; the drill checks that they did before it kills anything. Storage (dataset and
run directories) is a directory both nodes see. Training runs as `raygr train --address GCS` in a driver
process on the head's host, exactly as a user runs it; the drills read only what that user sees (the
driver's log, RUN_DIR/metrics.json, RUN_DIR/checkpoints).

Drills:
- baseline: an undisturbed run of the same settings (the reference for "within run-to-run noise").
- process: SIGKILL one training worker process (ray::RayTrainWorker on the worker node) mid-epoch 2 (1 s
  after the checkpoint of epoch 1 is published, or at epoch 2's first progress line if that comes
  first). Ray Train restarts the worker group (train.max_failures=1); every worker resumes from the
  checkpoint of epoch 1.
- node: SIGKILL the worker node (its raylet, agents, workers and `ray start`) mid-epoch. The run then has
  1 CPU for 2 workers: the driver's log names the dead node and says, every
  RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, that the worker group is waiting for 2 workers. The drill waits
  for that message, then starts a replacement node; the run resumes from epoch 1 and finishes.
- serve: see ``drill_serve``.
- tune: `raygr tune --address GCS` (2 trials, a grid on lr) on a cluster of its own whose head has no CPUs
  (as on a production cluster), so the worker node holds every trial: its driver (the Tune function
  trainable), Train controller and worker. SIGKILL to the worker node 1 s after every trial published its
  checkpoint of epoch 1; Tune records each trial's failure and restarts it (tune.max_failures=1); the trials
  wait for CPUs until a replacement node joins, resume from epoch 1 there, and the search finishes. See
  ``drill_tune``.

Every process a drill starts (nodes, drivers, load clients) is stopped by its PID at the end, pass or
fail. Results: benchmarks/results/drills.json; the test suite runs the short version
(tests/test_multinode_drills.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.cluster_e2e import QUICK
from benchmarks.multinode import Cluster, _stat, cmdline, descendants, kill_pids, two_node_cluster, wait_gone

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drills.json"

# QUICK's model, 2 workers, a smaller batch (13 steps an epoch on 400 users) and a progress line every
# 5 steps, so that "mid-epoch" is a line in the driver's log.
TRAIN_SETTINGS = [*QUICK["train"], "--set", "train.num_workers=2", "--set", "train.batch_size=32",
                  "--set", "train.log_every=5", "--set", "train.max_failures=1"]
# How long each attempt to start the worker group waits for resources before Ray says so (default 60 s).
GROUP_START_TIMEOUT_S = 15
# The GCS declares a silent node dead after period x threshold (Ray's defaults: 3 s x 5, seen ~17 s);
# the short drills in the test suite use a faster detector.
FAST_DETECTOR = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}

PROGRESS = re.compile(r"epoch (\d+)/(\d+) step (\d+)/(\d+)")
RESUMED = re.compile(r"resumed from the checkpoint of epoch (\d+) \(step (\d+)\)")
WAITING = re.compile(r"The worker group startup timed out after [\d.]+ seconds waiting for (\d+) workers")
NODE_DEAD = re.compile(r"The node with node id: (\w+) and address: ([\d.]+) .*has been marked dead")


class DrillError(RuntimeError):
    """A drill step did not happen as expected; the message names the step and the log to read."""


class Driver:
    """A command run as its own process (a `raygr train` driver, a load client), its output in a file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str]):
        self.name, self.log = name, log
        with open(log, "w") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                            start_new_session=True)
        self.started = time.monotonic()
        self.seen: dict[int, str] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float, what: str) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails when the process ends or time runs out first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if (m := pattern.search(self.text())) is not None:
                return m
            if self.process.poll() is not None:
                raise DrillError(f"{self.name} exited ({self.process.returncode}) before {what}; see {self.log}")
            if time.monotonic() > deadline:
                raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}; see {self.log}")
            self.seen.update(descendants(self.process.pid))
            time.sleep(0.2)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DrillError(f"{self.name} still running after {timeout_s:.0f} s; see {self.log}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s, to the process and anything it started, by PID."""
        if self.process.poll() is None:
            self.seen.update(descendants(self.process.pid))
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if wait_gone(self.seen, 5):
            kill_pids(self.seen)


def train_driver(cluster: Cluster, data: Path, run_dir: Path, epochs: int, name: str) -> Driver:
    cmd = [sys.executable, "-m", "raygr.cli", "train", "--data", str(data), "--output", str(run_dir),
           "--address", cluster.address, *TRAIN_SETTINGS, "--set", f"train.epochs={epochs}"]
    return Driver(name, cmd, run_dir.parent / f"{name}.log", cluster.env)


def prepare_data(out: Path) -> Path:
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "raygr.cli", "data", "prepare", "--format", "synthetic", "--output",
                        str(out), *QUICK["data"]], check=True, cwd=ROOT, capture_output=True)
    return out


def train_workers(cluster: Cluster) -> dict[str, list[int]]:
    """{node name: PIDs of its Ray Train worker processes} for the nodes that are up."""
    return {name: node.workers(r"^ray::RayTrainWorker") for name, node in cluster.nodes.items() if node.running()}


def wait_spread(cluster: Cluster, driver: Driver, timeout_s: float = 30) -> dict[str, list[int]]:
    """The Train workers' placement once every live node runs one (the drills need one on each node)."""
    deadline = time.monotonic() + timeout_s
    while True:
        placed = train_workers(cluster)
        if all(len(p) == 1 for p in placed.values()):
            return placed
        if time.monotonic() > deadline or driver.process.poll() is not None:
            raise DrillError(f"the training workers are not one per node: {placed}; see {driver.log}")
        time.sleep(0.2)


def mid_epoch(driver: Driver, run_dir: Path, timeout_s: float, settle_s: float = 1.0) -> dict[str, Any]:
    """Wait until the run is inside epoch 2: the checkpoint of epoch 1 is published (the workers have
    reported it and moved on), then ``settle_s`` more or the first progress line of epoch 2, whichever
    comes first. The log alone is too late a signal: Ray forwards worker output in batches, and an epoch
    here takes a few seconds. Fails if epoch 2 ended meanwhile (its checkpoint appeared)."""
    deadline = time.monotonic() + timeout_s
    while checkpoint_epoch(run_dir) != 1:
        if driver.process.poll() is not None or time.monotonic() > deadline:
            raise DrillError(f"no checkpoint of epoch 1 in {run_dir} (the run exited or timed out); see {driver.log}")
        time.sleep(0.05)
    published = time.monotonic()
    progress = re.compile(r"epoch 2/\d+ step (\d+)/(\d+)")
    while time.monotonic() - published < settle_s and progress.search(driver.text()) is None:
        time.sleep(0.05)
    if checkpoint_epoch(run_dir) != 1:
        raise DrillError(f"epoch 2 ended before the kill (too short an epoch); see {driver.log}")
    # The drills measure "after the checkpoint" at their kill, not here: the progress line may already be
    # in the log when the checkpoint appears, so this wait can be 0 s (CI saw it).
    return {"epoch": 2, "published": published, "at_s": driver.elapsed()}


def steps_seen(driver: Driver, epoch: int) -> tuple[int | None, int | None]:
    """The last progress line of ``epoch`` in the log (step, total steps), or (None, None)."""
    found = re.findall(rf"epoch {epoch}/\d+ step (\d+)/(\d+)", driver.text())
    return (int(found[-1][0]), int(found[-1][1])) if found else (None, None)


def checkpoint_epoch(run_dir: Path) -> int | None:
    meta = run_dir / "checkpoints" / "latest" / "meta.json"
    try:
        return int(json.loads(meta.read_text())["train_state"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finish(driver: Driver, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Wait for the run to end; its outcome as the user sees it (exit status, metrics.json)."""
    rc = driver.wait(timeout_s)
    if rc != 0:
        raise DrillError(f"{driver.name} failed (exit status {rc}); see {driver.log}")
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"exit_status": rc, "wall_s": round(driver.elapsed(), 1), "epochs": m["train"]["epochs"],
            "resumed_at": m["train"]["resumed_at"], "valid_ndcg@10": m["valid"]["ndcg@10"],
            "test_ndcg@10": m["test"]["ndcg@10"], "test_recall@10": m["test"]["recall@10"]}


# -- the drills -------------------------------------------------------------------------------------

def drill_baseline(cluster: Cluster, data: Path, workdir: Path, epochs: int,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    run = workdir / "baseline"
    driver = train_driver(cluster, data, run, epochs, "baseline")
    try:
        placed = wait_spread(cluster, driver, 120)
        out = {"placement": {k: len(v) for k, v in placed.items()}, **finish(driver, run, 300)}
    finally:
        driver.stop()
    log(f"baseline: {out}")
    return out


def drill_worker_process(cluster: Cluster, data: Path, workdir: Path, epochs: int,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """SIGKILL the training worker process on the worker node mid-epoch 2; the run resumes from epoch 1."""
    run = workdir / "process-kill"
    driver = train_driver(cluster, data, run, epochs, "process-kill")
    try:
        at = mid_epoch(driver, run, 180)
        placed = wait_spread(cluster, driver)
        victim = placed["worker"][0]
        ckpt = checkpoint_epoch(run)
        step, total = steps_seen(driver, 2)
        st = _stat(victim)
        after_ckpt = round(time.monotonic() - at["published"], 2)
        if st is None or not kill_pids({victim: st[1]}):
            raise DrillError(f"the training worker {victim} was gone before the kill")
        t_kill = driver.elapsed()
        log(f"process drill: SIGKILL to ray::RayTrainWorker pid {victim} on node worker at {t_kill:.1f} s, "
            f"in epoch 2 ({after_ckpt} s after its start; last progress line: step {step}/{total}), "
            f"latest checkpoint epoch {ckpt}")
        m = driver.wait_for(RESUMED, 180, "the resumed worker group")
        t_resumed = driver.elapsed()
        placed_after = wait_spread(cluster, driver)
        out = {"killed": {"pid": victim, "node": "worker", "at_s": round(t_kill, 1), "in_epoch": 2,
                          "after_checkpoint_s": after_ckpt, "last_progress_step": step,
                          "steps_total": total, "checkpoint_epoch": ckpt},
               "placement_before": {k: len(v) for k, v in placed.items()},
               "placement_after": {k: len(v) for k, v in placed_after.items()},
               "resumed_from_epoch": int(m.group(1)), "kill_to_resumed_s": round(t_resumed - t_kill, 1),
               **finish(driver, run, 300)}
    finally:
        driver.stop()
    log(f"process drill: {out}")
    return out


def drill_worker_node(cluster: Cluster, data: Path, workdir: Path, epochs: int, replacement: str,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """SIGKILL the worker node mid-epoch 2; wait until the run says it waits for workers; then start a
    replacement node (``replacement``); the run resumes from epoch 1 on the new node and finishes."""
    run = workdir / "node-kill"
    driver = train_driver(cluster, data, run, epochs, "node-kill")
    try:
        at = mid_epoch(driver, run, 180)
        placed = wait_spread(cluster, driver)
        ckpt = checkpoint_epoch(run)
        step, total = steps_seen(driver, 2)
        t_kill = driver.elapsed()
        after_ckpt = round(time.monotonic() - at["published"], 2)
        killed = cluster.nodes["worker"].kill()
        log(f"node drill: SIGKILL to node worker (raylet {killed['raylet']}, {len(killed['killed'])} processes) "
            f"at {t_kill:.1f} s, in epoch 2 ({after_ckpt} s after its start), "
            f"latest checkpoint epoch {ckpt}")
        cluster.wait_for(lambda: cluster.node_state("worker") == "DEAD", 120, "the GCS to mark node worker dead")
        t_dead = driver.elapsed()
        named = driver.wait_for(NODE_DEAD, 60, "the driver's log to name the dead node")
        waiting = driver.wait_for(WAITING, 180, "the run to say that it waits for workers")
        t_waiting = driver.elapsed()
        if RESUMED.search(driver.text()):
            raise DrillError(f"the run resumed without the lost node's CPU (expected a wait); see {driver.log}")
        log(f"node drill: the run waits: {waiting.group(0)!r}; starting node {replacement}")
        t_add = driver.elapsed()
        cluster.add_node(replacement, cluster.nodes["worker"].num_cpus)
        t_joined = driver.elapsed()
        m = driver.wait_for(RESUMED, 180, "the worker group to resume on the replacement node")
        t_resumed = driver.elapsed()
        placed_after = wait_spread(cluster, driver)
        out = {"killed": {"node": "worker", "raylet": killed["raylet"], "processes": len(killed["killed"]),
                          "at_s": round(t_kill, 1), "in_epoch": 2, "after_checkpoint_s": after_ckpt,
                          "last_progress_step": step, "steps_total": total, "checkpoint_epoch": ckpt},
               "placement_before": {k: len(v) for k, v in placed.items()},
               "placement_after": {k: len(v) for k, v in placed_after.items()},
               "kill_to_node_dead_s": round(t_dead - t_kill, 1),
               "dead_node_named": {"address": named.group(2), "expected": cluster.nodes["worker"].ip},
               "waiting_message": waiting.group(0), "kill_to_waiting_message_s": round(t_waiting - t_kill, 1),
               "replacement": replacement, "replacement_join_s": round(t_joined - t_add, 1),
               "replacement_to_resumed_s": round(t_resumed - t_add, 1),
               "resumed_from_epoch": int(m.group(1)), **finish(driver, run, 300)}
    finally:
        driver.stop()
    log(f"node drill: {out}")
    return out


def serve_load(url: str, body: dict[str, Any], stop_at: list[float], rate: float, threads: int,
               records: list[tuple[float, float, int | str]]) -> list[Any]:
    """Steady load: ``threads`` clients, together about ``rate`` POSTs a second, until ``stop_at[0]``
    (monotonic); each request appends (start, end, HTTP status or error name) to ``records``."""
    import threading
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    gap = threads / rate

    def client(i: int) -> None:
        nxt = time.monotonic() + i * gap / threads
        while time.monotonic() < stop_at[0]:
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += gap
            t0 = time.monotonic()
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                    status: int | str = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except Exception as e:  # a refused or reset connection, a timeout: a failed request too
                status = type(e).__name__
            records.append((t0, time.monotonic(), status))

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    return workers


def load_summary(records: list[tuple[float, float, int | str]], t_kill: float) -> dict[str, Any]:
    """Requests, failures and the longest stall (the longest request, and the longest gap between two
    successful answers), before and after the kill."""
    records = sorted(records)
    ok = [r for r in records if r[2] == 200]
    failed = [r for r in records if r[2] != 200]
    ends = sorted(r[1] for r in ok)
    gaps = [(b - a, a) for a, b in zip(ends, ends[1:])]
    longest_gap = max(gaps, default=(0.0, 0.0))
    lat = sorted(r[1] - r[0] for r in records)
    after = sorted(r[1] - r[0] for r in records if r[0] >= t_kill)

    def pct(xs: list[float], q: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else 0.0

    return {"requests": len(records), "failed": len(failed),
            "failed_fraction": round(len(failed) / max(1, len(records)), 4),
            "failures": sorted({str(r[2]) for r in failed}),
            "longest_request_s": round(lat[-1], 2) if lat else None,
            "longest_gap_between_answers_s": round(longest_gap[0], 2),
            "longest_gap_starts_after_kill_s": round(longest_gap[1] - t_kill, 2),
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "p50_ms_after_kill": pct(after, 0.5),
            "p99_ms_after_kill": pct(after, 0.99)}


def drill_serve(workdir: Path, run_dir: Path, data: Path, *, before_s: float = 10, after_s: float = 30,
                rate: float = 20, threads: int = 4, system_env: dict[str, str] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Serve on a cluster of two 2-CPU nodes: 2 replicas of each model deployment (one per node), steady
    load on the head's HTTP proxy from this process (loopback), then SIGKILL to the worker node.

    The deploy config comes from `raygr serve --write-config` with one change, proxy_location: HeadOnly.
    Both nodes are on one host here, and two proxies cannot bind the same port; on a real cluster keep
    EveryNode and a load balancer in front of the nodes.
    """
    import yaml

    from benchmarks.cluster_e2e import first_history, free_ports, http_ok

    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    config = workdir / "serve_config.yaml"
    subprocess.run([sys.executable, "-m", "raygr.cli", "serve", "--checkpoint", str(run_dir), "--data", str(data),
                    "--port", str(port), "--set", "serve.min_replicas=2", "--set", "serve.max_replicas=2",
                    "--write-config", str(config)], check=True, cwd=ROOT, capture_output=True)
    cfg = yaml.safe_load(config.read_text())
    cfg["proxy_location"] = "HeadOnly"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    records: list[tuple[float, float, int | str]] = []
    stop_at = [float("inf")]
    clients: list[Any] = []
    t0 = time.monotonic()
    with two_node_cluster(workdir / "cluster", head_cpus=2, worker_cpus=2, system_env=system_env, log=log) as c:
        t_up = time.monotonic() - t0
        deploy = Driver("serve-deploy", [str(Path(sys.executable).parent / "serve"), "deploy", str(config),
                                         "--address", c.dashboard], workdir / "serve-deploy.log", c.env)
        try:
            if deploy.wait(120) != 0:
                raise DrillError(f"serve deploy failed; see {deploy.log}")
            url = f"http://127.0.0.1:{port}"
            c.wait_for(lambda: http_ok(f"{url}/healthz"), 180, f"the Serve app at {url}/healthz")
            t_ready = time.monotonic() - t0

            def replicas() -> dict[str, dict[str, int]]:
                return {n: {d: len(node.workers(rf"^ray::ServeReplica:raygr:{d}\b")) for d in ("Retriever", "Ranker")}
                        for n, node in c.nodes.items() if node.running()}

            c.wait_for(lambda: all(v == {"Retriever": 1, "Ranker": 1} for v in replicas().values()), 120,
                       "one Retriever and one Ranker replica on each node")
            placed = replicas()
            body = {"history": first_history(data), "k": 10}
            clients = serve_load(f"{url}/recommend", body, stop_at, rate, threads, records)
            time.sleep(before_s)
            t_kill = time.monotonic()
            killed = c.nodes["worker"].kill()
            log(f"serve drill: SIGKILL to node worker ({len(killed['killed'])} processes) under load")
            c.wait_for(lambda: c.node_state("worker") == "DEAD", 120, "the GCS to mark node worker dead")
            t_dead = time.monotonic() - t_kill
            time.sleep(max(0.0, after_s - (time.monotonic() - t_kill)))
        finally:
            stop_at[0] = time.monotonic()
            for w in clients:
                w.join(timeout=70)
            deploy.stop()
        placed_after = replicas()
    out = {"cluster_start_s": round(t_up, 1), "deploy_to_ready_s": round(t_ready - t_up, 1),
           "replicas_before": placed, "replicas_after": placed_after, "rate_per_s": rate, "clients": threads,
           "load_before_kill_s": before_s, "load_after_kill_s": after_s, "kill_to_node_dead_s": round(t_dead, 1),
           **load_summary(records, t_kill)}
    log(f"serve drill: {out}")
    return out


# -- Tune: the node holding the trials is lost ------------------------------------------------------

# Two trials (a 2-value grid on lr), each a 1-worker Train run of the same model as the train drills. ASHA's
# grace period is the whole run, so no trial is stopped early: each one has to finish every epoch.
TUNE_SETTINGS = [*QUICK["train"], "--set", "train.num_workers=1", "--set", "train.batch_size=32",
                 "--set", "train.log_every=0", "--set", "train.max_failures=1", "--set", "tune.max_failures=1",
                 "--set", "tune.num_samples=1"]
TUNE_LRS = (3.0e-3, 1.0e-3)  # the grid: one trial per value
TUNE_HEAD_CPUS, TUNE_WORKER_CPUS = 0, 4  # every trial (driver + 1 worker, 2 CPUs) runs on the worker node
RESTARTING = re.compile(r"trial (\w+) failed \(its process or node was lost.*?; "
                        r"restarting it \(retry (\d+) of (\w+)\).*")
TRIAL_ENDED = re.compile(r"trial (\w+) ended after epoch (\d+)")


def trial_checkpoints(search: Path) -> dict[str, dict[str, Any]]:
    """{trial id: {"epoch": latest checkpoint's epoch, "resumed_at": [...]}} from SEARCH/trials/<id>/checkpoints."""
    out = {}
    for run in sorted((search / "trials").glob("*")):
        try:
            meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
            out[run.name] = {"epoch": int(meta["train_state"]["epoch"]),
                             "resumed_at": list(meta.get("run", {}).get("resumed_at", []))}
        except (OSError, ValueError, KeyError, TypeError):
            out[run.name] = {"epoch": None, "resumed_at": []}
    return out


def ray_titles(cluster: Cluster) -> dict[str, dict[str, int]]:
    """{node: {Ray worker process title: count}} for the nodes that are up (which node holds which trial)."""
    out: dict[str, dict[str, int]] = {}
    for name, node in cluster.nodes.items():
        if node.running():
            titles: dict[str, int] = {}
            for pid in node.workers(r"^ray::"):
                title = (cmdline(pid).split() or ["?"])[0]
                if title != "ray::IDLE":
                    titles[title] = titles.get(title, 0) + 1
            out[name] = dict(sorted(titles.items()))
    return out


def tune_statuses(search: Path) -> dict[str, dict[str, Any]]:
    """Tune's own record of each trial (status, failures), read from SEARCH/ray/search; no Ray session."""
    from ray.tune import ExperimentAnalysis

    from raygr.distributed.tune import EXPERIMENT

    trials = ExperimentAnalysis(str(search / "ray" / EXPERIMENT)).trials
    return {t.trial_id: {"status": t.status, "num_failures": t.run_metadata.num_failures,
                         "last_epoch": (t.last_result or {}).get("epoch")} for t in trials}


def tune_settings(epochs: int, lrs: tuple[float, ...] = TUNE_LRS) -> list[str]:
    return [*TUNE_SETTINGS, "--set", f"tune.space={{train.lr: {{grid: [{', '.join(map(repr, lrs))}]}}}}",
            "--set", f"train.epochs={epochs}", "--set", f"tune.grace_period={epochs}"]


def drill_tune(workdir: Path, data: Path, epochs: int, replacement: str = "worker2", *,
               lrs: tuple[float, ...] = TUNE_LRS, system_env: dict[str, str] | None = None, settle_s: float = 1.0,
               seen: dict[int, str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`raygr tune --address GCS` on a cluster whose head has no CPUs and whose worker node holds every
    trial; SIGKILL to the worker node once every trial has published the checkpoint of epoch 1 (``settle_s``
    later); a replacement node joins when Tune has recorded the failures; every trial must restart from
    its checkpoint (tune.max_failures=1) and the search must finish. ``seen``: filled with every process the
    drill started (nodes, the driver and their children), for the caller to check that none survived."""
    workdir.mkdir(parents=True, exist_ok=True)
    search = workdir / "search"
    t0 = time.monotonic()
    with two_node_cluster(workdir / "cluster", head_cpus=TUNE_HEAD_CPUS, worker_cpus=TUNE_WORKER_CPUS,
                          system_env=system_env, log=log) as c:
        t_up = time.monotonic() - t0
        cmd = [sys.executable, "-m", "raygr.cli", "tune", "--data", str(data), "--output", str(search),
               "--address", c.address, *tune_settings(epochs, lrs)]
        driver = Driver("tune", cmd, workdir / "tune.log", c.env)
        try:
            # every trial has published its checkpoint of epoch 1
            deadline = time.monotonic() + 300
            while True:
                ck = trial_checkpoints(search)
                if len(ck) == len(lrs) and all((v["epoch"] or 0) >= 1 for v in ck.values()):
                    break
                if driver.process.poll() is not None or time.monotonic() > deadline:
                    raise DrillError(f"the trials did not all reach a checkpoint of epoch 1 ({ck}); see {driver.log}")
                driver.seen.update(descendants(driver.process.pid))
                time.sleep(0.1)
            t_all_ckpt = driver.elapsed()
            time.sleep(settle_s)
            placed = ray_titles(c)
            if not placed.get("worker"):
                raise DrillError(f"no trial process on node worker: {placed}; see {driver.log}")
            t_kill = driver.elapsed()
            killed = c.nodes["worker"].kill()
            at_kill = trial_checkpoints(search)  # the node is gone: these are what the trials can resume from
            if any(v["epoch"] is None or v["epoch"] >= epochs for v in at_kill.values()):
                raise DrillError(f"a trial finished (or had no checkpoint) before the kill: {at_kill}")
            log(f"tune drill: SIGKILL to node worker ({len(killed['killed'])} processes: {placed['worker']}) "
                f"at {t_kill:.1f} s; trials' latest checkpoints {at_kill}")
            c.wait_for(lambda: c.node_state("worker") == "DEAD", 120, "the GCS to mark node worker dead")
            t_dead = driver.elapsed()
            deadline = time.monotonic() + 120
            while len({m.group(1) for m in RESTARTING.finditer(driver.text())}) < len(lrs):
                if driver.process.poll() is not None or time.monotonic() > deadline:
                    raise DrillError(f"Tune did not restart every trial; see {driver.log}")
                time.sleep(0.2)
            t_restarting = driver.elapsed()
            restarting = sorted({m.group(0) for m in RESTARTING.finditer(driver.text())})
            log(f"tune drill: {restarting}; starting node {replacement}")
            t_add = driver.elapsed()
            c.add_node(replacement, TUNE_WORKER_CPUS)
            t_joined = driver.elapsed()
            placed_after = ray_titles(c)
            rc = driver.wait(600)
            t_end = driver.elapsed()
            if rc != 0:
                raise DrillError(f"raygr tune failed (exit status {rc}); see {driver.log}")
        finally:
            driver.stop()
            if seen is not None:
                seen.update({driver.process.pid: "", **driver.seen})
                for node in c.nodes.values():
                    seen.update(node.processes())
        t_stop = time.monotonic()
    final = trial_checkpoints(search)
    statuses = tune_statuses(search)
    summary = json.loads((search / "summary.json").read_text())
    ended = {m.group(1): int(m.group(2)) for m in TRIAL_ENDED.finditer(driver.text())}
    out = {"cluster": {"head_cpus": TUNE_HEAD_CPUS, "worker_cpus": TUNE_WORKER_CPUS},
           "settings": tune_settings(epochs, lrs),
           "epochs": epochs, "system_env": system_env or {}, "cluster_start_s": round(t_up, 1),
           "processes_before_kill": placed, "processes_after_replacement_joined": placed_after,
           "all_trials_at_epoch1_checkpoint_s": round(t_all_ckpt, 1),
           "killed": {"node": "worker", "raylet": killed["raylet"], "processes": len(killed["killed"]),
                      "at_s": round(t_kill, 1), "checkpoints": at_kill},
           "kill_to_node_dead_s": round(t_dead - t_kill, 1),
           "kill_to_all_restarting_s": round(t_restarting - t_kill, 1), "restarting": restarting,
           "replacement": replacement, "replacement_join_s": round(t_joined - t_add, 1),
           "replacement_to_search_end_s": round(t_end - t_add, 1), "search_wall_s": round(t_end, 1),
           "cluster_stop_s": round(time.monotonic() - t_stop, 1),
           "exit_status": rc, "tune_trials": statuses, "trials_final": final, "trials_ended_log": ended,
           "summary_trials": summary.get("trials"),
           "best_valid_ndcg@10": (summary.get("best") or {}).get("valid_ndcg@10")}
    log(f"tune drill: {out}")
    return out


def _print(msg: str) -> None:
    print(msg, flush=True)


def run_drills(workdir: Path, drills: list[str], epochs: int, *, fast_detector: bool = False,
               log: Callable[[str], None] = _print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    # A run directory left by an earlier invocation would be resumed (or just evaluated), not trained:
    # each drill starts from an empty one. The dataset is kept.
    for drill, run in (("baseline", "baseline"), ("process", "process-kill"), ("node", "node-kill"),
                       ("tune", "tune")):
        if drill in drills and (workdir / run).exists():
            shutil.rmtree(workdir / run)
    data = prepare_data(workdir / "data")
    system_env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(GROUP_START_TIMEOUT_S),
                  **(FAST_DETECTOR if fast_detector else {})}
    out: dict[str, Any] = {"epochs": epochs, "settings": TRAIN_SETTINGS, "system_env": system_env,
                           "nodes": {"head": 1, "worker": 1}, "drills": {}}
    t0 = time.monotonic()
    if {"baseline", "process", "node"} & set(drills):
        with two_node_cluster(workdir / "cluster", head_cpus=1, worker_cpus=1, system_env=system_env,
                              log=log) as c:
            out["cluster_start_s"] = round(time.monotonic() - t0, 1)
            if "baseline" in drills:
                out["drills"]["baseline"] = drill_baseline(c, data, workdir, epochs, log)
            if "process" in drills:
                out["drills"]["process"] = drill_worker_process(c, data, workdir, epochs, log)
            if "node" in drills:
                out["drills"]["node"] = drill_worker_node(c, data, workdir, epochs, "worker2", log)
            t_stop = time.monotonic()
        out["cluster_stop_s"] = round(time.monotonic() - t_stop, 1)
    if "serve" in drills:
        run_dir = workdir / "baseline"
        if not (run_dir / "metrics.json").exists():
            raise DrillError(f"the serve drill serves the baseline run, {run_dir}: run the baseline drill first")
        out["drills"]["serve"] = drill_serve(workdir / "serve", run_dir, data, log=log,
                                             system_env=FAST_DETECTOR if fast_detector else None)
    if "tune" in drills:
        out["drills"]["tune"] = drill_tune(workdir / "tune", data, epochs, system_env=system_env, log=log)
    out["total_s"] = round(time.monotonic() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/raygr-drills"))
    p.add_argument("--drills", default="baseline,process,node,serve,tune")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--fast-detector", action="store_true", help=f"GCS health checks {FAST_DETECTOR}")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = run_drills(args.workdir, args.drills.split(","), args.epochs, fast_detector=args.fast_detector)
    result["load_avg_1m_at_end"] = os.getloadavg()[0]
    # Keep the drills this invocation did not run (e.g. `--drills tune` keeps the train and Serve ones).
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    drills = {**old.get("drills", {}), **result["drills"]}
    if not {"baseline", "process", "node"} & set(args.drills.split(",")):  # the top level describes those
        for d in result["drills"].values():
            d["load_avg_1m_at_end"] = result["load_avg_1m_at_end"]
        result = {k: v for k, v in old.items() if k != "drills"} or result
    result["drills"] = drills
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
