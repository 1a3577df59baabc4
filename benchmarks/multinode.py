"""A two-node Ray cluster on one machine: a head and a worker, each its own `ray start --block` process.

    with two_node_cluster(workdir) as cluster:           # head (node_head) + worker (node_worker)
        cluster.address                                  # 127.0.0.1:GCS_PORT, for ray.init / --address
        cluster.dashboard                                # http://127.0.0.1:PORT (job API, state API)
        victim = cluster.nodes["worker"]
        victim.kill()                                    # SIGKILL to its raylet, agents and workers
        cluster.add_node("worker2", num_cpus=2)          # a replacement joins the cluster

Each node has its own ``--temp-dir`` (its own session, logs and sockets: Ray 2.60 takes the flag per node),
its own ports (all free ones, on 127.0.0.1) and a custom resource named after it (``node_<name>``: 1), so
that a state-API listing, a scheduling constraint and a log line can all say which node they mean.
Every process belongs to one of the `ray start` processes: a node is killed (a node lost) or stopped
(the end of a drill) by the PIDs below its `ray start`, never with `ray stop`, which would end every Ray
on the machine. The context manager stops every node it started, also when the body raises.

The failure-drill benchmark (benchmarks/bench_drills.py) and tests/test_multinode_drills.py use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
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

from benchmarks.cluster_e2e import free_ports, http_ok, port_open
from benchmarks.memlimit import MemoryLimit
from raygr.distributed.session import _zombie
from raygr.distributed.session import descendants as process_tree

BIN = Path(sys.executable).parent  # the ray command of this interpreter's environment
# Each node has an address of its own on the loopback network (127.0.0.0/8), as hosts of a cluster have:
# Ray rewrites 127.0.0.1 and localhost (only those) to the machine's outward address, in --node-ip-address
# and in --address alike, so the nodes use 127.0.0.2, 127.0.0.3, ... and nothing listens beyond loopback.
HEAD_IP = "127.0.0.2"
# Ray starts each node's object store at 30% of the machine's memory; these drills move kilobytes, and the
# machine is shared.
OBJECT_STORE_BYTES = 256 * 1024**2
RAYLET = re.compile(r"/raylet/raylet\b")


class ClusterError(RuntimeError):
    """A node did not start, or a drill step found the cluster not as expected; the message names the log."""


# -- processes --------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time, state) from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19], fields[0]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] != "Z"


def descendants(root: int) -> dict[int, str]:
    """Every live (not zombie) process below ``root`` (not ``root`` itself) as {pid: start time}."""
    return {pid: start for pid, start in process_tree(root).items() if not _zombie(pid)}


def kill_pids(pids: dict[int, str], sig: int = signal.SIGKILL) -> list[int]:
    """Signal each listed process that is still the same one (pid and start time); returns those signalled."""
    hit = []
    for pid, started in pids.items():
        st = _stat(pid)
        if st is None or st[1] != started or st[2] == "Z":
            continue
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except OSError:
            pass
    return hit


def wait_gone(pids: dict[int, str], timeout_s: float) -> list[int]:
    """Wait for the listed processes to exit; returns the ones still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p, s in pids.items() if (st := _stat(p)) is not None and st[1] == s and st[2] != "Z"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- nodes ------------------------------------------------------------------------------------------

