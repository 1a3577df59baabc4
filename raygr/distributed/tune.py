"""Ray Tune: search the Gumbel decay and loss-weight schedules; every trial is a Ray Train run.

    with ray_session():                                   # raygr.distributed.session
        summary = run_tune(cfg, "datasets/synthetic", "runs/tune")

    raygr tune --config jobs/configs/tune_synthetic.yaml --data datasets/synthetic --output runs/tune

Train V2 cannot be handed to a ``Tuner`` directly, so each trial runs ``trial_driver``: a function
trainable that applies its sampled values to the base config and runs the same ``TorchTrainer`` as
``raygr train`` (``build_trainer``), with a callback that forwards each epoch's report (validation
NDCG@10 plus code-health numbers, with the epoch's checkpoint) to Tune. ASHA compares trials on
``valid_score`` (the validation NDCG@10 ``train.select_by`` names) by epoch and stops the weak ones.
A trial that fails (it raised, or its process or node was lost) starts again up to ``tune.max_failures``
times from its latest checkpoint; after that it is recorded and the search goes on.

OUTPUT/
  search.yaml              the resolved base config, the space and the dataset: what a re-run must match
  ray/search/              Tune's experiment state and per-trial results
  trials/<trial id>/       each trial's raygr run directory: config.yaml, checkpoints/{best,latest}
  best_config.yaml         the best trial's config, ready for ``raygr train --config``
  best_checkpoint/         that trial's best checkpoint (``raygr evaluate --checkpoint``)
  trials.csv, summary.json every trial's outcome and numbers; the search's cost
  valid_ndcg10_by_epoch.png, ndcg10_by_strategy.png
  ray/search/trial-<id>/events.out.tfevents.*   each trial's epochs for TensorBoard (Tune's TBXLoggerCallback):
                           ``tensorboard --logdir OUTPUT`` (tune_tracking.py)
  mlruns/                  with train.tracking=mlflow and no train.mlflow_uri: one MLflow run per trial

Re-running the command with the same OUTPUT resumes an interrupted search (finished trials are kept,
unfinished ones continue from their last checkpoint; ``resume_errored`` retries the failed ones);
on a finished search it only rewrites the outputs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
import ray.tune
import yaml
from ray.train import Checkpoint
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raygr.config import Config, ConfigError, config_from_dict, config_to_dict, dump_config
from raygr.data.dataset import check_files, read_manifest
from raygr.distributed.session import quiet_env
from raygr.distributed.train import build_trainer, train_windows, windows_fit_in_store
from raygr.distributed.tune_tracking import tracking_callbacks
from raygr.training.checkpoint import (
    CHECKPOINTS,
    DatasetIdentity,
    latest_checkpoint,
    prepare_run_dir,
    read_checkpoint,
)
from raygr.training.loop import selection_score
from raygr.training.mlflow_tracking import require_mlflow
from raygr.training.tracking import scalars
from raygr.training.warm_start import resolve_warm_start
from raygr.tuning.plan import max_concurrent, trial_resources
from raygr.tuning.report import (
    METRIC,
    SEARCH_FILE,
    UNFINISHED,
    TrialRecord,
    error_line,
    health_metrics,
    outcome,
    prepare_output,
    write_outputs,
)
from raygr.tuning.space import Dimension, apply, as_overrides, resolve_space, space_to_yaml

EXPERIMENT = "search"  # Tune's experiment name under OUTPUT/ray: fixed, so a re-run finds it
TRIALS_DIR = "trials"  # OUTPUT/trials/<trial id>: each trial's raygr run directory (config, checkpoints)
CONTROLLER_KEY = "_raygr_train_controller"  # rides on each report from the Train controller to its trial
ABORT_TIMEOUT_S = 60  # a stopped trial waits this long for its Train run to shut down


# -- inside a trial ---------------------------------------------------------------------------------

class ReportToTune(TuneReportCallback):
    """Forward rank 0's epoch report to Tune, with the epoch's code health read from its checkpoint.

    The Train loop reports the validation metrics; utilisation, collisions and decoding errors are in
    the checkpoint's history, which every report carries, so the loop needs no Tune-specific code.
    Runs in the Train controller, whose handle rides along to the trial (``AbortTrainOnStop``).
    """

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if metrics:
            extra: dict[str, Any] = {CONTROLLER_KEY: ray.get_runtime_context().current_actor}
            if checkpoint is not None:
                with checkpoint.as_directory() as path:
                    history = read_checkpoint(path).meta["train_state"]["history"]
                if history:  # code health for ASHA's table; every number of the epoch for TensorBoard, MLflow
                    extra.update({**scalars(history[-1]), **health_metrics(history[-1])})
            metrics = [{**metrics[0], **extra}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


class _TrialRun:
    """The trial process's view of its Train run (one trial per process: Tune does not reuse actors here)."""

    controller: Any = None  # the TrainController's handle, from the first report
    stopping = threading.Event()  # Tune is stopping this trial: fit() raising is then expected
    finished = threading.Event()  # fit() returned or raised on its own: nothing to abort


