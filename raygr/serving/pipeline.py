"""Retrieve-then-rank for validated requests, composed from two async stages.

    answers = await recommend_batch(reqs, catalogue, info, retrieve_many, rank_many)   # the ingress
    answer = await recommend(req, catalogue, info, retrieve=retriever_call, rank=ranker_call)

``retrieve_many(histories, widths) -> (retrieved, states)`` and ``rank_many(histories, candidates, states)``
are awaitables over a batch: in production one call each to the Retriever and Ranker deployments per
batch of requests, in tests plain coroutines over a local model. ``states`` is what the retriever
encoded the histories into (one row per history, e.g. a float array [B, S]; None when it hands over
none): the pipeline passes the rows of the ranked requests on, so each history is encoded once.
``recommend`` is the one-request form over per-request stages. Without a ranker (``rank=None``:
sasrec, tiger) the retrieval order is the answer, as in offline evaluation. An empty history gets the
most popular training items.

With no ``exclude`` the answer equals ``model.recommend(history, k, candidates)`` offline: retrieve
``max(candidates, k)`` items, score them with the ranker, keep the top k. Excluded items are
retrieved in addition and dropped before ranking, so the ranker still sees that many candidates.
With ``train.prefix_levels`` in the checkpoint's config the candidates are every item under the
``train.num_prefixes`` best SID prefixes (a request's ``candidates`` is then unused), as offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygr.config import Config
from raygr.data.dataset import load_dataset
from raygr.serving.catalogue import Catalogue
from raygr.serving.request import Limits, RecommendRequest
from raygr.training.checkpoint import MODEL_FILE, CheckpointInfo, check_compatible, read_checkpoint

VERSION_CHARS = 16  # hex digits of the weights' sha256 that name a model version in answers

Retrieved = tuple[list[int], list[float]]  # item_idx best first, and their scores
# Encoded histories, one row per history of a retrieve_many call (a numpy array [B, S] in production);
# opaque here, only indexed by a list of rows. None: the retriever hands over no encoding.
States = Any
RetrieveFn = Callable[[list[int], int], Awaitable[Retrieved]]
RankFn = Callable[[list[int], list[int]], Awaitable[list[float]]]
RetrieveManyFn = Callable[[list[list[int]], list[int]], Awaitable[tuple[list[Retrieved], States]]]
RankManyFn = Callable[[list[list[int]], list[list[int]], States], Awaitable[list[list[float]]]]


@dataclass(frozen=True)
class ServiceInfo:
    """What every answer and ``GET /metadata`` report about the served model."""

    preset: str
    dataset: str
    num_items: int
    levels: int | None  # SID levels (None for sasrec, which has no SIDs)
    max_history: int
    checkpoint: str
    checkpoint_epoch: int
    ranker: bool  # retrieve-then-rank (True) or retrieval only
    prefix_levels: int = 0  # > 0: the retriever hands over every item under its best SID prefixes
    model_version: str = ""  # model_version(checkpoint): the first VERSION_CHARS hex digits of sha256(model.pt)

    def metadata(self, limits: Limits) -> dict[str, Any]:
        return {"model": self.preset, "dataset": self.dataset, "catalogue_size": self.num_items,
                "levels": self.levels, "max_history": self.max_history, "checkpoint": self.checkpoint,
                "checkpoint_epoch": self.checkpoint_epoch, "model_version": self.model_version,
                "mode": "retrieve_then_rank" if self.ranker else "retrieval_only",
                "prefix_levels": self.prefix_levels,
                "limits": {"max_k": limits.max_k, "default_candidates": limits.default_candidates,
                           "max_candidates": limits.max_candidates, "max_exclude": limits.max_exclude,
                           "history_policy": limits.history_policy}}


def serves_ranker(cfg: Config) -> bool:
    """Whether the preset's answer is retrieve-then-rank (as in offline evaluation) or retrieval alone.

    sasrec has no ranker; tiger's ranker is untrained (its loss weight is 0), so its retrieval order is final.
    """
    return cfg.model.preset != "sasrec" and cfg.model.loss.ranker > 0


_VERSIONS: dict[tuple[str, int, int], str] = {}  # (weights file, size, mtime) -> version: hashed once


def model_version(checkpoint: str | Path | CheckpointInfo) -> str:
    """The version every answer names: the first VERSION_CHARS hex digits of the sha256 of the checkpoint's
    weights file (``model.pt``). Same weights <=> same version, wherever the checkpoint was copied."""
    info = checkpoint if isinstance(checkpoint, CheckpointInfo) else read_checkpoint(checkpoint)
    path = info.path / MODEL_FILE
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERSIONS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _VERSIONS[key] = digest.hexdigest()[:VERSION_CHARS]
    return _VERSIONS[key]


def load_service(checkpoint: str | Path, dataset_dir: str | Path) -> tuple[Catalogue, ServiceInfo]:
    """What the ingress needs (ids, popularity, metadata): read without torch or the model's weights.

    Refuses a dataset other than the one the checkpoint was trained on, naming both.
    """
    dataset = load_dataset(Path(dataset_dir))
    catalogue = Catalogue.from_dataset(dataset)
    return catalogue, service_info(checkpoint, dataset.manifest, catalogue)


def service_info(checkpoint: str | Path, manifest: dict[str, Any], catalogue: Catalogue) -> ServiceInfo:
    """The ``ServiceInfo`` of a checkpoint served over ``catalogue``; ``CheckpointError`` if it was trained
    on another dataset (``manifest`` is the served dataset's)."""
    info = read_checkpoint(checkpoint)
    cfg = info.config
    check_compatible(info, cfg, manifest)
    levels = None if cfg.model.preset == "sasrec" else cfg.model.levels
    return ServiceInfo(preset=cfg.model.preset, dataset=catalogue.name, num_items=len(catalogue),
                       levels=levels, max_history=cfg.data.max_history, checkpoint=str(info.path),
                       checkpoint_epoch=info.epoch, ranker=serves_ranker(cfg),
                       prefix_levels=cfg.train.prefix_levels if serves_ranker(cfg) else 0,
                       model_version=model_version(info))


def retrieval_width(req: RecommendRequest, num_items: int) -> int:
    """How many items to retrieve: the candidates (at least k), plus room for the excluded ones."""
    return min(max(req.candidates, req.k) + len(req.exclude), num_items)


def without_excluded(items: Sequence[int], scores: Sequence[float], exclude: frozenset[int],
                     n: int) -> Retrieved:
    """The first ``n`` retrieved items that are not excluded (retrieval order kept)."""
    keep = [j for j, i in enumerate(items) if i not in exclude][:n]
    return [items[j] for j in keep], [scores[j] for j in keep]


def top_k(items: Sequence[int], scores: Sequence[float], k: int) -> Retrieved:
    """The k best by score; ties keep the earlier (better retrieved) item."""
    order = sorted(range(len(items)), key=lambda j: -scores[j])[:k]
    return [items[j] for j in order], [scores[j] for j in order]


async def recommend(req: RecommendRequest, catalogue: Catalogue, info: ServiceInfo, retrieve: RetrieveFn,
                    rank: RankFn | None) -> dict[str, Any]:
    """One request, with per-request stages (tests, notebooks): ``recommend_batch`` of one."""
    async def retrieve_many(histories: list[list[int]], widths: list[int]) -> tuple[list[Retrieved], States]:
        return [await retrieve(h, w) for h, w in zip(histories, widths)], None

    async def rank_many(histories: list[list[int]], candidates: list[list[int]], _: States) -> list[list[float]]:
        return [list(await rank(h, c)) for h, c in zip(histories, candidates)]  # type: ignore[misc]

    return (await recommend_batch([req], catalogue, info, retrieve_many, rank_many if rank else None))[0]


async def recommend_batch(reqs: Sequence[RecommendRequest], catalogue: Catalogue, info: ServiceInfo,
                          retrieve_many: RetrieveManyFn, rank_many: RankManyFn | None) -> list[dict[str, Any]]:
    """Answers for a batch of requests: one ``retrieve_many`` call, then one ``rank_many`` call, which gets
    the retriever's encoded states of the requests it ranks (rows of ``states``, in the same order).

    Each request's answer is what it would get alone (batching never changes an answer).
    """
    live = [j for j, r in enumerate(reqs) if r.history]  # empty histories get the popularity fallback
    histories = [list(reqs[j].history) for j in live]
    got: list[Retrieved] = []
    states: States = None
    if live:
        got, states = await retrieve_many(histories, [retrieval_width(reqs[j], len(catalogue)) for j in live])
    # Prefix retrieval's candidates are every item under the best prefixes: none is cut off.
    kept = [without_excluded(items, scores, reqs[j].exclude,
                             len(items) if info.prefix_levels else max(reqs[j].candidates, reqs[j].k))
            for j, (items, scores) in zip(live, got)]
    ranked = [j for j, (items, _) in enumerate(kept) if items] if rank_many is not None else []
    if ranked:
        scores = await rank_many([histories[j] for j in ranked], [kept[j][0] for j in ranked],
                                 None if states is None else states[ranked])
        for j, s in zip(ranked, scores):
            kept[j] = (kept[j][0], list(s))
    by_req = dict(zip(live, kept))
    out = []
    for j, req in enumerate(reqs):
        if j not in by_req:
            items, scores = catalogue.popular(req.k, exclude=req.exclude)
            out.append(_answer(req, catalogue, info, items, scores, "popularity", 0, len(req.history)))
            continue
        items, scores = by_req[j]
        scored_by = "ranker" if rank_many is not None and items else "retriever"
        top_items, top_scores = top_k(items, scores, req.k)
        out.append(_answer(req, catalogue, info, top_items, top_scores, scored_by, len(items), len(req.history)))
    return out


def _answer(req: RecommendRequest, catalogue: Catalogue, info: ServiceInfo, items: Sequence[int],
            scores: Sequence[float], scored_by: str, num_candidates: int, used: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "items": [{"item_id": i, "score": float(s)} for i, s in zip(catalogue.to_ids(items), scores)],
        "model": info.preset, "model_version": info.model_version, "dataset": info.dataset,
        "fallback": scored_by == "popularity",
        "scored_by": scored_by, "num_candidates": num_candidates, "truncated": req.truncated > 0,
    }
    if req.truncated:
        answer["notice"] = (f"history had {req.truncated + used} items; only the newest {used} "
                            f"were used (data.max_history={info.max_history}, serve.history_policy=truncate)")
    return answer
