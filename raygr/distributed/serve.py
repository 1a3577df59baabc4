"""Ray Serve: retrieve-then-rank as one deployment graph, each role batched and autoscaled on its own.

    HTTP -> Ingress (FastAPI: validation, ids, fallback) -> Retriever (batched: encode histories, beam search)
                                                         -> Ranker    (batched candidate scores from the
                                                                       Retriever's encoded user states)

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
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from raygr.config import ServeConfig, config_from_dict
from raygr.data.dataset import load_dataset
from raygr.serving.catalogue import Catalogue
from raygr.serving.engine import (
    BatchStats,
    Loader,
    ModelHealthError,
    ServingModel,
    check_ranking,
    check_retrieval,
    load_serving_model,
    poison_weights,
    rank_batch,
    retrieve_encoded,
)
from raygr.serving.page import PAGE
from raygr.serving.pipeline import (
    Retrieved,
    ServiceInfo,
    model_version,
    recommend_batch,
    serves_ranker,
    service_info,
)
from raygr.serving.request import Limits, RecommendRequest, RequestError, parse_body, read_limited
from raygr.serving.schema import (
    ERROR_RESPONSES,
    RECOMMEND_BODY_DOC,
    Health,
    Metadata,
    Readiness,
    RecommendResponse,
    checked_response,
)
from raygr.training.checkpoint import CheckpointError, read_checkpoint

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
READY_TIMEOUT_S = 5.0  # GET /readyz: a stage that has not answered its probe by then is not ready
TEST_HOOKS_ENV = "RAYGR_SERVE_TEST_HOOKS"  # "1" in a replica's environment enables fault_for_tests
# The code a replica runs: part of each deployment's pinned code version (see build_app), so that a changed
# raygr redeploys replicas while a changed checkpoint (user_config) only reconfigures them.
SOURCES = ("distributed/serve.py", "serving/engine.py", "serving/pipeline.py", "serving/request.py",
           "serving/catalogue.py", "serving/schema.py", "serving/page.py")
SEARCH_LIMIT = 100  # GET /search: most items one answer lists
SearchQuery = Annotated[str, Query(max_length=200, description="words the title or id contains")]
SearchIds = Annotated[list[str] | None, Query(max_length=SEARCH_LIMIT, description="exact item ids to look up")]
SearchLimit = Annotated[int, Query(ge=1, le=SEARCH_LIMIT, description="most items to list")]

log = logging.getLogger("ray.serve")
api = FastAPI(title="raygr", version="1",
              description="Generative retrieve-then-rank recommendations. Every answer names the model version "
                          "(the checkpoint weights' sha256 prefix). Errors are {\"error\": message}.")


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


def _checkpoint_of(user_config: Any) -> str:
    """The checkpoint named by a deployment's ``user_config`` (``{"checkpoint": PATH}``)."""
    if not isinstance(user_config, dict) or not user_config.get("checkpoint"):
        raise ValueError(f"user_config must be {{checkpoint: RUN_OR_CHECKPOINT_DIR}}, got {user_config!r}")
    unknown = sorted(set(user_config) - {"checkpoint"})
    if unknown:
        raise ValueError(f"user_config: unknown keys {', '.join(unknown)}; known: checkpoint")
    return str(user_config["checkpoint"])


def _refusal(checkpoint: str, error: BaseException) -> str:
    return (f"update to checkpoint {checkpoint} refused, still serving the previous model: "
            f"{type(error).__name__}: {error}")


