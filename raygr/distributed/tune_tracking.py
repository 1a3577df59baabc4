"""Tracking of ``raygr tune`` trials with Ray Tune's own logger callbacks, on the driver.

Each trial's epoch report carries the epoch record's numbers under the same tags as a train run's
TensorBoard files (``raygr.training.tracking.scalars``: train/loss, train/tau, train/sigma, valid/ndcg@10,
codebook/..., speed/...; added by ``ReportToTune`` in tune.py). Then

- ``TBXLoggerCallback`` (tensorboardX, a ``ray[tune]`` dependency) writes them per trial, step = the trial's
  iteration (its epoch), under ``ray/tune/<tag>``, into OUTPUT/ray/search/trial-<id>/events.out.tfevents.*,
  and the trial's sampled values as TensorBoard hparams when it ends: ``tensorboard --logdir OUTPUT``
  shows every trial side by side (HParams tab: one row per trial);
- with ``train.tracking: mlflow``, ``MLflowTrialLogger`` (Ray's ``MLflowLoggerCallback``) logs one MLflow run
  per trial: the trial's resolved config as params, the tags as MLflow keys (``tracking.metric_key``) with
  step = epoch. Store: ``train.mlflow_uri``, else the file store OUTPUT/mlruns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, TRAINING_ITERATION
from ray.tune.utils import flatten_dict

from raygr.config import Config
from raygr.training.mlflow_tracking import config_params, metric_key, tracking_uri
from raygr.tuning.space import apply

SKIP = frozenset(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}
SEARCH_TAG = "raygr.search"  # the search directory an MLflow trial run belongs to


class MLflowTrialLogger(MLflowLoggerCallback):
    """Ray's MLflow callback with raygr's keys: the full resolved config as params (not only the sampled
    values), valid MLflow metric names (``valid/ndcg@10`` -> ``valid/ndcg_at_10``, which MLflow would refuse),
    step = epoch, and none of Tune's bookkeeping numbers (pid, timestamp, ...)."""

    def __init__(self, cfg: Config, output: Path):
        super().__init__(tracking_uri=tracking_uri(cfg, output), experiment_name=cfg.train.mlflow_experiment,
                         tags={SEARCH_TAG: str(output)})
        self.base = cfg

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            tags = {**self.tags, "trial_name": str(trial), "raygr.trial_id": trial.trial_id}
            run = self.mlflow_util.start_run(tags=tags, run_name=str(trial))
            self._trial_runs[trial] = run.info.run_id
            try:
                params = config_params(apply(self.base, dict(trial.config)))
            except Exception:  # a combination the config rejects: the trial fails on its own; keep its values
                params = {metric_key(k): str(v) for k, v in flatten_dict(dict(trial.config)).items()}
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=params)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        metrics = {metric_key(k): v for k, v in flatten_dict(result, delimiter="/").items()
                   if k.split("/", 1)[0] not in SKIP and isinstance(v, int | float) and not isinstance(v, bool)}
        step = int(result.get("epoch") or result[TRAINING_ITERATION])
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)


def tracking_callbacks(cfg: Config, output: Path) -> list[Any]:
    """TensorBoard files per trial (always: Tune would add its TBX logger anyway unless
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS is set; listed here, it does not depend on that), and MLflow with
    ``train.tracking: mlflow``."""
    callbacks: list[Any] = [TBXLoggerCallback()]
    if cfg.train.tracking == "mlflow":
        callbacks.append(MLflowTrialLogger(cfg, output))
    return callbacks
