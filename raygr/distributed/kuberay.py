"""KubeRay manifests for raygr: a ``RayJob`` that trains and a ``RayService`` that serves the result.

    raygr kuberay --image REGISTRY/raygr:0.1.0 --data /mnt/raygr/datasets/beauty \\
        --run /mnt/raygr/runs/beauty-joint --config jobs/configs/beauty_joint.yaml --out jobs/kuberay

The RayService's ``serveConfigV2`` is ``deploy_config(...)`` (the same function behind
``raygr serve --write-config`` and ``build_app``'s deployment options), so the Serve graph is never
written by hand twice. Both manifests run the image built from ``jobs/kuberay/Dockerfile`` (this
checkout installed on a Ray image) and mount one ReadWriteMany volume at /mnt/raygr: Ray Train's
checkpoints and the prepared datasets must be on storage every pod sees, and the service reads the
checkpoint that the job wrote. Paths are the pods' paths and are not checked here.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import ray
import yaml

from raygr.config import Config
from raygr.distributed.serve import deploy_config
from raygr.serving.pipeline import serves_ranker

RAY_VERSION = ray.__version__
SOURCE_DIR = "/home/ray/raygr"  # where the Dockerfile puts this checkout in the image
MOUNT = "/mnt/raygr"
PVC = "raygr-shared"  # a ReadWriteMany PersistentVolumeClaim you create (EFS, Filestore, NFS, ...)
RUNTIME_ENV = Path(__file__).resolve().parents[2] / "jobs" / "runtime_env.yaml"


def _container(name: str, image: str, cpu: str, memory: str, gpus: int = 0,
               ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    c: dict[str, Any] = {
        "name": name, "image": image,
        "resources": {"limits": dict(resources), "requests": dict(resources)},
        "volumeMounts": [{"name": "shared", "mountPath": MOUNT}],
    }
    if ports:
        c["ports"] = ports
    return c


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"containers": [container],
                     "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": PVC}}]}}


def cluster_spec(image: str, *, gpu_workers: bool, max_workers: int) -> dict[str, Any]:
    """A CPU head that takes no training work, and one autoscaled worker group (GPU or CPU)."""
    head = _container("ray-head", image, "4", "16Gi", ports=[
        {"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 8000, "name": "serve"}, {"containerPort": 10001, "name": "client"}])
    worker = _container("ray-worker", image, "8", "32Gi", gpus=1 if gpu_workers else 0)
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"idleTimeoutSeconds": 600},
        "headGroupSpec": {
            # num-gpus 0: Train workers and model replicas that ask for a GPU never land on the head.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
            "template": _pod(head),
        },
        "workerGroupSpecs": [{
            "groupName": "gpu" if gpu_workers else "cpu",
            "replicas": 0, "minReplicas": 0, "maxReplicas": max_workers,
            "rayStartParams": {},
            "template": _pod(worker),
        }],
    }


def job_env_yaml() -> str:
    """The env_vars of jobs/runtime_env.yaml (the image already holds the code: no working_dir upload)."""
    env = yaml.safe_load(RUNTIME_ENV.read_text())["env_vars"]
    return yaml.safe_dump({"env_vars": env}, sort_keys=False)


def rayjob(name: str, image: str, cfg: Config, config_file: str | None, data: str, run: str,
           overrides: list[str]) -> dict[str, Any]:
    args = ["python", f"{SOURCE_DIR}/jobs/train.py", "--data", data, "--output", run]
    if config_file:
        args += ["--config", f"{SOURCE_DIR}/{config_file}"]
    for o in overrides:
        args += ["--set", o]
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name},
        "spec": {
            "entrypoint": shlex.join(args),
            "runtimeEnvYAML": job_env_yaml(),
            # The cluster exists for this job only; its checkpoints stay on the shared volume, and
            # re-applying the manifest resumes from them (raygr train resumes a run directory).
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": cluster_spec(image, gpu_workers=cfg.train.use_gpu,
                                           max_workers=max(1, cfg.train.num_workers)),
        },
    }


def rayservice(name: str, image: str, cfg: Config, data: str, run: str) -> dict[str, Any]:
    # Inside a pod the proxy must listen on every interface for the Kubernetes Service to reach it.
    serve_cfg = dataclasses.replace(cfg.serve, host="0.0.0.0", port=8000)
    serve_config = deploy_config(run, data, serve_cfg, ranker=serves_ranker(cfg))
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": cluster_spec(image, gpu_workers=serve_cfg.use_gpu,
                                             max_workers=2 * serve_cfg.max_replicas),
        },
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, runtimeEnvYAML) as literal ``|`` blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


HEADER = """\
# Generated by `raygr kuberay` (raygr/distributed/kuberay.py): regenerate rather than edit.
#   {command}
# Needs: the KubeRay operator (v1.1+), the image built from jobs/kuberay/Dockerfile and pushed,
# and a ReadWriteMany PersistentVolumeClaim named {pvc} (mounted at {mount}). See docs/cluster.md.
"""


def write_manifests(out: str | Path, *, image: str, cfg: Config, config_file: str | None, data: str, run: str,
                    overrides: list[str], name: str = "raygr", command: str = "") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = HEADER.format(command=command or "raygr kuberay ...", pvc=PVC, mount=MOUNT)
    docs = {
        "rayjob-train.yaml": rayjob(f"{name}-train", image, cfg, config_file, data, run, overrides),
        "rayservice.yaml": rayservice(f"{name}-serve", image, cfg, data, run),
    }
    written = []
    for filename, manifest in docs.items():
        path = out / filename
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(header + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=120))
        tmp.replace(path)
        written.append(path)
    return written
