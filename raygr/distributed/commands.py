"""The Ray-backed subcommands: ``raygr train`` (Tune, Serve and the demo add theirs beside it).

    raygr train --data datasets/synthetic --output runs/joint                    # local Ray, joint defaults
    raygr train --config jobs/configs/synthetic_joint.yaml --data datasets/synthetic --output runs/joint \\
        --set train.num_workers=2 --set train.epochs=5
    raygr train ... --address auto         # or RAY_ADDRESS=HOST:6379: join a running cluster from a node of it

Re-running a command with the same --output resumes from its latest checkpoint (or, when it had
finished, re-evaluates its best one). One ``add_<name>`` + one ``<name>_command`` per subcommand;
``jobs/<name>.py`` reuses both, so ``ray job submit -- python jobs/train.py ...`` and ``raygr train``
run the same code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raygr.config import ConfigError


def add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray in this process)")


def add_verify_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-data", action="store_true",
                   help="check every byte of the dataset against its checksums before starting (the file list, "
                        "sizes and Parquet footers are always checked)")


def check_inputs(cfg: Any, data: str | Path, output: str | Path, *, kind: str = "run",
                 verify: bool = False) -> dict[str, Any]:
    """Check what needs no Ray before Ray starts (a local Ray takes 5-50 s to start, a cluster longer):
    the dataset (manifest, files, sizes, schemas; checksums with ``verify``), the output directory (a new or
    empty one, or one of ours of this ``kind``: "run" or "search"), the checkpoint a run would resume
    from, and ``train.init_from``. Returns the dataset's manifest."""
    from raygr.data.dataset import check_files, read_manifest, verify_checksums
    from raygr.training.checkpoint import check_compatible, latest_checkpoint, prepare_run_dir

    root = Path(data).expanduser().resolve()
    manifest = read_manifest(root)
    check_files(root, manifest)
    if verify:
        verify_checksums(root, manifest)
    latest = None
    if kind == "run":
        latest = latest_checkpoint(prepare_run_dir(output))
        if latest is not None:
            check_compatible(latest, cfg, manifest)
    else:
        from raygr.tuning.report import prepare_output

        prepare_output(output)
    if latest is None and cfg.train.init_from:
        from raygr.training.warm_start import check_warm_start  # imports torch: only when it is needed

        check_warm_start(cfg, manifest)
    return manifest


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config (default: the joint preset's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. train.epochs=5 (repeatable; applied after --config)")


# -- train ------------------------------------------------------------------------------------------

TRAIN_DESCRIPTION = """Train (or resume) a model with Ray Train, fed by Ray Data; writes a run directory.

    raygr train --data datasets/synthetic --output runs/joint                    # local Ray, joint defaults
    raygr train --config jobs/configs/beauty_joint.yaml --data datasets/beauty --output runs/beauty-joint \\
        --set train.num_workers=2 --set train.epochs=5
    raygr train ... --address auto      # or RAY_ADDRESS: join a running cluster (ray job submit sets it)

Re-running the same command resumes from the run directory's latest checkpoint (or, when the run had
finished, re-evaluates its best checkpoint). Writes config.yaml, checkpoints/{best,latest},
metrics.json and learning_curve.png into --output."""

def add_train_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--data", default=None, help="prepared dataset directory (default: data.path of the config)")
    p.add_argument("--output", required=True,
                   help="run directory: config.yaml, checkpoints/{best,latest}, metrics.json (re-use to resume). "
                        "Only a new or empty directory, or a raygr run, is accepted: raygr never writes over "
                        "files it did not create")
    add_verify_arg(p)
    add_session_args(p)


def train_command(args: argparse.Namespace) -> int:
    from raygr.config import ConfigError, load_config

    cfg = load_config(args.config, args.set)  # ConfigError before Ray starts
    data = args.data or cfg.data.path
    if not data:
        raise ConfigError("no dataset: pass --data DIR or set data.path in the config")
    check_inputs(cfg, data, args.output, verify=args.verify_data)

    from raygr.distributed.session import ray_session

    with ray_session(args.address) as where:
        from raygr.distributed.train import run_training

        print(f"raygr train: {where}", flush=True)
        run_training(cfg, data, args.output, log=lambda msg: print(msg, flush=True))
    return 0


def _register(subparsers: argparse._SubParsersAction, name: str, help: str, description: str,
              add_args: Callable[[argparse.ArgumentParser], None],
              command: Callable[[argparse.Namespace], int]) -> None:
    p = subparsers.add_parser(name, help=help, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    p.set_defaults(func=command)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    _register(subparsers, "train", "train (or resume) a model with Ray Train; writes a run directory",
              TRAIN_DESCRIPTION, add_train_args, train_command)


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    from raygr.distributed.serve_cli import DESCRIPTION, add_serve_args, serve_command

    _register(subparsers, "serve",
              "serve a checkpoint over HTTP with Ray Serve (retrieve-then-rank, batched, autoscaled)",
              DESCRIPTION, add_serve_args, serve_command)


def add_tune(subparsers: argparse._SubParsersAction) -> None:
    from raygr.distributed.tune_cli import DESCRIPTION, add_tune_args, tune_command

    _register(subparsers, "tune",
              "search the Gumbel decay / loss-weight schedules with Ray Tune (each trial a Train run)",
              DESCRIPTION, add_tune_args, tune_command)


# -- kuberay ----------------------------------------------------------------------------------------

def kuberay_command(args: argparse.Namespace) -> int:
    import shlex

    from raygr.config import load_config
    from raygr.distributed.kuberay import write_manifests

    cfg = load_config(args.config, args.set)
    if args.config and Path(args.config).is_absolute():
        raise ConfigError(f"--config {args.config}: give a path inside this checkout (the image holds it)")
    command = shlex.join(["raygr", "kuberay", "--image", args.image, "--data", args.data, "--run", args.run,
                          *(["--config", args.config] if args.config else []),
                          *[a for o in args.set for a in ("--set", o)], "--name", args.name, "--out", args.out])
    for path in write_manifests(args.out, image=args.image, cfg=cfg, config_file=args.config, data=args.data,
                                run=args.run, overrides=args.set, name=args.name, command=command):
        print(f"wrote {path}")
    return 0


def add_kuberay(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "kuberay", help="write KubeRay manifests: a RayJob that trains, a RayService that serves the run",
        description="Write rayjob-train.yaml and rayservice.yaml (serveConfigV2 from the same code as "
                    "`raygr serve --write-config`). Paths are the pods' paths, under the shared volume.")
    add_config_args(p)
    p.add_argument("--image", required=True, help="image built from jobs/kuberay/Dockerfile, e.g. REG/raygr:0.1.0")
    p.add_argument("--data", required=True, help="prepared dataset directory, as the pods see it")
    p.add_argument("--run", required=True, help="run directory the job writes and the service serves")
    p.add_argument("--name", default="raygr", help="prefix of the resources' names")
    p.add_argument("--out", default="jobs/kuberay", help="directory to write the manifests to")
    p.set_defaults(func=kuberay_command)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    add_train(subparsers)
    add_tune(subparsers)
    add_serve(subparsers)
    add_kuberay(subparsers)
