"""Ray job entrypoint for the search: the same code as ``raygr tune``, for ``ray job submit``.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/tune.py --config jobs/configs/tune_synthetic.yaml --data /mnt/raygr/datasets/synthetic \\
        --output /mnt/raygr/runs/tune-synthetic --num-samples 24 --set tune.gpus_per_trial=0.5

Inside a job RAY_ADDRESS is set, so this joins the cluster rather than starting a local Ray; the
concurrency then follows that cluster's CPUs and GPUs. Re-submitting with the same --output resumes
an interrupted search. The dataset and output directories must be visible to every node.
"""

from __future__ import annotations

import sys

from raygr.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
