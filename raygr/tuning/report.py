"""What a search reports: one record per trial, the trials table (printed and CSV), and two plots.

    records = [TrialRecord(...), ...]              # built by raygr.distributed.tune from Tune's results
    summary = write_outputs(records, cfg, dims, dataset_dir, out, extra={...})
      # -> best_config.yaml, best_checkpoint/, trials.csv (+ the table printed), summary.json, two PNGs

No Ray here (matplotlib for the plots): the same functions can summarise a search read back from disk.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygr.config import Config, dump_config
from raygr.training.checkpoint import BEST, CHECKPOINTS, META_FILE, claim_output, publish, write_json_atomic
from raygr.tuning.space import Dimension, apply, as_overrides, fmt_value, space_to_yaml

# What ASHA and the best-trial choice look at, reported per epoch by Ray Train: the validation NDCG@10 that
# train.select_by names (the preset's main output, or the generator alone).
METRIC = "valid_score"
BEST_CONFIG, BEST_CHECKPOINT = "best_config.yaml", "best_checkpoint"
TRIALS_CSV, SUMMARY = "trials.csv", "summary.json"
CURVES_PNG, STRATEGY_PNG = "valid_ndcg10_by_epoch.png", "ndcg10_by_strategy.png"
OUTPUT_FILES = (BEST_CONFIG, BEST_CHECKPOINT, TRIALS_CSV, SUMMARY, CURVES_PNG, STRATEGY_PNG)
SEARCH_FILE = "search.yaml"  # what the search was (space, dataset): a re-run must be the same search
STRATEGY_KEY = "model.schedule.strategy"


def prepare_output(path: str | Path) -> Path:
    """Create/check a search's output directory (``claim_output``: a new, empty or raygr search one only).
    Ray-free, so that ``raygr tune`` checks it before Ray starts."""
    return claim_output(path, "search", lambda p: (p / SEARCH_FILE).is_file())
LABEL_KEYS = (STRATEGY_KEY, "model.weighting")  # what a plot's legend names a trial by, when searched
TABLE_METRICS = ("code_util_mean", "collision_rate")  # code health of the last epoch, in the trials table

# Trial outcomes, as the table spells them.
COMPLETED = "completed"  # ran every epoch
PATIENCE = "early-stopped"  # stopped by its own patience (train.patience epochs without improvement)
ASHA = "stopped-by-asha"  # stopped by the scheduler: below its rung's cut-off
ERROR = "error"
UNFINISHED = "unfinished"  # the search was interrupted before the trial ended: a re-run continues it


@dataclass
class TrialRecord:
    trial_id: str
    assignment: dict[str, Any]  # searched dotted key -> the value this trial used
    status: str  # COMPLETED | PATIENCE | ASHA | ERROR | UNFINISHED
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, valid ndcg@10) per reported epoch
    last: dict[str, Any] = field(default_factory=dict)  # the last reported metrics (code health, loss, ...)
    error: str | None = None  # the line of the trial's exception that says what went wrong
    wall_s: float = 0.0
    path: str = ""  # the trial's run directory (config.yaml, checkpoints/{best,latest})

    @property
    def epochs(self) -> int:
        return max((e for e, _ in self.curve), default=0)

    @property
    def best(self) -> tuple[int, float] | None:
        """(epoch, score) of the best validation NDCG@10, None for a trial that reported nothing."""
        scored = [(e, s) for e, s in self.curve if s is not None and math.isfinite(s)]
        return max(scored, key=lambda es: (es[1], -es[0])) if scored else None


def outcome(error: bool, epochs: int, max_epochs: int, stopped_early: bool) -> str:
    """A finished trial's status from what it reported (Tune does not say which scheduler stopped it)."""
    if error:
        return ERROR
    if stopped_early:
        return PATIENCE
    return COMPLETED if epochs >= max_epochs else ASHA


