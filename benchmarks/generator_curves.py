"""Per-epoch validation curves of the generator from benchmarks/results/generator.json rows.

    python -m benchmarks.generator_curves content-tiger-collab1 beauty-joint-collab-norankercodes \\
        [--out docs/img/generator_curves.png]

For each run: the generator-alone validation N@10 (beam search order) and the first SID level's
teacher-forced accuracy (the next item's first code ranked top given the history), epoch by epoch, as
a Markdown table and, with ``--out``, a two-panel plot. The first level is where the generator's beam
search is decided most often, and its accuracy is bounded by how predictable the SIDs' first code is
from the history, whatever the training: the plot shows where each run's curve flattens. Nothing here
trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS


def curves(row: dict) -> tuple[list[float], list[float]]:
    """(generator-alone validation N@10, first-level teacher-forced accuracy) per epoch of one run."""
    ndcg, first = [], []
    for v in row["valid"]:
        # Tiger rows have no ranker: their validation N@10 is the generator's own.
        ndcg.append(v.get("retrieval_ndcg@10", v["ndcg@10"]))
        acc = v.get("teacher_forced_accuracy") or [float("nan")]
        first.append(acc[0])
    return ndcg, first


def table(rows: dict[str, dict], names: list[str]) -> str:
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"no run {missing} in {RESULTS / 'generator.json'}")
    epochs = max(len(rows[n]["valid"]) for n in names)
    lines = ["| run | " + " | ".join(str(e + 1) for e in range(epochs)) + " |",
             "|---|" + "---|" * epochs]
    for n in names:
        ndcg, first = curves(rows[n])
        pad = [""] * (epochs - len(ndcg))
        lines.append(f"| `{n}` N@10 | " + " | ".join([f"{x:.4f}".lstrip("0") for x in ndcg] + pad) + " |")
        lines.append(f"| `{n}` level-1 acc. | " + " | ".join([f"{x:.3f}".lstrip("0") for x in first] + pad)
                     + " |")
    return "\n".join(lines)


def plot(rows: dict[str, dict], names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in names:
        ndcg, first = curves(rows[n])
        epochs = range(1, len(ndcg) + 1)
        style = "--" if rows[n].get("candidates_per_user") in (None, 0, 0.0) else "-"
        left.plot(epochs, ndcg, style, marker=".", label=n)
        right.plot(epochs, first, style, marker=".", label=n)
    left.set(xlabel="epoch", ylabel="validation N@10, generator alone", title="generator alone")
    right.set(xlabel="epoch", ylabel="teacher-forced accuracy, SID level 1", title="first code")
    left.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="run names in generator.json (dashed lines: tiger runs)")
    ap.add_argument("--results", default=str(RESULTS / "generator.json"))
    ap.add_argument("--out", default=None, help="write the two-panel plot here (PNG)")
    args = ap.parse_args()
    with open(args.results) as f:
        rows = json.load(f)
    print(table(rows, args.variants))
    if args.out:
        plot(rows, args.variants, Path(args.out))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
