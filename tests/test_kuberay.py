"""jobs/kuberay/ is what `raygr kuberay` generates, its serveConfigV2 is the Serve deploy config, and the
RayJob's command line is one `raygr train` accepts (offline: no Kubernetes, no Ray cluster)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import ray
import yaml

from raygr.cli import main
from raygr.config import load_config
from raygr.distributed.commands import add_train_args
from raygr.distributed.kuberay import SOURCE_DIR
from raygr.distributed.serve import deploy_config
from raygr.serving.pipeline import serves_ranker

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "jobs" / "kuberay"


def shipped(name: str) -> tuple[str, dict]:
    text = (KUBERAY / name).read_text()
    return text, yaml.safe_load(text)


def generating_command(text: str) -> list[str]:
    line = text.splitlines()[1]
    assert line.startswith("#   raygr kuberay "), "the header must say how the file was generated"
    return shlex.split(line[len("#   raygr "):])


def test_shipped_manifests_are_the_generated_ones(tmp_path):
    text, _ = shipped("rayjob-train.yaml")
    argv = generating_command(text)
    argv[argv.index("--out") + 1] = str(tmp_path)
    assert main(argv) == 0
    for name in ("rayjob-train.yaml", "rayservice.yaml"):
        assert yaml.safe_load((tmp_path / name).read_text()) == shipped(name)[1], \
            f"jobs/kuberay/{name} is stale: regenerate it with the command in its header"


def test_serve_config_v2_is_the_deploy_config_of_the_trained_run():
    text, job = shipped("rayjob-train.yaml")
    args = train_args(job)
    cfg = load_config(ROOT / args.config.removeprefix(f"{SOURCE_DIR}/"), args.set)
    _, service = shipped("rayservice.yaml")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    app = serve_config["applications"][0]
    assert app["args"]["checkpoint"] == args.output, "the service serves the run the job writes"
    assert app["args"]["data"] == args.data
    expected = deploy_config(args.output, args.data, serve_cfg_for_pods(cfg), ranker=serves_ranker(cfg))
    assert serve_config == expected


def serve_cfg_for_pods(cfg):
    import dataclasses
    return dataclasses.replace(cfg.serve, host="0.0.0.0", port=8000)


def train_args(job: dict) -> argparse.Namespace:
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["python", f"{SOURCE_DIR}/jobs/train.py"]
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser.parse_args(words[2:])


def test_rayjob_runs_a_shipped_config_on_gpu_workers_the_head_does_not_take():
    _, job = shipped("rayjob-train.yaml")
    args = train_args(job)
    cfg = load_config(ROOT / args.config.removeprefix(f"{SOURCE_DIR}/"), args.set)  # the file is in the image
    spec = job["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    group = spec["workerGroupSpecs"][0]
    assert cfg.train.use_gpu and group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= cfg.train.num_workers
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert env == {"env_vars": yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())["env_vars"]}


def test_images_and_ray_versions_agree():
    version = ray.__version__
    for name in ("rayjob-train.yaml", "rayservice.yaml"):
        _, doc = shipped(name)
        spec = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
        assert spec["rayVersion"] == version
    assert f"FROM rayproject/ray:{version}-py311-gpu" in (KUBERAY / "Dockerfile").read_text()
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{version}-")