class _ModelReplica:
    """What Retriever and Ranker share: the model, loaded from the deployment's ``user_config`` and swapped
    in place by ``reconfigure`` (``serve deploy`` / ``raygr serve --update`` with a new checkpoint).

    The new model is loaded in a thread while the old one keeps answering, probed, and only then swapped in;
    a checkpoint that fails to load (another dataset, unreadable) or fails the probe is refused and the old
    model stays. ``check_health`` (Serve calls it every ``health_check_period_s``) runs the probe on the
    served model, so a replica whose model returns garbage is marked unhealthy and replaced.
    """

    probe = staticmethod(check_retrieval)  # the health probe of this role

    def __init__(self, dataset_dir: str, serve_cfg: ServeConfig, loader: Loader | None = None):
        self.dataset_dir, self.device = dataset_dir, _device(serve_cfg)
        self.loader: Loader = loader or load_serving_model
        self.sm: ServingModel | None = None  # set by the first reconfigure (Serve calls it before traffic)
        self.update_error: str | None = None  # why the last update was refused, if it was
        self.stats = BatchStats()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        checkpoint = _checkpoint_of(user_config)
        try:
            # Hashing the weights and loading them happen in a thread: the old model answers meanwhile.
            if self.sm is not None and await asyncio.to_thread(model_version, checkpoint) == self.sm.version:
                self.update_error = None
                return  # the same weights: nothing to load
            new = await asyncio.to_thread(self.loader, checkpoint, self.dataset_dir, self.device)
            self.probe(new)
        except Exception as e:
            if self.sm is None:  # nothing to fall back on: the replica fails to start, and says why
                raise
            self.update_error = _refusal(checkpoint, e)
            log.error("%s: %s", type(self).__name__, self.update_error)
            return
        old, self.sm, self.update_error = self.sm, new, None
        log.info("%s now serves %s (model version %s%s)", type(self).__name__, new.info.path, new.version,
                 f", was {old.version}" if old else "")

    def check_health(self) -> None:
        if self.sm is None:
            raise ModelHealthError("no model loaded")
        self.probe(self.sm)

    def ready(self) -> dict[str, Any]:
        """The probe, run now (``GET /readyz``): what this replica serves, or the probe's exception."""
        self.check_health()
        return self.status()

    def status(self) -> dict[str, Any]:
        sm = self.sm
        return {"model_version": sm.version if sm else None, "checkpoint": str(sm.info.path) if sm else None,
                "update_error": self.update_error}

    def batch_stats(self) -> dict[str, float]:
        return self.stats.as_dict()

    def fault_for_tests(self) -> str:
        """Failure drills: poison this replica's weights with NaN (only with RAYGR_SERVE_TEST_HOOKS=1)."""
        if os.environ.get(TEST_HOOKS_ENV) != "1":
            raise RuntimeError(f"failure drills are off; set {TEST_HOOKS_ENV}=1 in the replica's environment")
        poison_weights(self.sm)
        return "poisoned"


