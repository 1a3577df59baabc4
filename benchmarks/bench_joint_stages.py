"""Where a joint checkpoint loses: its retriever, its ranker, or the hand-off between them.

    python -m benchmarks.bench_joint_stages --run /tmp/raygr-bench/runs/beauty-joint-g0 --label g0

For C candidates (beam width C) on a seeded subset of validation users it measures:
- ``beam recall@C``: the target is among the C items the beam search returns (the pipeline's ceiling);
- ``ranker recall@C``: the target is among the ranker's own top C over the whole catalogue;
- ``ranker`` N@10 / R@10: the ranker alone, scoring every item (no beam search);
- ``pipeline`` N@10 / R@10: retrieve C by beam search, then rank them (what the preset serves).
Writes ``benchmarks/results/joint_stages.json`` (one row per label; earlier rows are kept).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.common import RESULTS, write_result
from raygr.metrics import metrics_from_ranks, ranks_from_lists, ranks_from_scores


def stage_metrics(model, examples, candidates: list[int], batch: int = 64) -> dict:
    n = model.num_items
    every = None
    ranker_ranks, beam_ranks = [], {c: [] for c in candidates}
    pipe_ranks = {c: [] for c in candidates}
    for start in range(0, len(examples), batch):
        hist = torch.from_numpy(examples.history[start:start + batch])
        tgt = torch.from_numpy(examples.target[start:start + batch])
        if every is None or len(every) != len(hist):
            every = torch.arange(n + 1).expand(len(hist), -1)  # column 0 = padding, scored -inf
        ranker_ranks.append(ranks_from_scores(model.rank(hist, every), tgt))
        for c in candidates:
            cands, _ = model.retrieve(hist, k=c)
            beam_ranks[c].append(ranks_from_lists(cands, tgt))
            rec, _ = model.rerank(hist, cands, k=10)  # = model.recommend(hist, 10, c), one beam search
            pipe_ranks[c].append(ranks_from_lists(rec, tgt))
    ranker = np.concatenate(ranker_ranks)
    out = {"ranker": _ndcg_recall(ranker), "num_users": len(examples)}
    for c in candidates:
        out[f"C={c}"] = {"beam_recall": float((np.concatenate(beam_ranks[c]) < c).mean()),
                         "ranker_recall": float((ranker < c).mean()),
                         "pipeline": _ndcg_recall(np.concatenate(pipe_ranks[c]))}
    return out


def _ndcg_recall(ranks: np.ndarray) -> dict[str, float]:
    m = metrics_from_ranks(ranks, ks=(10,))
    return {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="run directory (uses checkpoints/best) or checkpoint")
    ap.add_argument("--data", default="/tmp/raygr-bench/beauty", help="the prepared dataset it was trained on")
    ap.add_argument("--label", required=True)
    ap.add_argument("--users", type=int, default=4000, help="seeded subset of validation users")
    ap.add_argument("--candidates", default="50,100,200")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from raygr.data.dataset import load_dataset
    from raygr.training.checkpoint import load_model, read_checkpoint
    from raygr.training.local import eval_split

    dataset = load_dataset(args.data)
    model, cfg, info = load_model(read_checkpoint(args.run).path, dataset, "cpu")
    model.eval()
    model.refresh()
    examples = eval_split(dataset, cfg, "valid", limit=args.users)
    t0 = time.perf_counter()
    row = stage_metrics(model, examples, [int(c) for c in args.candidates.split(",")])
    row.update(checkpoint=str(info.path), epoch=info.epoch, wall_s=time.perf_counter() - t0)
    print(json.dumps(row, indent=1))
    previous = RESULTS / "joint_stages.json"
    rows = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    rows[args.label] = row
    write_result("joint_stages", {"runs": rows})


if __name__ == "__main__":
    main()
