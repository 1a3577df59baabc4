"""The ``raygr`` command line.

    raygr data prepare --format synthetic --output data/synthetic
    raygr data describe data/synthetic
    raygr train --data data/synthetic --output runs/joint
    raygr demo            # prepare + train + evaluate + serve on the embedded synthetic default

Each subcommand lives beside the code it drives; this module only wires them together and turns
user-facing errors into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from raygr.config import ConfigError
from raygr.data.dataset import DatasetError
from raygr.training.checkpoint import CheckpointError, RunDirError

# (module, function adding the subparsers) — each registers its own commands.
_COMMAND_MODULES = [
    ("raygr.data.commands", "add_commands"),
    ("raygr.training.commands", "add_commands"),
    ("raygr.distributed.commands", "add_commands"),
    ("raygr.distributed.demo", "add_commands"),
]

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, CheckpointError, RunDirError,
                                               FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raygr", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module, fn in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # not built yet
            raise
        getattr(mod, fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"raygr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # SIGTERM arrives as raygr.distributed.session.Terminated; exit as a process killed by it would.
        signum = getattr(e, "signum", 2)
        print(f"raygr {args.command}: {'interrupted' if signum == 2 else f'stopped by signal {signum}'}",
              file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
