"""What one trial holds on the cluster, and how many trials run at once (no Ray here).

A trial is a Ray Train run: a driver (the Tune function trainable that builds and waits on the
``TorchTrainer``) plus ``train.num_workers`` workers. Tune reserves only the driver; the workers get
their own placement group from Ray Train, so the concurrency has to be derived here, from the
cluster's resources and these per-trial needs, and handed to Tune as the search algorithm's ``max_concurrent``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from raygr.config import Config, ConfigError

DRIVER_CPUS = 1.0  # the trial's driver process (RAY_NOTES: "the driver takes 1 CPU on top of its workers")


@dataclass(frozen=True)
class TrialResources:
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0 = CPU training; fractions let several trials share one GPU
    driver_cpus: float = DRIVER_CPUS

    @property
    def cpus(self) -> float:
        return self.driver_cpus + self.num_workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker


def trial_resources(cfg: Config) -> TrialResources:
    """``tune.gpus_per_trial`` is split over the trial's workers; 0 with ``train.use_gpu`` means one GPU each."""
    t = cfg.train
    gpus = cfg.tune.gpus_per_trial or (float(t.num_workers) if t.use_gpu else 0.0)
    per_worker = gpus / t.num_workers
    if per_worker > 1:
        raise ConfigError(f"tune.gpus_per_trial={gpus:g} gives each of the train.num_workers={t.num_workers} "
                          f"worker(s) {per_worker:g} GPUs, but a worker uses one: raise train.num_workers "
                          f"to {math.ceil(gpus)} or lower tune.gpus_per_trial to {t.num_workers}")
    return TrialResources(t.num_workers, t.cpus_per_worker, per_worker)


def max_concurrent(cfg: Config, cluster: Mapping[str, float], data_cpus: float = 0.0) -> int:
    """``tune.max_concurrent``, or (when 0) as many trials as the cluster's CPUs and GPUs hold.

    ``data_cpus`` are kept free for Ray Data's read tasks when the training input streams: with every
    CPU held by trial drivers and workers, a streaming input never gets to run (RAY_NOTES, the 2-core
    hang). A materialised input needs none while training: it is read before the trial's workers start,
    when at least one CPU of the trial's share is still free. Raises ``ConfigError`` when not even one
    trial fits, instead of letting Tune wait forever.
    """
    need = trial_resources(cfg)
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if need.cpus > cpus:
        raise ConfigError(f"one trial needs {need.cpus:g} CPUs ({need.driver_cpus:g} for its driver + "
                          f"train.num_workers={need.num_workers} x train.cpus_per_worker={need.cpus_per_worker:g}); "
                          f"the Ray cluster has {cpus:g}: lower train.num_workers or train.cpus_per_worker")
    if need.gpus > gpus + 1e-9:
        raise ConfigError(f"one trial needs {need.gpus:g} GPUs (tune.gpus_per_trial / train.use_gpu); the Ray "
                          f"cluster has {gpus:g}: lower tune.gpus_per_trial or set train.use_gpu=false")
    if cfg.tune.max_concurrent:
        return cfg.tune.max_concurrent
    fits = math.floor((cpus - data_cpus) / need.cpus + 1e-9)
    if need.gpus > 0:
        fits = min(fits, math.floor(gpus / need.gpus + 1e-9))
    return max(1, fits)
