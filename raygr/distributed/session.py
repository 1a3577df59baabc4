"""Start an in-process local Ray, or join a cluster, for the duration of a command.

    with ray_session(address=None) as where:        # "local (4 CPUs)" or the cluster address
        ...

Local (the embedded default): ``num_cpus = max(4, 2 x cores)`` because Ray Train workers and the Ray
Data pipeline that feeds them each hold CPUs, and with exactly ``cores`` logical CPUs a 2-core machine
deadlocks (RAY_NOTES, "the 2-core hang"); token auth and usage stats are off, as nothing leaves the
machine. A cluster: ``--address`` or ``RAY_ADDRESS`` (``ray job submit`` sets it), with the cluster's
own auth settings. A Ray that is already running (tests, a notebook, Tune) is used and left running.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

# Read on the driver: Ray Train propagates the print patch switch to its workers, and Ray Data's
# context (progress bars) travels with the dataset. Locally, the raylet inherits the whole environment.
QUIET_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # else a worker's print() reaches the driver twice
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # progress bars from workers garble the driver's log
}
LOCAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's state API before RAY_ADDRESS


def quiet_env() -> None:
    """Set QUIET_ENV where the user has not chosen otherwise (also called by ``run_training`` directly)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


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
    if address is None:
        cpus = num_cpus or local_num_cpus()
        # The dashboard serves the state API that Ray Train's placement-group cleaner polls; without
        # it the driver's log fills with "Failed to query Ray Train Controller actor state".
        # address="local": a fresh Ray even if another user left a `ray start` cluster on this host.
        # The state API resolves "the" cluster of this host through /tmp/ray, i.e. the newest one: with
        # a `ray start` cluster also on this machine, Ray Train's placement-group cleaner would ask that
        # other cluster about our controller, be told it does not exist, and kill our workers. Pinning
        # the API server address (driver and every worker) keeps each cluster talking to itself.
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        ray.init(address="local", num_cpus=cpus, include_dashboard=True, dashboard_port=port,
                 runtime_env={"env_vars": {API_SERVER_ENV: api}}, log_to_driver=log_to_driver,
                 logging_level="WARNING")
        restore = os.environ.get(API_SERVER_ENV)
        os.environ[API_SERVER_ENV] = api
        where = f"local Ray ({cpus} logical CPUs on {os.cpu_count()} cores)"
    else:
        ray.init(address=address, log_to_driver=log_to_driver, logging_level="WARNING")
        where = f"Ray cluster at {address}"
    try:
        yield where
    finally:
        ray.shutdown()
        if address is None:
            if restore is None:
                os.environ.pop(API_SERVER_ENV, None)
            else:
                os.environ[API_SERVER_ENV] = restore
