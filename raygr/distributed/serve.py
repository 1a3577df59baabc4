"""Ray Serve: retrieve-then-rank as one deployment graph, each role batched and autoscaled on its own.

    HTTP -> Ingress (FastAPI: validation, ids, fallback) -> Retriever (batched beam search)
                                                         -> Ranker    (batched candidate scores)

Batching happens twice: each Ingress replica sends its concurrent requests to a model role as one call
(``retrieve_many``/``rank_many``), and each model replica batches single-request calls (``retrieve``/``rank``,
``@serve.batch``) from any other caller.

    app = build_app("runs/joint", "datasets/beauty", ServeConfig(max_batch_size=32))
    handle = run_app(app, serve_cfg)        # serve.start + serve.run; a running Ray session is needed
    # serve deploy / serve build / KubeRay RayService:
    write_deploy_config("jobs/serve_config.yaml", "runs/joint", "datasets/beauty", serve_cfg)
    #   -> import_path: raygr.distributed.serve:app_builder, args: {checkpoint, data, serve}

The request logic lives in ``raygr.serving`` (no Ray); the deployments here only load, batch and
forward. Both model deployments load the checkpoint through an injectable ``loader``
(``(checkpoint, dataset_dir, device) -> ServingModel``) so tests can swap it. Presets without a
trained ranker (sasrec, tiger) get no Ranker deployment: their retrieval order is the answer, as in
offline evaluation. Nothing here runs at import time: ``serve.run`` happens only in ``run_app``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route methods' annotations
# (``request: Request``) at runtime, and Serve's ingress wrapping hides string annotations from it.
import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from raygr.config import ServeConfig, config_from_dict
from raygr.serving.engine import BatchStats, Loader, ServingModel, load_serving_model, rank_batch, retrieve_batch
from raygr.serving.pipeline import Retrieved, load_service, recommend_batch, serves_ranker
from raygr.serving.request import Limits, RecommendRequest, RequestError, parse_body, read_limited
from raygr.training.checkpoint import read_checkpoint

APP_NAME = "raygr"
IMPORT_PATH = "raygr.distributed.serve:app_builder"
# The ingress parses JSON and awaits the model deployments (I/O-bound): like Serve's own proxy it reserves no
# CPU, so that the graph at min_replicas=1 (1 + 1 CPUs) fits a 2-core machine where `serve run` starts a Ray
# with 2 CPUs. A deploy config can give it a reservation (ray_actor_options.num_cpus).
INGRESS_CPUS = 0.0
MODEL_CPUS = 1.0
MODEL_GPUS = 0.5  # with serve.use_gpu: Retriever and Ranker share one GPU; raise it in the deploy config
# Serve's default of 5 ongoing requests per replica would cap every batch at 5 (RAY_NOTES: 64 for throughput).
MIN_ONGOING = 64
# A model replica that dies mid-request (crash, node loss, ray.kill) fails the requests it held; they are
# read-only, so the ingress retries them on another replica before answering 503.
REPLICA_RETRIES = 2
RETRY_BACKOFF_S = 0.2
RETRYABLE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
# Access logs off + max_ongoing_requests=64 took a trivial graph from 34 to 123 req/s here (RAY_NOTES).
QUIET_LOGS = {"enable_access_log": False}

log = logging.getLogger("ray.serve")
api = FastAPI(title="raygr", description="generative retrieve-then-rank recommendations")


# Helpers the deployments call are defined above them: Serve pickles the ingress class (by value) when
# it is decorated, and a helper defined later would be missing in the replica.
def _device(cfg: ServeConfig) -> str:
    if not cfg.use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("serve.use_gpu=true but this replica sees no CUDA device; set serve.use_gpu=false "
                           "or give the cluster GPU nodes")
    return "cuda"


async def _with_retries(call: Any) -> Any:
    for attempt in range(REPLICA_RETRIES + 1):
        try:
            return await call()
        except RETRYABLE as e:
            if attempt == REPLICA_RETRIES:
                raise
            log.warning("model replica failed (%s); retrying the request", type(e).__name__)
            await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))


@serve.deployment
class Retriever:
    """Constrained beam search over the SIDs, one forward pass per batch of requests."""

    def __init__(self, checkpoint: str, dataset_dir: str, serve_cfg: ServeConfig, loader: Loader | None = None):
        self.sm: ServingModel = (loader or load_serving_model)(checkpoint, dataset_dir, _device(serve_cfg))
        # The decorator's arguments are fixed at import; the config's values are set per replica.
        self.retrieve.set_max_batch_size(serve_cfg.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self.stats = BatchStats()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def retrieve(self, histories: list[list[int]], widths: list[int]) -> list[Retrieved]:
        """One request per call; concurrent calls are batched here."""
        return self.retrieve_many(histories, widths)

    def retrieve_many(self, histories: list[list[int]], widths: list[int]) -> list[Retrieved]:
        """A batch formed by the caller (the ingress batches its requests): one call, one forward pass."""
        self.stats.add(len(histories))
        return retrieve_batch(self.sm, histories, widths)

    def batch_stats(self) -> dict[str, float]:
        return self.stats.as_dict()


@serve.deployment
class Ranker:
    """The ranker's scores of each request's retrieved candidates, one forward pass per batch."""

    def __init__(self, checkpoint: str, dataset_dir: str, serve_cfg: ServeConfig, loader: Loader | None = None):
        self.sm: ServingModel = (loader or load_serving_model)(checkpoint, dataset_dir, _device(serve_cfg))
        self.rank.set_max_batch_size(serve_cfg.max_batch_size)
        self.rank.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self.stats = BatchStats()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def rank(self, histories: list[list[int]], candidates: list[list[int]]) -> list[list[float]]:
        """One request per call; concurrent calls are batched here."""
        return self.rank_many(histories, candidates)

    def rank_many(self, histories: list[list[int]], candidates: list[list[int]]) -> list[list[float]]:
        """A batch formed by the caller: one call, one forward pass."""
        self.stats.add(len(histories))
        return rank_batch(self.sm, histories, candidates)

    def batch_stats(self) -> dict[str, float]:
        return self.stats.as_dict()


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: validates, maps ids, composes Retriever and Ranker; holds no model weights."""

    def __init__(self, retriever: DeploymentHandle, ranker: DeploymentHandle | None, checkpoint: str,
                 dataset_dir: str, serve_cfg: ServeConfig):
        self.retriever, self.ranker = retriever, ranker
        self.catalogue, self.info = load_service(checkpoint, dataset_dir)
        self.limits = Limits.from_config(serve_cfg, self.info.max_history)
        self._answer.set_max_batch_size(serve_cfg.max_batch_size)
        self._answer.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self.in_flight = 0  # /recommend requests inside this replica (one event loop: no lock needed)

    # The ingress batches its concurrent requests too: a batch goes to the Retriever in one call, then to
    # the Ranker in one call. On 2 cores one handle call costs more CPU than a request's model compute
    # (docs/results.md, Serving); one batching wait covers both stages.
    # A request that finds no other in the replica skips the window (recommend).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _answer(self, reqs: list[RecommendRequest]) -> list[dict[str, Any]]:
        return await self._answer_now(reqs)

    async def _answer_now(self, reqs: list[RecommendRequest]) -> list[dict[str, Any]]:
        return await recommend_batch(reqs, self.catalogue, self.info, self._retrieve_many,
                                     self._rank_many if self.ranker is not None else None)

    async def _retrieve_many(self, histories: list[list[int]], widths: list[int]) -> list[Retrieved]:
        return await _with_retries(lambda: self.retriever.retrieve_many.remote(histories, widths))

    async def _rank_many(self, histories: list[list[int]], candidates: list[list[int]]) -> list[list[float]]:
        return await _with_retries(lambda: self.ranker.rank_many.remote(histories, candidates))

    @api.post("/recommend")
    async def recommend(self, request: Request) -> JSONResponse:
        try:
            # Size first (from Content-Length, then while streaming), nesting next, JSON last: no body can
            # make the parser fail with anything but a RequestError (4xx).
            body = await read_limited(request.stream(), request.headers.get("content-length"), self.limits)
            req = parse_body(body, self.catalogue, self.limits)
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        self.in_flight += 1
        try:
            if self.in_flight == 1:  # alone: a batching window could only add latency
                answer = (await self._answer_now([req]))[0]
            else:
                answer = await self._answer(req)
        except RETRYABLE as e:
            return JSONResponse({"error": f"no model replica could answer ({type(e).__name__}); retry shortly"},
                                status_code=503)
        finally:
            self.in_flight -= 1
        return JSONResponse(answer)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metadata")
    async def metadata(self) -> dict[str, Any]:
        return self.info.metadata(self.limits)


