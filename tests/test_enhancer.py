"""The ranker's negatives: uniform samples, mined hard negatives, or the whole catalogue."""

import copy

import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.enhancer import HardNegativeMiner
from raygr.training.factory import build_model
from raygr.training.loop import initialise
from tests.helpers import tiny_config, tiny_dataset


def test_uniform_negatives_then_half_as_many_mined_ones():
    torch.manual_seed(0)
    miner = HardNegativeMiner(num_items=50, num_negatives=16, hard_per_user=3, every=5)
    neg = miner.negatives("cpu")
    assert neg.shape == (16,) and neg.min() >= 1 and neg.max() <= 50
    miner.pool = torch.tensor([7, 8, 9])
    neg = miner.negatives("cpu")
    assert neg.shape == (16 + 3,) and set(neg[16:].tolist()) <= {7, 8, 9}


def test_full_catalogue_mode_scores_every_item_and_mines_nothing():
    miner = HardNegativeMiner(num_items=50, num_negatives=50, hard_per_user=3, every=5)
    assert torch.equal(miner.negatives("cpu"), torch.arange(1, 51))
    assert not miner.enabled


def test_mined_items_are_retrieved_wrong_items(tmp_path):
    ds = tiny_dataset(tmp_path, num_users=200, num_items=60)
    cfg = tiny_config()
    model = build_model(cfg, ds)
    initialise(model, cfg, lambda s: None)
    windows = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    batch = TrainBatch.from_mapping(next(iter(iterate_windows(windows, 32, 0, 0))))
    miner = HardNegativeMiner(ds.num_items, 16, hard_per_user=4, every=5)
    assert miner.maybe_mine(model, batch, step=3) == 0, "mines only every `every` steps"
    added = miner.maybe_mine(model, batch, step=5)
    assert added > 0 and len(miner.pool) == added
    assert ((miner.pool >= 1) & (miner.pool <= ds.num_items)).all()
    last = batch.target[:, -1]
    assert len(miner.pool) <= 4 * int((last > 0).sum()), "at most hard_per_user items per user"


def test_mined_items_are_the_fresh_retrievers_top_wrong_items(tmp_path):
    ds = tiny_dataset(tmp_path, num_users=200, num_items=60)
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg, ds)
    initialise(model, cfg, lambda s: None)
    model.refresh()  # the caches of "the epoch's start"
    with torch.no_grad():  # then the parameters move, as a few hundred steps would move them
        for p in (model.quantizer.codebooks, *model.generator.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    windows = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    history = torch.from_numpy(windows["input"][:48])
    k = 4
    fresh = copy.deepcopy(model)
    fresh.eval()
    fresh.refresh()
    top, _ = fresh.retrieve(history, k=k + 1)  # [B, k+1] what the current parameters retrieve
    # Half the users' true next item is the retriever's first pick, so excluding the target matters.
    target = torch.where(torch.arange(len(top)) % 2 == 0, top[:, 0], torch.from_numpy(windows["target"][:48, -1]))
    miner = HardNegativeMiner(ds.num_items, 16, hard_per_user=k, every=5)
    model.train()
    mined = miner.mine(model, history, target)  # [B, k]
    assert mined.shape == (len(history), k) and (mined > 0).sum(1).min() >= k - 1
    for row in range(len(history)):
        got = mined[row][mined[row] > 0].tolist()
        assert int(target[row]) not in got, "a mined negative is the user's true next item"
        expected = [i for i in top[row].tolist() if i != int(target[row]) and i > 0][:k]
        assert got == expected, (row, got, expected)  # the fresh retriever's top wrong items, in its order
    assert model.training  # mining retrieves in eval mode and leaves the model training
