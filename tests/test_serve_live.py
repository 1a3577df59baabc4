"""Ray Serve in production terms, on the shared local cluster: every answer names the model version; a replica
whose model returns garbage fails its health check and Serve replaces it; ``/readyz`` says whether every stage
answers; a new checkpoint rolls out in place under load with no failed request; a checkpoint of another
dataset is refused and the old model keeps serving.

The tests run in file order on one deployment (health before the updates)."""

from __future__ import annotations

import threading
import time

import pytest
import ray
from ray import serve

from raygr.cli import main
from raygr.config import ServeConfig
from raygr.distributed.serve import (
    APP_NAME,
    TEST_HOOKS_ENV,
    build_app,
    deployment_options,
    run_app,
    stage_status,
    update_app,
)
from raygr.serving.client import Client
from raygr.serving.pipeline import model_version
from raygr.training.checkpoint import CheckpointError
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint
from tests.test_serve_ray import free_port

pytestmark = pytest.mark.ray


def live_options(cfg: ServeConfig) -> dict[str, dict]:
    """Health checked every second, and the failure-drill hook on in the model replicas."""
    opts = deployment_options(cfg)
    return {name: {"health_check_period_s": 1.0, "health_check_timeout_s": 10.0,
                   "ray_actor_options": {**opts[name]["ray_actor_options"],
                                         "runtime_env": {"env_vars": {TEST_HOOKS_ENV: "1"}}}}
            for name in ("Retriever", "Ranker")}


@pytest.fixture(scope="module")
def live(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    ds = tiny_dataset(root, num_users=300)
    old = tiny_checkpoint(ds, root / "old", epochs=1)
    new = tiny_checkpoint(ds, root / "new", epochs=2)
    other_ds = tiny_dataset(root / "other", num_users=120, seed=3)
    other = tiny_checkpoint(other_ds, root / "other-run", epochs=0)
    cfg = ServeConfig(min_replicas=1, max_replicas=1, port=free_port())
    client = Client(f"http://127.0.0.1:{cfg.port}")
    try:
        run_app(build_app(old, ds.root, cfg, extra_options=live_options(cfg)), cfg, log_level="WARNING")
        client.wait_healthy()
        yield {"ds": ds, "old": old, "new": new, "other": other, "cfg": cfg, "client": client,
               "history": [ds.items.item_id[i] for i in range(5)]}
    finally:
        client.close()
        serve.shutdown()


def replica_names(deployment: str) -> set[str]:
    prefix = f"SERVE_REPLICA::{APP_NAME}#{deployment}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def test_every_answer_and_the_metadata_name_the_model_version_and_readyz_checks_every_stage(live):
    client, version = live["client"], model_version(live["old"])
    assert len(version) == 16 and version != model_version(live["new"])
    status, answer = client.post("/recommend", {"history": live["history"], "k": 3})
    assert status == 200 and answer["model_version"] == version and answer["scored_by"] == "ranker"
    assert "retriever_version" not in answer
    status, answer = client.post("/recommend", {"history": [], "k": 3})  # popularity: the ingress's version
    assert status == 200 and answer["fallback"] and answer["model_version"] == version
    assert client.get("/metadata")[1]["model_version"] == version
    status, ready = client.get("/readyz")
    assert status == 200 and ready["status"] == "ready", ready
    assert set(ready["stages"]) == {"ingress", "retriever", "ranker"}
    assert {s["model_version"] for s in ready["stages"].values()} == {version}
    assert client.get("/healthz") == (200, {"status": "ok"})


def test_a_replica_returning_garbage_fails_its_health_check_and_is_replaced(live):
    client = live["client"]
    before = replica_names("Retriever")
    assert len(before) == 1
    handle = serve.get_deployment_handle("Retriever", app_name=APP_NAME)
    assert handle.fault_for_tests.remote().result() == "poisoned"
    # The probe runs now: seconds before Serve's health checks (every 1 s, a few failures in a row) act.
    status, ready = client.get("/readyz")
    retriever = ready["stages"]["retriever"]
    assert status == 503 and ready["status"] == "not ready" and ready["stages"]["ranker"]["ok"], ready
    assert retriever["ok"] is False and "ModelHealthError" in retriever["error"], ready
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = replica_names("Retriever")
        if now and not now & before and client.get("/readyz")[0] == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the poisoned Retriever was not replaced in 90 s: {before} -> {replica_names('Retriever')}")
    status, answer = client.post("/recommend", {"history": live["history"], "k": 3})
    assert status == 200 and answer["model_version"] == model_version(live["old"])


def test_a_new_checkpoint_rolls_out_in_place_under_load_with_no_failed_request(live):
    client, cfg = live["client"], live["cfg"]
    old, new = model_version(live["old"]), model_version(live["new"])
    replicas = {d: replica_names(d) for d in ("Ingress", "Retriever", "Ranker")}
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load():  # one steady client: a request as soon as the previous one is answered
        c = Client(f"http://127.0.0.1:{cfg.port}")
        try:
            while not stop.is_set():
                status, answer = c.post("/recommend", {"history": live["history"], "k": 3})
                seen.append((status, answer.get("model_version") if isinstance(answer, dict) else answer))
        finally:
            c.close()

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1.0)
        start = time.monotonic()
        statuses = update_app(live["new"], live["ds"].root, cfg, extra_options=live_options(cfg), log_level="WARNING")
        took = time.monotonic() - start
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    failed = [s for s in seen if s[0] != 200]
    versions = [v for _, v in seen]
    print(f"rollout: {len(seen)} requests, {len(failed)} failed, update_app took {took:.1f} s")
    assert not failed, failed[:5]
    assert versions[0] == old and versions[-1] == new and set(versions) == {old, new}
    assert versions == sorted(versions, key=lambda v: v == new), "an answer went back to the old version"
    assert {s["model_version"] for s in statuses.values()} == {new}
    assert {d: replica_names(d) for d in replicas} == replicas  # swapped in place: no replica restarted
    assert client.get("/metadata")[1]["model_version"] == new


