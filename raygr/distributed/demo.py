"""``raygr demo``: the whole path on the embedded synthetic default, on a local Ray started in-process.

    raygr demo                      # prepare -> train (Ray Train + Ray Data) -> evaluate -> results
    raygr demo --set train.epochs=3 --output runs/demo-short

It writes the dataset to ``--data`` (default ``data/synthetic``) unless one is already there, trains
the ``joint`` preset into ``--output`` (re-running resumes or re-evaluates), and prints the results
table beside the popularity baseline. With Ray Serve available it then serves a few example requests
from the test split and shuts everything down.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# The demo's dataset: big enough that structure beats popularity, small enough for minutes on 2 cores.
DEMO_DATA = {"num_users": 4000, "num_items": 600, "seed": 0}
# The demo trains the defaults with a batch size suited to a small dataset (more steps per epoch).
DEMO_OVERRIDES = ["train.batch_size=64", "train.epochs=8", "train.log_every=0"]  # ~4 min on 2 cores


def demo_command(args: argparse.Namespace) -> int:
    from raygr.config import load_config
    from raygr.data.dataset import MANIFEST, check_files, read_manifest
    from raygr.data.prepare import prepare
    from raygr.distributed.session import ray_session
    from raygr.training.checkpoint import prepare_run_dir

    started = time.perf_counter()
    cfg = load_config(args.config, [*DEMO_OVERRIDES, *args.set])
    data = Path(args.data)
    prepare_run_dir(args.output)  # a bad --output fails now, not after the dataset is written
    if (data / MANIFEST).is_file():
        check_files(data, read_manifest(data))
        print(f"raygr demo: using the dataset already in {data}", flush=True)
    else:
        manifest = prepare("synthetic", None, data, options=dict(DEMO_DATA))
        print(f"raygr demo: prepared {data}: {manifest['num_users']:,} users, {manifest['num_items']:,} items, "
              f"{manifest['num_interactions']:,} interactions", flush=True)
    with ray_session(args.address) as where:
        from raygr.distributed.train import run_training

        print(f"raygr demo: {where}", flush=True)
        run_training(cfg, data, args.output, log=lambda msg: print(msg, flush=True))
        serve_examples(args, cfg)
    print(f"raygr demo: done in {time.perf_counter() - started:.0f} s; run directory {args.output}", flush=True)
    return 0


def serve_examples(args: argparse.Namespace, cfg) -> None:
    """Deploy the trained checkpoint with Ray Serve and send a few requests (when Serve is built)."""
    try:
        from raygr.distributed.serve import smoke
    except ImportError:
        return
    smoke(Path(args.output), Path(args.data), cfg.serve, num_requests=args.requests)


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="prepare, train, evaluate and serve on the synthetic default",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/synthetic", help="where the synthetic dataset is (or goes)")
    p.add_argument("--output", default="runs/demo", help="run directory (re-use to resume)")
    p.add_argument("--config", default=None, help="YAML config applied on top of the demo's settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted config override")
    p.add_argument("--requests", type=int, default=3, help="example requests to serve at the end")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local Ray in-process)")
    p.set_defaults(func=demo_command)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    add_demo(subparsers)
