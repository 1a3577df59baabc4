"""Ray job entrypoint for training: the same code as ``raygr train``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --config jobs/configs/synthetic_joint.yaml --data /shared/data/synthetic \
        --output /shared/runs/synthetic-joint --set train.num_workers=4 --set train.use_gpu=true

Inside a job RAY_ADDRESS is set, so this joins the cluster (``ray.init(address="auto")``) rather than
starting a local Ray; without it (``python jobs/train.py ...`` on a laptop) it starts one, like the CLI.
The dataset and output directories must be visible to every node (shared storage).
"""

from __future__ import annotations

import argparse
import os
import sys

from raygr.cli import USER_ERRORS
from raygr.distributed.commands import add_train_args, train_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__.split("\n\n")[0])
    add_train_args(parser)
    args = parser.parse_args(argv)
    if args.address is None and os.environ.get("RAY_ADDRESS"):
        args.address = "auto"  # the cluster this job was submitted to
    try:
        return train_command(args)
    except USER_ERRORS as e:
        print(f"jobs/train.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
