"""Ray job entrypoint for training: the same code as ``raygr train``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py --config jobs/configs/synthetic_joint.yaml --data /mnt/raygr/datasets/synthetic \
        --output /mnt/raygr/runs/synthetic-joint --set train.num_workers=4 --set train.use_gpu=true

Inside a job RAY_ADDRESS is set, so this joins the cluster the job was submitted to rather than
starting a local Ray; without it (``python jobs/train.py ...`` on a laptop) it starts one, like the CLI.
The dataset and output directories must be visible to every node (shared storage).
"""

from __future__ import annotations

import sys

from raygr.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
