"""Is the validation split easier than the test split, with no model at all?

    python -m benchmarks.bench_split_drift [--dataset beauty]

Every trained model here scores well above on validation than on test (Beauty SASRec: N@10 .052 vs
.043). This script measures the same gap with two model-free rankers built only from the training part
(each user's items but the last two), on the splits that training uses (raygr.data.split):
- popularity: items by training count (the ``baselines.popularity`` of metrics.json);
- transitions: the 10 items that most often follow the user's newest item in the training sequences.
If these show the gap too, it is in the data (the test items are later in time, further from the
training interactions), not in the evaluation code. Writes benchmarks/results/split_drift_<dataset>.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA, prepared, write_result

SOURCES = {"beauty": ("s3rec", "amazon-beauty")}


def transition_top(items: np.ndarray, offsets: np.ndarray, num_items: int, k: int) -> np.ndarray:
    """[num_items+1, k] items that most often follow each item inside the training parts (0 = none)."""
    lengths = np.diff(offsets)
    train_len = np.maximum(lengths - 2, 0)
    pos = np.arange(len(items)) - np.repeat(offsets[:-1], lengths)
    # A pair (items[i], items[i+1]) is a training transition when both ends are in the training part.
    inside = (pos[:-1] + 1) < np.repeat(train_len, lengths)[:-1]
    a, b = items[:-1][inside], items[1:][inside]
    pair = a.astype(np.int64) * (num_items + 1) + b
    keys, counts = np.unique(pair, return_counts=True)
    src, dst = keys // (num_items + 1), keys % (num_items + 1)
    order = np.lexsort((-counts, src))  # by source, most frequent first
    src, dst = src[order], dst[order]
    first = np.searchsorted(src, src, side="left")
    rank = np.arange(len(src)) - first
    keep = rank < k
    top = np.zeros((num_items + 1, k), dtype=np.int64)
    top[src[keep], rank[keep]] = dst[keep]
    return top


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty", choices=sorted(SOURCES))
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    args = ap.parse_args()
    fmt, folder = SOURCES[args.dataset]
    source = SHARED_DATA / folder
    if not source.is_dir():
        raise SystemExit(f"{source} is not there: this benchmark needs the shared {folder} data")

    from raygr.data.dataset import load_dataset
    from raygr.data.split import eval_examples, training_item_counts
    from raygr.metrics import metrics_from_ranks, popularity_ranking, ranks_from_lists

    ds = load_dataset(str(prepared(args.dataset, fmt, source, Path(args.cache))))
    seqs, n = ds.sequences, ds.num_items
    counts = training_item_counts(seqs, n)
    popular = popularity_ranking(counts, 10)
    top = transition_top(seqs.items, seqs.offsets, n, 10)
    out: dict[str, dict[str, float]] = {}
    for split in ("valid", "test"):
        ex = eval_examples(seqs, split, 1)  # the newest history item is enough here
        pop = metrics_from_ranks(ranks_from_lists(np.tile(popular, (len(ex), 1)), ex.target), (10,))
        trans = metrics_from_ranks(ranks_from_lists(top[ex.history[:, -1]], ex.target), (10,))
        out[split] = {"users": len(ex.target), **{f"popularity_{k}": v for k, v in pop.items()},
                      **{f"transition_{k}": v for k, v in trans.items()},
                      "target_unseen_in_training": float((counts[ex.target] == 0).mean())}
    ratio = {k: out["valid"][k] / out["test"][k] for k in out["valid"] if k.endswith("@10") and out["test"][k]}
    write_result(f"split_drift_{args.dataset}", {"dataset": args.dataset, "splits": out, "valid_over_test": ratio})
    for split, row in out.items():
        print(split, {k: round(v, 4) for k, v in row.items()})
    print("valid / test:", {k: round(v, 2) for k, v in ratio.items()})


if __name__ == "__main__":
    main()
