"""Tiny checkpoints for the serving tests (a real save_checkpoint directory, as ``raygr train`` writes)."""

from __future__ import annotations

import math
from pathlib import Path

from raygr.data.dataset import Dataset
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.checkpoint import DatasetIdentity, save_checkpoint
from raygr.training.factory import build_model
from raygr.training.local import eval_split
from raygr.training.loop import TrainContext, TrainState, fit, initialise
from tests.helpers import tiny_config

# 16-d model, 16 codes x 3 levels over the tiny 80-item catalogue: trains an epoch in about a second.
SERVE_TINY = ["model.dim=16", "model.codes=16", "model.num_negatives=16", "data.num_eval_users=50",
              "train.epochs=1", "train.beam_size=20", "train.num_candidates=20"]


def tiny_checkpoint(ds: Dataset, run_dir: Path, *overrides: str, epochs: int = 1) -> Path:
    """Train ``epochs`` on ``ds`` (0: initialise only) and save RUN_DIR/checkpoints/best; returns RUN_DIR."""
    cfg = tiny_config(*SERVE_TINY, f"train.epochs={max(epochs, 1)}", *overrides)
    model = build_model(cfg, ds)
    initialise(model, cfg, log=lambda _: None)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, math.ceil(len(w["input"]) / cfg.train.batch_size), verbose=False)
    state = TrainState()
    if epochs > 0:
        state = fit(ctx, lambda e: iterate_windows(w, cfg.train.batch_size, cfg.train.seed, e),
                    eval_split(ds, cfg, "valid"), log=lambda _: None)
    save_checkpoint(run_dir / "checkpoints" / "best", ctx, state, DatasetIdentity.from_manifest(ds.manifest))
    return run_dir
