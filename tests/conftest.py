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
    """A local Ray with 4 logical CPUs (more than the cores: see RAY_NOTES), shut down at session end."""
    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": always a fresh cluster, never one a developer left running.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
