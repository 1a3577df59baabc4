"""Ray Serve on the shared local cluster: answers over HTTP equal offline retrieve-then-rank, bad requests get
a 4xx that says what is wrong (and the service stays up), empty histories get popular items; plus the deploy
config, its generated copy in jobs/, and the injected loader (these without a cluster)."""

from __future__ import annotations

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raygr.cli import main
from raygr.config import ConfigError, ServeConfig
from raygr.data.split import eval_examples, training_item_counts
from raygr.distributed.serve import (
    APP_NAME,
    Retriever,
    app_builder,
    build_app,
    deploy_config,
    deployment_options,
    run_app,
    write_deploy_config,
)
from raygr.metrics import popularity_ranking
from raygr.serving.client import Client, send_examples
from raygr.serving.engine import load_serving_model
from raygr.serving.pipeline import model_version
from raygr.training.checkpoint import CheckpointError, load_model
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
# The example in jobs/serve_config.yaml (cluster paths; regenerate it with the command in its header).
EXAMPLE = {"checkpoint": "/mnt/raygr/runs/beauty-joint", "data": "/mnt/raygr/datasets/beauty"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    """Two apps on one proxy: a joint checkpoint (truncate policy) at / and a sasrec one (reject) at /strict.

    4 logical CPUs hold both: joint = retriever 1 + ranker 1 (+ a CPU-less ingress); sasrec has no ranker.
    """
    from ray import serve

    root = tmp_path_factory.mktemp("serve")
    ds = tiny_dataset(root, num_users=300)
    joint = tiny_checkpoint(ds, root / "joint")
    sasrec = tiny_checkpoint(ds, root / "sasrec", "model.preset=sasrec", epochs=0)
    port = free_port()
    one = dict(min_replicas=1, max_replicas=1, port=port)
    # A 50 ms window: the concurrent requests of the load test reliably share batches.
    cfg = ServeConfig(max_batch_size=8, batch_wait_timeout_s=0.05, **one)
    strict = ServeConfig(history_policy="reject", max_k=5, **one)
    client = Client(f"http://127.0.0.1:{port}")
    try:  # Serve is shut down even if the setup fails half-way: later Ray tests share the cluster
        run_app(build_app(joint, ds.root, cfg), cfg, log_level="WARNING")
        run_app(build_app(sasrec, ds.root, strict), strict, name="strict", route_prefix="/strict",
                log_level="WARNING")
        client.wait_healthy()
        models = {name: load_model(run, ds)[0] for name, run in (("joint", joint), ("sasrec", sasrec))}
        yield {"ds": ds, "client": client, "models": models, "port": port}
    finally:
        client.close()
        serve.shutdown()


def histories(ds, n: int) -> list[np.ndarray]:
    """The first n test-split histories, [20] item_idx each (left-padded)."""
    return list(eval_examples(ds.sequences, "test", 20).history[:n])


def to_ids(ds, row) -> list[str]:
    return [ds.items.item_id[i - 1] for i in row if i > 0]


def offline(model, row, k: int, candidates: int, ds) -> tuple[list[str], list[float]]:
    model.refresh()
    items, scores = model.recommend(torch.from_numpy(np.asarray(row)[None]), k=k, num_candidates=candidates)
    return [ds.items.item_id[i - 1] for i in items[0].tolist()], scores[0].tolist()


def test_answers_equal_offline_retrieve_then_rank_under_concurrent_load(service):
    ds, model, port = service["ds"], service["models"]["joint"], service["port"]
    rows = histories(ds, 12)

    candidates = [20, 30] * 6  # batches mix retrieval widths: each must still get its own beam

    def ask(row, c):  # one client per thread: concurrent requests reach the replicas in batches
        client = Client(f"http://127.0.0.1:{port}")
        try:
            return client.post("/recommend", {"history": to_ids(ds, row), "k": 10, "candidates": c})
        finally:
            client.close()

    from ray import serve

    stats = serve.get_deployment_handle("Retriever", app_name=APP_NAME).batch_stats
    ranker_stats = serve.get_deployment_handle("Ranker", app_name=APP_NAME).batch_stats
    before, ranker_before = stats.remote().result(), ranker_stats.remote().result()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, rows, candidates))
    after, ranker_after = stats.remote().result(), ranker_stats.remote().result()
    # The ingress sent concurrent requests in shared calls: fewer Retriever batches than requests.
    assert after["requests"] - before["requests"] == len(rows)
    assert after["batches"] - before["batches"] < len(rows)
    # One encoding per request: the Retriever encoded every history, the Ranker scored them all from
    # the Retriever's states and encoded none.
    assert after["encoded"] - before["encoded"] == len(rows)
    assert ranker_after["requests"] - ranker_before["requests"] == len(rows)
    assert ranker_after["encoded"] == ranker_before["encoded"]
    for row, c, (status, answer) in zip(rows, candidates, answers):
        assert status == 200, answer
        ids, scores = offline(model, row, 10, c, ds)
        assert [x["item_id"] for x in answer["items"]] == ids
        assert np.allclose([x["score"] for x in answer["items"]], scores, atol=1e-4)
        assert answer["scored_by"] == "ranker" and not answer["fallback"] and answer["dataset"] == "tiny"


