"""Start an in-process local Ray, or join a cluster, for the duration of a command.

    with ray_session(address=None) as where:        # "local (4 CPUs)" or the cluster address
        ...

Local (the embedded default): ``num_cpus = max(4, 2 x cores)`` because Ray Train workers and the Ray
Data pipeline that feeds them each hold CPUs, and with exactly ``cores`` logical CPUs a 2-core machine
deadlocks (RAY_NOTES, "the 2-core hang"); token auth and usage stats are off, as nothing leaves the
machine. A cluster: ``--address`` or ``RAY_ADDRESS`` (``ray job submit`` sets it), with the cluster's
own auth settings. A Ray that is already running (tests, a notebook, Tune) is used and left running.

Stopping: SIGINT and SIGTERM (what a process supervisor sends) both unwind the command as an interrupt, so
Serve and Ray shut down in order; a second signal during that shutdown is ignored rather than cutting it
short. A local Ray is then swept: Ray processes this one started that outlived ``ray.shutdown`` (its
dashboard and runtime-env agents did, and ignored a further SIGTERM) are terminated, then killed.

Quiet: Ray's known-harmless lines (``HARMLESS``) are dropped from this process's logs and from the worker
output Ray forwards to it; everything else, errors included, still shows.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Read on the driver: Ray Train propagates the print patch switch to its workers, and Ray Data's
# context (progress bars) travels with the dataset. Locally, the raylet inherits the whole environment.
QUIET_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # else a worker's print() reaches the driver twice
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # progress bars from workers garble the driver's log
    # Ray Data's INFO lines (parquet encoding estimates, "execution finished in ...") on the driver and in
    # every worker; its warnings still show.
    "RAY_DATA_LOG_LEVEL": "WARNING",
}
LOCAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's state API before RAY_ADDRESS


def quiet_env() -> None:
    """Set QUIET_ENV where the user has not chosen otherwise (also called by ``run_training`` directly)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


# Lines Ray 2.60 prints on every first run that need no action from anyone, each with why.
HARMLESS = tuple(re.compile(p) for p in (
    # Ray Train creates its PreemptionWatcher actor with max_restarts=-1 and an argument in the object store,
    # and its core worker logs at error level that a restart could then fail. raygr never preempts.
    r"Actor with class name: 'PreemptionWatcher' .*constructor arguments in the object store",
    # Ray Train's own DatasetManager sets this deprecated option (raygr does not); the warning, then the
    # source line Python prints under it.
    r"RayDeprecationWarning: `ExecutionOptions\.exclude_resources` is deprecated",
    r"^\s*self\.exclude_resources = exclude_resources\s*$",
    # raygr turns progress bars off on purpose (QUIET_ENV); every Ray Data process then warns that they are.
    r"Progress bars disabled\. To enable",
    # serve.run after serve.start (which fixes host and port) always "connects to the existing" Serve.
    r"Connecting to existing Serve app in namespace .* will not be applied",
    # serve.shutdown kills the Serve controller while its own graceful_shutdown task is still queued.
    r"Task ServeController\.graceful_shutdown failed",
))
# The loggers those lines come from in this process (worker lines arrive through Ray's log forwarding).
NOISY_LOGGERS = ("ray.data._internal.progress", "ray.serve", "ray", "ray.train", "ray.data")


