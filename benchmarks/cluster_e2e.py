"""End to end on a real Ray cluster: `ray start --head`, `ray job submit` prepare -> train -> evaluate,
`serve deploy`, one HTTP request, and the cluster stopped again (also when a step fails).

    python -m benchmarks.cluster_e2e [--workdir DIR] [--keep]     # ~3 min on 2 cores; writes results

This is what a user does on a cluster (docs/cluster.md), done here against a single-node cluster
started with `ray start`: the same CLI commands, a separate Ray instance reached over the job API
(HTTP), the code shipped with --working-dir (a copy per job, see stage_package), and the app deployed
from a generated config. The test suite runs it too (tests/test_cluster_e2e.py), on tinier settings.

The cluster gets its own free ports for everything, so it can run beside another Ray on the same
machine (the test suite's), and it is stopped by signalling its `ray start --block` process, which
stops that cluster's processes only: `ray stop` would kill every Ray process on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the ray / serve commands of this interpreter's environment

# Small enough for 2 cores; the training job still goes through Ray Data and a TorchTrainer.
QUICK = {
    "data": ["--option", "num_users=400", "--option", "num_items=120", "--option", "seed=3"],
    "train": ["--set", "train.epochs=2", "--set", "train.batch_size=64", "--set", "model.dim=32",
              "--set", "model.codes=16", "--set", "model.levels=2", "--set", "model.num_negatives=16",
              "--set", "train.beam_size=10", "--set", "train.num_candidates=10"],
}


class E2EError(RuntimeError):
    """A step of the end-to-end run failed; the message names the step and where its log is."""


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    """A `ray start --head --block` process: its ports, its log, and how to reach its job API."""

    process: subprocess.Popen
    dashboard_port: int
    gcs_port: int
    log: Path
    env: dict[str, str] = field(repr=False)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def cluster_env() -> dict[str, str]:
    # Nothing of a Ray this process may have joined (the test suite's local Ray) reaches the cluster: in
    # particular not RAY_API_SERVER_ADDRESS, which raygr pins to its own local Ray's dashboard and which Ray
    # reads before any address it is given. With it inherited, this cluster's jobs ran beside the test
    # suite's Ray and failed to find their working_dir package (the CI failure of 2026-12-04).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Nothing leaves this machine: no token auth and no usage stats, on the cluster and the clients alike.
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def local_cluster(workdir: Path, num_cpus: int = 4, log: Callable[[str], None] = print) -> Iterator[Cluster]:
    gcs, dash, client, agent_http, agent_grpc, metrics, env_agent, node_mgr, obj_mgr = free_ports(9)
    env = cluster_env()
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dash}"  # this cluster's state API, for its jobs too
    logfile = workdir / "ray-start.log"
    # A temp dir of its own (short: Ray's socket paths must fit in 107 bytes), so its session, sockets and
    # unpacked packages never mix with another Ray's under /tmp/ray.
    temp = Path(tempfile.mkdtemp(prefix="rge2e-", dir="/tmp"))
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}", "--disable-usage-stats",
           f"--temp-dir={temp}",
           f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={env_agent}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}"]
    log(f"$ {' '.join(cmd[:3])} ... (log: {logfile})")
    with open(logfile, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cluster = Cluster(proc, dash, gcs, logfile, env)
    try:
        wait_for(lambda: http_ok(f"{cluster.address}/api/version"), 120, "the Ray head's job API", cluster)
        log(f"Ray head up: job API {cluster.address}, GCS port {gcs}")
        yield cluster
    finally:
        stop_cluster(cluster, log)
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(cluster: Cluster, log: Callable[[str], None] = print) -> None:
    """SIGTERM to `ray start --block` makes it stop its own raylet, GCS, dashboard and workers."""
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGTERM)
        try:
            cluster.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.process.pid, signal.SIGKILL)
            cluster.process.wait()
    # The raylet's children (job drivers, Serve replicas) go with it; check that the GCS port is free.
    wait_for(lambda: not port_open(cluster.gcs_port), 60, "the cluster to stop")
    log("Ray head stopped")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(ready: Callable[[], bool], timeout_s: float, what: str, cluster: Cluster | None = None) -> None:
    """Poll ``ready``; with ``cluster``, give up early if its head process exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if cluster is not None and cluster.process.poll() is not None:
            raise E2EError(f"the Ray head exited (code {cluster.process.returncode}) while waiting for {what}; "
                           f"see {cluster.log}")
        time.sleep(1)
    raise E2EError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def run(cmd: list[str], cluster: Cluster, logfile: Path, step: str, timeout_s: float = 600) -> str:
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise E2EError(f"{step}: no result after {timeout_s:.0f} s; see {logfile}") from e
        out.write(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise E2EError(f"{step} failed (exit {done.returncode}); see {logfile}\n{tail}")
    return done.stdout


def stage_package(workdir: Path, submission_id: str) -> Path:
    """A copy of the code a job needs (raygr/, jobs/) with a file naming the submission: the job's working_dir.

    Ray names an uploaded working_dir by the hash of its files and skips the upload when a package of that
    name is registered, even one the previous job's end is about to delete (ray-project/ray#46625): a
    second job from an unchanged checkout can then start without its code. A package per submission
    always uploads, and its job holds the reference for as long as it runs.
    """
    pkg = workdir / "packages" / submission_id
    if pkg.exists():
        shutil.rmtree(pkg)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("raygr", "jobs"):
        shutil.copytree(ROOT / part, pkg / part, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", pkg / "pyproject.toml")
    (pkg / "SUBMISSION").write_text(f"{submission_id} {time.time_ns()}\n")
    return pkg


def submit(cluster: Cluster, job_id: str, entrypoint: list[str], logfile: Path, timeout_s: float = 900) -> float:
    """`ray job submit` (waits, streaming the job's log), then the job's recorded status must be SUCCEEDED."""
    t0 = time.perf_counter()
    submission_id = job_id
    for attempt in range(4):
        pkg = stage_package(logfile.parent, submission_id)
        cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.address, "--submission-id", submission_id,
               "--working-dir", str(pkg), "--runtime-env", str(ROOT / "jobs" / "runtime_env.yaml"), "--",
               *entrypoint]
        try:
            run(cmd, cluster, logfile, f"job {submission_id}", timeout_s)
            break
        except E2EError as e:
            if attempt == 3:
                raise
            if "No available agent to submit job" in str(e):
                # The dashboard answers before its job agent is up on a loaded machine; the job was not
                # created, so the same submission id can be sent again.
                time.sleep(10)
            elif "Failed to download runtime_env file package" in str(e):
                # Should not happen with a package per submission; if the GCS lost it anyway, a new id
                # gets a new package.
                submission_id = f"{job_id}-retry{attempt + 1}"
            else:
                raise
    status = run([str(BIN / "ray"), "job", "status", "--address", cluster.address, submission_id], cluster,
                 logfile, f"job {submission_id} status")
    if f"Job '{submission_id}' succeeded" not in status:
        raise E2EError(f"job {submission_id} did not succeed (`ray job status` says otherwise); see {logfile}")
    return time.perf_counter() - t0


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def run_e2e(workdir: Path, *, settings: dict[str, list[str]] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole path; returns what it measured and checked. Raises E2EError naming the failed step."""
    settings = settings or QUICK
    workdir.mkdir(parents=True, exist_ok=True)
    data, run_dir, logfile = workdir / "datasets" / "synthetic", workdir / "runs" / "e2e-joint", workdir / "jobs.log"
    py = sys.executable  # the cluster runs in this environment, so its python is this one
    result: dict[str, Any] = {"log": str(logfile), "seconds": {}}
    secs = result["seconds"]
    t_all = time.perf_counter()
    with local_cluster(workdir, log=log) as cluster:
        secs["cluster_start"] = round(time.perf_counter() - t_all, 1)
        tag = f"{int(time.time())}"
        log("ray job submit: jobs/prepare.py (synthetic)")
        secs["prepare_job"] = submit(cluster, f"raygr-prepare-{tag}", [
            py, "jobs/prepare.py", "--format", "synthetic", "--output", str(data), *settings["data"]], logfile)
        if not (data / "manifest.json").is_file():
            raise E2EError(f"the prepare job succeeded but {data}/manifest.json is missing")

        log("ray job submit: jobs/train.py")
        secs["train_job"] = submit(cluster, f"raygr-train-{tag}", [
            py, "jobs/train.py", "--data", str(data), "--output", str(run_dir), *settings["train"]], logfile)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if not (run_dir / "checkpoints" / "best").is_dir():
            raise E2EError(f"the train job succeeded but {run_dir}/checkpoints/best is missing")
        result["train"] = {"test": metrics["test"], "popularity": metrics["baselines"]["popularity"],
                           "epochs": metrics["train"]["epochs"]}

        log("ray job submit: jobs/evaluate.py")
        eval_json = workdir / "evaluate.json"
        secs["evaluate_job"] = submit(cluster, f"raygr-evaluate-{tag}", [
            py, "jobs/evaluate.py", "--checkpoint", str(run_dir), "--data", str(data), "--output", str(eval_json)],
            logfile)
        result["evaluate"] = json.loads(eval_json.read_text())

        log("serve deploy (config generated by raygr serve --write-config)")
        t0 = time.perf_counter()
        (http_port,) = free_ports(1)
        deploy = workdir / "serve_config.yaml"
        run([str(BIN / "raygr"), "serve", "--checkpoint", str(run_dir), "--data", str(data), "--port", str(http_port),
             "--write-config", str(deploy)], cluster, logfile, "raygr serve --write-config")
        run([str(BIN / "serve"), "deploy", str(deploy), "--address", cluster.address], cluster, logfile,
            "serve deploy")
        url = f"http://127.0.0.1:{http_port}"
        wait_for(lambda: http_ok(f"{url}/healthz"), 180, f"the Serve app at {url}/healthz", cluster)
        secs["serve_deploy"] = round(time.perf_counter() - t0, 1)
        meta = json.loads(urllib.request.urlopen(f"{url}/metadata", timeout=10).read())
        history = first_history(data)
        reply = post_json(f"{url}/recommend", {"history": history, "k": 5})
        if len(reply.get("items", [])) != 5:
            raise E2EError(f"POST /recommend returned {reply!r}, expected 5 items")
        result["serve"] = {"metadata": meta, "request": {"history": history, "k": 5}, "reply": reply}
        log(f"POST /recommend -> {[i['item_id'] for i in reply['items']]}")
    secs["total"] = round(time.perf_counter() - t_all, 1)
    result["stopped_cleanly"] = True
    return result


def first_history(data: Path) -> list[str]:
    """A real user's history in the dataset's original item ids (what a client would send)."""
    from raygr.data.dataset import load_dataset  # no Ray

    ds = load_dataset(data)
    seqs = ds.sequences
    items = seqs.items[seqs.offsets[0]:seqs.offsets[1]][:-1]  # the user's history before their test item
    return [ds.items.item_id[i - 1] for i in items[-5:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where datasets, runs and logs go (default: a fresh temporary directory)")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="raygr-e2e-"))
    result = run_e2e(workdir)
    from benchmarks.common import write_result

    write_result("cluster_e2e", result)
    print(json.dumps(result["seconds"], indent=2))


if __name__ == "__main__":
    main()