def test_retrieval_only_preset_has_no_ranker_and_equals_offline(service):
    ds, model, client = service["ds"], service["models"]["sasrec"], service["client"]
    status, meta = client.get("/strict/metadata")
    assert status == 200 and meta["mode"] == "retrieval_only" and meta["model"] == "sasrec"
    for row in histories(ds, 3):
        status, answer = client.post("/strict/recommend", {"history": to_ids(ds, row), "k": 5})
        assert status == 200 and answer["scored_by"] == "retriever"
        assert [x["item_id"] for x in answer["items"]] == offline(model, row, 5, 50, ds)[0]


def test_empty_history_gets_popular_items_exclude_and_truncation(service):
    ds, client = service["ds"], service["client"]
    status, answer = client.post("/recommend", {"history": [], "k": 5})
    popular = popularity_ranking(training_item_counts(ds.sequences, ds.num_items), 5)
    assert status == 200 and answer["fallback"] is True and answer["scored_by"] == "popularity"
    assert [x["item_id"] for x in answer["items"]] == [ds.items.item_id[i - 1] for i in popular]

    row = to_ids(ds, histories(ds, 1)[0])
    _, plain = client.post("/recommend", {"history": row, "k": 5})
    banned = [x["item_id"] for x in plain["items"][:2]]
    status, answer = client.post("/recommend", {"history": row, "k": 5, "exclude": banned})
    got = [x["item_id"] for x in answer["items"]]
    assert status == 200 and len(got) == 5 and not set(got) & set(banned)

    long = [ds.items.item_id[i % ds.num_items] for i in range(30)]  # 30 > data.max_history = 20
    status, answer = client.post("/recommend", {"history": long, "k": 5})
    _, newest = client.post("/recommend", {"history": long[-20:], "k": 5})
    assert status == 200 and answer["truncated"] is True and "only the newest 20 were used" in answer["notice"]
    assert answer["items"] == newest["items"] and newest["truncated"] is False


def test_bad_requests_get_4xx_saying_what_is_wrong_and_the_service_stays_up(service):
    client, ds = service["client"], service["ds"]
    known = ds.items.item_id[0]
    cases = [
        ("/recommend", b"not json", 400, "not valid JSON"),
        ("/recommend", b"", 400, "empty"),
        ("/recommend", b"[1, 2]", 422, "must be a JSON object"),
        ("/recommend", b'{"history": [], "user": 1}', 422, "unknown field(s) 'user'"),
        ("/recommend", json.dumps({"history": [known, "nope-1", "nope-2"]}).encode(), 422,
         "'history' has 2 item id(s) not in the catalogue of dataset 'tiny' (80 items): 'nope-1', 'nope-2'"),
        ("/recommend", json.dumps({"history": [known], "exclude": ["nope-3"]}).encode(), 422, "'nope-3'"),
        ("/recommend", json.dumps({"history": [known], "k": 0}).encode(), 422,
         "'k' is 0, out of range: allowed 1..100"),
        ("/recommend", json.dumps({"history": [known], "k": 101}).encode(), 422, "allowed 1..100"),
        ("/recommend", json.dumps({"history": [known], "k": "ten"}).encode(), 422, "'k' must be an integer"),
        ("/recommend", json.dumps({"history": known}).encode(), 422, "'history' must be a list of item ids"),
        ("/recommend", json.dumps({"history": [[known]]}).encode(), 422, "'history'[0] is"),
        ("/strict/recommend", json.dumps({"history": [known], "k": 6}).encode(), 422, "allowed 1..5"),
        ("/strict/recommend", json.dumps({"history": [known] * 21}).encode(), 413,
         "'history' has 21 items, more than the 20 this model reads (data.max_history); send only the newest 20 "
         "(this service runs with serve.history_policy=reject)"),
        # The two bodies the first-hour review found: a 500 before the depth bound, an oversized body.
        ("/recommend", b"[" * 100_000 + b"]" * 100_000, 400, "more than 8 levels deep"),
        ("/recommend", b'{"history": ["' + b"x" * (2 << 20) + b'"]}', 413, "more than the"),
        ("/recommend", b'{"history": [1], "k": ' + b"9" * 5000 + b"}", 400, "JSON parsing refused"),
    ]
    for path, body, status, words in cases:
        got, answer = client.request("POST", path, body)
        assert got == status, (body, answer)
        assert words in answer["error"], (body, answer)
    assert client.get("/healthz") == (200, {"status": "ok"})
    assert client.post("/recommend", {"history": [known], "k": 3})[0] == 200


