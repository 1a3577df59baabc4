"""Constrained beam search: batched vs the slow reference, on a Beauty-sized catalogue.

    python benchmarks/bench_beam.py [--beam 20] [--reference-users 200]

Uses Amazon Beauty from ../shared/data when present (12,101 items, 22,363 test users), else a
synthetic catalogue of the same size. The model is k-means-initialised (codes and trie are real;
speed does not depend on training). Reports users/s of both searches on the same users, their
agreement, and invalid/duplicate rates of the batched search over the whole test set.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SHARED_DATA, prepared, write_result
from raygr.config import load_config
from raygr.data.dataset import load_dataset, write_dataset
from raygr.data.split import eval_examples
from raygr.data.synthetic import generate
from raygr.metrics import decoding_health
from raygr.models.decoding import beam_search, reference_beam_search
from raygr.training.factory import build_model
from raygr.training.loop import initialise


def dataset(cache: Path):
    beauty = SHARED_DATA / "amazon-beauty"
    if beauty.is_dir():
        return load_dataset(prepared("beauty", "s3rec", beauty, cache)), "amazon-beauty"
    items, seqs = generate(num_users=22_363, num_items=12_101, seed=0)
    write_dataset(cache / "syn12k", items, seqs, source={"format": "synthetic"}, overwrite=True)
    return load_dataset(cache / "syn12k"), "synthetic-12101"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--reference-users", type=int, default=200)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds, name = dataset(Path(args.cache))
    cfg = load_config(None)
    model = build_model(cfg, ds).eval()
    initialise(model, cfg, log=lambda s: None)
    ex = eval_examples(ds.sequences, "test", cfg.data.max_history)
    hist = torch.from_numpy(ex.history)
    with torch.no_grad():
        states = torch.cat([model.user_states(hist[i:i + args.batch]) for i in range(0, len(ex), args.batch)])

    # Batched, whole test set.
    t0 = time.perf_counter()
    results = [beam_search(model, states[i:i + args.batch], model.trie, beam=args.beam)[0]
               for i in range(0, len(ex), args.batch)]
    batched_s = time.perf_counter() - t0
    items = torch.cat(results).numpy()
    health = decoding_health(items, ds.num_items)
    n_ref = min(args.reference_users, len(ex))

    # Reference on the first n_ref users, and the batched search on the same users for the ratio.
    t0 = time.perf_counter()
    ref_items, ref_scores = reference_beam_search(model, states[:n_ref], model.table, beam=args.beam)
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    same, _ = beam_search(model, states[:n_ref], model.trie, beam=args.beam)
    batched_small_s = time.perf_counter() - t0
    agree = float(np.mean([same[b].tolist() == ref_items[b] for b in range(n_ref)]))
    result = {
        "dataset": name, "num_items": ds.num_items, "beam": args.beam, "test_users": len(ex),
        "batched_users_per_s": len(ex) / batched_s,
        "reference_users_per_s": n_ref / ref_s,
        "batched_users_per_s_same_users": n_ref / batched_small_s,
        "speedup_whole_set": (len(ex) / batched_s) / (n_ref / ref_s),
        "reference_users": n_ref, "reference_agreement": agree,
        "invalid_rate": health["invalid_rate"], "duplicate_rate": health["duplicate_rate"],
        "unreachable_items": int((~model.table.reachable()[1:]).sum()),
    }
    for k, v in result.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    write_result("beam", result)


if __name__ == "__main__":
    main()
