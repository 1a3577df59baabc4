"""What a joint checkpoint scores at each candidate budget: the retrieve-then-rank operating curve.

    python -m benchmarks.bench_candidate_budget --checkpoints RUN [RUN ...] [--data DIR]
        [--settings 2x200,2x400,1x16,1x256] [--max-candidates 0] [--split test]

A setting DxW retrieves the W best SID prefixes of D codes (``train.prefix_levels=D``,
``train.num_prefixes=W``) and the ranker orders every item under them, as ``raygr evaluate`` does with
those keys; ``1x<codes>`` is the ranker over the whole catalogue (no retrieval). Each batch of users is
encoded and scored by the ranker over every item once, and every setting reads its candidates' scores
from that, so a sweep costs one evaluation plus one prefix beam search per setting. Reports per setting
N@K / R@K, the items the ranker scored per user, and how often the target was among them. Writes
benchmarks/results/candidate_budget.json (rows keyed "RUN@DxW", earlier rows kept).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, write_result
from raygr.metrics import MISS, metrics_from_ranks


def parse_settings(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        levels, _, width = part.strip().partition("x")
        if not (levels.isdigit() and width.isdigit()) or int(levels) < 1 or int(width) < 1:
            raise SystemExit(f"--settings: '{part}' is not LEVELSxWIDTH with both >= 1 (e.g. 2x200)")
        out.append((int(levels), int(width)))
    return out


@torch.no_grad()
def budget_ranks(model, history: np.ndarray, target: np.ndarray, settings: list[tuple[int, int]],
                 max_candidates: int = 0, batch_size: int = 128) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Per setting: the target's 0-based rank among the ranker-ordered candidates (MISS when retrieval
    missed it), and the candidates per user."""
    model.eval()
    model.refresh()
    out = {s: {"rank": [], "candidates": []} for s in settings}
    everything = torch.arange(model.num_items + 1)  # column i = item i (0: padding, scored -inf)
    for start in range(0, len(target), batch_size):
        hist = torch.from_numpy(history[start:start + batch_size])
        tgt = torch.from_numpy(target[start:start + batch_size])
        H = model.history_states(hist)  # [B, T, D], shared by every setting
        scores = model.rank(hist, everything.expand(len(hist), -1), states=H)  # [B, N+1]
        t = scores.gather(1, tgt[:, None])  # [B, 1]
        for levels, width in settings:
            cands = model.retrieve_prefixes(hist, levels, width, H, max_candidates)[0]  # [B, C]
            s = scores.gather(1, cands).masked_fill(cands == 0, float("-inf"))
            inside = (cands == tgt[:, None]).any(1)
            rank = (s > t).sum(1).numpy()
            out[(levels, width)]["rank"].append(np.where(inside.numpy(), rank, MISS))
            out[(levels, width)]["candidates"].append((cands > 0).sum(1).numpy())
    return {s: {k: np.concatenate(v) for k, v in d.items()} for s, d in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", nargs="+", required=True, help="run or checkpoint directories (joint)")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "raygr-bench" / "beauty"))
    ap.add_argument("--settings", default="2x200,2x400,2x600,1x16,1x32,1x256")
    ap.add_argument("--max-candidates", type=int, default=0, help="train.max_candidates for every setting")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    settings = parse_settings(args.settings)
    torch.set_num_threads(args.threads)

    from raygr.data.dataset import load_dataset
    from raygr.data.split import eval_examples
    from raygr.training.checkpoint import load_model

    ds = load_dataset(args.data)
    rows = {}
    for path in args.checkpoints:
        model, cfg, info = load_model(path, ds)
        if not getattr(model, "has_ranker", False):
            raise SystemExit(f"{path}: a {cfg.model.preset} checkpoint has no ranker to sweep")
        ex = eval_examples(ds.sequences, args.split, cfg.data.max_history)
        t0 = time.perf_counter()
        ranks = budget_ranks(model, ex.history, ex.target, settings, args.max_candidates)
        wall = time.perf_counter() - t0
        name = Path(path).resolve().name if info.path.parent.name != "checkpoints" else info.path.parents[1].name
        for (levels, width), r in ranks.items():
            row = {"checkpoint": str(info.path), "epoch": info.epoch, "split": args.split,
                   "prefix_levels": levels, "num_prefixes": width, "max_candidates": args.max_candidates,
                   "num_users": len(ex.target), "candidates_per_user": float(r["candidates"].mean()),
                   "target_in_candidates": float((r["rank"] != MISS).mean()),
                   **metrics_from_ranks(r["rank"]), "sweep_wall_s": wall}
            rows[f"{name}@{levels}x{width}" + (f"/{args.max_candidates}" if args.max_candidates else "")] = row
            print(f"{name} {levels}x{width}: {row['candidates_per_user']:.0f} candidates, target inside "
                  f"{row['target_in_candidates']:.3f}, N@10 {row['ndcg@10']:.4f}, R@10 {row['recall@10']:.4f}")
    previous = RESULTS / "candidate_budget.json"  # read now: another sweep may have written meanwhile
    kept = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    write_result("candidate_budget", {"command": "python -m benchmarks.bench_candidate_budget",
                                      "runs": {**kept, **rows}})


if __name__ == "__main__":
    main()