def test_smoke_examples_print_one_line_per_answer(service):
    lines: list[str] = []
    assert send_examples(service["client"], service["ds"], 20, 3, log=lines.append) == 0
    assert len(lines) == 3 and all("[ranker," in line and "true next item" in line for line in lines)


def test_healthz_and_metadata(service):
    client = service["client"]
    assert client.get("/healthz") == (200, {"status": "ok"})
    status, meta = client.get("/metadata")
    assert status == 200
    assert {k: meta[k] for k in ("model", "dataset", "catalogue_size", "levels", "max_history",
                                 "checkpoint_epoch", "mode")} == {
        "model": "joint", "dataset": "tiny", "catalogue_size": 80, "levels": 3, "max_history": 20,
        "checkpoint_epoch": 1, "mode": "retrieve_then_rank"}
    assert len(meta["model_version"]) == 16 and meta["update_error"] is None


def test_the_openapi_schema_documents_the_typed_api(service):
    client = service["client"]
    status, schema = client.get("/openapi.json")
    assert status == 200
    post = schema["paths"]["/recommend"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"history", "k", "candidates", "exclude"} and body["required"] == ["history"]
    assert body["additionalProperties"] is False
    assert {"200", "400", "413", "422", "503"} <= set(post["responses"])
    assert {"/healthz", "/readyz", "/metadata"} <= set(schema["paths"])
    assert "RecommendResponse" in schema["components"]["schemas"]
    status, page = client.get("/docs")
    assert status == 200 and "swagger" in page.lower()
    # Retrieval-only: the readiness of its two stages.
    status, ready = client.get("/strict/readyz")
    assert status == 200 and set(ready["stages"]) == {"ingress", "retriever"}


# -- no cluster needed (ray.serve imported only) ---------------------------------------------------------

def test_deploy_config_is_valid_for_serve_and_shares_the_deployment_options():
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeConfig(max_batch_size=16, max_replicas=3, use_gpu=True)
    out = deploy_config("/ckpt", "/data", cfg, ranker=True)
    ServeDeploySchema.model_validate(out)
    app = out["applications"][0]
    assert app["import_path"] == "raygr.distributed.serve:app_builder"
    assert app["args"] == {"checkpoint": "/ckpt", "data": "/data", "serve": {**app["args"]["serve"]}}
    assert app["args"]["serve"]["max_batch_size"] == 16
    assert app["deployments"] == [{"name": n, **o, "user_config": {"checkpoint": "/ckpt"}}
                                  for n, o in deployment_options(cfg).items()]
    retriever = {d["name"]: d for d in app["deployments"]}["Retriever"]
    assert retriever["autoscaling_config"]["max_replicas"] == 3 and retriever["ray_actor_options"]["num_gpus"] > 0
    assert [d["name"] for d in deploy_config("/c", "/d", ranker=False)["applications"][0]["deployments"]] == [
        "Ingress", "Retriever"]


def test_jobs_serve_config_is_the_generated_one(tmp_path):
    fresh = write_deploy_config(tmp_path / "serve_config.yaml", EXAMPLE["checkpoint"], EXAMPLE["data"],
                                ServeConfig(host="0.0.0.0"), ranker=True)
    assert yaml.safe_load((ROOT / "jobs" / "serve_config.yaml").read_text()) == yaml.safe_load(fresh.read_text()), \
        "jobs/serve_config.yaml is stale: regenerate it with the command in its header"


