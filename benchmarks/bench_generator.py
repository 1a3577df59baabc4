"""The generator alone on Amazon Beauty: Ray-free runs of named variants, retrieval-only metrics.

    python -m benchmarks.bench_generator --variant letter-dec2 --epochs 20 \\
        --set model.sid_file=/tmp/raygr-data/letter_beauty_sids.json --set model.levels=4

Each run trains ``--config`` (default jobs/configs/beauty_tiger.yaml) with the ``--set`` overrides in
the Ray-free loop on one torch thread, validates every epoch on a fixed 5,000-user subset (beam 20) and
scores the best epoch on the whole test split. Appends the run to
benchmarks/results/generator.json under its variant name: per-epoch validation, test metrics (the
preset's main output and ``retrieval_only``), code health, wall time. LETTER's published Beauty SIDs
(``../shared/data/amazon-beauty/LETTER_Beauty.index.json``, keys = S3-Rec id - 1) are written as a SID
file keyed by the dataset's item ids with ``--letter-sids PATH``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, ROOT, SHARED_DATA, prepared

KEYS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20")


def write_letter_sids(path: Path) -> None:
    src = SHARED_DATA / "amazon-beauty" / "LETTER_Beauty.index.json"
    raw = json.loads(src.read_text())
    path.write_text(json.dumps({str(int(k) + 1): v for k, v in raw.items()}))


def merge_into_beauty() -> None:
    """Copy every Beauty row of generator.json into beauty.json's runs (the table docs/results.md reads),
    in its schema: preset, test, retrieval_only, codebook, candidates_per_user, train."""
    rows = json.loads((RESULTS / "generator.json").read_text())
    path = RESULTS / "beauty.json"
    beauty = json.loads(path.read_text())
    for name, r in rows.items():
        if "beauty" not in Path(r["data"]).name:
            continue
        best = max(r["valid"], key=lambda v: v["ndcg@10"])
        beauty["runs"][name] = {
            "preset": next((o.split("=")[1] for o in r["overrides"] if o.startswith("model.preset=")),
                           "tiger" if "tiger" in r["config"] else "joint"),
            "dataset": Path(r["data"]).name, "config": r["config"], "overrides": r["overrides"],
            "test": r["test"], "retrieval_only": r["retrieval_only"], "valid_best": best,
            "codebook": r["codebook"], "candidates_per_user": r["candidates_per_user"],
            "train": {"wall_s": r["wall_s"], "epochs": r["epochs_run"], "best_epoch": r["best_epoch"],
                      "threads": r["threads"], "path": "Ray-free (benchmarks/bench_generator.py)"}}
    path.write_text(json.dumps(beauty, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--merge", action="store_true", help="only copy generator.json's Beauty rows into beauty.json")
    ap.add_argument("--variant")
    ap.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "beauty_tiger.yaml"))
    ap.add_argument("--data", default="", help="a prepared dataset (default: Beauty prepared from ../shared)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--letter-sids", default="", help="write LETTER's Beauty SIDs here as a SID file first")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "raygr-bench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default="", help="write the best epoch as a checkpoint here (a train.init_from)")
    ap.add_argument("--generator-best", action="store_true",
                    help="also test the generator alone at its own best validation epoch")
    args = ap.parse_args()
    if args.merge:
        merge_into_beauty()
        return
    if not args.variant:
        ap.error("--variant is required")
    if args.letter_sids:
        write_letter_sids(Path(args.letter_sids))
    data = args.data or str(prepared("beauty", "s3rec", SHARED_DATA / "amazon-beauty", Path(args.cache)))

    from raygr.config import load_config
    from raygr.training.local import train_local
    from raygr.training.loop import codebook_health

    torch.set_num_threads(args.threads)
    sets = [f"train.epochs={args.epochs}", "data.num_eval_users=5000", *args.set]
    cfg = load_config(args.config, sets)
    t0 = time.perf_counter()
    model, state, test = train_local(cfg, data, log=lambda s: print(f"[{args.variant}] {s}", flush=True),
                                     checkpoint_dir=args.save or None, generator_best=args.generator_best)
    config = Path(args.config).resolve()  # a config outside the repository (a tune search's) stays absolute
    row = {
        "variant": args.variant, "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "overrides": sets,
        "data": data, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "valid": [{"epoch": h["epoch"], "ndcg@10": h["valid"]["ndcg@10"],
                   "retrieval_ndcg@10": h["valid"].get("retrieval_only", h["valid"])["ndcg@10"],  # sasrec: one
                   "train_loss": h["train"].get("loss"), "train_s": h["train_s"],
                   "teacher_forced_accuracy": h["valid"].get("teacher_forced_accuracy"),
                   "codebook": {k: h["codebook"].get(k) for k in ("collision_rate", "utilization", "sid_changed")}}
                  for h in state.history],
        "test": {k: test[k] for k in KEYS},
        "retrieval_only": {k: test.get("retrieval_only", test)[k] for k in KEYS},
        "candidates_per_user": test.get("candidates_per_user", 0.0),
        **({"generator_best": {"epoch": test["generator_best"]["epoch"],
                               "retrieval_only": {k: test["generator_best"]["retrieval_only"][k] for k in KEYS}}}
           if "generator_best" in test else {}),
        "codebook": codebook_health(model),
        "wall_s": time.perf_counter() - t0, "threads": args.threads,
    }
    path = RESULTS / "generator.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows[args.variant] = row
    path.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    r = row["retrieval_only"]
    print(f"[{args.variant}] test retrieval-only N@10 {r['ndcg@10']:.4f} R@10 {r['recall@10']:.4f}; main N@10 "
          f"{row['test']['ndcg@10']:.4f} R@10 {row['test']['recall@10']:.4f}; best epoch {state.best_epoch}",
          flush=True)


if __name__ == "__main__":
    main()
