"""The whole training run in one process, without Ray (tests, benchmarks, notebooks).

    model, state, test = train_local(cfg, "data/synthetic")
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from raygr.config import Config
from raygr.data.dataset import Dataset, load_dataset
from raygr.data.split import EvalExamples, eval_examples
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.training.factory import build_model, resolve_sid_rec_weight
from raygr.training.loop import TrainContext, TrainState, evaluate, fit, initialise, selection_score
from raygr.training.warm_start import check_warm_start


def eval_split(dataset: Dataset, cfg: Config, split: str, limit: int | None = None) -> EvalExamples:
    """Validation/test examples; ``limit`` (or data.num_eval_users) takes a fixed seeded subset."""
    ex = eval_examples(dataset.sequences, split, cfg.data.max_history)
    limit = limit if limit is not None else cfg.data.num_eval_users
    if limit and limit < len(ex):
        ex = ex.subset(np.sort(np.random.default_rng(cfg.train.seed).choice(len(ex), limit, replace=False)))
    return ex


def train_local(cfg: Config, dataset: Dataset | str, *, log: Callable[[str], None] = print,
                device: str = "cpu", checkpoint_dir: str | None = None,
                generator_best: bool = False) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """``checkpoint_dir``: where the best epoch's weights land as a checkpoint (e.g. for another run's
    ``train.init_from``); its optimizer state is the last epoch's.

    The test split is scored at the best validation epoch of the main metric (retrieve-then-rank for the
    joint preset). ``generator_best`` also scores the generator alone at *its* best validation epoch
    (``test["generator_best"]``: epoch and retrieval-only metrics), the checkpoint a user serving the
    generator alone would keep; the two epochs often differ (docs/results.md, session 21)."""
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    check_warm_start(cfg, ds.manifest)
    cfg = resolve_sid_rec_weight(cfg, ds, log)
    windows = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    model = build_model(cfg, ds).to(device)
    initialise(model, cfg, log)
    steps = math.ceil(len(windows["input"]) / cfg.train.batch_size)
    ctx = TrainContext.create(model, cfg, steps, device=device)
    best: dict[str, Any] = {}
    gen_best: dict[str, Any] = {"score": -1.0, "epoch": -1, "state": None}

    def keep_best(state: TrainState, record: dict[str, Any], is_best: bool) -> None:
        if is_best:  # the test split is scored with the best validation epoch, as in the Ray path
            best.update(copy.deepcopy(model.state_dict()))
        gen_score = selection_score(record["valid"], "generator")
        if generator_best and gen_score > gen_best["score"]:
            gen_best.update(score=gen_score, epoch=record["epoch"], state=copy.deepcopy(model.state_dict()))

    state = fit(ctx, lambda epoch: iterate_windows(windows, cfg.train.batch_size, cfg.train.seed, epoch),
                eval_split(ds, cfg, "valid"), on_epoch_end=keep_best, log=log)
    if best:
        model.load_state_dict(best)
    if checkpoint_dir:
        from raygr.training.checkpoint import DatasetIdentity, save_checkpoint
        save_checkpoint(checkpoint_dir, ctx, state, DatasetIdentity.from_manifest(ds.manifest))
    torch.manual_seed(cfg.train.seed)
    test = evaluate(model, eval_split(ds, cfg, "test", limit=0), cfg, device)
    if generator_best and gen_best["epoch"] > 0:
        retrieval = test.get("retrieval_only", test)
        if gen_best["epoch"] != state.best_epoch:
            main_best = copy.deepcopy(model.state_dict())
            model.load_state_dict(gen_best["state"])
            torch.manual_seed(cfg.train.seed)
            at = evaluate(model, eval_split(ds, cfg, "test", limit=0), cfg, device)
            retrieval = at.get("retrieval_only", at)
            model.load_state_dict(main_best)
        test["generator_best"] = {"epoch": gen_best["epoch"], "retrieval_only": retrieval}
    return model, state, test
