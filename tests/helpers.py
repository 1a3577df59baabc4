"""Tiny seeded datasets and configs shared by the model tests."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from raygr.config import Config, load_config
from raygr.data.dataset import Dataset, load_dataset, write_dataset
from raygr.data.synthetic import generate
from raygr.training.factory import build_model
from raygr.training.loop import initialise

TINY = ["model.dim=32", "model.codes=32", "model.token_buckets=2048", "model.num_negatives=32",
        "model.enhancer_every=10",
        "train.batch_size=64", "train.log_every=0", "train.tokenizer_epochs=3", "train.warmup_steps=20"]


def tiny_dataset(root: Path, num_users: int = 600, num_items: int = 80, seed: int = 0, **kw) -> Dataset:
    items, seqs = generate(num_users=num_users, num_items=num_items, seed=seed, **kw)
    write_dataset(root / "tiny", items, seqs, source={"format": "synthetic", "seed": seed}, num_shards=2)
    return load_dataset(root / "tiny")


def tiny_config(*overrides: str) -> Config:
    return load_config(None, [*TINY, *overrides])


def quiet(_msg: str) -> None:
    """A ``log`` callback that drops progress lines."""


def initialised_model(dataset: Dataset, cfg: Config) -> nn.Module:
    """The config's model, initialised (k-means codes) and ready for inference: eval mode, SID table built."""
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=quiet)
    model.eval()
    model.refresh()
    return model