# -- building the graph -----------------------------------------------------------------------------

def deployment_options(serve_cfg: ServeConfig, ranker: bool = True) -> dict[str, dict[str, Any]]:
    """Per-deployment replicas, autoscaling and resources: the one source for ``build_app`` and deploy configs."""
    def autoscaling(target: float) -> dict[str, Any]:
        return {"min_replicas": serve_cfg.min_replicas, "initial_replicas": serve_cfg.min_replicas,
                "max_replicas": serve_cfg.max_replicas, "target_ongoing_requests": target,
                "upscale_delay_s": 3.0, "downscale_delay_s": 60.0}

    def model() -> dict[str, Any]:
        return {
            # Room for a full batch queued behind the one being computed.
            "max_ongoing_requests": max(MIN_ONGOING, 2 * serve_cfg.max_batch_size),
            "autoscaling_config": autoscaling(serve_cfg.target_ongoing_requests),
            "ray_actor_options": {"num_cpus": MODEL_CPUS, "num_gpus": MODEL_GPUS if serve_cfg.use_gpu else 0},
        }

    opts = {
        # Each ingress request mostly waits on the models: it can hold more of them than a model replica.
        "Ingress": {"max_ongoing_requests": MIN_ONGOING * 2,
                    "autoscaling_config": autoscaling(4 * serve_cfg.target_ongoing_requests),
                    "ray_actor_options": {"num_cpus": INGRESS_CPUS}},
        "Retriever": model(),
    }
    if ranker:
        opts["Ranker"] = model()
    return opts


