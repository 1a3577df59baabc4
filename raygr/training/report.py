"""What a finished run reports: checkpoint evaluation, baselines, metrics.json, learning curve, table.

    ev = evaluate_checkpoint("runs/x", dataset)          # test: retrieve-then-rank, retrieval only, codes
    metrics = run_metrics(ev, state, dataset, cfg, train_info, popularity_metrics(dataset, cfg))
    write_metrics("runs/x/metrics.json", metrics)
    plot_learning_curve(state.history, "runs/x/learning_curve.png")
    print(results_table(metrics))

Pure PyTorch/numpy (no Ray): ``raygr evaluate`` runs it on a laptop, ``raygr train`` at the end of a run.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raygr.config import Config
from raygr.data.dataset import Dataset
from raygr.data.split import training_item_counts
from raygr.metrics import DEFAULT_KS, metrics_from_ranks, popularity_ranking, ranks_from_lists
from raygr.training.checkpoint import write_json_atomic

METRIC_KEYS = tuple(f"{m}@{k}" for k in DEFAULT_KS for m in ("recall", "ndcg"))


def ranking_only(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The Recall/NDCG@K entries of a metrics dict (drops nested and bookkeeping keys)."""
    return {k: float(metrics[k]) for k in METRIC_KEYS if k in metrics}


def evaluate_checkpoint(checkpoint: str | Path, dataset: Dataset, *, split: str = "test", device: str = "cpu",
                        overrides: Sequence[str] = (), num_users: int = 0) -> dict[str, Any]:
    """Full-ranking metrics of a checkpoint on ``split``, for the served output and retrieval alone.

    Returns ``{"main", "retrieval_only", "decoding", "codebook", "num_users", "epoch", ...}`` where
    ``main`` is retrieve-then-rank for presets with a ranker, else the retrieval itself.
    """
    import torch

    from raygr.training.checkpoint import load_model
    from raygr.training.local import eval_split
    from raygr.training.loop import evaluate

    model, cfg, info = load_model(checkpoint, dataset, device, overrides=list(overrides))
    examples = eval_split(dataset, cfg, split, limit=num_users)
    torch.manual_seed(cfg.train.seed)
    result = evaluate(model, examples, cfg, device)
    return checkpoint_metrics(model, cfg, info, dataset.name, split, result)


def checkpoint_metrics(model: Any, cfg: Config, info: Any, dataset_name: str, split: str,
                       result: Mapping[str, Any]) -> dict[str, Any]:
    """What ``evaluate_checkpoint`` returns, from the loaded ``model`` and its ``evaluate``/``summarise`` result."""
    from raygr.training.loop import codebook_health

    has_ranker = bool(getattr(model, "has_ranker", False)) and cfg.model.loss.ranker > 0
    return {
        "checkpoint": str(info.path), "preset": cfg.model.preset, "dataset": dataset_name, "split": split,
        "epoch": info.epoch, "main_mode": "retrieve_then_rank" if has_ranker else "retrieval",
        "main": ranking_only(result), "retrieval_only": ranking_only(result["retrieval_only"]),
        "decoding": result["decoding"], "codebook": codebook_health(model), "num_users": result["num_users"],
        "candidates_per_user": result["candidates_per_user"],
    }


def evaluate_checkpoint_streamed(checkpoint: str | Path, dataset_dir: str | Path, *, split: str = "test",
                                 device: str = "cpu", chunk_users: int = 65536) -> dict[str, Any]:
    """``evaluate_checkpoint`` on every user of ``split``, plus the popularity baseline (``"baselines"``), with
    the prepared dataset read ``chunk_users`` users at a time: memory is the catalogue and one chunk,
    whatever the number of users (what ``raygr train`` runs after training). The same numbers as the
    in-memory path (tests/test_streamed_eval.py)."""
    import torch

    from raygr.data.dataset import load_catalogue
    from raygr.data.streaming import EvalSource, eval_selection, streamed_training_item_counts, user_lengths
    from raygr.training.checkpoint import load_model
    from raygr.training.loop import evaluation_ranks, merge_ranks, summarise

    dataset = load_catalogue(dataset_dir)
    model, cfg, info = load_model(checkpoint, dataset, device)
    users = eval_selection(user_lengths(dataset.root, dataset.manifest), split, 0, cfg.train.seed)
    source = EvalSource(dataset.root, dataset.manifest, split, cfg.data.max_history, users, chunk_users)
    top = popularity_ranking(streamed_training_item_counts(dataset.root, dataset.manifest), max(DEFAULT_KS))
    torch.manual_seed(cfg.train.seed)
    parts, popular = [], []
    for chunk in source:
        parts.append(evaluation_ranks(model, chunk, cfg, device))
        popular.append(ranks_from_lists(np.broadcast_to(top, (len(chunk), len(top))), chunk.target))
    result = summarise(merge_ranks(parts), len(users) * max(DEFAULT_KS))
    out = checkpoint_metrics(model, cfg, info, dataset.name, split, result)
    out["baselines"] = {"popularity": metrics_from_ranks(np.concatenate(popular) if popular else np.zeros(0))}
    return out