class AbortTrainOnStop:
    """Mixed into the trial's Trainable: when Tune stops a trial (ASHA, Ctrl-C), abort its Train run first.

    Otherwise Tune ends the trial's process, Ray ends the Train controller and workers with it, and the
    workers' placement group -- owned by the job, not the trial -- waits for Ray Train's cleaner, which
    needs the state API (absent without a dashboard or with two Ray instances on a host): its CPUs stay
    reserved until the search ends, and a long search starves. An abort shuts the worker group down.
    """

    def step(self) -> dict[str, Any]:
        metrics = super().step()  # type: ignore[misc]
        handle = metrics.pop(CONTROLLER_KEY, None)  # a handle is not a metric: Tune never sees it
        if handle is not None:
            _TrialRun.controller = handle
        return metrics

    def cleanup(self) -> None:
        if _TrialRun.controller is not None and not _TrialRun.finished.is_set():
            _TrialRun.stopping.set()
            try:
                ray.get(_TrialRun.controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass  # abort() ends the controller's process, so the call itself reports it as dead
        super().cleanup()  # type: ignore[misc]


def trial_driver(assignment: dict[str, Any], *, base: dict[str, Any], dataset_dir: str, trials_dir: str,
                 gpus_per_worker: float | None) -> None:
    """One trial: the base config with this trial's sampled values, trained by Ray Train into TRIALS/<trial id>.

    A combination the config rejects (e.g. model.dim not divisible by model.num_heads) raises here:
    Tune restarts a failed trial (tune.max_failures) and records it as failed after that; the search goes
    on. A restarted or restored trial (a new process, maybe on another node) resumes its Train run from
    TRIALS/<trial id>/checkpoints (``build_trainer``), the checkpoint it last reported to Tune.
    """
    quiet_env()
    cfg = apply(config_from_dict(base), assignment)
    # Not Tune's trial dir: that is a staging folder of this Ray session, synced to storage when the trial
    # stops, so a resumed search (a new session) would not find the Train run's checkpoints there.
    run = prepare_run_dir(Path(trials_dir) / ray.tune.get_context().get_trial_id())
    dump_config(cfg, run / "config.yaml")
    trainer = build_trainer(cfg, Path(dataset_dir), run, read_manifest(dataset_dir), callbacks=[ReportToTune()],
                            gpus_per_worker=gpus_per_worker)
    try:
        trainer.fit()  # TrainingFailedError after train.max_failures retries: this trial errors
    except Exception:
        if not _TrialRun.stopping.is_set():
            raise
        # Tune stopped the trial and AbortTrainOnStop aborted its run: not a failure.
    finally:
        _TrialRun.finished.set()


trial_driver.__mixins__ = (AbortTrainOnStop,)  # type: ignore[attr-defined]  # Tune mixes it into the Trainable


def _print_line(msg: str) -> None:
    print(msg, flush=True)


class Progress(ray.tune.Callback):
    """One line per trial event on the driver, instead of Tune's full-width status tables."""

    def __init__(self, log: Callable[[str], None] = _print_line):
        self.log = log

    # Tune pickles its callbacks into the experiment state (for a restore); the log function is this
    # process's business and may not pickle (a patched builtins.print does not), so a restored one prints.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.log = _print_line

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log(f"trial {trial.trial_id} started: {' '.join(as_overrides(trial.config))}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if METRIC in result:
            self.log(f"trial {trial.trial_id} epoch {result.get('epoch')}: {METRIC} {result[METRIC]:.4f}"
                     + (f" | code util {result['code_util_mean']:.2f}" if "code_util_mean" in result else "")
                     + (f" | collisions {result['collision_rate']:.3f}" if "collision_rate" in result else ""))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log(f"trial {trial.trial_id} ended after epoch {trial.last_result.get('epoch', 0)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get("epoch")
        self.log(f"trial {trial.trial_id} failed (its process or node was lost, or its run failed); restarting it "
                 f"(retry {trial.num_failures} of {_limit(trial.max_failures)})"
                 + (f" from its checkpoint of epoch {epoch}" if epoch else ""))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            why = error_line(Path(trial.error_file).read_text())
        except (OSError, TypeError):
            why = "see the trial's error.txt"
        self.log(f"trial {trial.trial_id} failed (recorded; the search goes on): {why}")


def _limit(max_failures: int) -> str:
    return "no limit" if max_failures < 0 else str(max_failures)


def trial_dirname(trial: Any) -> str:
    # Tune's default name lists every sampled value: too long for a 16-key space.
    return f"trial-{trial.trial_id}"


# -- on the driver ----------------------------------------------------------------------------------

def param_space(dims: tuple[Dimension, ...]) -> dict[str, Any]:
    """Neutral dimensions -> Tune domains, keyed by the dotted config key."""
    make: dict[str, Callable[[tuple[Any, ...]], Any]] = {
        "choice": lambda v: ray.tune.choice(list(v)),
        "grid": lambda v: ray.tune.grid_search(list(v)),
        "uniform": lambda v: ray.tune.uniform(*v),
        "loguniform": lambda v: ray.tune.loguniform(*v),
        "randint": lambda v: ray.tune.randint(*v),
    }
    return {d.key: make[d.kind](d.values) for d in dims}


def total_steps(cfg: Config, dataset_dir: Path, manifest: dict[str, Any]) -> int:
    """Optimisation steps of one trial at the base batch size (sizes the default horizon choices), counted
    from the manifest: no sequence is read."""
    return math.ceil(train_windows(cfg, dataset_dir, manifest) / cfg.train.batch_size) * cfg.train.epochs


def streams(cfg: Config, dataset_dir: Path, manifest: dict[str, Any]) -> bool:
    """Whether ``training_input`` (train.py) will stream the windows rather than materialise them: same rule."""
    return not windows_fit_in_store(cfg, train_windows(cfg, dataset_dir, manifest))


def search_identity(cfg: Config, dims: tuple[Dimension, ...], manifest: dict[str, Any]) -> dict[str, Any]:
    ident = DatasetIdentity.from_manifest(manifest)
    return {"config": config_to_dict(cfg), "space": space_to_yaml(dims),
            "dataset": {"name": ident.name, "fingerprint": ident.fingerprint}}


def check_same_search(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """A search is resumed only with what started it: Tune keeps the old space and trials regardless."""
    diff = _first_difference(saved, now)
    if diff is not None:
        key, was, is_ = diff
        key = key.removeprefix("config.")
        raise ConfigError(f"{out} holds a search started with {key}={was!r}, but this command has {key}={is_!r}; "
                          "re-run with the same config, --set, --num-samples and --data to resume it, "
                          "or choose a new --output")


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d is not None:
                return d
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def with_trial_gpus(cfg: Config) -> Config:
    """tune.gpus_per_trial > 0 means the trials train on GPU."""
    if cfg.tune.gpus_per_trial > 0 and not cfg.train.use_gpu:
        return apply(cfg, {"train.use_gpu": True})
    return cfg


def build_tuner(cfg: Config, dims: tuple[Dimension, ...], dataset_dir: Path, out: Path, concurrency: int,
                *, restore: bool, resume_errored: bool, log: Callable[[str], None] = print) -> ray.tune.Tuner:
    res = trial_resources(cfg)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial_driver, base=config_to_dict(cfg), dataset_dir=str(dataset_dir),
                                 trials_dir=str(out / TRIALS_DIR),
                                 gpus_per_worker=res.gpus_per_worker if cfg.train.use_gpu else None),
        {"cpu": res.driver_cpus})  # the workers get their own placement group from Ray Train
    exp_dir = out / "ray" / EXPERIMENT
    if restore:
        return ray.tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=resume_errored)
    t = cfg.tune
    scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs,
                              grace_period=min(t.grace_period, cfg.train.epochs), reduction_factor=t.reduction_factor)
    return ray.tune.Tuner(
        trainable,
        param_space=param_space(dims),
        tune_config=ray.tune.TuneConfig(
            metric=METRIC, mode="max", scheduler=scheduler, num_samples=t.num_samples,
            trial_dirname_creator=trial_dirname,
            # Seeded: the same command samples the same trials. The concurrency goes here: Tune ignores
            # max_concurrent_trials when it is handed a BasicVariantGenerator.
            search_alg=BasicVariantGenerator(max_concurrent=concurrency, random_state=cfg.train.seed)),
        run_config=ray.tune.RunConfig(
            name=EXPERIMENT, storage_path=str(out / "ray"),
            # A trial that fails (its node lost, its driver killed, its Train run out of train.max_failures)
            # starts again up to tune.max_failures times, in a new process that resumes the trial's Train run
            # from TRIALS/<trial id>/checkpoints (trial_driver); then it is recorded and the search goes on.
            failure_config=ray.tune.FailureConfig(max_failures=t.max_failures),
            verbose=0, callbacks=[Progress(log), *tracking_callbacks(cfg, out)]),
    )