def error_line(text: str) -> str:
    """The line of a trial's error (a traceback, possibly Ray's wrapping of one) that says what went wrong."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    named = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception")) and " " not in ln.split(":")[0]]
    return (named or lines or ["unknown error"])[-1]


def health_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Flat code-health numbers of one epoch record of ``TrainState.history`` (what Tune can tabulate)."""
    cb, valid = record.get("codebook") or {}, record.get("valid") or {}
    out: dict[str, float] = {}
    if cb.get("utilization"):
        out["code_util_min"] = float(min(cb["utilization"]))
        out["code_util_mean"] = float(sum(cb["utilization"]) / len(cb["utilization"]))
        out["code_perplexity_mean"] = float(sum(cb["perplexity"]) / len(cb["perplexity"]))
        out["collision_rate"] = float(cb["collision_rate"])
        out["unreachable_items"] = float(cb.get("unreachable_items", 0))
    if "retrieval_only" in valid:
        out["valid_retrieval_ndcg@10"] = float(valid["retrieval_only"]["ndcg@10"])
    for k, v in (valid.get("decoding") or {}).items():
        out[k] = float(v)
    return out


def best_record(records: Sequence[TrialRecord]) -> TrialRecord | None:
    scored = [r for r in records if r.status != ERROR and r.best is not None]
    return max(scored, key=lambda r: r.best[1]) if scored else None  # type: ignore[index]


def _row(r: TrialRecord, keys: Sequence[str]) -> dict[str, Any]:
    best = r.best
    row: dict[str, Any] = {"trial": r.trial_id, "status": r.status, "epochs": r.epochs,
                           "best_ndcg@10": None if best is None else best[1],
                           "best_epoch": None if best is None else best[0]}
    row.update({k: r.last.get(k) for k in TABLE_METRICS})
    row["wall_s"] = round(r.wall_s, 1)
    row.update({k: r.assignment.get(k) for k in keys})
    row["error"] = r.error or ""
    return row


def trials_table(records: Sequence[TrialRecord], keys: Sequence[str]) -> str:
    """A fixed-width table, best trial first; searched keys shortened to their last part."""
    rows = [_row(r, keys) for r in sorted(records, key=_rank)]
    if not rows:
        return "(no trials)"
    header = {k: k.rsplit(".", 1)[-1] if k in keys else k for k in rows[0]}
    cells = [[_cell(row[k]) for k in row] for row in rows]
    widths = [max(len(header[k]), *(len(c[i]) for c in cells)) for i, k in enumerate(rows[0])]
    widths[-1] = min(widths[-1], 60)  # the error column: one line, cut
    lines = ["  ".join(h.ljust(w) for h, w in zip(header.values(), widths))]
    lines += ["  ".join(c[:w].ljust(w) for c, w in zip(cs, widths)).rstrip() for cs in cells]
    return "\n".join(lines)


