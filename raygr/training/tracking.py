"""Experiment tracking: a run's per-epoch curves as TensorBoard event files (``torch.utils.tensorboard``).

    write_tensorboard(state.history, "runs/x/tensorboard", title="joint on beauty")
    tensorboard --logdir runs/x/tensorboard          # or several runs: --logdir runs

``raygr train`` writes them next to ``learning_curve.png`` when the run ends (``report.plot_learning_curve``),
from the same per-epoch records: one scalar per tag and epoch (the step axis is the epoch).

    train/<term>        the epoch's mean of each loss term and the total (train/loss), train/lr, and the
                        schedules: train/tau (softmax temperature), train/sigma (Gumbel noise in force)
    valid/<metric>      validation metrics (ndcg@10, recall@10, ...), valid/retrieval_only/<metric>
    codebook/<key>      code health: utilization/level<i>, perplexity/level<i>, collision_rate,
                        unique_sids, unreachable_items, sid_changed
    speed/samples_per_s, speed/train_s

TensorBoard is optional (``pip install 'raygr[tracking]'``, or ``tensorboard``): without it the run logs one
line and goes on. No Ray here. The same tags go to MLflow with ``train.tracking: mlflow`` (mlflow_tracking.py),
and a ``raygr tune`` trial's through its Tune reports (raygr/distributed/tune_tracking.py); docs/tracking.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TB_DIR = "tensorboard"  # under the run directory
EVENTS_GLOB = "events.out.tfevents.*"
MISSING = ("tracking: TensorBoard is not installed, so no event files were written "
           "(pip install 'raygr[tracking]' or pip install tensorboard)")


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """One epoch record (``TrainState.history``) flattened to TensorBoard tags; non-numbers are left out."""
    out: dict[str, float] = {}
    for group, prefix in (("train", "train"), ("valid", "valid"), ("codebook", "codebook")):
        _flatten(record.get(group) or {}, prefix, out)
    for key in ("samples_per_s", "train_s"):
        if key in record:
            _flatten({key: record[key]}, "speed", out)
    return out


def _flatten(value: Any, tag: str, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(v, f"{tag}/{k}", out)
    elif isinstance(value, list | tuple):  # per-level values (code utilization, perplexity)
        for i, v in enumerate(value):
            _flatten(v, f"{tag}/level{i}", out)
    elif isinstance(value, bool):
        out[tag] = float(value)
    elif isinstance(value, int | float) and math.isfinite(value):
        out[tag] = float(value)
    elif hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy scalars
        _flatten(value.item(), tag, out)


def write_tensorboard(history: Sequence[Mapping[str, Any]], logdir: str | Path, *, title: str = "",
                      log: Callable[[str], None] = print) -> Path | None:
    """Write ``history`` (one record per epoch) as event files in ``logdir``; returns it, or None without
    TensorBoard. The run's earlier event files there are replaced: a resumed run writes its whole history
    again, and TensorBoard would otherwise show each epoch twice."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log(MISSING)
        return None
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob(EVENTS_GLOB):
        old.unlink()
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        if title:
            writer.add_text("run", title, 0)
        for record in history:
            for tag, value in scalars(record).items():
                writer.add_scalar(tag, value, global_step=int(record["epoch"]))
    finally:
        writer.close()
    return logdir