@serve.deployment
class Retriever(_ModelReplica):
    """Constrained beam search over the SIDs, one forward pass per batch of requests."""

    probe = staticmethod(check_retrieval)

    def __init__(self, dataset_dir: str, serve_cfg: ServeConfig, loader: Loader | None = None):
        super().__init__(dataset_dir, serve_cfg, loader)
        # The decorator's arguments are fixed at import; the config's values are set per replica.
        self.retrieve.set_max_batch_size(serve_cfg.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def retrieve(self, histories: list[list[int]], widths: list[int]) -> list[Retrieved]:
        """One request per call; concurrent calls are batched here."""
        return self.retrieve_many(histories, widths)[0]

    def retrieve_many(self, histories: list[list[int]], widths: list[int]
                      ) -> tuple[list[Retrieved], np.ndarray | None, str]:
        """A batch formed by the caller (the ingress batches its requests): one call, one forward pass.
        Returns the results, each history's encoded state [B, S] for the Ranker (None without a ranker),
        and the version of the model that computed them."""
        sm = self.sm  # one model for the whole batch, even if a reconfigure swaps it meanwhile
        self.stats.add(len(histories), encoded=len(histories))
        results, states = retrieve_encoded(sm, histories, widths)
        return results, states, sm.version


@serve.deployment
class Ranker(_ModelReplica):
    """The ranker's scores of each request's retrieved candidates, one forward pass per batch."""

    probe = staticmethod(check_ranking)

    def __init__(self, dataset_dir: str, serve_cfg: ServeConfig, loader: Loader | None = None):
        super().__init__(dataset_dir, serve_cfg, loader)
        self.rank.set_max_batch_size(serve_cfg.max_batch_size)
        self.rank.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def rank(self, histories: list[list[int]], candidates: list[list[int]]) -> list[list[float]]:
        """One request per call; concurrent calls are batched here."""
        return self.rank_many(histories, candidates)[0]

    def rank_many(self, histories: list[list[int]], candidates: list[list[int]], states: np.ndarray | None = None,
                  states_version: str | None = None) -> tuple[list[list[float]], str]:
        """A batch formed by the caller: one call, one forward pass; the scores and the model's version.

        ``states``: the Retriever's encoded histories (``retrieve_many``), used when they come from the
        weights this replica serves (``states_version``); otherwise (during a rollout, or none given) the
        histories are encoded here."""
        sm = self.sm
        use = states if states is not None and states_version == sm.version else None
        self.stats.add(len(histories), encoded=0 if use is not None else len(histories))
        return rank_batch(sm, histories, candidates, states=use), sm.version


async def _stage_ready(handle: DeploymentHandle) -> dict[str, Any]:
    """One replica of a model stage runs its probe now: {"ok": True, model_version, ...} or the error."""
    async def ask() -> dict[str, Any]:
        return await handle.ready.remote()

    try:
        return {"ok": True, **await asyncio.wait_for(ask(), READY_TIMEOUT_S)}
    except Exception as e:
        cause = getattr(e, "cause", None) or e  # a RayTaskError carries the replica's exception
        return {"ok": False, "error": f"{type(cause).__name__}: {str(cause)[:300]}"}


def _stamp_versions(answers: list[dict[str, Any]], versions: dict[str, str]) -> list[dict[str, Any]]:
    """Each answer names the version of the model that scored it (the ranker's, or the retriever's when it
    alone answered); during a rollout, when the retriever already runs another version, that one too."""
    for answer in answers:
        if answer["fallback"]:
            continue  # popularity: no model ran; the ingress's version stands
        scored = versions.get("ranker") if answer["scored_by"] == "ranker" else versions.get("retriever")
        answer["model_version"] = scored or answer["model_version"]
        if versions.get("retriever") not in (None, answer["model_version"]):
            answer["retriever_version"] = versions["retriever"]
    return answers


# Latency buckets (ms) of the serving histograms: a 2-core box answers in 20-400 ms, a GPU one in a few.
LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
CANDIDATE_BUCKETS = [1, 10, 20, 50, 100, 200, 500, 1000]


class ServingMetrics:
    """The ingress's metrics through Ray Serve's metrics API, exported at every node's Prometheus endpoint
    (``http://NODE:METRICS_EXPORT_PORT/metrics``, prefixed ``ray_``; Serve adds the deployment, replica and
    application tags). Created inside the replica (Ray metrics are per process)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "raygr_requests", "POST /recommend requests answered, by HTTP status", tag_keys=("status",))
        self.latency = metrics.Histogram(
            "raygr_latency_ms", "milliseconds: a request in the ingress (stage=request), or one batch call to a "
            "model stage (stage=retrieve, rank)", boundaries=LATENCY_MS, tag_keys=("stage",))
        self.candidates = metrics.Histogram(
            "raygr_candidates", "retrieved items ranked per answer (0 for the popularity fallback)",
            boundaries=CANDIDATE_BUCKETS)
        self.fallbacks = metrics.Counter("raygr_fallbacks", "answers from the popularity fallback (empty history)")
        self.batch = metrics.Histogram("raygr_batch_size", "requests per ingress batch sent to the model stages",
                                       boundaries=[1, 2, 4, 8, 16, 32, 64, 128])

    def stage(self, name: str, t0: float) -> None:
        self.latency.observe(1000 * (time.perf_counter() - t0), tags={"stage": name})

    def answered(self, status: int, t0: float, answer: dict[str, Any] | None = None) -> None:
        self.requests.inc(tags={"status": str(status)})
        self.stage("request", t0)
        if answer is not None:
            self.candidates.observe(answer["num_candidates"])
            if answer["fallback"]:
                self.fallbacks.inc()


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: validates, maps ids, composes Retriever and Ranker; holds no model weights."""

    def __init__(self, retriever: DeploymentHandle, ranker: DeploymentHandle | None, dataset_dir: str,
                 serve_cfg: ServeConfig):
        self.retriever, self.ranker = retriever, ranker
        dataset = load_dataset(Path(dataset_dir))
        self.catalogue, self.manifest = Catalogue.from_dataset(dataset), dataset.manifest
        self.serve_cfg = serve_cfg
        self.info: ServiceInfo | None = None  # set by reconfigure (the checkpoint is in user_config)
        self.limits: Limits | None = None
        self.update_error: str | None = None
        self._answer.set_max_batch_size(serve_cfg.max_batch_size)
        self._answer.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self.in_flight = 0  # /recommend requests inside this replica (one event loop: no lock needed)
        self.metrics = ServingMetrics()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """The checkpoint's metadata (no weights): preset, max_history, version. Refused like the models'."""
        checkpoint = _checkpoint_of(user_config)
        try:
            info = await asyncio.to_thread(service_info, checkpoint, self.manifest, self.catalogue)
            if info.ranker != (self.ranker is not None):
                raise CheckpointError(f"checkpoint {checkpoint} is a {info.preset} model "
                                      f"({'with' if info.ranker else 'without'} a ranker), but this application "
                                      f"was deployed {'with' if self.ranker else 'without'} a Ranker; deploy it "
                                      "as a new application instead")
        except Exception as e:
            if self.info is None:
                raise
            self.update_error = _refusal(checkpoint, e)
            log.error("Ingress: %s", self.update_error)
            return
        self.info, self.limits, self.update_error = info, Limits.from_config(self.serve_cfg, info.max_history), None

    def check_health(self) -> None:
        if self.info is None:
            raise RuntimeError("no checkpoint configured (user_config.checkpoint)")

    # The ingress batches its concurrent requests too: a batch goes to the Retriever in one call, then to
    # the Ranker in one call. On 2 cores one handle call costs more CPU than a request's model compute
    # (docs/results.md, Serving); one batching wait covers both stages.
    # A request that finds no other in the replica skips the window (recommend).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _answer(self, reqs: list[RecommendRequest]) -> list[dict[str, Any]]:
        return await self._answer_now(reqs)

    async def _answer_now(self, reqs: list[RecommendRequest]) -> list[dict[str, Any]]:
        versions: dict[str, str] = {}  # per batch: which model version each stage ran

        async def retrieve_many(histories: list[list[int]], widths: list[int]) -> tuple[list[Retrieved], Any]:
            t0 = time.perf_counter()
            results, states, versions["retriever"] = await _with_retries(
                lambda: self.retriever.retrieve_many.remote(histories, widths))
            self.metrics.stage("retrieve", t0)
            return results, states

        async def rank_many(histories: list[list[int]], candidates: list[list[int]], states: Any) -> list[list[float]]:
            # The Retriever's encoding of these histories, and the weights it came from: the Ranker uses it
            # only if it serves the same weights (else it encodes the histories itself).
            t0 = time.perf_counter()
            scores, versions["ranker"] = await _with_retries(
                lambda: self.ranker.rank_many.remote(histories, candidates, states, versions.get("retriever")))
            self.metrics.stage("rank", t0)
            return scores

        self.metrics.batch.observe(len(reqs))
        answers = await recommend_batch(reqs, self.catalogue, self.info, retrieve_many,
                                        rank_many if self.ranker is not None else None)
        return _stamp_versions(answers, versions)

    @api.post("/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES,
              openapi_extra=RECOMMEND_BODY_DOC)
    async def recommend(self, request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        limits = self.limits
        try:
            # Size first (from Content-Length, then while streaming), nesting next, JSON last: no body can
            # make the parser fail with anything but a RequestError (4xx).
            body = await read_limited(request.stream(), request.headers.get("content-length"), limits)
            req = parse_body(body, self.catalogue, limits)
        except RequestError as e:
            self.metrics.answered(e.status, t0)
            return JSONResponse({"error": e.message}, status_code=e.status)
        self.in_flight += 1
        try:
            if self.in_flight == 1:  # alone: a batching window could only add latency
                answer = (await self._answer_now([req]))[0]
            else:
                answer = await self._answer(req)
        except RETRYABLE as e:
            self.metrics.answered(503, t0)
            return JSONResponse({"error": f"no model replica could answer ({type(e).__name__}); retry shortly"},
                                status_code=503)
        finally:
            self.in_flight -= 1
        try:
            out = JSONResponse(checked_response(answer))
        except ValueError as e:  # e.g. NaN scores from a broken replica: its health check will replace it
            log.error("an answer failed validation: %s", e)
            self.metrics.answered(503, t0)
            return JSONResponse({"error": "the model's answer failed validation (a replica may be unhealthy); "
                                          "retry shortly"}, status_code=503)
        self.metrics.answered(200, t0, answer)
        return out

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        """A page to try the service: search items by title, build a history, see the recommendations."""
        return HTMLResponse(PAGE)

    @api.get("/search")
    async def search(self, q: SearchQuery = "", ids: SearchIds = None, limit: SearchLimit = 20) -> dict[str, Any]:
        """Catalogue items by title: ``q`` matches every word in the title or id (the most trained-on items
        first; empty: the most popular), or ``ids`` looks items up exactly (unknown ids are left out).
        Answers ``{"items": [{"item_id", "title"}]}``."""
        if ids:
            found = [(i, self.catalogue.title(i)) for i in ids]
            return {"items": [{"item_id": i, "title": t} for i, t in found if t is not None]}
        return {"items": [{"item_id": i, "title": t} for i, t in self.catalogue.search(q, limit)]}

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> dict[str, str]:
        """Liveness: this ingress replica answers (it checks no model stage; ``/readyz`` does)."""
        return {"status": "ok"}

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz(self) -> JSONResponse:
        """Readiness: every stage answers its probe now (a fixed history retrieved, ranked, checked)."""
        stages: dict[str, dict[str, Any]] = {"ingress": {"ok": True, **self.status()}}
        for name, handle in (("retriever", self.retriever), ("ranker", self.ranker)):
            if handle is not None:
                stages[name] = await _stage_ready(handle)
        ready = all(s["ok"] for s in stages.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "stages": stages},
                            status_code=200 if ready else 503)

    def status(self) -> dict[str, Any]:
        info = self.info
        return {"model_version": info.model_version if info else None,
                "checkpoint": info.checkpoint if info else None, "update_error": self.update_error}

    @api.get("/metadata", response_model=Metadata)
    async def metadata(self) -> dict[str, Any]:
        return {**self.info.metadata(self.limits), "update_error": self.update_error}


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
              loader: Loader | None = None,
              extra_options: dict[str, dict[str, Any]] | None = None) -> serve.Application:
    """``Ingress.bind(Retriever.bind(...), Ranker.bind(...))`` for a checkpoint and its dataset.

    The checkpoint is each deployment's ``user_config`` (``{"checkpoint": PATH}``), not a constructor
    argument: deploying the same graph again with another checkpoint (``update_app``, ``serve deploy``)
    calls ``reconfigure`` on the running replicas, which swap models in place. Each deployment's code version
    is pinned to its constructor arguments and raygr's serving code, so that only such a change restarts
    replicas. ``extra_options``: more deployment options by deployment name (tests: health-check periods).
    Paths are made absolute: replicas do not share the caller's working directory.
    """
    serve_cfg = serve_cfg or ServeConfig()
    serve_cfg.validate()
    info = read_checkpoint(checkpoint)  # CheckpointError now, not in a replica's log
    ckpt, data = str(info.path), str(Path(dataset_dir).expanduser().resolve())
    with_ranker = serves_ranker(info.config)
    opts = deployment_options(serve_cfg, with_ranker)
    for name, extra in (extra_options or {}).items():
        opts[name] = {**opts[name], **extra}
    user_config = {"checkpoint": ckpt}

    def configured(deployment: Any, name: str, *args: Any) -> Any:
        out = deployment.options(**opts[name], user_config=user_config)
        version = code_version(name, data, dataclasses.asdict(serve_cfg), _qualname(loader), with_ranker,
                               opts[name].get("ray_actor_options"))
        try:  # Serve otherwise draws a random code version per serve.run: every update would restart replicas
            out = out.options(version=version, _internal=True)
        except (TypeError, ValueError) as e:
            log.warning("cannot pin the code version of %s (%s): a checkpoint update will restart its replicas",
                        name, e)
        return out.bind(*args)

    retriever = configured(Retriever, "Retriever", data, serve_cfg, loader)
    ranker = configured(Ranker, "Ranker", data, serve_cfg, loader) if with_ranker else None
    return configured(Ingress, "Ingress", retriever, ranker, data, serve_cfg)


