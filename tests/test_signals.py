"""`raygr serve`, `train`, `tune` and `demo` stop their local Ray wholly on SIGTERM and SIGINT: every process the
command started (raylet, GCS, dashboard and runtime-env agents, workers) is gone once it exits. Their
output, start to stop, holds none of Ray's known first-run noise.

Each test starts the real command in a fresh process (its own local Ray), waits until Ray's processes
run, signals it, and reads /proc (psutil is not a dependency): no process it started may remain.
`raygr tune` (SIGTERM) and `raygr demo` (SIGINT) are started the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raygr.data.prepare import prepare
from raygr.distributed.session import free_port

pytestmark = pytest.mark.ray

START_TIMEOUT_S = 240  # a local Ray on 2 loaded cores: 5-50 s, then workers
STOP_TIMEOUT_S = 120


def stat(pid: int) -> tuple[int, int, str, str] | None:
    """(ppid, pgrp, state, start time) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), fields[0], fields[19]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """{pid: (start time, command line)} of every process below ``root``."""
    table = {int(d): s for d in os.listdir("/proc") if d.isdigit() and (s := stat(int(d))) is not None}
    out, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _, start) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = (start, cmdline(pid))
                todo.append(pid)
    return out


def alive(processes: dict[int, tuple[str, str]]) -> dict[int, str]:
    out = {}
    for pid, (start, cmd) in processes.items():
        s = stat(pid)
        if s is not None and s[3] == start and s[2] != "Z":
            out[pid] = cmd
    return out


def run_and_signal(argv: list[str], ready: str, running: str, sig: int) -> tuple[int, str, dict, int | None]:
    """Start ``raygr argv``; once ``ready`` was printed and a process whose command line holds ``running``
    exists, send ``sig``. Returns the exit status, the output, what it had started, and its own process
    group when it leads one (ray.init makes the driver a group leader; Ray's processes join the group)."""
    proc = subprocess.Popen([sys.executable, "-m", "raygr.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    started: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            started.update(descendants(proc.pid))
            if any(ready in line for line in lines) and any(running in c for _, c in started.values()):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"raygr {argv[0]} did not get ready:\n{''.join(lines)[-3000:]}")
        time.sleep(1.0)
        started.update(descendants(proc.pid))
        own = stat(proc.pid)
        group = proc.pid if own is not None and own[1] == proc.pid else None
        proc.send_signal(sig)
        rc = proc.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return rc, "".join(lines), started, group


# Ray's first-run noise (issue 24) must not reach the user; the runs here would print all of it.
NOISE = ("PreemptionWatcher", "RayDeprecationWarning", "Progress bars disabled", "will not be applied",
         "graceful_shutdown", "parquet_datasource.py", "Traceback")


def assert_nothing_left(started: dict, pgid: int | None, output: str) -> None:
    assert not [w for w in NOISE if w in output], output[-3000:]
    assert any("raylet" in c for _, c in started.values()), f"saw no raylet, nothing was tested: {started}"
    time.sleep(1.0)  # reaped processes may take a moment to leave /proc
    left = alive(started)
    same_group = {int(d): cmdline(int(d)) for d in os.listdir("/proc")
                  if pgid is not None and d.isdigit() and (s := stat(int(d))) is not None and s[1] == pgid
                  and s[2] != "Z"}
    assert not left and not same_group, f"left running: {left or same_group}\n{output[-3000:]}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signals")
    prepare("synthetic", None, root / "ds", options={"num_users": "300", "num_items": "60"}, num_shards=2)
    return root


def test_serve_stops_everything_on_sigterm(tiny):
    from raygr.data.dataset import load_dataset
    from tests.serving_helpers import tiny_checkpoint

    run = tiny_checkpoint(load_dataset(tiny / "ds"), tiny / "run", epochs=0)
    rc, output, started, group = run_and_signal(
        ["serve", "--checkpoint", str(run), "--data", str(tiny / "ds"), "--port", str(free_port())],
        ready="Ctrl-C to stop", running="ServeReplica", sig=signal.SIGTERM)
    assert rc == 0 and "raygr serve: shutting down" in output, output[-3000:]
    assert_nothing_left(started, group, output)


def test_train_stops_everything_on_sigint(tiny):
    rc, output, started, group = run_and_signal(
        ["train", "--data", str(tiny / "ds"), "--output", str(tiny / "train-run"),
         "--set", "model.dim=16", "--set", "model.codes=16", "--set", "train.epochs=1000",
         "--set", "train.log_every=0"],
        ready="training joint on", running="RayTrainWorker", sig=signal.SIGINT)
    assert rc == 130 and "raygr train: interrupted" in output, output[-3000:]
    assert_nothing_left(started, group, output)


def test_tune_stops_everything_on_sigterm(tiny):
    rc, output, started, group = run_and_signal(
        ["tune", "--data", str(tiny / "ds"), "--output", str(tiny / "tune-run"), "--num-samples", "1",
         "--set", "model.dim=16", "--set", "model.codes=16", "--set", "train.epochs=1000",
         "--set", "train.log_every=0"],
        ready="raygr tune:", running="RayTrainWorker", sig=signal.SIGTERM)
    # Ray Tune installs its own SIGTERM handler (a graceful stop of the experiment), which reaches raygr as
    # an interrupt: the exit status is then 130, not 143. What matters here is that nothing is left.
    assert rc in (130, 143) and ("raygr tune: stopped by signal 15" in output or "raygr tune: interrupted" in output), \
        output[-3000:]
    assert_nothing_left(started, group, output)


def test_demo_stops_everything_on_sigint(tiny):
    rc, output, started, group = run_and_signal(
        ["demo", "--data", str(tiny / "ds"), "--output", str(tiny / "demo-run"),
         "--set", "model.dim=16", "--set", "model.codes=16", "--set", "train.epochs=1000"],
        ready="raygr demo:", running="RayTrainWorker", sig=signal.SIGINT)
    assert rc == 130 and "raygr demo: interrupted" in output, output[-3000:]
    assert_nothing_left(started, group, output)
