"""Builds the model a config's preset asks for, from a prepared dataset."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from raygr.config import Config, ConfigError, replace
from raygr.data.dataset import Dataset
from raygr.data.sid_file import load_sids
from raygr.models.content_sids import content_sids, sid_vectors, transition_vectors
from raygr.models.encoder import token_matrix
from raygr.models.joint import GenerativeRecommender
from raygr.models.sasrec import SASRec
from raygr.models.sid_predictability import prefix_predictability


def build_model(cfg: Config, dataset: Dataset, sids: torch.Tensor | None = None) -> nn.Module:
    """``sids`` [N, L]: the fixed SIDs a checkpoint carries (model.sid_source file or content), so loading
    one for serving or evaluation neither re-reads the SID file nor re-runs the k-means."""
    torch.manual_seed(cfg.train.seed)
    n = dataset.num_items
    if cfg.model.preset == "sasrec":
        return SASRec(cfg.model, n, cfg.data.max_history)
    tokens = token_matrix(dataset.items.tokens, cfg.model.token_buckets)
    dense = None
    if dataset.items.dense is not None:
        d = torch.from_numpy(dataset.items.dense)
        dense = torch.cat([d.new_zeros(1, d.shape[1]), d])
    if sids is None and cfg.model.sid_source == "file":
        sids = torch.from_numpy(fixed_sids(cfg, dataset))
    elif sids is None and cfg.model.sid_source == "content":
        sids = torch.from_numpy(semantic_sids(cfg, dataset))
    return GenerativeRecommender(cfg.model, tokens, n, cfg.data.max_history, dense=dense, sids=sids)


def fixed_sids(cfg: Config, dataset: Dataset):
    """model.sid_file's SIDs [N, L] for the dataset's items, checked against model.levels and model.codes."""
    codes = load_sids(cfg.model.sid_file, dataset.items.item_id)
    if codes.shape[1] != cfg.model.levels:
        raise ConfigError(f"model.sid_file {cfg.model.sid_file} holds SIDs of {codes.shape[1]} codes: set "
                          f"model.levels={codes.shape[1]} (it is {cfg.model.levels})")
    if int(codes.max()) >= cfg.model.codes:
        raise ConfigError(f"model.sid_file {cfg.model.sid_file} uses code {int(codes.max())}: set model.codes "
                          f">= {int(codes.max()) + 1} (it is {cfg.model.codes})")
    return codes


SID_REC_WEIGHTS = (0.5, 1.0, 2.0, 4.0)  # what model.sid_rec_weight_auto picks among


def semantic_sids(cfg: Config, dataset: Dataset, log: Callable[[str], None] = print) -> np.ndarray:
    """model.sid_source=content: residual k-means over the dense item vectors, joined by the training
    interactions' transition vectors when model.sid_collab_weight > 0 and by train.init_from's item table
    when model.sid_rec_weight > 0 (or model.sid_rec_weight_auto: the weight picked as described there)."""
    if cfg.model.sid_rec_weight_auto:
        return pick_sid_rec_weight(cfg, dataset, log)[1]
    return _content_sid_builder(cfg, dataset)(cfg.model.sid_rec_weight)


def pick_sid_rec_weight(cfg: Config, dataset: Dataset,
                        log: Callable[[str], None] = print) -> tuple[float, np.ndarray]:
    """model.sid_rec_weight_auto: the weight among SID_REC_WEIGHTS whose SIDs score the highest first-code
    predictability (a tie goes to the smaller weight), and those SIDs [N, L]."""
    build, seqs = _content_sid_builder(cfg, dataset), dataset.sequences
    candidates = {w: build(w) for w in SID_REC_WEIGHTS}
    scores = {w: prefix_predictability(seqs.offsets, seqs.items, c, depth=1) for w, c in candidates.items()}
    best = max(SID_REC_WEIGHTS, key=lambda w: (scores[w], -w))
    log("model.sid_rec_weight_auto: first-code predictability "
        + ", ".join(f"{w:g}: {scores[w]:.4f}" for w in SID_REC_WEIGHTS) + f" -> weight {best:g}")
    return best, candidates[best]


def resolve_sid_rec_weight(cfg: Config, dataset: Dataset, log: Callable[[str], None] = print) -> Config:
    """``cfg`` with model.sid_rec_weight_auto resolved: the weight picked, auto off. A run resolves it once
    at its start, so its config, checkpoints and a resume name the weight its SIDs were built with."""
    if not cfg.model.sid_rec_weight_auto:
        return cfg
    best, _ = pick_sid_rec_weight(cfg, dataset, log)
    return replace(cfg, [f"model.sid_rec_weight={best}", "model.sid_rec_weight_auto=false"])


def _content_sid_builder(cfg: Config, dataset: Dataset) -> Callable[[float], np.ndarray]:
    """The content SIDs [N, L] as a function of the recommender block's weight (the other blocks built once)."""
    m = cfg.model
    if dataset.items.dense is None and m.sid_collab_weight <= 0:
        raise ConfigError(f"model.sid_source=content needs dense item vectors, and {dataset.root} has none: "
                          "prepare it with --option embed=wordllama (item text) or --option vectors=FILE, or "
                          "set model.sid_collab_weight > 0 to quantize interaction vectors alone")
    collab = None
    if m.sid_collab_weight > 0:
        seqs = dataset.sequences
        collab = transition_vectors(seqs.offsets, seqs.items, dataset.num_items, seed=cfg.train.seed)
    use_rec = m.sid_rec_weight > 0 or m.sid_rec_weight_auto
    rec = recommender_items(cfg.train.init_from, dataset.num_items) if use_rec else None

    def build(rec_weight: float) -> np.ndarray:
        x = sid_vectors(dataset.items.dense, collab, m.sid_collab_weight, rec, rec_weight)
        return content_sids(x, m.levels, m.codes, seed=cfg.train.seed, standardise=False)

    return build


def recommender_items(checkpoint: str, num_items: int) -> np.ndarray:
    """The item table [N, D] a recommender's loss trained (model.sid_rec_weight): a sasrec checkpoint's
    output table (its item table when tied), a joint one's ranker item-ID table."""
    from raygr.training.checkpoint import MODEL_FILE, read_checkpoint

    info = read_checkpoint(checkpoint)
    saved = torch.load(info.path / MODEL_FILE, map_location="cpu", weights_only=True)
    name = next((n for n in ("out_emb.weight", "item_emb.weight", "ranker.item_id.weight") if n in saved), None)
    if name is None:
        raise ConfigError(f"model.sid_rec_weight: checkpoint {info.path} ({info.config.model.preset}) has no item "
                          "table to quantize: train.init_from must be a sasrec run, or a joint run with "
                          "model.ranker_item_id=true")
    table = saved[name][1:].numpy()  # row 0 is padding
    if table.shape[0] != num_items:
        raise ConfigError(f"model.sid_rec_weight: {name} in {info.path} has {table.shape[0]} items, the dataset "
                          f"{num_items}")
    return table
