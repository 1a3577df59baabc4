"""Semantic IDs from item content vectors by residual k-means, with collisions removed by the assignment.

    codes = content_sids(dense, levels=3, codes=256, seed=0)    # [N, L] int64, no two rows equal

TIGER and GRID quantize a pretrained text embedding of each item (RQ-VAE or residual k-means); this is
the residual k-means form, deterministic for a seed and a pure function of the vectors, so a run, its
resume and its serving replica compute the same SIDs. Vectors are standardised per dimension first
(the published recipes' guard against codebook collapse: a few high-variance directions would otherwise
decide every level).

Items whose L codes coincide (identical or near-identical texts) are told apart by the last level
itself: each extra member of a group takes the nearest last-level code still free under the group's
prefix. The SID is then one-to-one with no suffix token, so nothing in a SID depends on item indices,
which no history can predict.
"""

from __future__ import annotations

import numpy as np
import torch


def _kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, F] -> (centroids [k, F], assignment [M]); k-means++-free: seeded sample, Lloyd steps."""
    m = x.shape[0]
    C = x[torch.randperm(m, generator=g)[:k]].clone() if m >= k else \
        x[torch.randint(0, m, (k,), generator=g)] + 1e-3 * torch.randn(k, x.shape[1], generator=g)
    for _ in range(iters):
        a = torch.cdist(x, C).argmin(1)
        sums = torch.zeros_like(C).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).to(x.dtype)[:, None]
        empty = cnt[:, 0] == 0
        C = torch.where(cnt > 0, sums / cnt.clamp(min=1), C)
        if empty.any():  # re-seed empty clusters on the points farthest from their centroid
            far = (x - C[a]).pow(2).sum(1).argsort(descending=True)[: int(empty.sum())]
            C[empty] = x[far]
    return C, torch.cdist(x, C).argmin(1)


def dedup_last_level(codes: np.ndarray, residual_dist: np.ndarray) -> np.ndarray:
    """Give every item of a full-SID collision group but one the nearest free last-level code.

    codes [N, L]; residual_dist [N, K] each item's distance to every last-level code (the order of
    preference). The item nearest to the shared code keeps it. Raises if a prefix has more items than
    codes (then no assignment can be one-to-one: raise model.codes or model.levels).
    """
    codes = codes.copy()
    K = residual_dist.shape[1]
    prefix = [tuple(r) for r in codes[:, :-1]]
    taken: dict[tuple, set[int]] = {}
    for i, p in enumerate(prefix):
        taken.setdefault(p, set()).add(int(codes[i, -1]))
    _, inv, cnt = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    for group in np.flatnonzero(cnt > 1):
        members = np.flatnonzero(inv == group)
        last = codes[members[0], -1]
        members = members[np.argsort(residual_dist[members, last], kind="stable")]  # nearest keeps it
        used = taken[prefix[members[0]]]
        for i in members[1:]:
            free = [c for c in np.argsort(residual_dist[i], kind="stable") if int(c) not in used]
            if not free:
                raise ValueError(f"{len(used) + 1} items share the SID prefix {prefix[i]}, more than the "
                                 f"{K} codes of the last level: raise model.codes or model.levels, or set "
                                 "model.sid_collab_weight > 0 so that what users do tells those items apart")
            codes[i, -1] = free[0]
            used.add(int(free[0]))
    return codes


def _standardised(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.array(x, dtype=np.float32))  # a copy: the caller's array stays as it is
    if x.ndim != 2 or not torch.isfinite(x).all():
        raise ValueError(f"{name} must be a finite [N, F] array, got shape {tuple(x.shape)}")
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def training_transitions(offsets: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive pairs (item, next item) [P], [P] inside each user's sequence minus its last two items
    (the validation and test targets never appear); ids as in ``items``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    lengths = np.diff(offsets)
    user = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(items)) - offsets[user]
    training = pos < lengths[user] - 2
    keep = (user[:-1] == user[1:]) & training[1:]  # pair (t, t+1): one user, both in the training part
    return items[:-1][keep], items[1:][keep]


def transition_vectors(offsets: np.ndarray, items: np.ndarray, num_items: int, dim: int = 64,
                       seed: int = 0) -> np.ndarray:
    """Collaborative item vectors [N, dim] from which items follow which in the users' training parts.

    Counts consecutive pairs (both directions) within each user's sequence minus its last two items
    (validation and test never leak in), weighs them by positive PMI, and keeps the top ``dim`` singular
    directions (scaled by the square root of their singular values). Items whose text says little
    (attributes only) are then told apart by who buys them next to what.
    """
    a, b = training_transitions(offsets, items)
    a, b = a - 1, b - 1  # 0-based
    rows, cols = np.concatenate([a, b]), np.concatenate([b, a])
    from scipy.sparse import coo_matrix
    m = coo_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(num_items, num_items)).tocsr()
    m.sum_duplicates()
    total = m.sum()
    deg = np.asarray(m.sum(1)).ravel()
    m = m.tocoo()
    pmi = np.log(m.data * total / (deg[m.row] * deg[m.col]))
    ok = pmi > 0
    ppmi = torch.sparse_coo_tensor(np.stack([m.row[ok], m.col[ok]]), pmi[ok].astype(np.float32),
                                   (num_items, num_items), check_invariants=True).coalesce()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # svd_lowrank draws its random projection from the global generator
        U, S, _ = torch.svd_lowrank(ppmi, q=min(dim, num_items - 1), niter=4)
    return (U * S.sqrt()).numpy()


def sid_vectors(content: np.ndarray | None, collaborative: np.ndarray | None, collab_weight: float,
                recommender: np.ndarray | None = None, rec_weight: float = 0.0) -> torch.Tensor:
    """What residual k-means sees: each block standardised per dimension and scaled to the same total
    variance (so a 256-d text block does not outvote a 64-d one by its width), the collaborative block
    times ``collab_weight``, the recommender's item table (``recommender`` [N, D]) times ``rec_weight``."""
    blocks = []
    if content is not None:
        x = _standardised(content, "item vectors")
        blocks.append(x / x.shape[1] ** 0.5)
    for name, v, w in (("collaborative vectors", collaborative, collab_weight),
                       ("recommender item vectors", recommender, rec_weight)):
        if v is not None and w > 0:
            c = _standardised(v, name)
            blocks.append(w * c / c.shape[1] ** 0.5)
    if not blocks:
        raise ValueError("no item vectors to quantize: give content vectors or a collaborative weight > 0")
    return torch.cat(blocks, 1)


def content_sids(dense: np.ndarray | torch.Tensor, levels: int, codes: int, seed: int = 0,
                 iters: int = 20, standardise: bool = True) -> np.ndarray:
    """Residual k-means SIDs [N, L] of item vectors ``dense`` [N, F], one-to-one (see the module doc).
    ``standardise=False`` takes vectors already scaled (``sid_vectors``)."""
    x = _standardised(dense, "item vectors") if standardise else torch.as_tensor(dense, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    r = x
    out, last_dist = [], None
    for _ in range(levels):
        C, a = _kmeans(r, codes, iters, g)
        out.append(a)
        last_dist = torch.cdist(r, C)
        r = r - C[a]
    sids = torch.stack(out, 1).numpy().astype(np.int64)
    return dedup_last_level(sids, last_dist.numpy())
