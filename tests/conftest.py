"""Shared fixtures. Ray: one local cluster for the whole session (a second ``ray.init`` raises)."""

from __future__ import annotations

import os

# Before anything imports ray: no token auth, no usage stats, no progress bars (RAY_NOTES).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """The local Ray that `raygr` commands start (4 logical CPUs: more than the cores, see RAY_NOTES),
    shared by the whole session. Started the same way as the product's, dashboard and pinned state-API
    address included: Ray Train's placement-group cleaner polls that API, and with a second Ray on the
    machine (the cluster end-to-end test, a developer's `ray start`) an unpinned one asks the wrong cluster."""
    import ray

    from raygr.distributed.session import ray_session

    if ray.is_initialized():
        yield ray
        return
    with ray_session(None, num_cpus=4, log_to_driver=False):
        yield ray


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic dataset directory (tests.helpers.tiny_dataset), one per test module."""
    from tests.helpers import tiny_dataset

    return tiny_dataset(tmp_path_factory.mktemp("data")).root