def write_trials_csv(records: Sequence[TrialRecord], keys: Sequence[str], path: str | Path) -> Path:
    rows = [_row(r, keys) for r in sorted(records, key=_rank)]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def _rank(r: TrialRecord) -> tuple[int, float]:
    best = r.best
    return (r.status == ERROR, -(best[1] if best else -1.0))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return fmt_value(v) if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def plot_curves(records: Sequence[TrialRecord], path: str | Path, title: str = "") -> Path:
    """Validation NDCG@10 over epochs, one line per trial (dashed: stopped by ASHA, x: error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = best_record(records)
    for r in records:
        if not r.curve:
            continue
        epochs, scores = zip(*r.curve)
        style = {"ls": "--" if r.status == ASHA else "-", "marker": "x" if r.status == ERROR else "o", "ms": 3,
                 "lw": 2.5 if r is best else 1, "alpha": 1 if r is best else 0.7}
        ax.plot(epochs, scores, label=f"{r.trial_id} {_label(r)} ({r.status})", **style)
    ax.set(xlabel="epoch", ylabel="valid NDCG@10", title=title or "validation NDCG@10 per trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if any(r.curve for r in records):
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def _label(r: TrialRecord) -> str:
    """The schedule choices when they were searched, else the first searched values."""
    named = [str(r.assignment[k]) for k in LABEL_KEYS if k in r.assignment]
    return " ".join(named or [f"{k.rsplit('.', 1)[-1]}={fmt_value(v)}" for k, v in list(r.assignment.items())[:2]])



def plot_by_strategy(records: Sequence[TrialRecord], path: str | Path, default_strategy: str = "") -> Path:
    """Best validation NDCG@10 of each finished trial, grouped by its Gumbel decay strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.status != ERROR and r.best is not None:
            groups.setdefault(str(r.assignment.get(STRATEGY_KEY, default_strategy)), []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(groups, key=lambda g: -max(r.best[1] for r in groups[g]))  # type: ignore[index]
    for i, name in enumerate(names):
        for r in groups[name]:
            # Hollow: stopped by ASHA, so its number is a partial run's.
            ax.scatter([i], [r.best[1]], facecolors="none" if r.status == ASHA else f"C{i}",  # type: ignore[index]
                       edgecolors=f"C{i}", alpha=0.8)
        ax.hlines(max(r.best[1] for r in groups[name]), i - 0.3, i + 0.3, color="k", lw=1)  # type: ignore[index]
    ax.set_xticks(range(len(names)), [f"{n}\n({len(groups[n])})" for n in names])
    ax.set_xlim(-0.7, max(len(names), 1) - 0.3)
    ax.set(ylabel="best valid NDCG@10", title="final metric by decay strategy",
           xlabel="strategy (trials); bar = best, hollow = stopped by ASHA")
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_outputs(records: Sequence[TrialRecord], cfg: Config, dims: tuple[Dimension, ...], dataset_dir: Path,
                  out: Path, extra: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """best_config.yaml (the base ``cfg`` with the best trial's values), best_checkpoint/ (copied from the
    trial's run directory), trials.csv, the plots and summary.json; returns the summary."""
    keys = [d.key for d in dims]
    write_trials_csv(records, keys, out / TRIALS_CSV)
    plot_curves(records, out / CURVES_PNG)
    plot_by_strategy(records, out / STRATEGY_PNG, default_strategy=cfg.model.schedule.strategy)
    log(trials_table(records, keys))
    counts = {s: sum(r.status == s for r in records) for s in (COMPLETED, PATIENCE, ASHA, ERROR, UNFINISHED)}
    summary: dict[str, Any] = {"dataset": str(dataset_dir), "metric": METRIC,
                               "select_by": cfg.train.select_by, "trials": counts,
                               "space": space_to_yaml(dims), **extra}
    by_strategy: dict[str, float] = {}
    for r in records:
        if r.status != ERROR and r.best is not None:
            name = str(r.assignment.get(STRATEGY_KEY, cfg.model.schedule.strategy))
            by_strategy[name] = max(by_strategy.get(name, -1.0), r.best[1])
    summary["best_by_strategy"] = dict(sorted(by_strategy.items(), key=lambda kv: -kv[1]))

    best = best_record(records)
    if best is None:
        log("no trial reported a validation score: nothing to pick (see the error column above)")
        summary["best"] = None
    else:
        epoch, score = best.best  # type: ignore[misc]
        best_cfg = apply(cfg, {**best.assignment, "data.path": str(dataset_dir)})
        header = (f"# best of {len(records)} trials of the raygr tune search in {out}\n"
                  f"# trial {best.trial_id}: {METRIC} = {score:.4f} at epoch {epoch} "
                  f"({best.status}); searched: {' '.join(as_overrides(best.assignment))}\n"
                  f"# raygr train --config {out / BEST_CONFIG} --output runs/best\n")
        (out / BEST_CONFIG).write_text(header + dump_config(best_cfg))
        src = Path(best.path) / CHECKPOINTS / BEST
        if (src / META_FILE).is_file():
            publish(src, out / BEST_CHECKPOINT)
        summary["best"] = {"trial": best.trial_id, METRIC: score, "epoch": epoch, "status": best.status,
                           "assignment": best.assignment, "config": str(out / BEST_CONFIG),
                           "checkpoint": str(out / BEST_CHECKPOINT), "run_dir": best.path}
        log(f"best: trial {best.trial_id} {METRIC} {score:.4f} (epoch {epoch}) with "
            + " ".join(as_overrides(best.assignment)))
    summary["trial_records"] = [
        {"trial": r.trial_id, "status": r.status, "assignment": r.assignment, "curve": r.curve,
         "best": r.best, "error": r.error, "wall_s": r.wall_s,
         "last": {k: v for k, v in r.last.items() if isinstance(v, int | float | str | bool)}}
        for r in sorted(records, key=lambda r: r.trial_id)]  # Tune lists them in no fixed order
    write_json_atomic(out / SUMMARY, summary)
    log("wrote " + ", ".join(str(out / n) for n in OUTPUT_FILES if (out / n).exists()))
    if counts[UNFINISHED]:
        log(f"{counts[UNFINISHED]} trial(s) did not finish (interrupted): re-run the same command to resume")
    return summary
