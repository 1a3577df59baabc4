"""The search space of ``raygr tune``: parsed from YAML into a neutral description, checked, applied.

    tune:
      space:
        model.schedule.strategy: {choice: [cosine, sdud, frqud]}
        model.schedule.tau_end: {loguniform: [0.05, 0.5]}
        model.weighting: {grid: [fixed, adaptive]}
        train.batch_size: {randint: [64, 513]}        # upper bound excluded, as in Ray / numpy

    dims = resolve_space(cfg, total_steps)       # tune.space, or the default space when it is empty
    cfg_trial = apply(cfg, {"model.schedule.strategy": "sdud", "train.lr": 0.001})

No Ray here: ``raygr.distributed.tune`` maps each ``Dimension`` onto ``tune.choice / uniform /
loguniform / randint / grid_search``. Every key and every listed value (options, range bounds) is
checked against the config dataclasses before any trial starts, so a typo fails in a second, naming
the key, instead of as N failed trials. A value is checked with the rest of the base config; whether
two searched values fit together (``model.dim`` with ``model.num_heads``) is only known per trial:
such a trial fails, is recorded, and the search goes on.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from raygr.config import Config, ConfigError, DecayStrategy, Weighting, config_from_dict, config_to_dict

Kind = Literal["choice", "uniform", "loguniform", "randint", "grid"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
RANGE_KINDS = ("uniform", "loguniform", "randint")

# Keys that shape the search itself, so they cannot differ between trials: the resources fix how many
# trials run at once, train.epochs is ASHA's max_t, data.path is the --data of the whole search.
FIXED_KEYS = {
    "train.num_workers": "the per-trial resources fix the concurrency",
    "train.cpus_per_worker": "the per-trial resources fix the concurrency",
    "train.use_gpu": "use tune.gpus_per_trial",
    "train.epochs": "it is the ASHA scheduler's max_t",
    "data.path": "pass the dataset with --data",
}
FIXED_SECTIONS = ("tune", "serve")  # not part of what a trial trains


@dataclass(frozen=True)
class Dimension:
    """One searched config key: ``kind`` over ``values`` (the options, or the bounds ``(lo, hi)``)."""

    key: str  # dotted config key, e.g. "model.schedule.strategy"
    kind: Kind
    values: tuple[Any, ...]

    def checked_values(self) -> tuple[Any, ...]:
        """Values to validate one by one: every option, or both ends of a range (randint's high is excluded)."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        return self.values

    def as_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def parse_space(raw: Mapping[str, Any] | None) -> tuple[Dimension, ...]:
    """``{dotted.key: {kind: [...]}}`` -> dimensions; raises ``ConfigError`` naming a malformed entry."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config key 'tune.space' must map dotted config keys to {{choice: [...]}} etc., "
                          f"got {raw!r}")
    return tuple(_parse_entry(str(key), spec) for key, spec in raw.items())


def _parse_entry(key: str, spec: Any) -> Dimension:
    where = f"tune.space['{key}']"
    example = "e.g. {choice: [a, b]}, {uniform: [0.1, 1.0]}, {loguniform: [1e-4, 1e-2]}, {randint: [1, 5]}, " \
              "{grid: [a, b]}"
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where} must be a mapping with exactly one of {', '.join(KINDS)} ({example}); "
                          f"got {spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, got {values!r}")
    values = tuple(_number_or_self(_plain(v)) for v in values)
    if kind in RANGE_KINDS:
        _check_range(where, kind, values)
    return Dimension(key, kind, values)


def _check_range(where: str, kind: str, values: tuple[Any, ...]) -> None:
    if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}: {kind} needs two numbers [low, high], got {list(values)}")
    lo, hi = values
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: randint needs integer bounds, got {list(values)}")
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} needs low < high, got {list(values)}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0 (it samples log(value)), got {list(values)}; "
                          "use uniform to include 0")
    if kind == "randint" and hi - lo < 1:
        raise ConfigError(f"{where}: randint's high is excluded, so [{lo}, {hi}] holds no value")


def field_type(key: str) -> Any:
    """The annotated type of a dotted config key; ``ConfigError`` (with the nearest keys) if there is none."""
    cls: Any = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            section = ".".join(parts[:depth]) or "<root>"
            known = sorted(hints)
            near = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean '{'.'.join([*parts[:depth], near[0]])}'?)" if near else ""
            raise ConfigError(f"tune.space key '{key}' is not a config key{hint}; known keys in '{section}': "
                              f"{', '.join(known)}")
        tp = hints[part]
        if depth < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"tune.space key '{key}': '{'.'.join(parts[:depth + 1])}' is a value, "
                                  "not a section")
            cls = tp
        elif dataclasses.is_dataclass(tp):
            raise ConfigError(f"tune.space key '{key}' is a whole section; search its keys, e.g. "
                              f"'{key}.{dataclasses.fields(tp)[0].name}'")
    return tp


def validate_space(dims: tuple[Dimension, ...], base: Config) -> None:
    """Fail before any trial starts if a key is unknown, fixed, searched twice, or a value is invalid."""
    seen: set[str] = set()
    for dim in dims:
        where = f"tune.space['{dim.key}']"
        if dim.key in seen:
            raise ConfigError(f"{where} is declared twice")
        seen.add(dim.key)
        if dim.key.split(".")[0] in FIXED_SECTIONS:
            raise ConfigError(f"{where}: the '{dim.key.split('.')[0]}' section is not searched; "
                              "search data.*, model.* or train.* keys")
        tp = field_type(dim.key)
        if dim.key in FIXED_KEYS:
            raise ConfigError(f"{where} cannot be searched ({FIXED_KEYS[dim.key]}); set it in the config instead")
        if dim.kind in RANGE_KINDS and not _numeric(tp):
            raise ConfigError(f"{where}: {dim.kind} needs a numeric key, but '{dim.key}' takes {_type_name(tp)}; "
                              "use choice or grid")
        if dim.kind in ("uniform", "loguniform") and _base(tp) is int:
            raise ConfigError(f"{where}: {dim.kind} samples fractions, but '{dim.key}' is an integer; "
                              "use randint, choice or grid")
        for value in dim.checked_values():
            try:
                apply(base, {dim.key: value})
            except ConfigError as e:
                raise ConfigError(f"{where}: value {value!r} is not valid with the base config: {e}") from None


def apply(base: Config, assignment: Mapping[str, Any]) -> Config:
    """``base`` with dotted keys set to the sampled values, coerced and validated like a YAML file."""
    values = config_to_dict(base)
    for key, value in assignment.items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _plain(value)
    return config_from_dict(values)


def as_overrides(assignment: Mapping[str, Any]) -> list[str]:
    """The ``--set key=value`` form of an assignment (for logs and tables)."""
    return [f"{k}={fmt_value(v)}" for k, v in assignment.items()]


def default_space(base: Config, total_steps: int) -> tuple[Dimension, ...]:
    """The space searched when ``tune.space`` is empty: Gumbel decay, loss weighting, lr and batch size.

    Step-valued keys (horizon, ramp) choose among 1/4, 1/2 and all of ``total_steps`` (the run's
    optimisation steps at the base batch size), since a sensible horizon depends on the dataset.
    Random search samples every key for every trial; a strategy's own parameters (sdud_lambda,
    frqud_threshold) are simply unused by the other strategies.
    """
    h = max(1, int(total_steps))
    steps = sorted({max(1, h // 4), max(1, h // 2), h})
    tokenizer = {
        "model.schedule.strategy": {"choice": list(typing.get_args(DecayStrategy))},
        "model.schedule.tau_start": {"loguniform": [0.5, 2.0]},
        "model.schedule.tau_end": {"loguniform": [0.05, 0.5]},
        "model.schedule.sigma_start": {"uniform": [0.0, 1.0]},
        "model.schedule.horizon_steps": {"choice": steps},
        "model.schedule.sdud_lambda": {"loguniform": [0.01, 1.0]},
        "model.schedule.frqud_threshold": {"uniform": [1.2, 4.0]},
        "model.weighting": {"choice": list(typing.get_args(Weighting))},
        "model.ramp_steps": {"choice": steps},
        "model.gradnorm_alpha": {"uniform": [0.1, 1.5]},
        "model.loss.ranker": {"loguniform": [0.25, 2.0]},
        "model.loss.balance": {"uniform": [0.0, 0.6]},
        "model.loss.cost": {"loguniform": [0.01, 0.3]},
        "model.loss.unisid": {"loguniform": [0.01, 0.3]},
    }
    optimiser = {
        "train.lr": {"loguniform": [5e-4, 5e-3]},
        "train.batch_size": {"choice": [128, 256, 512]},
    }
    # SASRec has no quantizer and no loss weighter: only the optimiser is worth searching.
    raw = optimiser if base.model.preset == "sasrec" else {**tokenizer, **optimiser}
    return parse_space(raw)


def resolve_space(base: Config, total_steps: int) -> tuple[Dimension, ...]:
    """``tune.space`` (or the default space when it is empty), validated against ``base``."""
    dims = parse_space(base.tune.space) or default_space(base, total_steps)
    validate_space(dims, base)
    return dims


def space_to_yaml(dims: tuple[Dimension, ...]) -> dict[str, dict[str, list[Any]]]:
    return {d.key: d.as_yaml() for d in dims}


def _plain(value: Any) -> Any:
    # Tune samples numpy scalars; the config coercion and YAML want Python ones.
    return value.item() if hasattr(value, "item") and not isinstance(value, list | tuple | dict) else value


def _number_or_self(value: Any) -> Any:
    # PyYAML reads 1e-4 (no dot) as a string; a search space is full of such values.
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _base(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and args else tp


def _numeric(tp: Any) -> bool:
    return _base(tp) in (int, float)


def _type_name(tp: Any) -> str:
    base = _base(tp)
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    return getattr(base, "__name__", str(base))
