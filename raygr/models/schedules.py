"""Exploration schedules: Gumbel temperature tau and noise scale sigma as pure functions of the step.

    tau = temperature(cfg.schedule, step); sigma = noise_scale(cfg.schedule, step)

The fixed shapes interpolate from ``*_start`` to ``*_end`` over ``horizon_steps`` and stay at the end
value afterwards. The two adaptive strategies of DIGER use the cosine shape as their base: SDUD
replaces sigma by a learned scale (``raygr.models.quantizer``), FrqUD applies the cosine sigma only
to samples whose code is over-used.
"""

from __future__ import annotations

import math

from raygr.config import ScheduleConfig


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
    if shape in ("cosine", "sdud", "frqud"):
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown decay shape {shape!r}")


def temperature(cfg: ScheduleConfig, step: int) -> float:
    return decay(cfg.strategy, cfg.tau_start, cfg.tau_end, step, cfg.horizon_steps, cfg.exp_rate)


def noise_scale(cfg: ScheduleConfig, step: int) -> float:
    return decay(cfg.strategy, cfg.sigma_start, cfg.sigma_end, step, cfg.horizon_steps, cfg.exp_rate)


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
