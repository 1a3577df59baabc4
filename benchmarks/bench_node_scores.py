"""Training step of the shipped joint recipe with the first level's node scores as one matmul vs per pair.

    python -m benchmarks.bench_node_scores --data DIR          # a prepared dataset with dense vectors
    python -m benchmarks.bench_node_scores --data DIR --set model.loss.listwise=0.1

With ``model.node_embeddings`` every valid child of a prefix adds q . node vector to its code's logit. At
the first level every row's parent is the root, so all its 256 children are valid for every row: scored
pair by pair (the earlier code, kept here as the reference) that gathers [rows x 256, D] node vectors, and
their gradient, every step. ``GenerativeRecommender.level_logits`` now scores them with one matmul.
Both versions run interleaved on the same batches in one process (the machine's load hits both alike);
reported: mean seconds per step (forward + backward of every loss term) and the ratio, plus the peak RSS
of a separate process per version (ru_maxrss is per process). Results: benchmarks/results/node_scores.json.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402


def pairwise_level_logits(self, s: torch.Tensor, level: int, child: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: every (row, valid child) pair gathered and scored on its own, at every level."""
    logits = self.generator.logits(s, level, self.quantizer.codebooks)
    if child is None or self.node_emb is None or level >= len(self.node_emb):
        return logits
    m, v = (child >= 0).nonzero(as_tuple=True)
    q = self.generator.query[level](s)
    score = (q[m] * self.node_emb[level](child[m, v])).sum(-1)
    return logits.index_put((m, v), logits[m, v] + score)


def build(data: Path, config: Path, overrides: list[str]):
    from raygr.config import load_config
    from raygr.data.dataset import load_dataset
    from raygr.data.windows import make_train_windows_csr
    from raygr.training.factory import build_model
    from raygr.training.loop import initialise

    ds = load_dataset(data)
    cfg = load_config(config, overrides)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _m: None)
    model.train()
    windows = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    return cfg, model, windows, torch.arange(1, model.num_items + 1)


def step(model, windows, negatives, i: int, batch_size: int) -> float:
    from raygr.models.batch import TrainBatch

    batch = TrainBatch.from_mapping({k: v[i * batch_size:(i + 1) * batch_size] for k, v in windows.items()})
    t0 = time.perf_counter()
    terms = model.losses(batch, step=1000, negatives=negatives)
    sum(terms.values()).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def peak_rss(args, version: str) -> float:
    """Peak RSS (MiB) of a fresh process that runs ``--steps`` steps with one version."""
    cmd = [sys.executable, "-m", "benchmarks.bench_node_scores", "--data", str(args.data), "--config",
           str(args.config), "--steps", str(args.steps), "--only", version,
           *[x for kv in args.set for x in ("--set", kv)]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset with dense item vectors")
    ap.add_argument("--config", type=Path, default=ROOT / "jobs/configs/beauty_joint.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per version (after 2 untimed)")
    ap.add_argument("--only", choices=["matmul", "pairwise"], help=argparse.SUPPRESS)  # internal: peak RSS
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, model, windows, negatives = build(args.data, args.config, args.set)
    versions = {"matmul": type(model).level_logits, "pairwise": pairwise_level_logits}
    if args.only:
        model.level_logits = types.MethodType(versions[args.only], model)
        for i in range(args.steps):
            step(model, windows, negatives, i, cfg.train.batch_size)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    seconds = {name: [] for name in versions}
    for i in range(args.steps + 2):
        for name, fn in versions.items():
            model.level_logits = types.MethodType(fn, model)
            t = step(model, windows, negatives, i, cfg.train.batch_size)
            if i >= 2:
                seconds[name].append(t)
    mean = {k: sum(v) / len(v) for k, v in seconds.items()}
    result = {
        "command": " ".join(["python -m benchmarks.bench_node_scores", *sys.argv[1:]]),
        "data": str(args.data), "config": str(args.config), "overrides": args.set,
        "batch_size": cfg.train.batch_size, "steps": args.steps,
        "seconds_per_step": {k: round(v, 3) for k, v in mean.items()},
        "pairwise_over_matmul": round(mean["pairwise"] / mean["matmul"], 2),
        "peak_rss_mib": {name: round(peak_rss(args, name), 1) for name in versions},
    }
    print(result)
    key = "node_scores" + ("" if not args.set else "_" + "_".join(s.replace("=", "-") for s in args.set))
    write_result(key, result)


if __name__ == "__main__":
    main()
