"""Entrypoint for ``ray job submit``: deploy the recommendation service on the cluster the job runs on.

    ray job submit --working-dir . -- python jobs/serve.py \\
        --checkpoint /mnt/raygr/runs/beauty-joint --data /mnt/raygr/datasets/beauty --set serve.host=0.0.0.0
    ray job submit --working-dir . -- python jobs/serve.py ... --smoke 5      # deploy, check, shut down
    ray job submit --working-dir . -- python jobs/serve.py ... --foreground   # the job lives as long as the service

Same arguments and code as ``raygr serve`` (``raygr.distributed.serve_cli``). By default the job deploys
and returns: a Serve application outlives the driver that deployed it (stop it with ``serve shutdown``).
Paths are the cluster's: the checkpoint and the dataset must be on storage every node sees.
"""

from __future__ import annotations

import sys

from raygr.cli import main


def serve_argv(argv: list[str]) -> list[str]:
    argv = list(argv)
    if "--foreground" in argv:
        argv.remove("--foreground")
    elif not {"--smoke", "--detach", "--write-config"} & {a.split("=")[0] for a in argv}:
        argv.append("--detach")
    return ["serve", *argv]


if __name__ == "__main__":
    sys.exit(main(serve_argv(sys.argv[1:])))