def collect(results: ray.tune.ResultGrid, out: Path, max_epochs: int, select_by: str) -> list[TrialRecord]:
    """One record per trial, from Tune's results and state and from each trial's own Train run."""
    # Tune's Result lacks the status, and a restored trial that never reported lacks its config too.
    trials = {t.trial_id: t for t in ray.tune.ExperimentAnalysis(str(out / "ray" / EXPERIMENT)).trials}
    records = []
    for r in results:
        trial_id = Path(r.path).name.removeprefix("trial-")
        run = out / TRIALS_DIR / trial_id
        trial = trials.get(trial_id)
        last = dict(r.metrics or {})
        # The curve comes from the run's own history (what checkpoints/best was chosen from): Tune misses
        # the epochs a run trained after an interrupted search stopped listening, before it resumed.
        info = latest_checkpoint(run) if (run / CHECKPOINTS).is_dir() else None
        history = info.meta["train_state"]["history"] if info is not None else []
        curve = [(int(h["epoch"]), selection_score(h["valid"], select_by)) for h in history]
        if history:
            last.update(health_metrics(history[-1]))
        stopped_early = bool(info.meta["train_state"]["stopped_early"]) if info is not None else False
        status = trial.status if trial is not None else "TERMINATED"
        if status in ("TERMINATED", "ERROR"):
            state = outcome(r.error is not None, len(curve), max_epochs, stopped_early)
        else:  # interrupted before it finished: a re-run continues it
            state = UNFINISHED
        records.append(TrialRecord(
            trial_id=trial_id, assignment=dict(r.config or (trial.config if trial is not None else {})),
            status=state, curve=curve, last=last, error=_error_of(r.error),
            wall_s=float(last.get("time_total_s", 0.0)), path=str(run)))
    return records