def test_app_builder_names_missing_and_unknown_args():
    with pytest.raises(ValueError, match="needs args data"):
        app_builder({"checkpoint": "/x"})
    with pytest.raises(ValueError, match="unknown args extra"):
        app_builder({"checkpoint": "/x", "data": "/y", "extra": 1})
    with pytest.raises(ConfigError, match="serve.max_kk"):
        app_builder({"checkpoint": "/x", "data": "/y", "serve": {"max_kk": 3}})


def test_cli_writes_a_deploy_config_and_refuses_non_serve_overrides(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    assert main(["serve", "--checkpoint", "/nowhere/ckpt", "--data", "/nowhere/data", "--port", "9001",
                 "--write-config", str(path)]) == 0
    assert yaml.safe_load(path.read_text())["http_options"]["port"] == 9001
    assert "assuming a preset with a ranker" in capsys.readouterr().out
    assert main(["serve", "--checkpoint", "x", "--data", "y", "--set", "model.dim=8"]) == 2
    assert "only serve.* overrides" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "missing"), "--data", "y"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # --checkpoint OLD --update NEW: the app's args keep OLD, every user_config names NEW (in place on deploy).
    swap = tmp_path / "swap.yaml"
    assert main(["serve", "--checkpoint", "/old", "--update", "/new", "--data", "/d", "--write-config", str(swap)]) == 0
    app = yaml.safe_load(swap.read_text())["applications"][0]
    assert app["args"]["checkpoint"] == "/old" and {d["user_config"]["checkpoint"] for d in app["deployments"]} == {
        "/new"}
    assert main(["serve", "--data", "y"]) == 2 and "give either --checkpoint" in capsys.readouterr().err
    assert main(["serve", "--update", "/x", "--data", "y", "--smoke", "2"]) == 2


def test_model_deployments_load_through_an_injected_loader_and_refuse_a_bad_update(tmp_path):
    """The replica class itself (``func_or_class``) outside Serve: its constructor, then ``reconfigure`` with the
    user_config Serve would pass (the first one loads; the same weights again load nothing; a checkpoint that
    fails to load is refused and the model stays)."""
    ds = tiny_dataset(tmp_path, num_users=100)
    run = tiny_checkpoint(ds, tmp_path / "run", epochs=0)
    calls = []

    def loader(checkpoint: str, dataset_dir: str, device: str):
        calls.append((checkpoint, dataset_dir, device))
        return load_serving_model(checkpoint, dataset_dir, device)

    replica = Retriever.func_or_class(str(ds.root), ServeConfig(max_batch_size=7), loader)
    assert replica.retrieve._get_max_batch_size() == 7 and replica.sm is None
    with pytest.raises(ValueError, match="user_config must be"):
        asyncio.run(replica.reconfigure({"path": str(run)}))
    asyncio.run(replica.reconfigure({"checkpoint": str(run)}))
    assert calls == [(str(run), str(ds.root), "cpu")] and replica.sm.version == model_version(run)
    replica.check_health()
    asyncio.run(replica.reconfigure({"checkpoint": str(run)}))
    assert len(calls) == 1 and replica.update_error is None
    asyncio.run(replica.reconfigure({"checkpoint": str(tmp_path / "missing")}))
    assert "refused" in replica.update_error and "does not exist" in replica.update_error
    assert replica.status()["model_version"] == model_version(run)
    # A first load that fails leaves nothing to serve: the replica fails to start, with the reason.
    with pytest.raises(CheckpointError, match="does not exist"):
        asyncio.run(Retriever.func_or_class(str(ds.root), ServeConfig()).reconfigure(
            {"checkpoint": str(tmp_path / "missing")}))


def test_a_deploy_config_can_swap_the_served_checkpoint_without_changing_the_app_args():
    app = deploy_config("/old", "/data", ranker=True, serving="/new")["applications"][0]
    assert app["args"]["checkpoint"] == "/old"  # what Serve hashes into the code version: unchanged
    assert {d["name"]: d["user_config"] for d in app["deployments"]} == {
        n: {"checkpoint": "/new"} for n in ("Ingress", "Retriever", "Ranker")}
