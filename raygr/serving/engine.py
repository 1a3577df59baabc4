"""Batched model inference for serving: what the Retriever and Ranker replicas run on each batch.

    sm = load_serving_model("runs/joint", "datasets/beauty")          # the default loader
    retrieved = retrieve_batch(sm, [[3, 7], [5]], widths=[50, 50])  # one (items, scores) per request
    scores = rank_batch(sm, [[3, 7], [5]], [[12, 40], [9, 2, 8]])   # one score list per request
    # One encoding per request: retrieval hands the ranker each history's encoded state.
    retrieved, states = retrieve_encoded(sm, [[3, 7], [5]], widths=[50, 50])   # states [B, S] float32
    scores = rank_batch(sm, [[3, 7], [5]], [[12, 40], [9, 2, 8]], states=states)  # no second encoding
    check_retrieval(sm); check_ranking(sm)   # health probes: ModelHealthError on NaN scores, bad items

Each request gets exactly what the model gives it alone (``model.retrieve(history, k=width)``):
histories are left-padded to the model's ``data.max_history`` as in training, and requests of one
batch that ask for different retrieval widths run as separate sub-batches, because beam search with
a wider beam may find other items. No Ray here: the deployments in ``raygr.distributed.serve`` wrap
these functions in ``@serve.batch`` and stay thin.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raygr.config import Config
from raygr.data.dataset import load_dataset
from raygr.data.split import left_pad
from raygr.serving.pipeline import Retrieved, model_version, serves_ranker
from raygr.training.checkpoint import CheckpointInfo, load_model


@dataclass
class ServingModel:
    """A loaded checkpoint, ready for inference (caches refreshed, eval mode)."""

    model: nn.Module
    cfg: Config
    info: CheckpointInfo
    device: torch.device

    @property
    def max_history(self) -> int:
        return self.cfg.data.max_history

    @property
    def num_items(self) -> int:
        return self.info.dataset.num_items

    @property
    def version(self) -> str:
        """The weights' fingerprint (``raygr.serving.pipeline.model_version``), named in every answer."""
        return model_version(self.info)


# (checkpoint, dataset_dir, device) -> ServingModel. Deployments take one, so tests can swap it.
Loader = Callable[[str, str, str], ServingModel]


@dataclass
class BatchStats:
    """Sizes of the batches a replica ran: is batching happening under the current load?"""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    encoded: int = 0  # histories this replica ran through the sequence encoder itself

    def add(self, size: int, encoded: int = 0) -> None:
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)
        self.encoded += encoded

    def as_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "requests": self.requests, "largest": self.largest,
                "mean": self.requests / max(self.batches, 1), "encoded": self.encoded}


def load_serving_model(checkpoint: str, dataset_dir: str, device: str = "cpu") -> ServingModel:
    """The default loader: the checkpoint's model for the dataset it was trained on."""
    dataset = load_dataset(Path(dataset_dir))
    model, cfg, info = load_model(checkpoint, dataset, device)
    model.refresh()  # SID table, trie and item caches now, not on the first request
    return ServingModel(model, cfg, info, torch.device(device))


