"""Serving metrics at Ray's Prometheus endpoint: after real requests over HTTP, the node's metrics export
port serves the ingress's counters and histograms (requests by status, latency per stage, candidates,
fallbacks), read back as Prometheus text."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from raygr.config import ServeConfig
from raygr.distributed.serve import build_app, run_app
from raygr.serving.client import Client
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint

pytestmark = pytest.mark.ray

APP = "metricsapp"  # its own application tag: other tests' apps on the shared cluster export raygr_* too
EXPORT_WAIT_S = 90  # Ray exports application metrics every few seconds; a loaded machine is slower


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of metric ``name`` of application APP (Prometheus text format)."""
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)", line)
        if m and f'application="{APP}"' in (m.group(1) or ""):
            out.append((m.group(1), float(m.group(2))))
    return out


def test_serving_metrics_reach_rays_prometheus_endpoint(ray_cluster, tmp_path):
    import ray
    from ray import serve

    ds = tiny_dataset(tmp_path, num_users=200)
    run = tiny_checkpoint(ds, tmp_path / "joint")
    port = free_port()
    cfg = ServeConfig(min_replicas=1, max_replicas=1, port=port)
    client = Client(f"http://127.0.0.1:{port}")
    metrics_port = ray._private.worker.global_worker.node.metrics_export_port
    try:
        run_app(build_app(run, ds.root, cfg), cfg, name=APP, route_prefix="/m", log_level="WARNING")
        deadline = time.monotonic() + 60
        while client.get("/m/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        ids = list(ds.items.item_id)
        for i in range(3):
            status, answer = client.post("/m/recommend", {"history": ids[i:i + 3], "k": 5})
            assert status == 200, answer
        assert client.post("/m/recommend", {"history": [], "k": 5})[0] == 200  # popularity fallback
        assert client.post("/m/recommend", {"history": ids[:2], "k": 0})[0] == 422

        deadline, text = time.monotonic() + EXPORT_WAIT_S, ""
        while time.monotonic() < deadline:
            text = scrape(metrics_port)
            if (samples(text, "ray_raygr_fallbacks_total")
                    and any('status="422"' in lab for lab, _ in samples(text, "ray_raygr_requests_total"))):
                break
            time.sleep(2)
        requests = {re.search(r'status="(\d+)"', lab).group(1): v
                    for lab, v in samples(text, "ray_raygr_requests_total")}
        seen = "\n".join(line for line in text.splitlines() if "raygr" in line)[:3000]
        assert requests.get("200") == 4 and requests.get("422") == 1, (requests, seen)
        assert sum(v for _, v in samples(text, "ray_raygr_fallbacks_total")) == 1
        # Latency per stage: 4 answered requests (the 422 too: 5), 3 batch calls to each model stage.
        counts = {re.search(r'stage="(\w+)"', lab).group(1): v
                  for lab, v in samples(text, "ray_raygr_latency_ms_count")}
        assert counts == {"request": 5, "retrieve": 3, "rank": 3}, counts
        assert all('deployment="Ingress"' in lab for lab, _ in samples(text, "ray_raygr_latency_ms_count"))
        # Candidates per answer: 3 ranked answers of 50 (capped by the catalogue) and 1 fallback with 0.
        assert sum(v for _, v in samples(text, "ray_raygr_candidates_count")) == 4
        assert sum(v for _, v in samples(text, "ray_raygr_candidates_sum")) > 0
    finally:
        client.close()
        serve.shutdown()