@dataclass
class Node:
    """One `ray start --block` process and what it started."""

    name: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path
    num_cpus: float
    ports: dict[str, int]
    ip: str
    started_at: float = field(default_factory=time.monotonic)
    seen: dict[int, str] = field(default_factory=dict)  # every process ever seen below it (for the sweep)
    memory: MemoryLimit | None = None  # the node's memory cgroup (a container's limit), if it has one

    @property
    def resource(self) -> str:
        return f"node_{self.name}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def processes(self) -> dict[int, str]:
        procs = descendants(self.pid)
        self.seen.update(procs)
        return procs

    def raylet_pid(self) -> int | None:
        for pid in self.processes():
            if RAYLET.search(cmdline(pid)):
                return pid
        return None

    def workers(self, pattern: str = "") -> list[int]:
        """PIDs of this node's Ray worker processes (the raylet's children) whose title matches ``pattern``,
        e.g. ``ray::RayTrainWorker`` or ``ray::ServeReplica:raygr:Retriever``."""
        raylet = self.raylet_pid()
        if raylet is None:
            return []
        out = []
        for pid in descendants(raylet):
            st = _stat(pid)
            title = cmdline(pid)
            if st is not None and st[0] == raylet and title.startswith("ray::") and re.search(pattern, title):
                out.append(pid)
        return sorted(out)

    def kill(self) -> dict[str, Any]:
        """A lost node: SIGKILL to its raylet first, then to everything else below `ray start` and to the
        `ray start` process itself, by PID. Returns what was killed."""
        procs = self.processes()
        raylet = self.raylet_pid()
        killed: list[int] = []
        if raylet is not None:
            killed += kill_pids({raylet: procs[raylet]})
        killed += kill_pids({p: s for p, s in procs.items() if p != raylet})
        own = _stat(self.pid)
        if own is not None:
            killed += kill_pids({self.pid: own[1]})
        self.process.wait(timeout=30)
        left = wait_gone(procs, 30)
        if left:
            raise ClusterError(f"node {self.name}: processes {left} survived SIGKILL")
        return {"raylet": raylet, "killed": sorted(killed)}

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM to `ray start --block` (which stops its own raylet, agents and workers), SIGKILL to it
        after ``timeout_s``, then SIGKILL to any process of this node that outlived it."""
        self.processes()
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if wait_gone(self.seen, 10):
            kill_pids(self.seen)
            left = wait_gone(self.seen, 10)
            if left:
                raise ClusterError(f"node {self.name}: processes {left} survived SIGKILL")


def cluster_env(dashboard: str | None = None) -> dict[str, str]:
    """The environment of every process of the cluster and of its drivers."""
    # Nothing of a Ray this process may have joined (the test suite's local Ray sets RAY_API_SERVER_ADDRESS
    # and others): the cluster and its drivers get only what is set here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               # A node stopped with SIGTERM (the end of a drill) otherwise drains for up to 30 s first (Ray's
               # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S); the Tune drill's replacement node used all 30 s.
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    if dashboard:
        # The state API otherwise resolves "the" cluster of this host through /tmp/ray, i.e. whichever Ray
        # started last on the machine (raygr/distributed/session.py): Ray Train's placement-group cleaner
        # would then ask another cluster about this one's controller.
        env["RAY_API_SERVER_ADDRESS"] = dashboard
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    temp_root: Path  # short: Ray's socket paths below each node's temp dir must fit in 107 bytes
    nodes: dict[str, Node] = field(default_factory=dict)
    system_env: dict[str, str] = field(default_factory=dict)
    gcs_port: int = 0
    dashboard_port: int = 0
    addresses_used: int = 0  # worker nodes started so far (each gets the next loopback address)
    log: Callable[[str], None] = print

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    @property
    def head(self) -> Node:
        return self.nodes["head"]

    def _start(self, name: str, cmd: list[str], num_cpus: float, ports: dict[str, int], temp_dir: Path,
               env: dict[str, str], ip: str, memory: MemoryLimit | None = None) -> Node:
        logfile = self.workdir / f"ray-{name}.log"
        with open(logfile, "w") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            # In the node's memory cgroup from birth: the raylet, agents, object store and workers it starts
            # are all charged to it, as on a Kubernetes pod with a memory limit.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=memory.enter if memory is not None else None)
        node = Node(name, proc, temp_dir, logfile, num_cpus, ports, ip, memory=memory)
        self.nodes[name] = node
        return node

    def start_head(self, num_cpus: float, resources: dict[str, float] | None = None,
                   system_env: dict[str, str] | None = None) -> Node:
        gcs, dash, client, ahttp, agrpc, metrics, envagent, nm, om = free_ports(9)
        self.gcs_port, self.dashboard_port = gcs, dash
        self.system_env = dict(system_env or {})
        self.env = cluster_env(self.dashboard)
        temp = self.temp_root / "head"
        ports = {"gcs": gcs, "dashboard": dash, "metrics": metrics}
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
               f"--node-ip-address={HEAD_IP}", f"--temp-dir={temp}", f"--num-cpus={num_cpus:g}",
               f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--resources={json.dumps({'node_head': 1, **(resources or {})})}",
               f"--port={gcs}", "--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dash}",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={ahttp}",
               f"--dashboard-agent-grpc-port={agrpc}", f"--metrics-export-port={metrics}",
               f"--runtime-env-agent-port={envagent}", f"--node-manager-port={nm}", f"--object-manager-port={om}"]
        node = self._start("head", cmd, num_cpus, ports, temp, {**self.env, **self.system_env}, HEAD_IP)
        self.wait_for(lambda: http_ok(f"{self.dashboard}/api/version") and self.node_alive("head"), 120,
                      "the head node", node)
        return node

    def add_node(self, name: str, num_cpus: float, resources: dict[str, float] | None = None,
                 memory_limit_bytes: int | None = None) -> Node:
        """A worker node joins (also: a replacement for a lost one); waits until the GCS lists it alive.
        ``memory_limit_bytes``: the node runs in a memory cgroup of that size (benchmarks/memlimit.py)."""
        if name in self.nodes:
            # A replacement gets a name of its own: the lost node's record keeps the PIDs for the final sweep.
            raise ClusterError(f"node {name} exists already (running: {self.nodes[name].running()})")
        ahttp, agrpc, metrics, envagent, nm, om = free_ports(6)
        temp = self.temp_root / name
        self.addresses_used += 1
        ip = f"127.0.0.{2 + self.addresses_used}"  # a new address for each node, a replacement too
        cmd = [str(BIN / "ray"), "start", f"--address={self.address}", "--block", "--disable-usage-stats",
               f"--node-ip-address={ip}", f"--temp-dir={temp}", f"--num-cpus={num_cpus:g}",
               f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--resources={json.dumps({f'node_{name}': 1, **(resources or {})})}",
               f"--dashboard-agent-listen-port={ahttp}", f"--dashboard-agent-grpc-port={agrpc}",
               f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={envagent}",
               f"--node-manager-port={nm}", f"--object-manager-port={om}"]
        memory = None
        if memory_limit_bytes is not None:
            memory = MemoryLimit.create(f"{self.temp_root.name}-{name}", memory_limit_bytes)
        node = self._start(name, cmd, num_cpus, {"metrics": metrics}, temp, {**self.env, **self.system_env}, ip,
                           memory)
        self.wait_for(lambda: self.node_alive(name), 120, f"node {name} to join", node)
        return node

    # -- the cluster's view, through the dashboard's state API (no ray.init in this process) --

    def state_nodes(self) -> list[dict[str, Any]]:
        url = f"{self.dashboard}/api/v0/nodes?limit=1000&detail=true"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return body.get("data", {}).get("result", {}).get("result", [])

    def node_state(self, name: str) -> str | None:
        """ALIVE / DEAD for the newest node with resource node_<name>, None if the GCS never saw it."""
        mine = [n for n in self.state_nodes() if f"node_{name}" in (n.get("resources_total") or {})]
        if not mine:
            return None
        alive_ = [n for n in mine if n.get("state") == "ALIVE"]
        return "ALIVE" if alive_ else mine[-1].get("state")

    def node_alive(self, name: str) -> bool:
        return self.node_state(name) == "ALIVE"

    def wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str, node: Node | None = None) -> float:
        """Poll ``ready`` until true; returns the seconds waited. A node that exits meanwhile ends the wait."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if ready():
                return time.monotonic() - t0
            if node is not None and not node.running():
                raise ClusterError(f"node {node.name} exited (code {node.process.returncode}) while waiting "
                                   f"for {what}; see {node.log}")
            time.sleep(0.5)
        raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                           + (f"; see {node.log}" if node is not None else ""))

    def stop(self) -> None:
        """Worker nodes first, the head (GCS) last; each by its own PIDs."""
        errors = []
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            node = self.nodes[name]
            try:
                node.stop()
                if node.memory is not None:
                    node.memory.remove()
            except Exception as e:  # stop the others anyway
                errors.append(f"{name}: {e}")
        if self.gcs_port and port_open(self.gcs_port):
            errors.append(f"the GCS port {self.gcs_port} is still open")
        if errors:
            raise ClusterError("; ".join(errors))
        self.log("cluster stopped")


