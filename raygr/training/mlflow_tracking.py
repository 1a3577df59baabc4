"""MLflow tracking (``train.tracking: mlflow``): a run's config, per-epoch records, test metrics and model,
logged with MLflow's own client into a tracking store (default: a local file store, RUN_DIR/mlruns).

    require_mlflow(cfg)                                   # ConfigError now, not after training, without MLflow
    start_run(cfg, "runs/x", from_epoch=0)                # when ``raygr train`` starts (or resumes)
    log_epochs(cfg, "runs/x", state.history)              # after every epoch, live (distributed/train.py)
    log_run(cfg, "runs/x", state.history, metrics, artifacts={...})   # at the end: test metrics, the model
    mlflow ui --backend-store-uri file:runs/x/mlruns      # MLFLOW_ALLOW_FILE_STORE=true for a file store

One MLflow run per raygr run directory (found by its ``raygr.run_dir`` tag): a resume, or a re-evaluation of
a finished directory, goes on logging into the same MLflow run. Params are the resolved config flattened to
dotted keys (logged once: MLflow params cannot change, so a resume with another ``train.epochs`` keeps the
first value as a param; ``config.yaml`` among the artifacts is the config in force). Metrics are the
TensorBoard tags (``tracking.scalars``) with step=epoch, made valid MLflow keys (``metric_key``:
``valid/ndcg@10`` -> ``valid/ndcg_at_10``), each epoch logged once when it ends (the ``raygr.logged_epoch``
tag says how far); after a resume the epochs trained again (at most the one that was interrupted) are logged
again, so their steps hold both attempts. At the end: the test metrics at the last epoch (``test/...``,
``final/...``) and the artifacts (the best checkpoint under ``model/``, config.yaml, metrics.json, the curves).
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


RUN_DIR_TAG_FILTER = "tags.`{tag}` = '{value}'"
LOGGED_TAG = "raygr.logged_epoch"  # the newest epoch whose record is in the run's metrics


def _client(cfg: Config, run_dir: Path) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, run_dir)
    return MlflowClient(tracking_uri=uri), uri


def _find_or_create(client: Any, cfg: Config, run_dir: Path, run_name: str | None) -> str:
    """The MLflow run of ``run_dir`` (the newest, if a store holds several), or a new one with the config as
    its params."""
    from mlflow.entities import Param

    name = cfg.train.mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
    found = client.search_runs([exp_id], filter_string=RUN_DIR_TAG_FILTER.format(tag=RUN_DIR_TAG, value=run_dir),
                               order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=run_name or run_dir.name,
                            tags={RUN_DIR_TAG: str(run_dir), "raygr.preset": cfg.model.preset, LOGGED_TAG: "0"})
    params = [Param(k, v) for k, v in config_params(cfg).items()]
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=params[i:i + PARAMS_PER_BATCH])
    return run.info.run_id


def start_run(cfg: Config, run_dir: str | Path, *, from_epoch: int = 0, run_name: str | None = None,
              log: Callable[[str], None] = print) -> str:
    """Open the directory's MLflow run (creating it) for a training that starts after epoch ``from_epoch``
    (0, or the checkpoint a resume starts from): the epochs after it are logged as they end. Returns its id."""
    run_dir = Path(run_dir).expanduser().resolve()
    client, uri = _client(cfg, run_dir)
    run_id = _find_or_create(client, cfg, run_dir, run_name)
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, LOGGED_TAG, str(int(from_epoch)))
    log(f"tracking: MLflow run {run_id} in {uri} (experiment {cfg.train.mlflow_experiment!r}), live per epoch")
    return run_id


def log_epochs(cfg: Config, run_dir: str | Path, history: Sequence[Mapping[str, Any]]) -> int:
    """Log the records of ``history`` newer than the run's ``raygr.logged_epoch`` (step = epoch); returns how
    many epochs were logged."""
    from mlflow.entities import Metric

    run_dir = Path(run_dir).expanduser().resolve()
    client, _ = _client(cfg, run_dir)
    run_id = _find_or_create(client, cfg, run_dir, None)
    done = int(client.get_run(run_id).data.tags.get(LOGGED_TAG, "0"))
    new = [r for r in history if int(r["epoch"]) > done]
    if not new:
        return 0
    now = int(time.time() * 1000)
    points = [Metric(metric_key(tag), value, now, int(r["epoch"])) for r in new for tag, value in scalars(r).items()]
    for i in range(0, len(points), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=points[i:i + METRICS_PER_BATCH])
    client.set_tag(run_id, LOGGED_TAG, str(int(new[-1]["epoch"])))
    return len(new)


def log_run(cfg: Config, run_dir: str | Path, history: Sequence[Mapping[str, Any]],
            metrics: Mapping[str, Any] | None = None, *, run_name: str | None = None,
            artifacts: Mapping[str, str | Path] | None = None, log: Callable[[str], None] = print) -> str:
    """Finish the directory's MLflow run (creating it if training did not): the epochs not logged yet, the
    test metrics at the last epoch, and ``artifacts`` (artifact path -> file or directory; missing ones are
    skipped); returns the MLflow run id."""
    from mlflow.entities import Metric, RunTag

    run_dir = Path(run_dir).expanduser().resolve()
    client, uri = _client(cfg, run_dir)
    run_id = _find_or_create(client, cfg, run_dir, run_name)
    try:
        log_epochs(cfg, run_dir, history)
        now = int(time.time() * 1000)
        last = int(history[-1]["epoch"]) if history else 0
        points = [Metric(metric_key(tag), value, now, last) for tag, value in final_metrics(metrics or {}).items()]
        for i in range(0, len(points), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=points[i:i + METRICS_PER_BATCH])
        if metrics and metrics.get("dataset"):
            client.log_batch(run_id, tags=[RunTag("raygr.dataset", str(metrics["dataset"]))])
        for name, path in (artifacts or {}).items():
            path = Path(path)
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                parent = str(Path(name).parent) if str(Path(name).parent) != "." else None
                client.log_artifact(run_id, str(path), artifact_path=parent)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    log(f"tracking: MLflow run {run_id} in {uri} (experiment {cfg.train.mlflow_experiment!r})")
    return run_id
