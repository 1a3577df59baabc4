"""Autoscaling seen working on the shared local cluster: under concurrent HTTP load a model role goes from
``min_replicas`` (1) to ``max_replicas`` (2), every request succeeds meanwhile, and after the load it goes
back to 1. The deployment uses the fast-reacting settings of benchmarks/bench_autoscale.py (short delays,
metrics pushed every 0.5 s); the timeline under a longer ramp is in docs/serving.md."""

from __future__ import annotations

import time

import pytest
from ray import serve

from benchmarks.bench_autoscale import Ramp, autoscaling_options, replica_counts
from raygr.config import ServeConfig
from raygr.distributed.serve import APP_NAME, build_app, run_app
from raygr.serving.client import Client, example_requests
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint
from tests.test_serve_ray import free_port

pytestmark = pytest.mark.ray

MODELS = ("Retriever", "Ranker")
CLIENTS = 6
SCALE_UP_TIMEOUT_S = 45.0
SCALE_DOWN_TIMEOUT_S = 45.0


def running(counts: dict[str, dict]) -> dict[str, int]:
    return {name: counts[name]["running"] for name in MODELS}


def wait_for(condition, timeout_s: float) -> tuple[bool, float, dict[str, dict]]:
    """Poll the replica counts every 0.5 s until ``condition(counts)``; (met, seconds waited, last counts)."""
    t0 = time.monotonic()
    while True:
        counts = replica_counts(APP_NAME)
        if condition(counts):
            return True, time.monotonic() - t0, counts
        if time.monotonic() - t0 > timeout_s:
            return False, time.monotonic() - t0, counts
        time.sleep(0.5)


def test_a_model_role_scales_up_under_load_and_back_down_after_it(ray_cluster, tmp_path):
    ds = tiny_dataset(tmp_path, num_users=300)
    run = tiny_checkpoint(ds, tmp_path / "joint")
    cfg = ServeConfig(min_replicas=1, max_replicas=2, target_ongoing_requests=0.25, port=free_port())
    # Model roles 1..2 replicas of 0.5 CPU (both roles at 2 fit the fixture's 4 logical CPUs); the Ingress stays
    # at 1, so a model role's ongoing calls are that one Ingress's batches: about 1 under load, above 0.25.
    extra = autoscaling_options(1, 2, 0.25, upscale_delay_s=1.0, downscale_delay_s=2.0, look_back_period_s=2.0,
                                model_cpus=0.5, metrics_interval_s=0.5, ingress_max_replicas=1)
    url = f"http://127.0.0.1:{cfg.port}"
    bodies = [b for b, _ in example_requests(ds, max_history=20, n=50)]
    ramp = None
    try:
        run_app(build_app(run, ds.root, cfg, extra_options=extra), cfg, log_level="WARNING")
        client = Client(url)
        client.wait_healthy()
        client.close()
        assert running(replica_counts(APP_NAME)) == {"Retriever": 1, "Ranker": 1}

        ramp = Ramp(url, bodies, CLIENTS, time.monotonic(), max_requests=20_000)
        ramp.set_level(CLIENTS)
        up, up_s, counts = wait_for(lambda c: max(running(c).values()) == 2, SCALE_UP_TIMEOUT_S)
        ramp.set_level(0)
        ramp.stop()
        reqs = ramp.requests
        assert up, f"no model role reached 2 replicas in {up_s:.0f} s under {CLIENTS} clients: {counts}"
        assert len(reqs.status) > 0
        assert reqs.failures() == {}, f"{reqs.failures()} of {len(reqs.status)} requests failed during scale-up"
        print(f"scale-up after {up_s:.1f} s of load ({len(reqs.status)} requests, all 200): {running(counts)}")

        down, down_s, counts = wait_for(lambda c: running(c) == {"Retriever": 1, "Ranker": 1}
                                        and all(c[m]["stopping"] == 0 for m in MODELS), SCALE_DOWN_TIMEOUT_S)
        assert down, f"the model roles were not back at 1 replica {down_s:.0f} s after the load: {counts}"
        print(f"back to 1 replica each {down_s:.1f} s after the load")
        # The scaled-down service still answers.
        status, _ = client.post("/recommend", bodies[0])
        client.close()
        assert status == 200
    finally:
        if ramp is not None:
            ramp.stop()
        serve.shutdown()