def _error_of(error: BaseException | None) -> str | None:
    return None if error is None else error_line(str(getattr(error, "cause", None) or error))


def run_tune(cfg: Config, dataset_dir: str | Path, output: str | Path, *, resume_errored: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search (or resume a search) on the connected Ray cluster; returns summary.json's content."""
    start = time.perf_counter()
    quiet_env()
    require_mlflow(cfg)  # train.tracking=mlflow without MLflow: ConfigError before any trial
    dataset_dir = Path(dataset_dir).expanduser().resolve()
    manifest = read_manifest(dataset_dir)  # DatasetError before anything else happens
    check_files(dataset_dir, manifest)
    cfg = with_trial_gpus(resolve_warm_start(cfg, manifest))
    # The space and the resources are checked before any trial starts: a typo costs a second.
    steps = total_steps(cfg, dataset_dir, manifest) if not cfg.tune.space else 0
    dims = resolve_space(cfg, steps)
    concurrency = max_concurrent(cfg, ray.cluster_resources(),
                                 data_cpus=1.0 if streams(cfg, dataset_dir, manifest) else 0.0)
    out = prepare_output(output)
    exp_dir = out / "ray" / EXPERIMENT
    identity = search_identity(cfg, dims, manifest)
    restore = ray.tune.Tuner.can_restore(str(exp_dir))
    if restore:
        check_same_search(yaml.safe_load((out / SEARCH_FILE).read_text()), identity, out)
        log(f"resuming the search in {exp_dir}" + (" (retrying failed trials)" if resume_errored else ""))
    else:
        (out / SEARCH_FILE).write_text(yaml.safe_dump(identity, sort_keys=False))
        res = trial_resources(cfg)
        log(f"searching {len(dims)} keys with {cfg.tune.num_samples} sample(s) on {manifest.get('name')}: "
            f"{concurrency} trial(s) at a time, each {res.cpus:g} CPU(s)"
            + (f" + {res.gpus:g} GPU(s)" if res.gpus else "")
            + f", up to {cfg.train.epochs} epochs; ASHA grace {cfg.tune.grace_period}, "
            f"reduction {cfg.tune.reduction_factor} -> {out}")
    results = build_tuner(cfg, dims, dataset_dir, out, concurrency, restore=restore,
                          resume_errored=resume_errored, log=log).fit()
    records = collect(results, out, cfg.train.epochs, cfg.train.select_by)
    extra = {"wall_s": time.perf_counter() - start, "concurrency": concurrency,
             "trial_resources": {"cpus": trial_resources(cfg).cpus, "gpus": trial_resources(cfg).gpus},
             "epochs_trained": sum(r.epochs for r in records), "max_epochs": cfg.train.epochs,
             "base_values": {d.key: _dotted(config_to_dict(cfg), d.key) for d in dims}}
    return write_outputs(records, cfg, dims, dataset_dir, out, extra, log)


def _dotted(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d