def code_version(*parts: Any) -> str:
    """A deployment's code version: raygr's serving sources and the deployment's constructor arguments."""
    digest = hashlib.sha256(repr(parts).encode())
    root = Path(__file__).resolve().parents[1]
    for name in SOURCES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def _qualname(fn: Any) -> str | None:
    return None if fn is None else f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


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
                  ranker: bool | None = None, name: str = APP_NAME,
                  serving: str | Path | None = None) -> dict[str, Any]:
    """A Serve deploy config (``serve deploy``, KubeRay ``RayService.spec.serveConfigV2``).

    ``checkpoint`` goes into the application's args (it decides the graph); ``serving`` (default: the same)
    is the checkpoint the deployments' ``user_config`` names, which ``serve deploy`` swaps in place.

    ``ranker``: whether the graph has a Ranker; None reads it from the checkpoint, which must then be
    readable here (pass it when generating a config for paths that exist only on the cluster).
    Paths are written as given: they are the cluster's paths.
    """
    serve_cfg = serve_cfg or ServeConfig()
    serve_cfg.validate()
    if ranker is None:
        ranker = serves_ranker(read_checkpoint(checkpoint).config)
    # user_config is what `serve deploy` changes in place: edit the checkpoint there (in each deployment) to
    # roll out another one without restarting replicas; args.checkpoint decides the graph (Ranker or not).
    deployments = [{"name": n, **o, "user_config": {"checkpoint": str(serving or checkpoint)}}
                   for n, o in deployment_options(serve_cfg, ranker).items()]
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
                        serve_cfg: ServeConfig | None = None, *, ranker: bool | None = None,
                        serving: str | Path | None = None) -> Path:
    """Write ``deploy_config(...)`` as YAML, with a header saying how it was generated."""
    cfg = deploy_config(checkpoint, dataset_dir, serve_cfg, ranker=ranker, serving=serving)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Ray Serve deploy config generated by raygr.distributed.serve.write_deploy_config\n"
              "# (`raygr serve --checkpoint CKPT --data DIR [--set serve.x=y] --write-config PATH`).\n"
              "# Regenerate it rather than editing it: build_app and this file share deployment_options.\n"
              "# Use: `serve deploy PATH` on a running cluster, or as a KubeRay RayService's serveConfigV2.\n"
              "# A new checkpoint in place: `--checkpoint CKPT --update NEW --write-config PATH`, serve deploy.\n")
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


