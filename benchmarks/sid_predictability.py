"""How predictable a set of Semantic IDs makes the next item, before any generator trains on it.

    python -m benchmarks.sid_predictability --data BEAUTY_WL --sids runs/sids.json [--sids other.json]
    python -m benchmarks.sid_predictability --data BEAUTY_WL --config jobs/configs/beauty_tiger.yaml \\
        [--set model.sid_collab_weight=0]           # the content SIDs a config computes

For each SID prefix depth d, raygr.models.sid_predictability.prefix_predictability: the share of
validation targets whose prefix is the most frequent successor of the previous item's in the training
transitions. Seconds on Beauty; nothing trains.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.common import RESULTS, write_result
from raygr.models.sid_predictability import prefix_predictability


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
