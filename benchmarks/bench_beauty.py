"""The Amazon Beauty benchmark: every preset through the Ray Train path, one table with published numbers.

    python benchmarks/bench_beauty.py [--presets sasrec,tiger,joint,joint_warm] [--epochs N] [--workers 1]

Protocol (../shared/docs/BENCHMARKS.md): leave-one-out, full ranking over all 12,101 items, history
not masked, history cap 20, best epoch by validation NDCG@10, test reported once. Each entry of
--presets is a shipped config, jobs/configs/beauty_<name>.yaml, trained for its own epochs (or
--epochs for all); runs go to --runs (outside the repository) and resume if re-run. ``joint_warm``
starts from the SASRec run (``train.init_from: runs/beauty-sasrec``, here ``<runs>/beauty-sasrec``),
so sasrec comes first. Writes benchmarks/results/beauty.json and prints a markdown table for
docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, SHARED_DATA, prepared, write_result
from raygr.config import Config, load_config, replace

ROOT_CONFIGS = ROOT / "jobs" / "configs"

PUBLISHED = [  # R@5, N@5, R@10, N@10 (BENCHMARKS.md)
    ("SASRec (as reported by TIGER)", (.0387, .0249, .0605, .0318)),
    ("TIGER (paper)", (.0454, .0321, .0648, .0384)),
    ("TIGER (independent re-run, genrec)", (.0419, .0282, .0644, .0354)),
    ("SASRec full cross-entropy (genrec)", (.0538, .0320, .0851, .0421)),
    ("HSTU cross-entropy (genrec)", (.0568, .0347, .0859, .0441)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="sasrec,tiger,joint,joint_warm",
                    help="configs beauty_<name>.yaml of jobs/configs (or preset names); in this order")
    ap.add_argument("--epochs", type=int, default=None, help="every preset's epochs (default: its config's)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every preset")
    ap.add_argument("--label", default="", help="suffix of the row and run names, e.g. 'cap50' for a variant")
    ap.add_argument("--runs", default=str(Path(tempfile.gettempdir()) / "raygr-bench" / "runs"))
    args = ap.parse_args()
    source = SHARED_DATA / "amazon-beauty"
    if not source.is_dir():
        raise SystemExit(f"{source} is not there: this benchmark needs the shared Amazon Beauty data")
    data = prepared("beauty", "s3rec", source, Path(args.runs).parent)
    # Configs whose SIDs quantize item text read the same data with its WordLlama vectors (README step 1).
    text_data = prepared("beauty-wl", "s3rec", source, Path(args.runs).parent, {"embed": "wordllama"})

    from raygr.distributed.session import ray_session
    from raygr.distributed.train import run_training

    rows = {}
    with ray_session(None):
        for config in args.presets.split(","):
            cfg = preset_config(config, args.epochs, args.workers, args.set, Path(args.runs))
            t0 = time.perf_counter()
            name = f"{config}-{args.label}" if args.label else config
            on = text_data if cfg.model.sid_source == "content" else data
            metrics = run_training(cfg, on, Path(args.runs) / f"beauty-{name}", log=lambda m: print(m, flush=True))
            metrics["bench_wall_s"] = time.perf_counter() - t0
            metrics["bench"] = {"epochs": cfg.train.epochs, "workers": args.workers, "overrides": args.set}
            rows[name] = metrics
    # Presets can be run one at a time (each takes a while on 2 cores): earlier rows are kept.
    previous = RESULTS / "beauty.json"
    runs = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    runs.update(rows)
    write_result("beauty", {"runs": runs})
    print(markdown(runs))


def preset_config(name: str, epochs: int | None, workers: int, overrides: list[str], runs: Path) -> Config:
    """The shipped ``beauty_<name>.yaml`` (or, without one, the defaults of preset ``name``) with the
    benchmark's overrides.

    A relative ``train.init_from`` names a run as the README's commands do (``runs/beauty-sasrec``); the
    benchmark keeps that run under ``runs`` by the same name.
    """
    shipped = ROOT_CONFIGS / f"beauty_{name}.yaml"
    preset = [] if shipped.is_file() else [f"model.preset={name}"]
    cfg = load_config(shipped if shipped.is_file() else None,
                      [*preset, *([f"train.epochs={epochs}"] if epochs else []), f"train.num_workers={workers}",
                       *overrides])
    init = cfg.train.init_from
    if init and not Path(init).is_absolute():
        cfg = replace(cfg, [f"train.init_from={runs / Path(init).name}"])
    return cfg


def markdown(rows: dict) -> str:
    lines = ["| model | R@5 | N@5 | R@10 | N@10 | budget |", "|---|---|---|---|---|---|"]
    for name, m in rows.items():
        t = m["test"]
        tr = m.get("train", {})
        budget = f"{tr.get('epochs')} epochs (best {tr.get('best_epoch')}), {tr.get('wall_s', 0) / 60:.0f} min"
        lines.append(f"| raygr `{name}` | {t['recall@5']:.4f} | {t['ndcg@5']:.4f} | {t['recall@10']:.4f} | "
                     f"{t['ndcg@10']:.4f} | {budget} |")
    if rows:
        pop = next(iter(rows.values()))["baselines"]["popularity"]
        lines.append(f"| popularity | {pop['recall@5']:.4f} | {pop['ndcg@5']:.4f} | {pop['recall@10']:.4f} | "
                     f"{pop['ndcg@10']:.4f} | — |")
    for name, (r5, n5, r10, n10) in PUBLISHED:
        lines.append(f"| {name} (published) | {r5:.4f} | {n5:.4f} | {r10:.4f} | {n10:.4f} | — |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
