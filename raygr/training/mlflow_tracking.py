"""MLflow tracking (``train.tracking: mlflow``): a run's config, per-epoch records and test metrics, logged
with MLflow's own client into a tracking store (default: a local file store, RUN_DIR/mlruns).

    require_mlflow(cfg)                                   # ConfigError now, not after training, without MLflow
    log_run(cfg, "runs/x", state.history, metrics)        # at the end of ``raygr train`` (distributed/train.py)
    mlflow ui --backend-store-uri file:runs/x/mlruns      # MLFLOW_ALLOW_FILE_STORE=true for a file store

One MLflow run per raygr run directory: params are the resolved config flattened to dotted keys; metrics
are the TensorBoard tags (``tracking.scalars``) with step=epoch, made valid MLflow keys (``metric_key``:
``valid/ndcg@10`` -> ``valid/ndcg_at_10``), plus the test metrics at the last epoch (``test/...``,
``final/...``). A re-run on the same directory (a resume, a re-evaluation) deletes the directory's earlier
MLflow run and logs the whole history again, as the TensorBoard files are rewritten: no epoch twice.
Tune trials are logged by Ray's ``MLflowLoggerCallback`` (raygr/distributed/tune_tracking.py). No Ray here.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raygr.config import Config, ConfigError, config_to_dict
from raygr.training.tracking import _flatten, scalars

MLRUNS = "mlruns"  # the default store under the run (search) directory
RUN_DIR_TAG = "raygr.run_dir"  # which raygr directory an MLflow run belongs to (a re-run replaces it)
INSTALL = "pip install 'raygr[tracking]' (or pip install mlflow-skinny; pip install mlflow adds `mlflow ui`)"
MISSING = ("config key 'train.tracking' is 'mlflow', but MLflow is not installed: " + INSTALL
           + ", or set train.tracking=tensorboard")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits


def require_mlflow(cfg: Config) -> None:
    """With ``train.tracking: mlflow``, raise ``ConfigError`` naming the key and the pip command unless MLflow
    imports. Called before Ray starts and before any training."""
    if cfg.train.tracking != "mlflow":
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


def tracking_uri(cfg: Config, root: str | Path) -> str:
    """``train.mlflow_uri``, or the file store ROOT/mlruns; a file store is allowed for this process (MLflow 3
    refuses one unless MLFLOW_ALLOW_FILE_STORE is set: it is in maintenance mode, but needs no database)."""
    uri = cfg.train.mlflow_uri or Path(root).expanduser().resolve().joinpath(MLRUNS).as_uri()
    if uri.startswith("file:") or "://" not in uri:  # a path is a file store too
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


_BAD = re.compile(r"[^/\w.\- ]")


def metric_key(tag: str) -> str:
    """A TensorBoard tag as an MLflow key (alphanumerics, ``_ - . /`` and spaces): ``ndcg@10`` -> ``ndcg_at_10``."""
    return _BAD.sub("_", tag.replace("@", "_at_"))


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as dotted keys -> strings (MLflow params), long values cut to MLflow's limit."""
    out: dict[str, str] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping) and v and f"{prefix}{k}" != "tune.space":  # the space: one param
                walk(v, f"{prefix}{k}.")
            else:
                out[metric_key(f"{prefix}{k}")] = str(v)[:MAX_PARAM_CHARS]

    walk(config_to_dict(cfg), "")
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers (best validation epoch on the test split): ``test/<metric>`` and ``final/<key>/...``
    (retrieval_only, decoding, codebook, baselines, train: wall time, samples/s); the best validation
    numbers are in the per-epoch history already."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key != "valid":
            _flatten(value, "test" if key == "test" else f"final/{key}", out)
    return out


def log_run(cfg: Config, run_dir: str | Path, history: Sequence[Mapping[str, Any]],
            metrics: Mapping[str, Any] | None = None, *, run_name: str | None = None,
            log: Callable[[str], None] = print) -> str:
    """Log one raygr run to MLflow (replacing the directory's earlier MLflow run); returns the MLflow run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir).expanduser().resolve()
    uri = tracking_uri(cfg, run_dir)
    client = MlflowClient(tracking_uri=uri)
    name = cfg.train.mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
    for old in client.search_runs([exp_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'"):
        client.delete_run(old.info.run_id)
    run = client.create_run(exp_id, run_name=run_name or run_dir.name,
                            tags={RUN_DIR_TAG: str(run_dir), "raygr.preset": cfg.model.preset})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in config_params(cfg).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i:i + PARAMS_PER_BATCH])
        points = [Metric(metric_key(tag), value, now, int(record["epoch"]))
                  for record in history for tag, value in scalars(record).items()]
        last = int(history[-1]["epoch"]) if history else 0
        points += [Metric(metric_key(tag), value, now, last) for tag, value in final_metrics(metrics or {}).items()]
        for i in range(0, len(points), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=points[i:i + METRICS_PER_BATCH])
        if metrics and metrics.get("dataset"):
            client.log_batch(run_id, tags=[RunTag("raygr.dataset", str(metrics["dataset"]))])
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    log(f"tracking: MLflow run {run_id} in {uri} (experiment {name!r})")
    return run_id
