"""What closed the SASRec gap on Beauty: short Ray-free runs that change one key at a time.

    python -m benchmarks.bench_sasrec_ablation [--epochs 10] [--variants base,batch32,input_norm]

Each variant trains jobs/configs/beauty_sasrec.yaml with its overrides in the Ray-free loop on one
torch thread, validates each epoch on a fixed 5,000-user subset and scores the best epoch on the whole
test split. Writes benchmarks/results/sasrec_ablation.json (validation NDCG@10 per epoch, test metrics,
wall time). The long runs of the table in docs/results.md go through Ray Train (bench_beauty).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, SHARED_DATA, prepared, write_result

# Every variant starts from the shipped config with the two changes undone, then puts back its own.
BASE = ["model.input_norm=false", "train.batch_size=128"]
VARIANTS = {
    "base": [],  # the config before the fix: item inputs not normalised, batch 128
    "batch32": ["train.batch_size=32"],
    "input_norm": ["model.input_norm=true"],
    "both": ["model.input_norm=true", "train.batch_size=32"],  # the shipped config
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    args = ap.parse_args()
    source = SHARED_DATA / "amazon-beauty"
    if not source.is_dir():
        raise SystemExit(f"{source} is not there: this benchmark needs the shared Amazon Beauty data")
    data = prepared("beauty", "s3rec", source, Path(args.cache))

    from raygr.config import load_config
    from raygr.training.local import train_local

    torch.set_num_threads(1)
    out = {}
    for name in args.variants.split(","):
        sets = [*BASE, *VARIANTS[name], f"train.epochs={args.epochs}", f"train.patience={args.epochs}",
                "data.num_eval_users=5000", "train.log_every=0"]
        cfg = load_config(ROOT / "jobs" / "configs" / "beauty_sasrec.yaml", sets)
        t0 = time.perf_counter()
        _, state, test = train_local(cfg, str(data), log=lambda s, n=name: print(f"[{n}] {s}", flush=True))
        valid = [h["valid"]["ndcg@10"] for h in state.history]
        out[name] = {"overrides": sets, "valid_ndcg@10": valid, "best_epoch": state.best_epoch,
                     "test": {k: test[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")},
                     "wall_s": time.perf_counter() - t0}
        print(f"{name}: best valid {max(valid):.4f} (epoch {state.best_epoch}), test N@10 "
              f"{test['ndcg@10']:.4f} R@10 {test['recall@10']:.4f}", flush=True)
    write_result("sasrec_ablation", {"epochs": args.epochs, "threads": 1, "variants": out})


if __name__ == "__main__":
    main()
