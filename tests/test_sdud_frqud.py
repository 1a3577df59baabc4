"""DIGER's adaptive decays in a training run: exploration while the horizon lasts, then none, and stable SIDs.

A tiny joint model trains past its exploration horizon with each strategy. Before the horizon the noise
moves codes (the training codes differ from the nearest ones); from the horizon on the logged sigma is 0,
every training code is the item's nearest code, and the items' SIDs (nearly) stay where they are: what
still moves them is learning, not noise.
"""

import itertools

import pytest
import torch

from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.models.schedules import exploration, frqud_noise, noise_scale
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, initialise, train_step
from tests.helpers import tiny_config, tiny_dataset

STEPS = 40  # one epoch; the horizon resolves to half the run: step 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("decay"), num_users=300, num_items=60)


def batches(dataset, cfg):
    w = make_train_windows_csr(dataset.sequences.offsets, dataset.sequences.items, cfg.data.max_history)
    for epoch in itertools.count():
        for raw in iterate_windows(w, 32, cfg.train.seed, epoch):
            yield TrainBatch.from_mapping(raw)


def train_past_the_horizon(dataset, strategy):
    # sigma_start 1.5 on z-scored logits moves many codes while exploring: the contrast the test needs.
    # The SIDs are not fixed at the horizon here: what this test follows is the tokenizer's own codes after
    # it (tests/test_fix_sids.py covers the fix).
    cfg = tiny_config(f"model.schedule.strategy={strategy}", "model.schedule.sigma_start=1.5", "model.codes=8",
                      "model.enhancer_every=0", "model.dead_code_steps=0", "train.warmup_steps=2",
                      "train.epochs=1", "model.fix_sids_at_horizon=false")
    torch.manual_seed(0)
    model = build_model(cfg, dataset)
    initialise(model, cfg, lambda s: None)
    ctx = TrainContext.create(model, cfg, steps_per_epoch=STEPS, verbose=False)
    q = model.quantizer
    ids = torch.arange(1, model.num_items + 1)
    log = []
    for step, batch in zip(range(STEPS), batches(dataset, cfg)):
        # What this step's forward reads (before the optimizer and the frequency EMA update them).
        scale, freq = q.sdud_scale.detach().abs().clone(), q.code_freq.clone()
        out = train_step(ctx, batch, step)
        with torch.no_grad():
            model.train()
            z = model.encoder(ids)
            trained = q(z, step).codes  # what a training forward at this step assigns every item
            nearest = q(z, explore=False).codes
        log.append({"sigma": out["sigma"], "scale": scale, "freq": freq, "trained": trained, "nearest": nearest})
    return ctx, log


def changed(a, b) -> float:
    return float((a != b).any(1).float().mean())  # fraction of items whose SID differs


@pytest.mark.parametrize("strategy", ["sdud", "frqud"])
def test_noise_reaches_zero_at_the_horizon_and_codes_stop_changing(dataset, strategy):
    ctx, log = train_past_the_horizon(dataset, strategy)
    h = ctx.cfg.model.schedule.horizon_steps
    assert h == STEPS // 2
    q = ctx.core.quantizer
    sigma = [r["sigma"] for r in log]
    # The logged sigma is the one the quantizer applied, positive while exploring and 0 from the horizon.
    assert sigma[0] > 0.5 and all(s > 0 for s in sigma[:h])
    assert all(s == 0.0 for s in sigma[h:]), sigma
    assert float(q.noise_scales(h).abs().max()) == 0.0 and float(q.noise_scales(h - 5).max()) > 0
    # Its value is the strategy's own, not the cosine sigma_start -> 0 the strategies start from.
    sched, t = ctx.cfg.model.schedule, 15
    if strategy == "sdud":  # the learned scale times the decay
        expected = float(log[t]["scale"].mean()) * exploration(sched, t)
    else:  # the mean over levels and codes of the per-code decays
        expected = float(frqud_noise(sched, t, log[t]["freq"] * q.codes).mean())
    assert sigma[t] == pytest.approx(expected, rel=1e-5)
    assert abs(sigma[t] / noise_scale(sched, t) - 1) > 1e-3
    # While exploring, the noise moves codes: training assigns many items another code than their nearest,
    # and a different one from one step to the next.
    early = range(1, h // 2)
    assert max(changed(log[t]["trained"], log[t]["nearest"]) for t in early) > 0.2
    assert max(changed(log[t]["trained"], log[t - 1]["trained"]) for t in early) > 0.2
    # From the horizon on, training uses every item's nearest code ...
    assert all(changed(r["trained"], r["nearest"]) == 0.0 for r in log[h:])
    # ... and the codes stop changing. What still moves them is learning itself (an item on the border of
    # two codes may flip), which the lr decay of the run's second half slows: over the last 5 steps far
    # fewer items change their training SID than over 5 steps of exploration.
    def flips(steps):
        return sum(int((log[t]["trained"] != log[t - 1]["trained"]).any(1).sum()) for t in steps)

    late, early = flips(range(STEPS - 5, STEPS)), flips(range(1, 6))
    assert late * 5 < early, (late, early)
