"""Ray Train: the Ray-free ``fit`` on N DDP workers fed by Ray Data, checkpointed each epoch, resumable.

    with ray_session():                                   # raygr.distributed.session
        metrics = run_training(cfg, "datasets/synthetic", "runs/joint")

Each worker builds the model from the config, then either initialises it (k-means or the tiger
tokenizer stage, same seed everywhere; DDP also broadcasts rank 0's weights) or loads the latest
checkpoint; wraps it in DDP (gloo on CPU, nccl on GPU); runs ``fit`` over its Ray Data shard;
validates 1/world of the users per epoch and all-gathers the ranks; checkpoints and reports every
epoch (``ray.train.report`` is a barrier: every worker reports once per epoch, only rank 0 with a
checkpoint).

The driver checks every input before Ray does any work, runs the ``TorchTrainer`` under a
``RunConfig`` whose name and storage come from the run directory (so re-running the same command
resumes from the latest checkpoint), and has a controller-side callback publish
``RUN_DIR/checkpoints/{latest,best}`` as each epoch is reported. At the end it evaluates the best
checkpoint on the test split in a Ray task and writes metrics.json, the learning curve and a table.

Multi-node: the run directory (Ray's ``storage_path`` lives in it) and the dataset directory must be
on storage every node sees (NFS and the like), as Ray Train requires for its checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback

from raygr.config import Config, ConfigError, config_from_dict, config_to_dict, dump_config, replace
from raygr.data.dataset import (
    check_files,
    length_histogram,
    load_catalogue,
    read_manifest,
    verify_checksums,
)
from raygr.data.streaming import EvalSource, eval_selection, user_lengths
from raygr.data.windows import count_train_windows
from raygr.distributed.pipeline import iter_train_batches, training_dataset
from raygr.distributed.session import quiet_env
from raygr.metrics import DEFAULT_KS
from raygr.models.joint import GenerativeRecommender
from raygr.training.checkpoint import (
    BEST,
    CHECKPOINTS,
    LATEST,
    CheckpointError,
    DatasetIdentity,
    check_compatible,
    checkpoint_damage,
    keep_run_horizon,
    latest_checkpoint,
    load_model_state,
    load_trainer_state,
    prepare_run_dir,
    publish,
    publish_run_config,
    read_checkpoint,
    resumable_checkpoint,
    save_checkpoint,
)
from raygr.training.factory import build_model, resolve_sid_rec_weight
from raygr.training.loop import (
    TARGET_METRIC,
    TrainContext,
    TrainState,
    evaluation_ranks,
    fit,
    initialise,
    merge_ranks,
    selection_score,
    summarise,
)
from raygr.training.mlflow_tracking import log_epochs as log_mlflow_epochs
from raygr.training.mlflow_tracking import log_run as log_mlflow_run
from raygr.training.mlflow_tracking import require_mlflow
from raygr.training.mlflow_tracking import start_run as start_mlflow_run
from raygr.training.report import (
    evaluate_checkpoint_streamed,
    hardware,
    plot_learning_curve,
    results_table,
    run_metrics,
    write_metrics,
)
from raygr.training.tracking import TB_DIR, write_tensorboard
from raygr.training.warm_start import resolve_warm_start

RUN_NAME = "train"  # Ray Train run name inside RUN_DIR/ray: fixed, so a re-run finds its state
# The attribute Ray keeps the best checkpoint by (and Tune's ASHA compares): the validation NDCG@10 that
# train.select_by names, the same number the run's own early stopping reads (selection_score).
SCORE = "valid_score"
CACHE_FRACTION = 0.2  # training windows up to this share of the object store are materialised once ...
# ... and up to this size: materialised, a worker maps the store pages of its half of the windows (its RSS
# grew by 330 MiB at 20M interactions, docs/results.md "Scale"), and streaming was faster there anyway.
CACHE_MAX_BYTES = 256 << 20
# Streamed windows Ray Data may hold in the object store at once while it feeds the workers
# (train.ingest_store_mib). Unbounded it kept ~640 MiB in flight at 20M interactions, and each worker's
# RSS counted the store pages it had read (+330 MiB).
FAULT_ENV = "RAYGR_TEST_INJECT_FAILURE"  # tests: "epoch=2,rank=1" raises once, mid-epoch, on that worker


@dataclass(frozen=True)
class FaultSpec:
    """Fail once (a marker file remembers) after the first batch of ``epoch`` on worker ``rank``."""

    epoch: int
    rank: int
    marker: str

    @classmethod
    def from_env(cls, run_dir: Path) -> FaultSpec | None:
        text = os.environ.get(FAULT_ENV)
        if not text:
            return None
        try:
            kv = dict(part.split("=", 1) for part in text.split(","))
            return cls(int(kv["epoch"]), int(kv["rank"]), str(run_dir / ".injected-failure"))
        except (KeyError, ValueError):
            raise ConfigError(f"{FAULT_ENV}={text!r} must look like epoch=2,rank=1") from None

    def maybe_fail(self, epoch: int, rank: int) -> None:
        if epoch == self.epoch and rank == self.rank and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError(f"injected failure in epoch {epoch} on worker {rank} ({FAULT_ENV})")


# -- on every worker --------------------------------------------------------------------------------

def train_loop_per_worker(job: dict[str, Any]) -> None:
    """The body of every Ray Train worker; ``job`` is the ``train_loop_config`` of ``build_trainer``."""
    cfg = config_from_dict(job["config"])
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    log = _logger(rank)
    # Ray Train logs every report at INFO through a logger outside ``ray.train`` (so RunConfig's
    # logging_config misses it) that propagates to the root logger: progress goes through print.
    logging.getLogger().setLevel(logging.WARNING)
    # Ray gives the actor `cpus_per_worker` CPUs; without this torch would start one thread per core
    # in every worker and N workers would fight over the same cores.
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")

    # The item table only (catalogue-sized): this worker's training windows are its Ray Data shard, its
    # validation users are read a chunk at a time, and the window count comes from the manifest.
    dataset = load_catalogue(job["dataset_dir"])
    identity = DatasetIdentity.from_manifest(dataset.manifest)
    n_windows = int(job["train_windows"])
    # train.batch_size is the global batch (as in train_local), so a run means the same on 1 or N workers.
    batch_size = math.ceil(cfg.train.batch_size / world)
    steps_per_epoch = max(1, math.ceil((n_windows // world) / batch_size))

    model = build_model(cfg, dataset).to(device)
    ctx, state, run = _start_or_resume(model, cfg, dataset.manifest, steps_per_epoch, device, rank, world, log,
                                       job.get("resume_dir"))
    shard = ray.train.get_dataset_shard("train")
    fault = FaultSpec(**job["fault"]) if job.get("fault") else None
    wait = InputTimer()

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        # Seeded per (seed, epoch, rank): workers draw different negatives/dropout, and a resumed
        # epoch starts torch's RNG where its first attempt did.
        torch.manual_seed(cfg.train.seed * 1_000_003 + epoch * 1009 + rank)
        it = iter_train_batches(shard, batch_size, device, shuffle_buffer=max(8 * batch_size, 2048),
                                seed=cfg.train.seed * 1009 + epoch * 31 + rank)
        for i, batch in enumerate(wait.timed(it)):
            if fault is not None and i == 1:
                fault.maybe_fail(epoch + 1, rank)
            yield batch

    # The users eval_split would validate (all, or data.num_eval_users of them), every world-th to this
    # worker; re-read from the shards each epoch unless they fit in one chunk.
    selected = eval_selection(user_lengths(dataset.root, dataset.manifest), "valid", cfg.data.num_eval_users,
                              cfg.train.seed)
    mine = EvalSource(dataset.root, dataset.manifest, "valid", cfg.data.max_history, selected[rank::world])

    def evaluate_fn() -> dict[str, Any]:
        local = merge_ranks([evaluation_ranks(ctx.core, chunk, cfg, device) for chunk in mine])
        return summarise(gather_ranks(local, world), len(selected) * max(DEFAULT_KS))

    def on_epoch_end(st: TrainState, record: dict[str, Any], is_best: bool) -> None:
        run["input_wait_s"] = [*run.get("input_wait_s", [])[: st.epoch - 1], wait.take()]
        metrics = {"epoch": st.epoch, "step": st.step, "loss": record["train"].get("loss", 0.0),
                   SCORE: selection_score(record["valid"], cfg.train.select_by),
                   f"valid_{TARGET_METRIC}": record["valid"][TARGET_METRIC],
                   "valid_recall@10": record["valid"]["recall@10"],
                   **({f"valid_retrieval_{TARGET_METRIC}": record["valid"]["retrieval_only"][TARGET_METRIC]}
                      if "retrieval_only" in record["valid"] else {}),
                   "is_best": is_best, "best_epoch": st.best_epoch, "stopped_early": st.stopped_early,
                   "samples_per_s": record["samples_per_s"], "input_wait_s": run["input_wait_s"][-1]}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)  # a barrier: every worker reports each epoch
            return
        with tempfile.TemporaryDirectory(prefix="raygr-ckpt-") as tmp:
            save_checkpoint(tmp, ctx, st, identity, extra=run)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"epoch-{st.epoch:04d}")

    fit(ctx, batches, None, state=state, evaluate_fn=evaluate_fn, on_epoch_end=on_epoch_end, log=log)


def _start_or_resume(model: torch.nn.Module, cfg: Config, manifest: dict[str, Any], steps_per_epoch: int,
                     device: torch.device, rank: int, world: int, log: Callable[[str], None],
                     resume_dir: str | None = None) -> tuple[TrainContext, TrainState, dict[str, Any]]:
    """Initialise a new run, or restore the latest checkpoint Ray hands this worker group (after a
    failure in this run), else RUN_DIR/checkpoints/latest as it was when the run started (``resume_dir``).

    Returns the context, the TrainState, and the run record that rides in each checkpoint's meta
    (epochs it resumed at, per-epoch input wait, hardware).
    """
    hw = hardware(world, cfg.train.use_gpu)
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as path:
            problem = checkpoint_damage(path)
        if problem is not None:  # e.g. a truncated file in Ray's storage
            if resume_dir is None:
                raise CheckpointError(f"cannot resume: {problem}")
            log(f"the checkpoint Ray handed over is damaged ({problem}); resuming from {resume_dir} instead")
            resume = None
    if resume is None and resume_dir is not None:
        resume = Checkpoint.from_directory(resume_dir)
    if resume is None:
        initialise(model, cfg, log)
        ctx = _context(model, cfg, steps_per_epoch, device, rank, world)
        return ctx, TrainState(), {"resumed_at": [], "input_wait_s": [], "hardware": hw}
    with resume.as_directory() as path:
        info = read_checkpoint(path)
        check_compatible(info, cfg, manifest)  # the driver checked too; Ray's storage may hold others
        load_model_state(path, model, device)  # before DDP, which broadcasts rank 0's weights
        ctx = _context(model, cfg, steps_per_epoch, device, rank, world)
        state = load_trainer_state(path, ctx)
    run = dict(info.meta.get("run", {}))
    run.update(resumed_at=[*run.get("resumed_at", []), state.epoch], hardware=hw)
    log(f"resumed from the checkpoint of epoch {state.epoch} (step {state.step})")
    return ctx, state, run


def _logger(rank: int) -> Callable[[str], None]:
    """Rank 0 speaks for the group (one line per event on the driver); flushed, as worker stdout is a pipe."""
    if rank != 0:
        return lambda _msg: None
    return lambda msg: print(msg, flush=True)


def _context(model: torch.nn.Module, cfg: Config, steps_per_epoch: int, device: torch.device, rank: int,
             world: int) -> TrainContext:
    """Wrap in DDP (after initialise/restore, so every replica starts from the same weights)."""
    wrapped = model
    if world > 1:
        # The generative model leaves some parameters without a gradient in some steps (SDUD noise
        # scale, the ranker at weight 0, dense/ID inputs), hence find_unused_parameters; SASRec uses
        # all of its parameters every step and would only pay for the extra graph traversal.
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=isinstance(model, GenerativeRecommender))
    return TrainContext.create(wrapped, cfg, steps_per_epoch, core=model, device=device, verbose=rank == 0)


def gather_ranks(local: dict[str, np.ndarray], world: int) -> dict[str, np.ndarray]:
    """All workers' evaluation ranks (``merge_ranks`` of every worker's)."""
    if world == 1 or not dist.is_initialized():
        return local
    parts: list[dict[str, np.ndarray]] = [{} for _ in range(world)]
    dist.all_gather_object(parts, local)
    return merge_ranks(parts)


class InputTimer:
    """Seconds spent blocked waiting for the next batch (the input pipeline's share of an epoch)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, it: Iterable[Any]) -> Iterator[Any]:
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - t0
                return
            self.seconds += time.perf_counter() - t0
            yield item

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


# -- on the controller (the driver's node) ----------------------------------------------------------

class PublishCheckpoints(UserCallback):
    """Copies each reported checkpoint to RUN_DIR/checkpoints/latest (and best, when it is the best)."""

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        with checkpoint.as_directory() as path:
            publish(path, self.run_dir / CHECKPOINTS / LATEST)
            publish_run_config(path, self.run_dir)  # with the horizon the workers resolved
            if metrics and metrics[0].get("is_best"):
                publish(path, self.run_dir / CHECKPOINTS / BEST)


class LiveTracking(UserCallback):
    """After each epoch's checkpoint: the run's TensorBoard event files (RUN_DIR/tensorboard) rewritten with
    the whole history so far, and with train.tracking=mlflow the new epoch logged to the directory's MLflow
    run, so both show a run while it trains. A tracking error is logged and never stops the training."""

    def __init__(self, config: dict[str, Any], run_dir: str, title: str):
        self.config, self.run_dir, self.title = config, Path(run_dir), title

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        try:
            with checkpoint.as_directory() as path:
                history = read_checkpoint(path).train_state().history
            write_tensorboard(history, self.run_dir / TB_DIR, title=self.title, log=print)
            cfg = config_from_dict(self.config)
            if cfg.train.tracking == "mlflow":
                log_mlflow_epochs(cfg, self.run_dir, history)
        except Exception as e:  # noqa: BLE001 -- tracking must not cost the run
            print(f"tracking: could not log epoch {metrics[0].get('epoch') if metrics else '?'} live: "
                  f"{type(e).__name__}: {e}")


# -- on the driver ----------------------------------------------------------------------------------

def train_windows(cfg: Config, dataset_dir: Path, manifest: dict[str, Any]) -> int:
    """Training windows of the dataset at ``data.max_history``, from the manifest's length histogram
    (counted from the shards, with a log line, for a dataset prepared before raygr stored it)."""
    return count_train_windows(length_histogram(dataset_dir, manifest), cfg.data.max_history)


def windows_fit_in_store(cfg: Config, n_windows: int) -> bool:
    """Whether the windows (int64 input + target, [n, T] each) take at most CACHE_FRACTION of the object store
    and at most CACHE_MAX_BYTES."""
    store = ray.available_resources().get("object_store_memory", 0)
    return 16 * n_windows * cfg.data.max_history < min(CACHE_FRACTION * store, CACHE_MAX_BYTES)


def training_input(cfg: Config, dataset_dir: Path, n_windows: int) -> ray.data.Dataset:
    """The Ray Data windows; cached in the object store when they take a small part of it.

    Streamed, the read + window pipeline re-runs every epoch, which costs seconds of start-up per
    epoch; a small dataset is cheaper to compute once. A large one keeps streaming (bounded memory).
    Either way each worker iterates only its own shard of the windows.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.print_on_execution_start = False  # one "execution plan" block per epoch is noise for a person
    ds = training_dataset(dataset_dir, cfg.data.max_history)
    return ds.materialize() if windows_fit_in_store(cfg, n_windows) else ds


def ingest_options(cfg: Config) -> ray.data.ExecutionOptions:
    """Ray Train's default ingest options (those of the current DataContext) with the object store share of
    the windows bounded by train.ingest_store_mib (built here: Ray's own helper passes a deprecated option
    and warns each run)."""
    current = ray.data.DataContext.get_current().execution_options
    return ray.data.ExecutionOptions(
        resource_limits=current.resource_limits.copy(object_store_memory=cfg.train.ingest_store_mib << 20),
        preserve_order=current.preserve_order, verbose_progress=current.verbose_progress)


class Trainer(TorchTrainer):
    """A TorchTrainer that leaves SIGINT to the command (``ray_session``: Ray stopped wholly, exit 130).

    Ray Train's own handler aborted the run, then exited with status 1 and no message, and took Ctrl-C
    away from the command for the rest of its life. A run stopped either way resumes from its latest
    checkpoint. (Ray registers it only in the main thread; Tune's trials never had it.)
    """

    def _register_sigint_handler(self, controller: Any) -> None:
        return None


def resume_candidates(run_dir: Path) -> list[Path]:
    """Where a re-run may resume from, newest first: RUN_DIR/checkpoints/latest, the checkpoints Ray Train
    keeps in RUN_DIR/ray (the latest and the best, by epoch), RUN_DIR/checkpoints/best."""
    kept = sorted((run_dir / "ray" / RUN_NAME).glob("epoch-*"), key=lambda p: p.name, reverse=True)
    return [run_dir / CHECKPOINTS / LATEST, *kept, run_dir / CHECKPOINTS / BEST]


def build_trainer(cfg: Config, dataset_dir: Path, run_dir: Path, manifest: dict[str, Any],
                  fault: FaultSpec | None = None, *, callbacks: Iterable[UserCallback] = (),
                  gpus_per_worker: float | None = None, log: Callable[[str], None] = print) -> Trainer:
    """``callbacks`` join PublishCheckpoints (Tune adds its reporter); ``gpus_per_worker`` lets Tune
    trials share a GPU (default: one GPU per worker when train.use_gpu)."""
    t = cfg.train
    # RUN_DIR/checkpoints/latest (or the newest whole checkpoint, when it is damaged) is what a re-run
    # resumes from. Ray's own record (RUN_DIR/ray) would do as well, but not for a run directory that was
    # copied or moved or lost ray/: without this, such a run would start again from epoch 1. (Ray 2.60
    # rejects TorchTrainer(resume_from_checkpoint=...).)
    resume = resumable_checkpoint(resume_candidates(run_dir), log)
    n_windows = train_windows(cfg, dataset_dir, manifest)
    job = {"config": config_to_dict(cfg), "dataset_dir": str(dataset_dir), "train_windows": n_windows,
           "fault": None if fault is None else fault.__dict__,
           "resume_dir": str(resume.path) if resume is not None else None}
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu and gpus_per_worker is not None:
        resources["GPU"] = gpus_per_worker
    return Trainer(
        train_loop_per_worker,
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker=resources, placement_strategy=t.placement_strategy),
        datasets={"train": training_input(cfg, dataset_dir, n_windows)},
        dataset_config=DataConfig(execution_options={"train": ingest_options(cfg)}),
        run_config=RunConfig(
            name=RUN_NAME, storage_path=str(run_dir / "ray"),
            # num_to_keep=1 + a score: Ray keeps the best and, always, the latest.
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=t.max_failures),
            callbacks=[PublishCheckpoints(str(run_dir)), *callbacks],
            # Ray Train's own INFO lines (each report, each checkpoint) would drown the progress lines.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def check_resources(cfg: Config) -> None:
    """Fail now, not after a silent wait, when the cluster can never fit the workers."""
    have = ray.cluster_resources()
    t = cfg.train
    need_cpu = t.num_workers * t.cpus_per_worker
    if need_cpu > have.get("CPU", 0):
        raise ConfigError(f"train.num_workers={t.num_workers} x train.cpus_per_worker={t.cpus_per_worker} "
                          f"needs {need_cpu:g} CPUs; the Ray cluster has {have.get('CPU', 0):g}: "
                          "lower train.num_workers or train.cpus_per_worker")
    if t.use_gpu and t.num_workers > have.get("GPU", 0):
        raise ConfigError(f"train.use_gpu=true needs {t.num_workers} GPUs (one per worker); the Ray cluster "
                          f"has {have.get('GPU', 0):g}: set train.use_gpu=false or lower train.num_workers")


def _evaluate_remote(checkpoint: Checkpoint, dataset_dir: str, device: str, threads: int) -> dict[str, Any]:
    torch.set_num_threads(max(1, threads))
    # The test users a chunk at a time: memory is the catalogue and one chunk, whatever the data's size
    # (the whole split in memory took 5.4 GB at 60M interactions).
    with checkpoint.as_directory() as path:
        return evaluate_checkpoint_streamed(path, dataset_dir, device=device)


def evaluate_best(cfg: Config, run_dir: Path, dataset_dir: Path) -> dict[str, Any]:
    """Test metrics of RUN_DIR/checkpoints/best, in a Ray task (on a GPU when training used them)."""
    t = cfg.train
    # The workers are gone: use the CPUs they held, as far as one node has them.
    biggest_node = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=1.0)
    cpus = max(t.cpus_per_worker, min(t.cpus_per_worker * t.num_workers, biggest_node))
    task = ray.remote(_evaluate_remote).options(num_cpus=cpus, num_gpus=1 if t.use_gpu else 0)
    ckpt = Checkpoint.from_directory(str(run_dir / CHECKPOINTS / BEST))
    return ray.get(task.remote(ckpt, str(dataset_dir), "cuda" if t.use_gpu else "cpu", int(cpus)))


def run_training(cfg: Config, dataset_dir: str | Path, run_dir: str | Path, *,
                 log: Callable[[str], None] = print, verify_data: bool = False) -> dict[str, Any]:
    """Train (or resume) into ``run_dir`` on the connected Ray cluster; returns metrics.json's content.

    The dataset's file list, sizes and schemas are checked here (cheap; the workers read the files
    through Ray Data, whose errors would not name the damage); ``verify_data`` also checks every checksum.
    """
    start = time.perf_counter()
    quiet_env()
    require_mlflow(cfg)  # train.tracking=mlflow without MLflow: ConfigError before anything else
    dataset_dir = Path(dataset_dir).expanduser().resolve()
    manifest = read_manifest(dataset_dir)  # DatasetError before anything else happens
    check_files(dataset_dir, manifest)
    if verify_data:
        verify_checksums(dataset_dir, manifest)
    run = prepare_run_dir(run_dir)
    fault = FaultSpec.from_env(run)
    # The newest whole checkpoint; a damaged one is named and skipped, and if every one is damaged this
    # raises rather than start again from epoch 1.
    latest = resumable_checkpoint(resume_candidates(run), log)
    if latest is not None:
        check_compatible(latest, cfg, manifest)
        cfg = keep_run_horizon(cfg, latest)  # another train.epochs must not move the exploration horizon
        if cfg.model.sid_rec_weight_auto:  # the weight the run picked when it started, not a new pick
            cfg = replace(cfg, [f"model.sid_rec_weight={latest.config.model.sid_rec_weight}",
                                "model.sid_rec_weight_auto=false"])
    else:
        cfg = resolve_warm_start(cfg, manifest)
        if cfg.model.sid_rec_weight_auto:  # picked once, here: the run's config.yaml records the weight
            cfg = resolve_sid_rec_weight(cfg, load_catalogue(dataset_dir), log)
    check_resources(cfg)
    dump_config(cfg, run / "config.yaml")

    done = latest is not None and (latest.epoch >= cfg.train.epochs or latest.train_state().stopped_early)
    if done:
        log(f"{run} already finished ({latest.epoch} epochs): evaluating its best checkpoint")
    else:
        t = cfg.train
        log(f"training {cfg.model.preset} on {manifest.get('name')} ({manifest['num_users']:,} users, "
            f"{manifest['num_items']:,} items) with {t.num_workers} {'GPU' if t.use_gpu else 'CPU'} worker(s) "
            f"for {t.epochs} epochs -> {run}"
            + (f" (resuming after epoch {latest.epoch})" if latest is not None else ""))
        title = f"{cfg.model.preset} on {manifest.get('name')}"
        if cfg.train.tracking == "mlflow":
            start_mlflow_run(cfg, run, from_epoch=latest.epoch if latest is not None else 0, log=log)
        live = LiveTracking(config_to_dict(cfg), str(run), title)
        build_trainer(cfg, dataset_dir, run, manifest, fault, callbacks=[live], log=log).fit()

    info = latest_checkpoint(run)
    if info is None:  # e.g. 0 epochs left and nothing was ever saved
        raise RuntimeError(f"training finished without a checkpoint in {run / CHECKPOINTS}")
    state = info.train_state()
    log(f"evaluating the best checkpoint (epoch {state.best_epoch}) on the test split")
    evaluation = evaluate_best(cfg, run, dataset_dir)
    extra = info.meta.get("run", {})
    waits = extra.get("input_wait_s", [])
    train = {
        "wall_s": time.perf_counter() - start,
        "train_s": state.train_seconds,
        "samples_per_s": state.samples * cfg.train.num_workers / max(state.train_seconds, 1e-9),
        "epochs": state.epoch, "best_epoch": state.best_epoch, "stopped_early": state.stopped_early,
        "input_wait_fraction": sum(waits) / max(state.train_seconds, 1e-9) if waits else None,
        "resumed_at": extra.get("resumed_at", []),
        "hardware": extra.get("hardware", {}),
    }
    metrics = run_metrics(evaluation, state.history, preset=cfg.model.preset, dataset=info.dataset.name,
                          train=train, baselines=evaluation["baselines"])
    write_metrics(run / "metrics.json", metrics)
    plot_learning_curve(state.history, run / "learning_curve.png",
                        title=f"{cfg.model.preset} on {info.dataset.name}")
    if cfg.train.tracking == "mlflow":
        best = run / CHECKPOINTS / BEST
        log_mlflow_run(cfg, run, state.history, metrics, log=log, artifacts={
            "model": best if best.is_dir() else run / CHECKPOINTS / LATEST,
            "config.yaml": run / "config.yaml", "metrics.json": run / "metrics.json",
            "learning_curve.png": run / "learning_curve.png"})
    log(results_table(metrics))
    log(f"wrote {run / 'metrics.json'}, {run / 'learning_curve.png'}, checkpoints in {run / CHECKPOINTS}")
    return metrics
