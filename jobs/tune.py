"""Ray job entrypoint for the search: the same code as ``raygr tune``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/tune.py --config jobs/configs/tune_synthetic.yaml --data /shared/data/synthetic \\
        --output /shared/runs/tune-synthetic --num-samples 24 --set tune.gpus_per_trial=0.5

Inside a job RAY_ADDRESS is set, so this joins the cluster rather than starting a local Ray; the
concurrency then follows that cluster's CPUs and GPUs. Re-submitting with the same --output resumes
an interrupted search. The dataset and output directories must be visible to every node.
"""

from __future__ import annotations

import argparse
import os
import sys

from raygr.cli import USER_ERRORS
from raygr.distributed.tune_cli import DESCRIPTION, add_tune_args, tune_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/tune.py", description=DESCRIPTION.split("\n\n")[0])
    add_tune_args(parser)
    args = parser.parse_args(argv)
    if args.address is None and os.environ.get("RAY_ADDRESS"):
        args.address = "auto"  # the cluster this job was submitted to
    try:
        return tune_command(args)
    except USER_ERRORS as e:
        print(f"jobs/tune.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
