"""Ranking metrics (Recall@K, NDCG@K with one target per example) and code-health metrics.

The protocol is full ranking over the catalogue with a single held-out target, so
Recall@K = 1[rank < K] and NDCG@K = 1[rank < K] / log2(rank + 2) with a 0-based rank.
A ranked list that does not contain the target counts as a miss at every K.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (5, 10, 20)
MISS = np.iinfo(np.int64).max


def ranks_from_lists(ranked: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """0-based position of each target in its ranked list ``[n, K]``; ``MISS`` where absent."""
    ranked = np.asarray(ranked.cpu() if isinstance(ranked, torch.Tensor) else ranked)
    target = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
    hit = ranked == target[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), MISS).astype(np.int64)


def ranks_from_scores(scores: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """0-based rank of each target among all scored items ``[n, N]``: items scored strictly higher.

    Ties count in the target's favour only against items with equal scores, as in RecBole's
    full-sort evaluation; column 0 (padding) must already hold -inf.
    """
    t = scores.gather(1, target.view(-1, 1))
    return (scores > t).sum(dim=1).cpu().numpy().astype(np.int64)


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float] = {}
    n = max(len(ranks), 1)
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.sum() / n)
        gains = np.zeros(len(ranks))
        gains[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
        out[f"ndcg@{k}"] = float(gains.sum() / n)
    return out


def popularity_ranking(counts: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices by training count (ties broken by lower index); column 0 is padding."""
    c = counts.astype(np.float64).copy()
    c[0] = -np.inf
    return np.argsort(-c, kind="stable")[:k]


def code_health(codes: np.ndarray, num_codes: int) -> dict[str, object]:
    """Per-level utilisation and perplexity of item codes ``[N, L]``, and the full-SID collision rate.

    utilisation = fraction of the K codes used by at least one item; perplexity = exp(entropy) of the
    code distribution over items (K means perfectly balanced); collision rate = share of items whose
    full code tuple is shared with another item (before the suffix token).
    """
    codes = np.asarray(codes)
    util, ppl = [], []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=num_codes).astype(np.float64)
        util.append(float((counts > 0).mean()))
        p = counts[counts > 0] / counts.sum()
        ppl.append(float(np.exp(-(p * np.log(p)).sum())))
    _, inverse, group_size = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    collided = group_size[inverse.reshape(-1)] > 1
    return {"utilization": util, "perplexity": ppl, "collision_rate": float(collided.mean()),
            "unique_sids": int(len(group_size))}


def decoding_health(ranked: np.ndarray, num_items: int) -> dict[str, float]:
    """Share of returned slots that are invalid (outside 1..N) and of duplicates within a list."""
    ranked = np.asarray(ranked)
    invalid = (ranked < 1) | (ranked > num_items)
    srt = np.sort(ranked, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 1)
    slots = max(ranked.size, 1)
    return {"invalid_rate": float(invalid.sum() / slots), "duplicate_rate": float(dup.sum() / slots)}
