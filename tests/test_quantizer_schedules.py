import math

import pytest
import torch

from raygr.config import ConfigError, ScheduleConfig
from raygr.models.quantizer import ResidualQuantizer
from raygr.models.schedules import decay, frqud_noise, lr_factor, noise_scale, temperature


@pytest.mark.parametrize("shape", ["linear", "exponential", "cosine"])
def test_decays_go_from_start_to_end_monotonically(shape):
    values = [decay(shape, 1.0, 0.1, s, horizon=100) for s in range(0, 130, 5)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))
    assert decay(shape, 1.0, 0.1, 100, 100) == decay(shape, 1.0, 0.1, 10_000, 100)  # flat after horizon


def test_shapes_differ_where_intended():
    assert decay("linear", 1, 0, 50, 100) == pytest.approx(0.5)
    assert decay("cosine", 1, 0, 50, 100) == pytest.approx(0.5)
    assert decay("cosine", 1, 0, 10, 100) > decay("linear", 1, 0, 10, 100)  # slow start
    assert decay("exponential", 1, 0, 10, 100) < decay("linear", 1, 0, 10, 100)  # fast start
    assert decay("constant", 1, 0, 50, 100) == 1
    cfg = ScheduleConfig(strategy="linear", tau_start=2, tau_end=1, sigma_start=1, sigma_end=0, horizon_steps=10)
    assert (temperature(cfg, 5), noise_scale(cfg, 5)) == (pytest.approx(1.5), pytest.approx(0.5))
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(100, 10, 100) == pytest.approx(0.05)
    # lr_floor=1: constant after the warm-up (the SASRec reference setting of BENCHMARKS.md)
    assert all(lr_factor(s, 10, 100, floor=1.0) == 1.0 for s in range(10, 200))
    values = [(temperature(cfg, s), noise_scale(cfg, s)) for s in range(15)]
    assert values[0] != values[10] and values[10] == values[14]  # they do decay, then stay


def test_a_held_rate_steps_down_onto_the_whole_runs_cosine():
    held = [lr_factor(s, 10, 100, floor=0.0, hold=60) for s in range(100)]
    plain = [lr_factor(s, 10, 100, floor=0.0) for s in range(100)]
    assert held[:10] == plain[:10]  # the warm-up is unchanged
    assert all(f == 1.0 for f in held[10:60])
    assert held[60:] == plain[60:] and held[60] < 0.5  # the step down, then the same decay to the floor
    assert lr_factor(5, 10, 100, floor=0.0, hold=3) == plain[5]  # a hold inside the warm-up changes nothing


def test_sdud_scale_moves_with_the_uncertainty_loss():
    q = ResidualQuantizer(2, 8, 4, ScheduleConfig(strategy="sdud", sigma_start=1.0, sdud_lambda=0.1))
    opt = torch.optim.SGD([q.sdud_scale], lr=0.1)
    before = q.sdud_scale.detach().clone()
    for _ in range(50):
        loss = q.sdud_loss(torch.tensor(0.04))  # optimum: |s| + lambda = sqrt(0.04) -> |s| = 0.1
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (q.sdud_scale.detach() < before).all()
    assert q.sdud_scale.detach().abs() == pytest.approx(torch.full((2,), 0.1), abs=0.03)


def test_adaptive_strategies_end_at_zero_noise_and_take_tau_from_the_cosine():
    for strategy in ("sdud", "frqud"):
        cfg = ScheduleConfig(strategy=strategy, sigma_start=0.8, horizon_steps=40)
        assert temperature(cfg, 10) == pytest.approx(decay("cosine", 1.0, 0.1, 10, 40))
        assert noise_scale(cfg, 0) == pytest.approx(0.8) and noise_scale(cfg, 40) == 0.0
    with pytest.raises(ConfigError, match="model.schedule.sigma_end.*set model.schedule.sigma_end=0"):
        ScheduleConfig(strategy="frqud", sigma_end=0.1).validate()
    ScheduleConfig(strategy="cosine", sigma_end=0.1).validate()  # a fixed shape may keep some noise


def test_sdud_noise_is_the_learned_scale_times_the_decay():
    cfg = ScheduleConfig(strategy="sdud", sigma_start=1.0, horizon_steps=100)
    q = ResidualQuantizer(2, 8, 4, cfg)
    with torch.no_grad():
        q.sdud_scale.copy_(torch.tensor([1.7, -0.4]))  # the sign is not the scale
    s0, s50, s100 = (q.noise_scales(t) for t in (0, 50, 100))
    assert s0.shape == (2, 8) and torch.allclose(s0[:, 0], torch.tensor([1.7, 0.4]))
    assert torch.allclose(s50, 0.5 * s0)  # the cosine's midpoint
    assert s100.abs().max() == 0 and not q.explores(100) and q.explores(99)


