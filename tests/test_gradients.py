"""The point of the project: the recommendation loss trains the tokenizer (and, for tiger, does not)."""

import pytest
import torch

from raygr.models.factory import build_model
from raygr.training.batch import TrainBatch
from raygr.training.loop import initialise
from tests.helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("grad"))


def generator_grads(dataset, preset):
    cfg = tiny_config(f"model.preset={preset}", "train.tokenizer_epochs=1")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    model.train()
    from raygr.data.windows import make_train_windows_csr
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    batch = TrainBatch.from_mapping({k: v[:32] for k, v in w.items()})
    terms = model.losses(batch, step=0, negatives=torch.arange(1, 20))
    model.zero_grad(set_to_none=True)
    if terms["generator"].requires_grad:
        terms["generator"].backward()  # the generator loss ALONE
    return model


def test_generator_loss_alone_reaches_encoder_and_every_codebook(dataset):
    model = generator_grads(dataset, "joint")
    enc = model.encoder.bag.weight.grad
    assert enc is not None and enc.abs().sum() > 0
    cb = model.quantizer.codebooks.grad
    assert cb is not None and (cb.abs().sum(dim=(1, 2)) > 0).all(), "every level's codebook gets a gradient"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.mlp.parameters())


def test_tiger_tokenizer_gets_no_gradient_from_the_generator(dataset):
    model = generator_grads(dataset, "tiger")
    assert model.quantizer.codebooks.grad is None and model.encoder.bag.weight.grad is None
    assert not model.quantizer.codebooks.requires_grad
    assert any(p.grad is not None for p in model.generator.parameters())
