"""Builds the model a config's preset asks for, from a prepared dataset."""

from __future__ import annotations

import torch
from torch import nn

from raygr.config import Config
from raygr.data.dataset import Dataset
from raygr.models.encoder import token_matrix
from raygr.models.joint import GenerativeRecommender
from raygr.models.sasrec import SASRec


def build_model(cfg: Config, dataset: Dataset) -> nn.Module:
    torch.manual_seed(cfg.train.seed)
    n = dataset.num_items
    if cfg.model.preset == "sasrec":
        return SASRec(cfg.model, n, cfg.data.max_history)
    tokens = token_matrix(dataset.items.tokens, cfg.model.token_buckets)
    dense = None
    if dataset.items.dense is not None:
        d = torch.from_numpy(dataset.items.dense)
        dense = torch.cat([d.new_zeros(1, d.shape[1]), d])
    return GenerativeRecommender(cfg.model, tokens, n, cfg.data.max_history, dense=dense)