def pad_histories(histories: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """Item-index histories (oldest first) -> [B, width] int64, left-padded with 0, newest last."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((i for h in histories for i in h), dtype=np.int64, count=int(offsets[-1]))
    return torch.from_numpy(left_pad(offsets, flat, offsets[:-1], offsets[1:], width))


def encodes_once(sm: ServingModel) -> bool:
    """Whether retrieval can hand the ranker its encoding of the histories: a model with a ranker that
    exposes ``history_states`` (joint, content presets; not sasrec or tiger, which serve no ranker)."""
    return serves_ranker(sm.cfg) and hasattr(sm.model, "history_states")


@torch.no_grad()
def encode_batch(sm: ServingModel, histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """The sequence encoder's states of each history at every position [B, T, S] (S = D, or 2D with
    ``model.shared_encoder=false``): what retrieval and ranking both read."""
    return sm.model.history_states(pad_histories(histories, sm.max_history).to(sm.device))


@torch.no_grad()
def retrieve_batch(sm: ServingModel, histories: Sequence[Sequence[int]], widths: Sequence[int],
                   states: torch.Tensor | None = None) -> list[Retrieved]:
    """Top-``widths[i]`` items for each history, best first; empty slots (small catalogues) left out.

    With ``train.prefix_levels`` set in the checkpoint's config, each history gets every item under its
    ``train.num_prefixes`` best SID prefixes instead (at most ``train.max_candidates`` of them, as offline
    evaluation does), widths unused. ``states``: the histories' ``encode_batch`` [B, T, S], if already
    computed (else the model encodes them).
    """
    t = sm.cfg.train
    if t.prefix_levels > 0 and serves_ranker(sm.cfg):
        hist = pad_histories(histories, sm.max_history).to(sm.device)
        items, scores = sm.model.retrieve_prefixes(hist, t.prefix_levels, t.num_prefixes, states=states,
                                                   limit=t.max_candidates)  # [B, C] each
        return [_valid(its, scs) for its, scs in zip(items.tolist(), scores.tolist())]
    out: list[Retrieved | None] = [None] * len(histories)
    by_width: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(widths):
        by_width[int(w)].append(i)
    for width, rows in by_width.items():
        hist = pad_histories([histories[i] for i in rows], sm.max_history).to(sm.device)  # [b, T]
        if states is None:
            items, scores = sm.model.retrieve(hist, k=width)  # [b, width] each
        else:
            items, scores = sm.model.retrieve(hist, k=width, states=states[torch.as_tensor(rows)])
        for i, its, scs in zip(rows, items.tolist(), scores.tolist()):
            out[i] = _valid(its, scs)
    return out  # type: ignore[return-value]


@torch.no_grad()
def retrieve_encoded(sm: ServingModel, histories: Sequence[Sequence[int]],
                     widths: Sequence[int]) -> tuple[list[Retrieved], np.ndarray | None]:
    """``retrieve_batch`` with the histories encoded once for the whole batch, and each history's final
    state [B, S] float32 (the newest position of ``encode_batch``) for ``rank_batch(..., states=)``: the
    ranker then scores without encoding the history again. States are None for models without a ranker."""
    if not encodes_once(sm):
        return retrieve_batch(sm, histories, widths), None
    states = encode_batch(sm, histories)  # [B, T, S]
    return retrieve_batch(sm, histories, widths, states), states[:, -1].float().cpu().numpy()


@torch.no_grad()
def rank_batch(sm: ServingModel, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
               states: np.ndarray | None = None) -> list[list[float]]:
    """The ranker's score for every candidate of every request (same order as given).

    ``states``: the histories' final encoded states [B, S] from ``retrieve_encoded`` of the same weights;
    the histories are then not encoded again (their scores are the same).
    """
    width = max((len(c) for c in candidates), default=0)
    if width == 0:
        return [[] for _ in candidates]
    cand = torch.zeros(len(candidates), width, dtype=torch.long)  # [B, C], 0 = empty slot
    for i, c in enumerate(candidates):
        cand[i, :len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    hist = pad_histories(histories, sm.max_history).to(sm.device)
    # A copy: arrays from Ray's object store are read-only. [B, 1, S]: the newest position is all rank reads.
    given = None if states is None else torch.tensor(np.asarray(states))[:, None].to(sm.device)
    scores = sm.model.rank(hist, cand.to(sm.device), states=given).tolist()  # [B, C]
    return [row[:len(c)] for row, c in zip(scores, candidates)]


def _valid(items: list[int], scores: list[float]) -> Retrieved:
    keep = [j for j, i in enumerate(items) if i > 0]
    return [items[j] for j in keep], [scores[j] for j in keep]


# -- health probes ----------------------------------------------------------------------------------

# A fixed request each probe runs: the first items of the catalogue as a history, this many results.
PROBE_HISTORY = 3
PROBE_WIDTH = 5


class ModelHealthError(RuntimeError):
    """A loaded model answers the health probe with garbage (non-finite scores, items outside the catalogue)."""


def probe_history(sm: ServingModel) -> list[int]:
    return list(range(1, min(PROBE_HISTORY, sm.num_items) + 1))


def check_retrieval(sm: ServingModel) -> None:
    """Retrieve for a fixed history; raise ``ModelHealthError`` unless it gives distinct catalogue items with
    finite scores."""
    n = sm.num_items
    items, scores = retrieve_batch(sm, [probe_history(sm)], [min(PROBE_WIDTH, n)])[0]
    where = f"retrieval probe of checkpoint {sm.info.path}"
    if not items:
        raise ModelHealthError(f"{where}: retrieved no item")
    outside = [i for i in items if not 1 <= i <= n]
    if outside:
        raise ModelHealthError(f"{where}: item indices {outside} outside the catalogue 1..{n}")
    if len(set(items)) != len(items):
        raise ModelHealthError(f"{where}: the same item retrieved twice ({items})")
    _check_finite(scores, where)


def check_ranking(sm: ServingModel) -> None:
    """Rank fixed candidates for a fixed history; raise ``ModelHealthError`` unless every score is finite."""
    candidates = list(range(1, min(PROBE_WIDTH, sm.num_items) + 1))
    scores = rank_batch(sm, [probe_history(sm)], [candidates])[0]
    where = f"ranking probe of checkpoint {sm.info.path}"
    if len(scores) != len(candidates):
        raise ModelHealthError(f"{where}: {len(scores)} scores for {len(candidates)} candidates")
    _check_finite(scores, where)


def _check_finite(scores: Sequence[float], where: str) -> None:
    bad = [s for s in scores if not math.isfinite(s)]
    if bad:
        raise ModelHealthError(f"{where}: {len(bad)} of {len(scores)} scores are not finite ({bad[:3]})")


@torch.no_grad()
def poison_weights(sm: ServingModel) -> None:
    """Failure drills only: every float weight becomes NaN (and the item caches with them), as a corrupted
    load would leave them. The health probes then fail."""
    for p in sm.model.parameters():
        if p.is_floating_point():
            p.fill_(float("nan"))
    try:
        sm.model.refresh()
    except Exception:  # NaN codebooks may not even give a SID table: the model is broken either way
        pass
