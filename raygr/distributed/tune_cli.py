"""``raygr tune``: search tune.space (default: the decay strategy and its parameters, the loss weighting and
its parameters, lr, batch size), each trial a Ray Train run, ASHA stopping the weak ones.

    raygr tune --data datasets/synthetic --output runs/tune --num-samples 12 --set train.epochs=5
    raygr tune --config jobs/configs/tune_synthetic.yaml --data datasets/synthetic --output runs/tune
    raygr tune ... --address ray://head:10001 --set tune.gpus_per_trial=0.5     # a cluster; 2 trials per GPU

Writes best_config.yaml (for ``raygr train --config``), best_checkpoint/, trials.csv, summary.json and
plots into --output. Re-running with the same --output resumes an interrupted search.
"""

from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_tune_args(p: argparse.ArgumentParser) -> None:
    from raygr.distributed.commands import add_config_args, add_session_args, add_verify_arg

    add_config_args(p)
    p.add_argument("--data", default=None, help="prepared dataset directory (default: data.path of the config)")
    p.add_argument("--output", required=True,
                   help="search directory: best_config.yaml, best_checkpoint/, trials.csv, plots (re-use to "
                        "resume). Only a new or empty directory, or a raygr search, is accepted: raygr never "
                        "writes over files it did not create")
    p.add_argument("--num-samples", type=int, default=None,
                   help="trials to sample (default: tune.num_samples; a grid runs this many times over)")
    p.add_argument("--resume-errored", action="store_true",
                   help="when resuming, retry the trials that failed (from their last checkpoint)")
    add_verify_arg(p)
    add_session_args(p)


def tune_command(args: argparse.Namespace) -> int:
    from raygr.config import ConfigError, load_config
    from raygr.tuning.space import parse_space, validate_space

    overrides = [*args.set, *([f"tune.num_samples={args.num_samples}"] if args.num_samples else [])]
    cfg = load_config(args.config, overrides)  # ConfigError before Ray starts ...
    validate_space(parse_space(cfg.tune.space), cfg)  # ... and for a bad tune.space (the default one is valid)
    from raygr.training.mlflow_tracking import require_mlflow

    require_mlflow(cfg)  # ... and for train.tracking=mlflow without MLflow
    data = args.data or cfg.data.path
    if not data:
        raise ConfigError("no dataset: pass --data DIR or set data.path in the config")
    from raygr.distributed.commands import check_inputs

    check_inputs(cfg, data, args.output, kind="search", verify=args.verify_data)  # all before Ray starts

    from raygr.distributed.session import ray_session

    with ray_session(args.address) as where:
        from raygr.distributed.tune import run_tune

        print(f"raygr tune: {where}", flush=True)
        run_tune(cfg, data, args.output, resume_errored=args.resume_errored, log=lambda msg: print(msg, flush=True))
    return 0