def test_a_checkpoint_of_another_dataset_is_refused_and_the_old_model_keeps_serving(live, capsys):
    client, cfg, new = live["client"], live["cfg"], model_version(live["new"])
    # The CLI refuses it before contacting any cluster.
    assert main(["serve", "--update", str(live["other"]), "--data", str(live["ds"].root),
                 "--address", "127.0.0.1:1"]) == 2
    assert "was trained on dataset" in capsys.readouterr().err
    # Deployed anyway (as a hand-edited `serve deploy` would): every replica refuses it and keeps its model.
    with pytest.raises(CheckpointError, match="was not rolled out.*trained on dataset"):
        update_app(live["other"], live["ds"].root, cfg, extra_options=live_options(cfg), log_level="WARNING")
    status, answer = client.post("/recommend", {"history": live["history"], "k": 3})
    assert status == 200 and answer["model_version"] == new
    status, ready = client.get("/readyz")
    assert status == 200 and all("refused" in s["update_error"] for s in ready["stages"].values()), ready
    assert {s["model_version"] for s in stage_status().values()} == {new}


def test_raygr_serve_update_rolls_a_checkpoint_out_from_the_command_line(live, capsys):
    """`raygr serve --update` on the running cluster (the test's own Ray session). Without the test's extra
    deployment options Serve restarts the model replicas rather than reconfiguring them: the command still
    ends with every stage on the new version."""
    client, cfg, old = live["client"], live["cfg"], model_version(live["old"])
    assert main(["serve", "--update", str(live["old"]), "--data", str(live["ds"].root), "--address", "auto",
                 "--port", str(cfg.port), "--set", "serve.min_replicas=1", "--set", "serve.max_replicas=1"]) == 0
    assert f"-> {old}" in capsys.readouterr().out
    assert {s["model_version"] for s in stage_status().values()} == {old}
    status, answer = client.post("/recommend", {"history": live["history"], "k": 3})
    assert status == 200 and answer["model_version"] == old


def test_serve_deploy_with_a_new_user_config_swaps_the_model_in_place(live):
    """The documented `serve deploy` path, through the same REST API the CLI uses: a deploy config from
    ``deploy_config``, then one that keeps the app args and names the new checkpoint in ``user_config``."""
    import os

    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from raygr.distributed.serve import deploy_config

    ds, cfg = live["ds"], live["cfg"]
    old, new = model_version(live["old"]), model_version(live["new"])

    def declared(serving):
        out = deploy_config(str(live["old"]), str(ds.root), cfg, ranker=True, name="declared", serving=serving)
        out["applications"][0]["route_prefix"] = "/declared"  # beside the test's app at /
        for d in out["applications"][0]["deployments"]:  # room on the 4 logical CPUs beside the test's app
            d["ray_actor_options"]["num_cpus"] = 0.25
        return out

    rest = ServeSubmissionClient(os.environ["RAY_API_SERVER_ADDRESS"])
    client = Client(f"http://127.0.0.1:{cfg.port}")
    try:
        rest.deploy_applications(declared(str(live["old"])))
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/declared/readyz")[0] == 200:
                    break
            except TimeoutError:  # the proxy holds a request while the app's replicas start
                client.close()
            assert time.monotonic() < deadline, "the declared app did not become ready in 120 s"
            time.sleep(0.5)
        assert client.get("/declared/metadata")[1]["model_version"] == old
        replicas = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith("SERVE_REPLICA::declared#")}
        rest.deploy_applications(declared(str(live["new"])))
        seen = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1] != (200, new):
            assert time.monotonic() < deadline, f"not swapped in 60 s: {seen[-3:]}"
            status, answer = client.post("/declared/recommend", {"history": live["history"], "k": 3})
            seen.append((status, answer.get("model_version") if status == 200 else answer))
        assert all(status == 200 for status, _ in seen), seen
        assert {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::declared#")} == replicas  # in place
    finally:
        client.close()
        serve.delete("declared")