def update_app(checkpoint: str | Path, dataset_dir: str | Path, serve_cfg: ServeConfig | None = None, *,
               name: str = APP_NAME, route_prefix: str = "/", loader: Loader | None = None,
               extra_options: dict[str, dict[str, Any]] | None = None,
               log_level: str = "INFO") -> dict[str, dict[str, Any]]:
    """Roll ``checkpoint`` out to the running application ``name``, in place (no replica restarts).

    The same graph is deployed again with the new checkpoint as ``user_config``: Serve calls ``reconfigure``
    on every replica, which loads the new model while the old one answers, and swaps it in once it passed
    the probe. ``serve_cfg``, ``loader`` and ``extra_options`` must be the running app's (else Serve restarts
    the replicas: a rolling update, not a swap). Returns each stage's status after the update; raises
    ``CheckpointError`` when a stage refused the checkpoint (the old model keeps serving) or when it would
    change the graph (a preset with a ranker for one without, or back).
    """
    info = read_checkpoint(checkpoint)
    apps = serve.status().applications
    if name not in apps:
        raise CheckpointError(f"no Serve application '{name}' is running to update; deploy it first "
                              f"(running: {', '.join(apps) or 'none'})")
    has_ranker = "Ranker" in apps[name].deployments
    if serves_ranker(info.config) != has_ranker:
        raise CheckpointError(f"checkpoint {info.path} is a {info.config.model.preset} model, but application "
                              f"'{name}' runs {'with' if has_ranker else 'without'} a Ranker; deploy it as a new "
                              "application (or shut this one down first)")
    run_app(build_app(info.path, dataset_dir, serve_cfg, loader, extra_options), serve_cfg, name=name,
            route_prefix=route_prefix, log_level=log_level)
    statuses = stage_status(name)
    want = model_version(info)
    refused = {stage: s for stage, s in statuses.items() if s["model_version"] != want}
    if refused:
        why = "; ".join(f"{stage}: {s['update_error'] or 'serves ' + str(s['model_version'])}"
                        for stage, s in refused.items())
        raise CheckpointError(f"checkpoint {info.path} (version {want}) was not rolled out: {why}")
    return statuses


def stage_status(name: str = APP_NAME) -> dict[str, dict[str, Any]]:
    """What one replica of each deployment of application ``name`` serves (version, checkpoint, update_error)."""
    out = {}
    for deployment in serve.status().applications[name].deployments:
        out[deployment] = serve.get_deployment_handle(deployment, app_name=name).status.remote().result()
    return out


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
