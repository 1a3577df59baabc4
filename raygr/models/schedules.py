"""Exploration schedules: Gumbel temperature tau and noise scale sigma as pure functions of the step.

    tau = temperature(cfg.schedule, step); sigma = noise_scale(cfg.schedule, step)

The fixed shapes interpolate from ``*_start`` to ``*_end`` over ``horizon_steps`` and stay at the end
value afterwards. DIGER's two adaptive strategies take tau from the cosine and bring sigma to 0 at the
horizon, each by its own rule (``raygr.models.quantizer`` holds the state they read):

    sdud   sigma[l]    = |s_l| * exploration(t)                       s_l learned per level
    frqud  sigma[l, k] = sigma_start * exploration(t) ** r[l, k]      r = clamp(K * freq[l, k], 1/R, R)

where exploration(t) is the cosine from 1 to 0 and t = step / horizon. Both are 0 from the horizon on.
"""

from __future__ import annotations

import math

import torch

from raygr.config import ScheduleConfig

ADAPTIVE = ("sdud", "frqud")


def progress(step: int, horizon: int) -> float:
    """Fraction of the decay done, in [0, 1]."""
    return min(max(step, 0) / max(horizon, 1), 1.0)


def decay(shape: str, start: float, end: float, step: int, horizon: int, exp_rate: float = 5.0) -> float:
    """Value of a start->end decay of the given shape at ``step``."""
    t = progress(step, horizon)
    if shape == "constant":
        return start
    if shape == "linear":
        return start + (end - start) * t
    if shape == "exponential":
        # Normalised so that it reaches ``end`` exactly at the horizon.
        f = (math.exp(-exp_rate * t) - math.exp(-exp_rate)) / (1 - math.exp(-exp_rate))
        return end + (start - end) * f
    if shape in ("cosine", *ADAPTIVE):
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown decay shape {shape!r}")


def temperature(cfg: ScheduleConfig, step: int) -> float:
    return decay(cfg.strategy, cfg.tau_start, cfg.tau_end, step, cfg.horizon_steps, cfg.exp_rate)


def exploration(cfg: ScheduleConfig, step: int) -> float:
    """How much exploration is left, from 1 at step 0 to exactly 0 at the horizon (cosine)."""
    return decay("cosine", 1.0, 0.0, step, cfg.horizon_steps)


def noise_scale(cfg: ScheduleConfig, step: int) -> float:
    """The fixed shapes' sigma; for sdud and frqud the cosine sigma_start -> 0 that their state modulates."""
    if cfg.strategy in ADAPTIVE:
        return cfg.sigma_start * exploration(cfg, step)
    return decay(cfg.strategy, cfg.sigma_start, cfg.sigma_end, step, cfg.horizon_steps, cfg.exp_rate)


def sdud_noise(cfg: ScheduleConfig, step: int, scale: torch.Tensor) -> torch.Tensor:
    """SDUD's sigma per level [L] from the learned scales ``scale`` [L].

    DIGER's uncertainty loss alone settles the scale near sqrt(loss) - lambda, which is 0 only if lambda
    was tuned to the loss the run will converge to; times the cosine, the noise follows the loss while
    the run explores and is 0 from the horizon whatever the loss does.
    """
    return scale.detach().abs() * exploration(cfg, step)


def frqud_noise(cfg: ScheduleConfig, step: int, rel_freq: torch.Tensor) -> torch.Tensor:
    """FrqUD's sigma per code [..., K] from code frequencies relative to uniform ``rel_freq`` (1 = uniform).

    Each code decays on its own clock: the exploration factor raised to its clamped relative frequency,
    so at step 0 every code has sigma_start, a crowded code's noise fades fast and a rare code's slowly,
    and all are 0 at the horizon (0 ** r = 0 for r > 0: the clamp keeps r away from 0).
    """
    e = exploration(cfg, step)
    if e <= 0.0:
        return torch.zeros_like(rel_freq)
    r = rel_freq.clamp(1.0 / cfg.frqud_threshold, cfg.frqud_threshold)
    return cfg.sigma_start * torch.pow(torch.full_like(rel_freq, e), r)


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.05, hold: int = 0) -> float:
    """Linear warm-up then cosine decay to ``floor`` of the peak learning rate.

    With ``hold`` > 0 the rate stays at its peak until that step, then steps down to where the cosine of
    the whole run is at that point and follows it to the end.
    """
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    if step < hold:
        return 1.0
    t = progress(step - warmup, max(total - warmup, 1))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
