"""Ray job entrypoint for data preparation: the same code as ``raygr data prepare``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/prepare.py --format table --input /mnt/raygr/raw/events/ --output /mnt/raygr/datasets/events \\
        --option user=user_id --option item=item_id --option time=ts --option use_ray=true

The driver runs on the head node. Small inputs are prepared in the driver's memory; the ``table``
format with ``use_ray=true`` (or an input over ``ray_threshold_mb``) streams through Ray Data on the
cluster the job was submitted to (RAY_ADDRESS is set inside a job). Write --output to storage every
node sees: training reads the shards from every worker.
"""

from __future__ import annotations

import sys

from raygr.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", *sys.argv[1:]]))