@contextlib.contextmanager
def two_node_cluster(workdir: Path, *, head_cpus: float = 2, worker_cpus: float = 2,
                     system_env: dict[str, str] | None = None, worker_memory_bytes: int | None = None,
                     log: Callable[[str], None] = print) -> Iterator[Cluster]:
    """A head and one worker node (``nodes["head"]``, ``nodes["worker"]``); everything stopped at the end.

    ``system_env``: environment for the cluster's processes on top of the usual one, e.g. Ray's
    ``RAY_health_check_*`` settings, which decide how soon the GCS declares a silent node dead.
    ``worker_memory_bytes``: the worker node runs under that memory limit (a cgroup; needs root).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir, cluster_env(), Path(tempfile.mkdtemp(prefix="rgmn-", dir="/tmp")), log=log)
    try:
        t0 = time.monotonic()
        cluster.start_head(head_cpus, system_env=system_env)
        cluster.add_node("worker", worker_cpus, memory_limit_bytes=worker_memory_bytes)
        log(f"two-node cluster up in {time.monotonic() - t0:.1f} s: GCS {cluster.address}, "
            f"dashboard {cluster.dashboard}, logs in {workdir}")
        yield cluster
    finally:
        cluster.stop()
    # Ray's session logs stay for a failed drill; after a passing one only the workdir's logs remain.
    shutil.rmtree(cluster.temp_root, ignore_errors=True)
