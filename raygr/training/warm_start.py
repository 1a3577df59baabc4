"""Warm start: a new run begins from another run's sequence encoder and item-ID tables (``train.init_from``).

The joint model reads its history through the same ``SequenceEncoder`` as SASRec and, with
``model.history_item_id``, the same kind of item-ID table; with ``model.sid_residual`` its ranker starts
as SASRec's dot product. So a SASRec checkpoint trained on the same data can start the joint run where
SASRec ended, and the joint run spends its epochs on what SASRec lacks: the SIDs, the generator, and
what the SIDs add to the ranker. A checkpoint of the same preset loads every tensor it shares with the
model (weights only: the optimizer and the schedules start afresh, unlike a resume), its codebooks
included, which then replace the k-means initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raygr.config import Config, replace
from raygr.training.checkpoint import MODEL_FILE, CheckpointError, CheckpointInfo, check_dataset, read_checkpoint


def check_warm_start(cfg: Config, manifest: dict[str, Any]) -> CheckpointInfo | None:
    """Before any work: ``train.init_from`` is a readable checkpoint of this dataset at this model width."""
    if not cfg.train.init_from:
        return None
    try:
        info = read_checkpoint(cfg.train.init_from)
    except CheckpointError as e:
        raise CheckpointError(f"train.init_from: {e}") from None
    check_dataset(info, manifest, key="train.init_from")
    theirs = info.config.model.dim
    if theirs != cfg.model.dim:
        raise CheckpointError(f"train.init_from: checkpoint {info.path} has model.dim={theirs}, this run "
                              f"model.dim={cfg.model.dim}; set model.dim={theirs} or start from scratch")
    return info


def resolve_warm_start(cfg: Config, manifest: dict[str, Any]) -> Config:
    """``check_warm_start``, then ``cfg`` with ``train.init_from`` as an absolute path: Ray workers and Tune
    trials do not run in the driver's working directory."""
    info = check_warm_start(cfg, manifest)
    return cfg if info is None else replace(cfg, [f"train.init_from={info.path}"])


def source_names(saved: dict[str, torch.Tensor], preset: str, target: dict[str, torch.Tensor]) -> dict[str, str]:
    """Which saved tensor starts each of the model's tensors: {model name: saved name}."""
    # Tensors only: the SID table rides as extra state, and the model rebuilds it from its codebooks.
    plan = {name: name for name, t in target.items() if isinstance(t, torch.Tensor)
            and isinstance(saved.get(name), torch.Tensor)}
    if preset == "sasrec":  # SASRec's tables under the joint model's names
        out = "out_emb.weight" if "out_emb.weight" in saved else "item_emb.weight"  # tied: one table
        for mine, theirs in (("history_id.weight", "item_emb.weight"), ("ranker.item_id.weight", out)):
            if mine in target and mine not in plan:
                plan[mine] = theirs
    return plan


def warm_start(model: nn.Module, path: str | Path, log: Callable[[str], None] = print) -> list[str]:
    """Copy the checkpoint's matching tensors into ``model``; returns the model names that were set."""
    info = read_checkpoint(path)
    saved = torch.load(info.path / MODEL_FILE, map_location="cpu", weights_only=True)
    target = model.state_dict()
    plan = source_names(saved, info.config.model.preset, target)
    for mine, theirs in plan.items():
        if saved[theirs].shape != target[mine].shape:
            raise CheckpointError(f"train.init_from: {theirs} in {info.path} has shape {tuple(saved[theirs].shape)}, "
                                  f"the model's {mine} {tuple(target[mine].shape)}")
    if not any(name.startswith("seq.") for name in plan):
        raise CheckpointError(f"train.init_from: checkpoint {info.path} ({info.config.model.preset}) has no "
                              f"sequence encoder this model can start from")
    with torch.no_grad():
        for mine, theirs in plan.items():
            target[mine].copy_(saved[theirs])  # state_dict tensors share storage with the parameters
    fixed = saved.get("fixed_codes")
    if fixed is not None and getattr(model, "fixed_codes", False) is None:
        # Its SIDs were fixed at its horizon (model.fix_sids_at_horizon) and its codebooks have been the code
        # embeddings of those SIDs since: they start this run only together.
        model.adopt_sids(fixed[1:])
        log(f"warm start: the SIDs fixed in {info.path} stay fixed")
    tables = sorted(n for n in plan if not n.startswith("seq."))
    log(f"warm start from {info.path} ({info.config.model.preset}, epoch {info.epoch}): "
        f"{len(plan)} tensors, the sequence encoder and {', '.join(tables) or 'no other table'}")
    return sorted(plan)