def is_harmless(line: str) -> bool:
    return any(p.search(line) for p in HARMLESS)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not is_harmless(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is not ours to judge
            return True


_DROP = _DropHarmless()


def filter_ray_noise() -> None:
    """Drop HARMLESS lines here and from forwarded worker output (idempotent; call after ray.init)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP not in logger.filters:
            logger.addFilter(_DROP)
    # Records of child loggers are checked by the handlers, not by the parents' logger filters.
    for logger in [logging.getLogger(), *(v for k, v in logging.root.manager.loggerDict.items()
                                          if k.startswith("ray") and isinstance(v, logging.Logger))]:
        for handler in logger.handlers:
            if _DROP not in handler.filters:
                handler.addFilter(_DROP)
    # Ray's private log forwarding (pinned to 2.60 in pyproject; a later Ray without these just prints more).
    # Worker output arrives through the dispatcher's handlers; error messages pushed to the driver (a failed
    # task, from the raylet) through the module's print_to_stdstream, looked up at each call.
    try:
        import ray._private.worker as ray_worker
        dispatcher = ray_worker.global_worker_stdstream_dispatcher
    except (ImportError, AttributeError):
        return
    with dispatcher._lock:
        dispatcher.handlers = [(name, _filtered(h)) for name, h in dispatcher.handlers]
    if hasattr(ray_worker, "print_to_stdstream"):
        ray_worker.print_to_stdstream = _filtered(ray_worker.print_to_stdstream)


def _filtered(handler: Callable[..., None]) -> Callable[..., None]:
    if getattr(handler, "_raygr_filtered", False):
        return handler

    def emit(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        lines = [line for line in data.get("lines", []) if not is_harmless(str(line))]
        if lines:
            handler({**data, "lines": lines}, *args, **kwargs)

    emit._raygr_filtered = True  # type: ignore[attr-defined]
    return emit


# -- stopping ---------------------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that every ``finally`` (Serve, Ray) runs."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], None]]:
    """SIGINT/SIGTERM -> KeyboardInterrupt/Terminated once; later signals are ignored so cleanup can finish.

    Yields a function that installs the handlers again (``ray.init`` replaces the SIGTERM one). Outside
    the main thread, where handlers cannot be set, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    fired = []

    def handler(signum: int, _frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)

    def install() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install()
    try:
        yield install
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# Workers retitle themselves "ray::..."; the dashboard's module processes "ray-dashboard-..." (forked from a
# forkserver that imports ray.dashboard); everything else runs from inside Ray's package
# (.../ray/core/src/ray/raylet/raylet, .../ray/dashboard/agent.py, ...).
RAY_PROCESS = re.compile(r"ray::|/ray/|ray[-.]dashboard")


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (not ``root`` itself) as {pid: start time}; empty where /proc is absent."""
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return {}
    parent, start = {}, {}
    for pid in pids:
        st = _proc_stat(pid)
        if st is not None:
            parent[pid], start[pid] = st
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        out[pid] = start[pid]
    return out


def ray_descendants(root: int | None = None) -> dict[int, str]:
    """Ray processes below ``root`` (default: this one) as {pid: start time}; empty where /proc is absent."""
    below = descendants(os.getpid() if root is None else root)
    # Only Ray's own processes, never another child of this one.
    return {pid: start for pid, start in below.items() if RAY_PROCESS.search(_cmdline(pid))}


def reap(processes: dict[int, str], grace_s: float = 3.0) -> list[int]:
    """SIGTERM the listed processes that still run (same pid and start time), SIGKILL what survives
    ``grace_s``; returns the pids that had to be signalled."""
    def alive() -> list[int]:
        return [pid for pid, start in processes.items()
                if (st := _proc_stat(pid)) is not None and st[1] == start and not _zombie(pid)]

    left = alive()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while (still := alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not still:
            break
    return left


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_num_cpus() -> int:
    return max(4, 2 * (os.cpu_count() or 1))


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                log_to_driver: bool = True) -> Iterator[str]:
    """Connect for the duration of the block; shuts down only a Ray that it started."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet_env()
    if address is None:
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    import ray  # after the environment above: Ray reads some of it at import time

    if ray.is_initialized():
        yield "the running Ray session"
        return
    with stop_on_signals() as handlers_again:
        restore = None
        try:
            if address is None:
                cpus = num_cpus or local_num_cpus()
                # The dashboard serves the state API that Ray Train's placement-group cleaner polls; without
                # it the driver's log fills with "Failed to query Ray Train Controller actor state".
                # address="local": a fresh Ray even if another user left a `ray start` cluster on this host.
                # The state API resolves "the" cluster of this host through /tmp/ray, i.e. the newest one:
                # with a `ray start` cluster also on this machine, Ray Train's placement-group cleaner would
                # ask that other cluster about our controller, be told it does not exist, and kill our
                # workers. Pinning the API server address (driver and every worker) keeps each cluster
                # talking to itself.
                port = free_port()
                api = f"http://127.0.0.1:{port}"
                restore = os.environ.get(API_SERVER_ENV)
                ray.init(address="local", num_cpus=cpus, include_dashboard=True, dashboard_port=port,
                         runtime_env={"env_vars": {API_SERVER_ENV: api}}, log_to_driver=log_to_driver,
                         logging_level="WARNING")
                os.environ[API_SERVER_ENV] = api
                where = f"local Ray ({cpus} logical CPUs on {os.cpu_count()} cores)"
            else:
                ray.init(address=address, log_to_driver=log_to_driver, logging_level="WARNING")
                where = f"Ray cluster at {address}"
            # ray.init set its own SIGTERM handler (sys.exit, which skips nothing but is not ignored when
            # repeated): ours again, so a second signal cannot cut the shutdown short.
            handlers_again()
            filter_ray_noise()
            yield where
        finally:
            ours = ray_descendants() if address is None else {}
            ray.shutdown()
            if address is None:
                reap(ours)
                if restore is None:
                    os.environ.pop(API_SERVER_ENV, None)
                else:
                    os.environ[API_SERVER_ENV] = restore
