"""Retrieve-then-rank for one validated request, composed from two async stages.

    answer = await recommend(req, catalogue, info, retrieve=retriever_call, rank=ranker_call)

``retrieve(history, width)`` and ``rank(history, candidates)`` are awaitables: in production they are
calls to the Retriever and Ranker deployments (each batched on its own replica), in tests plain
coroutines over a local model. Without a ranker (``rank=None``: sasrec, tiger) the retrieval order is
the answer, as in offline evaluation. An empty history gets the most popular training items.

With no ``exclude`` the answer equals ``model.recommend(history, k, candidates)`` offline: retrieve
``max(candidates, k)`` items, score them with the ranker, keep the top k. Excluded items are
retrieved in addition and dropped before ranking, so the ranker still sees that many candidates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygr.config import Config
from raygr.data.dataset import load_dataset
from raygr.serving.catalogue import Catalogue
from raygr.serving.request import Limits, RecommendRequest
from raygr.training.checkpoint import check_compatible, read_checkpoint

Retrieved = tuple[list[int], list[float]]  # item_idx best first, and their scores
RetrieveFn = Callable[[list[int], int], Awaitable[Retrieved]]
RankFn = Callable[[list[int], list[int]], Awaitable[list[float]]]


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

    def metadata(self, limits: Limits) -> dict[str, Any]:
        return {"model": self.preset, "dataset": self.dataset, "catalogue_size": self.num_items,
                "levels": self.levels, "max_history": self.max_history, "checkpoint": self.checkpoint,
                "checkpoint_epoch": self.checkpoint_epoch,
                "mode": "retrieve_then_rank" if self.ranker else "retrieval_only",
                "limits": {"max_k": limits.max_k, "default_candidates": limits.default_candidates,
                           "max_candidates": limits.max_candidates, "max_exclude": limits.max_exclude,
                           "history_policy": limits.history_policy}}


def serves_ranker(cfg: Config) -> bool:
    """Whether the preset's answer is retrieve-then-rank (as in offline evaluation) or retrieval alone.

    sasrec has no ranker; tiger's ranker is untrained (its loss weight is 0), so its retrieval order is final.
    """
    return cfg.model.preset != "sasrec" and cfg.model.loss.ranker > 0


def load_service(checkpoint: str | Path, dataset_dir: str | Path) -> tuple[Catalogue, ServiceInfo]:
    """What the ingress needs (ids, popularity, metadata): read without torch or the model's weights.

    Refuses a dataset other than the one the checkpoint was trained on, naming both.
    """
    info = read_checkpoint(checkpoint)
    dataset = load_dataset(Path(dataset_dir))
    cfg = info.config
    check_compatible(info, cfg, dataset.manifest)
    catalogue = Catalogue.from_dataset(dataset)
    levels = None if cfg.model.preset == "sasrec" else cfg.model.levels
    return catalogue, ServiceInfo(preset=cfg.model.preset, dataset=catalogue.name, num_items=len(catalogue),
                                  levels=levels, max_history=cfg.data.max_history, checkpoint=str(info.path),
                                  checkpoint_epoch=info.epoch, ranker=serves_ranker(cfg))


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
    history = list(req.history)
    if not history:
        items, scores = catalogue.popular(req.k, exclude=req.exclude)
        scored_by, fallback, num_candidates = "popularity", True, 0
    else:
        got_items, got_scores = await retrieve(history, retrieval_width(req, len(catalogue)))
        items, scores = without_excluded(got_items, got_scores, req.exclude, max(req.candidates, req.k))
        num_candidates = len(items)
        if rank is not None and items:
            scores = list(await rank(history, items))
            scored_by = "ranker"
        else:
            scored_by = "retriever"
        items, scores = top_k(items, scores, req.k)
        fallback = False
    answer: dict[str, Any] = {
        "items": [{"item_id": i, "score": float(s)} for i, s in zip(catalogue.to_ids(items), scores)],
        "model": info.preset, "dataset": info.dataset, "fallback": fallback, "scored_by": scored_by,
        "num_candidates": num_candidates, "truncated": req.truncated > 0,
    }
    if req.truncated:
        answer["notice"] = (f"history had {req.truncated + len(history)} items; only the newest {len(history)} "
                            f"were used (data.max_history={info.max_history}, serve.history_policy=truncate)")
    return answer
