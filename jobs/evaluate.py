"""Ray job entrypoint for evaluation: the same code as ``raygr evaluate``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/evaluate.py --checkpoint /mnt/raygr/runs/beauty-joint --data /mnt/raygr/datasets/beauty \\
        --output /mnt/raygr/runs/beauty-joint/evaluate.json

Full-ranking metrics for retrieval only and for retrieve-then-rank, plus code health, of a run's best
checkpoint. It runs in the job's driver process (no Ray workers): add ``--device cuda`` on a GPU node
(``ray job submit --entrypoint-num-gpus 1`` places the driver on one).
"""

from __future__ import annotations

import sys

from raygr.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
