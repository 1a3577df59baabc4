"""The embedded default dataset: seeded synthetic users and items with structure a model can learn.

Items fall into latent clusters (and sub-clusters); their content tokens reveal the cluster through
shared words and brands, with noise. Users move between clusters along a sparse Markov chain, and
each item has a designated successor it is often followed by. So the next item is predictable from
content (which cluster comes next) and from order (which exact item), while popularity alone is a
weak predictor: a sequence model should beat the popularity baseline by a wide margin.

    items, seqs = generate(num_users=2000, num_items=500, seed=0)

Generation is vectorised over users, one step at a time, so millions of interactions take seconds.
"""

from __future__ import annotations

import numpy as np

from raygr.data.dataset import ItemTable, SequenceData


def _cluster_words(rng: np.random.Generator, num_clusters: int, words_per_cluster: int) -> list[list[str]]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe", "gu", "hi", "jo"]
    words = []
    for c in range(num_clusters):
        ws = []
        for w in range(words_per_cluster):
            parts = rng.choice(syllables, size=3)
            ws.append("".join(parts) + f"{c}{w}")
        words.append(ws)
    return words


def generate(num_users: int = 2000, num_items: int = 500, seed: int = 0, *, num_clusters: int | None = None,
             avg_len: float = 10.0, min_len: int = 5, max_len: int = 50, successor_prob: float = 0.5,
             follow_prob: float = 0.35, token_noise: float = 0.2, popularity_exponent: float = 0.8
             ) -> tuple[ItemTable, SequenceData]:
    """Generate ``(items, sequences)`` (items 1-based in the sequences).

    Args:
        successor_prob: chance the next item is the current item's designated successor.
        follow_prob: chance it is drawn (by popularity) from a cluster the chain leads to.
        The remainder is a popularity-weighted random item (noise).
        token_noise: chance each content word comes from a random cluster instead of the item's own.
        popularity_exponent: item popularity ~ 1 / rank**exponent (0 = uniform).
    """
    if num_items < 4 or num_users < 1:
        raise ValueError("synthetic data needs num_items >= 4 and num_users >= 1")
    if not 0 <= successor_prob + follow_prob <= 1:
        raise ValueError("successor_prob + follow_prob must be within [0, 1]")
    rng = np.random.default_rng(seed)
    C = num_clusters or max(4, int(round(np.sqrt(num_items) / 2)))
    C = min(C, num_items // 2)

    # Items: cluster, sub-cluster, popularity (Zipf-like over a random order).
    cluster = rng.permutation(np.arange(num_items) % C)  # balanced clusters
    sub = rng.integers(0, 4, size=num_items)
    pop = 1.0 / np.power(rng.permutation(num_items) + 1.0, popularity_exponent)

    # Cluster chain: each cluster leads to three others with fixed probabilities.
    nxt = np.stack([rng.choice(np.delete(np.arange(C), c), size=3, replace=False) for c in range(C)])  # [C, 3]
    nxt_p = np.array([0.6, 0.25, 0.15])

    # Popularity-weighted sampling inside a cluster: items sorted by cluster, per-cluster CDF shifted by
    # the cluster index, so ``searchsorted(cum, c + u)`` draws from cluster c for a whole batch at once.
    by_cluster = np.argsort(cluster, kind="stable")
    cl_sorted = cluster[by_cluster]
    p_sorted = pop[by_cluster]
    tot = np.bincount(cl_sorted, weights=p_sorted, minlength=C)
    cum = np.zeros(num_items)
    for c in range(C):  # C is small (tens to hundreds)
        m = cl_sorted == c
        cum[m] = c + np.cumsum(p_sorted[m]) / tot[c]
    cum[np.r_[np.flatnonzero(np.diff(cl_sorted)), num_items - 1]] = np.arange(C) + 1.0  # exact cluster ends

    def draw_in_cluster(cs: np.ndarray) -> np.ndarray:
        j = np.searchsorted(cum, cs + rng.random(len(cs)) * (1 - 1e-12), side="right")
        return by_cluster[np.minimum(j, num_items - 1)]

    global_cdf = np.cumsum(pop) / pop.sum()

    def draw_popular(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(global_cdf, rng.random(n), side="right"), num_items - 1)

    # Each item's successor lies in a cluster its own cluster leads to.
    successor = draw_in_cluster(nxt[cluster, rng.choice(3, size=num_items, p=nxt_p)])
    same = successor == np.arange(num_items)
    successor[same] = (successor[same] + 1) % num_items

    # Users: lengths, then all users advance one step at a time.
    lengths = np.minimum(min_len + rng.geometric(1.0 / max(1.0, avg_len - min_len + 1), size=num_users) - 1,
                         max_len)
    T = int(lengths.max())
    seq = np.zeros((num_users, T), dtype=np.int64)
    seq[:, 0] = draw_popular(num_users)
    for t in range(1, T):
        cur = seq[:, t - 1]
        r = rng.random(num_users)
        chain = nxt[cluster[cur], rng.choice(3, size=num_users, p=nxt_p)]
        step = np.where(r < successor_prob, successor[cur], draw_in_cluster(chain))
        noise = r >= successor_prob + follow_prob
        step[noise] = draw_popular(int(noise.sum()))
        seq[:, t] = step

    mask = np.arange(T)[None, :] < lengths[:, None]
    flat = seq[mask] + 1  # 1-based item index
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # Timestamps: a per-user start plus increasing gaps (seconds).
    gaps = rng.integers(60, 86400, size=len(flat))
    starts = np.repeat(1_600_000_000 + rng.integers(0, 10**7, size=num_users), lengths)
    within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[offsets[:-1]] - gaps[offsets[:-1]], lengths)
    timestamps = starts + within

    words = _cluster_words(rng, C, words_per_cluster=12)
    brands = [f"brand{c}_{b}" for c in range(C) for b in range(3)]
    tokens, titles = [], []
    for i in range(num_items):
        c = int(cluster[i])
        src = np.where(rng.random(3) < token_noise, rng.integers(0, C, size=3), c)
        ws = [words[s][int(rng.integers(0, 12))] for s in src]
        brand = brands[c * 3 + int(rng.integers(0, 3))]
        tokens.append([f"title:{w}" for w in ws] + [f"brand:{brand}", f"cat:c{c}", f"cat:c{c}.{sub[i]}"])
        titles.append(" ".join(ws) + f" by {brand}")

    items = ItemTable(item_id=[f"item{i:07d}" for i in range(num_items)], tokens=tokens, title=titles)
    seqs = SequenceData(user_id=[f"user{u:08d}" for u in range(num_users)], offsets=offsets,
                        items=flat.astype(np.int32), timestamps=timestamps.astype(np.int64))
    return items, seqs
