"""The ablation table of the joint model from benchmarks/results/generator.json rows.

    python -m benchmarks.ablation_table --prefix sci20- [--base sci20-tok]

One line per run whose variant starts with ``--prefix``: test generator alone (beam order) and
retrieve-then-rank R@10 / N@10 at the run's candidate budget, the change of retrieve-then-rank N@10
against ``--base``, code health at the end (utilisation per level, collision rate, unique SIDs) and
the share of items whose SID changed per epoch (first epoch, last epoch, and the last epoch with any
change). Rows come from ``python -m benchmarks.bench_generator`` runs; nothing here trains.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.common import RESULTS


def _f(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}".lstrip("0") if x < 1 else f"{x:.{digits}f}"


def sid_change_summary(valid: list[dict]) -> str:
    changed = [v.get("codebook", {}).get("sid_changed") for v in valid]
    changed = [c for c in changed if c is not None]
    if not changed:
        return "–"
    last_moving = max((i + 1 for i, c in enumerate(changed) if c > 0), default=0)
    return f"{_f(changed[0], 3)} → {_f(changed[-1], 3)} (last change: epoch {last_moving or '–'})"


def table(rows: dict[str, dict], prefix: str, base: str | None) -> str:
    runs = {k: r for k, r in rows.items() if k.startswith(prefix)}
    if not runs:
        raise SystemExit(f"no run in {RESULTS / 'generator.json'} starts with {prefix!r}")
    ref = runs.get(base, {}).get("test", {}).get("ndcg@10") if base else None
    lines = ["| run | generator alone R@10 / N@10 | retrieve-then-rank R@10 / N@10 | Δ N@10 | cands | "
             "utilisation | collisions / unique SIDs | SIDs changed (epoch 1 → last) | best / epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        gen, main = r.get("retrieval_only", {}), r.get("test", {})
        tiger = main == gen or r.get("candidates_per_user") is None
        rtr = "–" if tiger else f"{_f(main.get('recall@10'))} / {_f(main.get('ndcg@10'))}"
        delta = "–" if tiger or ref is None else f"{100 * (main['ndcg@10'] / ref - 1):+.1f} %"
        cb = r.get("codebook", {})
        util = "[" + ", ".join(f"{u:.2f}" for u in cb.get("utilization", [])) + "]"
        lines.append(
            f"| `{name}` | {_f(gen.get('recall@10'))} / {_f(gen.get('ndcg@10'))} | {rtr} | {delta} | "
            f"{'–' if tiger else round(r.get('candidates_per_user') or 0)} | {util} | "
            f"{_f(cb.get('collision_rate'), 3)} / {cb.get('unique_sids', '–')} | {sid_change_summary(r['valid'])} | "
            f"{r.get('best_epoch')} / {r.get('epochs_run')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", required=True, help="variant name prefix of the runs to list")
    ap.add_argument("--base", default=None, help="the run the Δ column compares with")
    ap.add_argument("--results", default=str(RESULTS / "generator.json"))
    args = ap.parse_args()
    with open(args.results) as f:
        print(table(json.load(f), args.prefix, args.base))


if __name__ == "__main__":
    main()
