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


def add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray in this process)")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config (default: the joint preset's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. train.epochs=5 (repeatable; applied after --config)")


# -- train ------------------------------------------------------------------------------------------

def add_train_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--data", default=None, help="prepared dataset directory (default: data.path of the config)")
    p.add_argument("--output", required=True,
                   help="run directory: config.yaml, checkpoints/{best,latest}, metrics.json (re-use to resume)")
    add_session_args(p)


def train_command(args: argparse.Namespace) -> int:
    from raygr.config import ConfigError, load_config

    cfg = load_config(args.config, args.set)  # ConfigError before Ray starts
    data = args.data or cfg.data.path
    if not data:
        raise ConfigError("no dataset: pass --data DIR or set data.path in the config")

    from raygr.distributed.session import ray_session

    with ray_session(args.address) as where:
        from raygr.distributed.train import run_training

        print(f"raygr train: {where}", flush=True)
        run_training(cfg, data, args.output, log=lambda msg: print(msg, flush=True))
    return 0


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train (or resume) a model with Ray Train; writes a run directory",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.set_defaults(func=train_command)


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    from raygr.distributed.serve_cli import DESCRIPTION, add_serve_args, serve_command

    p = subparsers.add_parser(
        "serve", help="serve a checkpoint over HTTP with Ray Serve (retrieve-then-rank, batched, autoscaled)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_args(p)
    p.set_defaults(func=serve_command)


def add_tune(subparsers: argparse._SubParsersAction) -> None:
    from raygr.distributed.tune_cli import DESCRIPTION, add_tune_args, tune_command

    p = subparsers.add_parser(
        "tune", help="search the Gumbel decay / loss-weight schedules with Ray Tune (each trial a Train run)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tune_args(p)
    p.set_defaults(func=tune_command)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    add_train(subparsers)
    add_tune(subparsers)
    add_serve(subparsers)