def test_frqud_gives_every_code_its_own_decay_by_its_frequency():
    cfg = ScheduleConfig(strategy="frqud", sigma_start=2.0, horizon_steps=100, frqud_threshold=3.0)
    rel = torch.tensor([0.0, 0.5, 1.0, 2.0, 10.0])  # relative to uniform
    at0, at50, at100 = (frqud_noise(cfg, t, rel) for t in (0, 50, 100))
    assert torch.allclose(at0, torch.full((5,), 2.0))  # everything explores at the start
    assert (at50[:-1] > at50[1:]).all()  # more used, less noise (strictly, up to the clamp at R=3)
    assert at50[2] == pytest.approx(2.0 * 0.5)  # a uniformly used code follows the cosine
    assert at50[0] == pytest.approx(2.0 * 0.5 ** (1 / 3)) and at50[4] == pytest.approx(2.0 * 0.5 ** 3)
    assert at100.abs().max() == 0  # and nothing is left at the horizon, not even on unused codes
    # In the quantizer the scale is per code (logit column): from the EMA of code frequencies.
    q = ResidualQuantizer(1, 4, 2, cfg)
    q.code_freq[0] = torch.tensor([0.7, 0.2, 0.1, 0.0])
    assert torch.allclose(q.noise_scales(50)[0], frqud_noise(cfg, 50, q.code_freq[0] * 4))


def test_frqud_counts_the_noise_free_codes():
    torch.manual_seed(0)
    cfg = ScheduleConfig(strategy="frqud", sigma_start=50.0, horizon_steps=10**6, frqud_momentum=0.0)
    q = ResidualQuantizer(1, 4, 2, cfg)
    z = q.codebooks[0].detach()[[0, 0, 0, 1]] + 0.001  # nearest codes: 0, 0, 0, 1
    q.train()
    out = q(z, step=0)
    assert out.codes[:, 0].tolist() != [0, 0, 0, 1]  # the noise moved some (sigma 50 on z-scored logits)
    assert torch.allclose(q.code_freq[0], torch.tensor([0.75, 0.25, 0.0, 0.0]))


def test_straight_through_forward_is_hard_and_backward_reaches_codebooks_and_input():
    q = ResidualQuantizer(3, 8, 4, ScheduleConfig(strategy="constant", sigma_start=0.0))
    z = torch.randn(16, 4, requires_grad=True)
    out = q(z, step=0)
    assert torch.allclose(out.assign.sum(-1), torch.ones(16, 3))
    assert set(out.assign.detach().unique().tolist()) <= {0.0, 1.0}
    chosen = torch.stack([q.codebooks[l][out.codes[:, l]] for l in range(3)], 1)
    assert torch.allclose(out.code_vecs, chosen, atol=1e-6)
    out.code_vecs.pow(2).sum().backward()
    assert z.grad.abs().sum() > 0 and (q.codebooks.grad.abs().sum((1, 2)) > 0).all()
    # Without straight-through the codebooks still get the code vectors' own gradient, but not the one
    # through the assignment (distances), and the input gets none.
    grad_st = q.codebooks.grad.clone()
    q.straight_through = False
    q.zero_grad()
    z2 = z.detach().clone().requires_grad_(True)
    q(z2, step=0).code_vecs.pow(2).sum().backward()
    assert z2.grad is None or z2.grad.abs().sum() == 0
    assert not torch.allclose(q.codebooks.grad, grad_st)


def test_kmeans_init_and_dead_code_revival():
    torch.manual_seed(0)
    q = ResidualQuantizer(2, 4, 2, ScheduleConfig())
    z = torch.cat([torch.randn(50, 2) * 0.1 + c for c in torch.tensor([[5., 5.], [-5., 5.], [5., -5.], [-5., -5.]])])
    q.init_kmeans(z)
    assert q.encode(z)[:, 0].unique().numel() == 4
    q.last_used.zero_()
    assert q.revive_dead_codes(z, step=1000, max_idle=10, seed=0) == 8
    assert not math.isnan(float(q.codebooks.detach().sum()))


def test_standardised_logits_match_torch_std():
    # The quantizer computes the row std by hand (speed); it must equal torch's unbiased std.
    q = ResidualQuantizer(1, 16, 8, ScheduleConfig(strategy="constant", sigma_start=0.0))
    q.eval()
    z = torch.randn(32, 8)
    dist = torch.cdist(z, q.codebooks[0].detach()).pow(2)
    ref = -(dist - dist.mean(-1, keepdim=True)) / (dist.std(-1, keepdim=True) + 1e-6)
    out = q(z)
    assert torch.allclose(out.soft[:, 0], torch.softmax(ref, -1), atol=1e-5)