def build_app(checkpoint: str | Path, dataset_dir: str | Path, serve_cfg: ServeConfig | None = None,
              loader: Loader | None = None) -> serve.Application:
    """``Ingress.bind(Retriever.bind(...), Ranker.bind(...))`` for a checkpoint and its dataset.

    Paths are made absolute: replicas do not share the caller's working directory.
    """
    serve_cfg = serve_cfg or ServeConfig()
    serve_cfg.validate()
    info = read_checkpoint(checkpoint)  # CheckpointError now, not in a replica's log
    ckpt, data = str(info.path), str(Path(dataset_dir).expanduser().resolve())
    with_ranker = serves_ranker(info.config)
    opts = deployment_options(serve_cfg, with_ranker)
    retriever = Retriever.options(**opts["Retriever"]).bind(ckpt, data, serve_cfg, loader)
    ranker = Ranker.options(**opts["Ranker"]).bind(ckpt, data, serve_cfg, loader) if with_ranker else None
    return Ingress.options(**opts["Ingress"]).bind(retriever, ranker, ckpt, data, serve_cfg)


def serve_config_from(values: dict[str, Any] | ServeConfig | None) -> ServeConfig:
    """A ``ServeConfig`` from the ``serve:`` mapping of a deploy config (unknown keys raise ConfigError)."""
    if isinstance(values, ServeConfig):
        return values
    return config_from_dict({"serve": dict(values or {})}).validate().serve


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Builder for ``serve run/deploy``: ``import_path: raygr.distributed.serve:app_builder`` with
    ``args: {checkpoint: PATH, data: DIR, serve: {max_batch_size: 32, ...}}``."""
    missing = [key for key in ("checkpoint", "data") if not args.get(key)]
    if missing:
        raise ValueError(f"{IMPORT_PATH} needs args {', '.join(missing)}: "
                         "args: {checkpoint: RUN_OR_CHECKPOINT_DIR, data: DATASET_DIR, serve: {...}}")
    unknown = sorted(set(args) - {"checkpoint", "data", "serve"})
    if unknown:
        raise ValueError(f"{IMPORT_PATH}: unknown args {', '.join(unknown)}; known: checkpoint, data, serve")
    return build_app(args["checkpoint"], args["data"], serve_config_from(args.get("serve")))


def deploy_config(checkpoint: str | Path, dataset_dir: str | Path, serve_cfg: ServeConfig | None = None, *,
                  ranker: bool | None = None, name: str = APP_NAME) -> dict[str, Any]:
    """A Serve deploy config (``serve deploy``, KubeRay ``RayService.spec.serveConfigV2``).

    ``ranker``: whether the graph has a Ranker; None reads it from the checkpoint, which must then be
    readable here (pass it when generating a config for paths that exist only on the cluster).
    Paths are written as given: they are the cluster's paths.
    """
    serve_cfg = serve_cfg or ServeConfig()
    serve_cfg.validate()
    if ranker is None:
        ranker = serves_ranker(read_checkpoint(checkpoint).config)
    deployments = [{"name": n, **o} for n, o in deployment_options(serve_cfg, ranker).items()]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": serve_cfg.host, "port": serve_cfg.port},
        "logging_config": dict(QUIET_LOGS),
        "applications": [{
            "name": name, "route_prefix": "/", "import_path": IMPORT_PATH,
            "args": {"checkpoint": str(checkpoint), "data": str(dataset_dir), "serve": dataclasses.asdict(serve_cfg)},
            "deployments": deployments,
        }],
    }


def write_deploy_config(path: str | Path, checkpoint: str | Path, dataset_dir: str | Path,
                        serve_cfg: ServeConfig | None = None, *, ranker: bool | None = None) -> Path:
    """Write ``deploy_config(...)`` as YAML, with a header saying how it was generated."""
    cfg = deploy_config(checkpoint, dataset_dir, serve_cfg, ranker=ranker)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Ray Serve deploy config generated by raygr.distributed.serve.write_deploy_config\n"
              "# (`raygr serve --checkpoint CKPT --data DIR [--set serve.x=y] --write-config PATH`).\n"
              "# Regenerate it rather than editing it: build_app and this file share deployment_options.\n"
              "# Use: `serve deploy PATH` on a running cluster, or as a KubeRay RayService's serveConfigV2.\n")
    out.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return out


# -- running ----------------------------------------------------------------------------------------

def run_app(app: serve.Application, serve_cfg: ServeConfig | None = None, *, name: str = APP_NAME,
            route_prefix: str = "/", log_level: str = "INFO") -> DeploymentHandle:
    """Start Serve's HTTP proxy on serve.host:serve.port and deploy ``app`` (waits until it is running).

    Needs a connected Ray (``raygr.distributed.session.ray_session``, or the tests' fixture). The proxy's
    host and port are fixed by the first call in a Ray session; later apps share it under their own prefix.
    """
    from raygr.distributed.session import filter_ray_noise

    serve_cfg = serve_cfg or ServeConfig()
    logging_config = {**QUIET_LOGS, "log_level": log_level}
    # This process's Serve logger follows log_level too (Serve's logging_config reaches only its actors):
    # at WARNING, "Started Serve" and "Application ... is ready" give way to raygr's own line.
    log.setLevel(log_level)
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port}, logging_config=logging_config)
    log.setLevel(log_level)
    filter_ray_noise()  # Serve may have added handlers just now
    return serve.run(app, name=name, route_prefix=route_prefix, logging_config=logging_config)


def shutdown() -> None:
    serve.shutdown()


def local_url(serve_cfg: ServeConfig) -> str:
    """Where a client on this machine reaches the proxy (a wildcard bind address is not one to connect to)."""
    host = "127.0.0.1" if serve_cfg.host in ("0.0.0.0", "::") else serve_cfg.host
    return f"http://{host}:{serve_cfg.port}"


def smoke(checkpoint: str | Path, dataset_dir: str | Path, serve_cfg: ServeConfig | None = None, *,
          num_requests: int = 3, log: Any = print) -> int:
    """Deploy, send ``num_requests`` test-split histories over HTTP, log the answers, shut Serve down.

    For callers already inside a Ray session (``raygr demo``); returns how many requests failed.
    """
    from raygr.data.dataset import load_dataset
    from raygr.serving.client import Client, send_examples

    serve_cfg = serve_cfg or ServeConfig()
    info = read_checkpoint(checkpoint)
    try:
        run_app(build_app(info.path, dataset_dir, serve_cfg), serve_cfg, log_level="WARNING")
        client = Client(local_url(serve_cfg))
        client.wait_healthy()
        log(f"serving {info.config.model.preset} epoch {info.epoch} at {local_url(serve_cfg)}")
        failed = send_examples(client, load_dataset(dataset_dir), info.config.data.max_history, num_requests, log)
        client.close()
        return failed
    finally:
        shutdown()


def replica_actors(deployment: str, name: str = APP_NAME) -> list[Any]:
    """Handles of a deployment's live replica actors (for failure drills: ``ray.kill(handles[0])``).

    Uses the named-actor registry, which needs no dashboard (the state API does).
    """
    import ray

    prefix = f"SERVE_REPLICA::{name}#{deployment}#"
    return [ray.get_actor(a["name"], namespace=a["namespace"])
            for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
