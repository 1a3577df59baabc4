"""How predictable a set of Semantic IDs makes the next item, before any generator trains on it.

    python -m benchmarks.sid_predictability --data BEAUTY_WL --sids runs/sids.json [--sids other.json]
    python -m benchmarks.sid_predictability --data BEAUTY_WL --config jobs/configs/beauty_tiger.yaml \\
        [--set model.sid_collab_weight=0]           # the content SIDs a config computes

For each SID prefix depth d: the share of validation targets (every user's second-to-last item) whose
first d codes equal the prefix most often seen after the previous item's first d codes in the training
transitions (each sequence without its last two items). A first-order, count-based stand-in for the
generator's level-d teacher-forced accuracy, which a trained generator does not exceed by much at level 1
(docs/results.md, session 21): SIDs that score higher here gave the generator more across sessions 12-21.
Seconds on Beauty; nothing trains.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.common import RESULTS, write_result
from raygr.models.content_sids import training_transitions


def prefix_keys(codes: np.ndarray, depth: int) -> np.ndarray:
    """One int64 per item for the first ``depth`` codes of its SID (``codes`` [N, L], row i = item i+1)."""
    base = int(codes.max()) + 1
    keys = np.zeros(len(codes), dtype=np.int64)
    for level in range(depth):
        keys = keys * base + codes[:, level].astype(np.int64)
    return keys


def prefix_predictability(offsets: np.ndarray, items: np.ndarray, codes: np.ndarray, depth: int) -> float:
    """Share of validation targets whose depth-``depth`` prefix is the most frequent successor prefix of
    the previous item's in the training transitions. ``items`` are 1-based, CSR by ``offsets``."""
    keys = prefix_keys(codes, depth)
    lengths = np.diff(offsets)
    prev_items, next_items = training_transitions(offsets, items)
    a, b = keys[prev_items - 1], keys[next_items - 1]
    pairs, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    # Most frequent successor per source prefix (ties: the smallest prefix, deterministic).
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    best = dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist()))
    users = np.flatnonzero(lengths >= 3)
    prev = keys[items[offsets[users + 1] - 3] - 1]
    target = keys[items[offsets[users + 1] - 2] - 1]
    guess = np.array([best.get(k, -1) for k in prev.tolist()], dtype=np.int64)
    return float((guess == target).mean()) if len(users) else 0.0


def summarise(offsets: np.ndarray, items: np.ndarray, codes: np.ndarray) -> dict:
    levels = codes.shape[1]
    return {"levels": levels, "unique_sids": int(len(np.unique(codes, axis=0))),
            "first_level_codes_used": int(len(np.unique(codes[:, 0]))),
            "predictability": [round(prefix_predictability(offsets, items, codes, d), 4)
                               for d in range(1, levels + 1)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a prepared dataset (raygr data prepare)")
    ap.add_argument("--sids", action="append", default=[], help="a SID file (model.sid_file format)")
    ap.add_argument("--config", default=None, help="measure the content SIDs this config computes")
    ap.add_argument("--set", action="append", default=[], help="config override for --config")
    ap.add_argument("--name", default="sid_predictability", help="results file under benchmarks/results")
    args = ap.parse_args()
    if not args.sids and not args.config:
        ap.error("give --sids FILE (repeatable) and/or --config CONFIG")

    from raygr.data.dataset import load_dataset
    from raygr.data.sid_file import load_sids

    ds = load_dataset(args.data)
    seqs = ds.sequences
    sets: dict[str, np.ndarray] = {f: load_sids(f, ds.items.item_id) for f in args.sids}
    if args.config:
        from raygr.config import load_config
        from raygr.training.factory import semantic_sids

        cfg = load_config(args.config, ["model.sid_source=content", *args.set])
        sets[" ".join([args.config, *args.set])] = semantic_sids(cfg, ds)
    # Rows accumulate across invocations (one --config each), keyed by dataset and SID set.
    old = RESULTS / f"{args.name}.json"
    rows = json.loads(old.read_text()).get("rows", {}) if old.exists() else {}
    for name, codes in sets.items():
        row = {"data": str(args.data), **summarise(seqs.offsets, seqs.items, np.asarray(codes))}
        rows[f"{args.data} :: {name}"] = row
        print(f"{name}: {json.dumps(row)}")
    write_result(args.name, {"rows": rows})


if __name__ == "__main__":
    main()