def popularity_metrics(dataset: Dataset, cfg: Config, split: str = "test") -> dict[str, float]:
    """The most-popular-items baseline (counts from the training part) on ``split``, every user."""
    from raygr.training.local import eval_split

    examples = eval_split(dataset, cfg, split, limit=0)
    top = popularity_ranking(training_item_counts(dataset.sequences, dataset.num_items), max(DEFAULT_KS))
    ranked = np.broadcast_to(top, (len(examples), len(top)))
    return metrics_from_ranks(ranks_from_lists(ranked, examples.target))


def hardware(num_workers: int, use_gpu: bool) -> dict[str, Any]:
    """Where the run trained, in enough detail to compare timings."""
    import torch

    gpu = torch.cuda.get_device_name(0) if use_gpu and torch.cuda.is_available() else None
    return {"workers": num_workers, "device": "cuda" if use_gpu else "cpu",
            "backend": "nccl" if use_gpu else "gloo", "gpu": gpu, "cpu": _cpu_name(),
            "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metrics(evaluation: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, preset: str,
                dataset: str, train: Mapping[str, Any], baselines: Mapping[str, Mapping[str, float]]
                ) -> dict[str, Any]:
    """The ``metrics.json`` document of a run (schema in docs: preset, dataset, test, valid, ...)."""
    best = max(history, key=lambda r: r["valid"]["ndcg@10"]) if history else None
    codebook = evaluation.get("codebook") or {}
    return {
        "preset": preset,
        "dataset": dataset,
        "test": dict(evaluation["main"]),
        "valid": ranking_only(best["valid"]) if best else {},
        "retrieval_only": dict(evaluation["retrieval_only"]),
        "codebook": {k: codebook[k] for k in ("utilization", "perplexity", "collision_rate",
                                              "unique_sids", "unreachable_items") if k in codebook},
        "decoding": dict(evaluation.get("decoding", {})),
        "candidates_per_user": evaluation.get("candidates_per_user", 0.0),
        "train": dict(train),
        "baselines": {k: dict(v) for k, v in baselines.items()},
    }


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    write_json_atomic(path, metrics)
    return Path(path)


def plot_learning_curve(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Losses, validation NDCG@10 and code utilisation per level over epochs, as one PNG; the same curves
    as TensorBoard event files in the PNG's directory/tensorboard (``raygr.training.tracking``)."""
    if not history:
        return None
    from raygr.training.tracking import TB_DIR, write_tensorboard

    write_tensorboard(history, Path(path).parent / TB_DIR, title=title)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in Ray workers
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    terms = [k for k in ("loss", "generator", "ranker", "codebook", "reconstruction", "cost", "unisid",
                         "balance") if any(k in r["train"] for r in history)]
    for k in terms:
        ax.plot(epochs, [r["train"].get(k, np.nan) for r in history], marker="o", ms=3, label=k,
                lw=2 if k == "loss" else 1)
    ax.set(title="training losses (epoch mean)", xlabel="epoch")
    ax.legend(fontsize=7)

    ax = axes[1]
    ax.plot(epochs, [r["valid"]["ndcg@10"] for r in history], marker="o", ms=3, label="ndcg@10")
    if all("retrieval_only" in r["valid"] for r in history):
        ax.plot(epochs, [r["valid"]["retrieval_only"]["ndcg@10"] for r in history], marker="o", ms=3,
                ls="--", label="ndcg@10 retrieval only")
    ax.plot(epochs, [r["valid"]["recall@10"] for r in history], marker="o", ms=3, label="recall@10")
    ax.set(title="validation", xlabel="epoch")
    ax.legend(fontsize=7)

    ax = axes[2]
    utils = [r.get("codebook", {}).get("utilization") for r in history]
    if all(utils):
        for level in range(len(utils[0])):
            ax.plot(epochs, [u[level] for u in utils], marker="o", ms=3, label=f"level {level + 1}")
        ax.set(ylim=(0, 1.05))
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no codebook (ID-based model)", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="code utilisation", xlabel="epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def format_rows(rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """A fixed-width table of Recall/NDCG@K, one row per (label, metrics)."""
    width = max(len(label) for label, _ in rows) + 2
    lines = [" " * width + "".join(f"{k:>11}" for k in METRIC_KEYS)]
    for label, m in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{m.get(k, float('nan')):>11.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def results_table(metrics: Mapping[str, Any]) -> str:
    """The short summary printed at the end of ``raygr train``."""
    rows = [("popularity (test)", metrics["baselines"].get("popularity", {})),
            ("retrieval only (test)", metrics["retrieval_only"]),
            (f"{metrics['preset']} (test)", metrics["test"]),
            (f"{metrics['preset']} (valid, best)", metrics["valid"])]
    out = [f"results: {metrics['preset']} on {metrics['dataset']}", format_rows(rows)]
    cb = metrics.get("codebook") or {}
    if cb:
        out.append("codes: utilisation " + ", ".join(f"{u:.2f}" for u in cb["utilization"])
                   + " | perplexity " + ", ".join(f"{p:.0f}" for p in cb["perplexity"])
                   + f" | collision rate {cb['collision_rate']:.3f}")
    t = metrics["train"]
    out.append(f"train: {t.get('epochs')} epochs (best {t.get('best_epoch')}), {t.get('wall_s', 0):.0f} s wall, "
               f"{t.get('samples_per_s', 0):.0f} samples/s on {t.get('hardware', {}).get('workers', '?')} "
               f"{t.get('hardware', {}).get('device', '')} worker(s)")
    return "\n".join(out)
