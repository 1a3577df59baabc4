"""SASRec's sampled softmax (model.num_negatives below the catalogue): the full softmax restricted to the
drawn items, and the sasrec preset still trains with the full one."""

import pytest
import torch
import torch.nn.functional as F

from raygr.config import ConfigError
from raygr.data.windows import make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.enhancer import HardNegativeMiner
from raygr.training.factory import build_model
from raygr.training.local import train_local
from tests.helpers import quiet, tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("sampled"))


def batch_of(dataset, cfg, n=16) -> TrainBatch:
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    return TrainBatch.from_mapping({k: v[:n] for k, v in w.items()})


def test_sampled_loss_is_the_full_softmax_over_the_drawn_items(dataset):
    """Negatives = every item but one non-target item j (and a draw of each target, masked): the loss is
    the full softmax with j's column removed."""
    cfg = tiny_config("model.preset=sasrec", "model.num_negatives=0")
    model = build_model(cfg, dataset).eval()  # no dropout: both passes see the same states
    batch = batch_of(dataset, cfg)
    targets = set(batch.target[batch.target > 0].tolist())
    j = next(i for i in range(1, model.num_items + 1) if i not in targets)
    negatives = torch.tensor([i for i in range(1, model.num_items + 1) if i != j])
    sampled = model.losses(batch, step=0, negatives=negatives)["generator"]
    has = batch.target > 0
    h = model.seq(model.item_emb(batch.input), batch.input == 0)[has]
    logits = h @ model.output_table().T
    logits[:, [0, j]] = float("-inf")
    assert torch.allclose(sampled, F.cross_entropy(logits, batch.target[has]), atol=1e-5)
    full = model.losses(batch, step=0, negatives=torch.arange(1, model.num_items + 1))["generator"]
    assert not torch.allclose(sampled, full)  # j's column counted there


def test_sasrec_preset_trains_with_the_full_softmax():
    cfg = tiny_config("model.preset=sasrec", "model.num_negatives=0")
    assert cfg.model.num_negatives == 0
    from raygr.config import load_config
    assert load_config(None, ["model.preset=sasrec"]).model.num_negatives == 0  # the preset's default
    miner = HardNegativeMiner(80, 0, hard_per_user=8, every=0)
    assert torch.equal(miner.negatives("cpu"), torch.arange(1, 81))
    with pytest.raises(ConfigError, match="model.num_negatives.*>= 0"):
        tiny_config("model.num_negatives=-1")


def test_sampled_sasrec_learns(dataset):
    """20 negatives of 80 items: test N@10 .338 after 6 epochs (full softmax .343, popularity ~.26)."""
    cfg = tiny_config("model.preset=sasrec", "model.num_negatives=20", "train.epochs=6")
    torch.set_num_threads(1)
    _, state, test = train_local(cfg, dataset, log=quiet)
    first, last = state.history[0]["train"]["loss"], state.history[-1]["train"]["loss"]
    assert last < first
    assert test["ndcg@10"] > 0.30, test
