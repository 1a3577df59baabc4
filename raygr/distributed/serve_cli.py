"""``raygr serve``: the recommendation service of a checkpoint, on a local Ray or a cluster.

    raygr serve --checkpoint runs/joint --data datasets/beauty                  # local Ray; Ctrl-C stops it
    raygr serve --checkpoint runs/joint --data datasets/beauty --smoke 5        # 5 test-split requests, then stop
    raygr serve ... --port 8080 --set serve.max_batch_size=64 --set serve.max_replicas=4
    raygr serve ... --address ray://head:10001 --detach      # deploy on a cluster and leave it running
    raygr serve ... --set serve.host=0.0.0.0 --write-config jobs/serve_config.yaml   # for `serve deploy`
    raygr serve --update runs/joint-v2 --data datasets/beauty --address ray://head:10001   # swap the model

    curl -s localhost:8000/recommend -d '{"history": ["12", "7", "431"], "k": 5}'
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Any

DESCRIPTION = __doc__


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint directory, or a run directory (its checkpoints/best)")
    p.add_argument("--update", default=None, metavar="CHECKPOINT",
                   help="roll this checkpoint out to the running service in place (needs --address or "
                        "RAY_ADDRESS, and the --data/--set/--config it was deployed with); the old model "
                        "answers until the new one is loaded")
    p.add_argument("--data", required=True, help="the prepared dataset directory the checkpoint was trained on")
    p.add_argument("--config", default=None, help="YAML config whose serve: section to use (other sections ignored)")
    p.add_argument("--set", action="append", default=[], metavar="serve.KEY=VALUE",
                   help="serve override, e.g. serve.max_batch_size=64 (repeatable)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: serve.port, 8000)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray in this process)")
    p.add_argument("--smoke", type=int, default=0, metavar="N",
                   help="send N example requests from the test split, print them, shut down (exit 1 if any failed)")
    p.add_argument("--detach", action="store_true",
                   help="deploy and exit, leaving the service on the cluster (needs --address or RAY_ADDRESS)")
    p.add_argument("--write-config", default=None, metavar="PATH",
                   help="only write a Serve deploy config (serve deploy, KubeRay) for these arguments; no Ray")


def serve_config(args: argparse.Namespace) -> Any:
    """The ServeConfig from --config's serve: section, --set serve.* and --port."""
    from raygr.config import ConfigError, load_config

    others = [s for s in args.set if not s.strip().startswith("serve.")]
    if others:
        raise ConfigError(f"raygr serve takes only serve.* overrides (got {others[0]!r}); the model's settings "
                          "come from the checkpoint")
    overrides = list(args.set) + ([f"serve.port={args.port}"] if args.port is not None else [])
    return load_config(args.config, overrides).serve


def check_port_free(host: str, port: int) -> None:
    """A local service's port, checked before Ray starts (Serve would fail only after 10+ s of start-up)."""
    from raygr.config import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: only a listener blocks it
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); stop what uses it or pass "
                              "--port N") from None


def serve_command(args: argparse.Namespace) -> int:
    from raygr.config import ConfigError
    from raygr.data.dataset import check_files, read_manifest
    from raygr.training.checkpoint import check_compatible, read_checkpoint

    cfg = serve_config(args)
    if args.write_config:
        if not (args.checkpoint or args.update):
            raise ConfigError("--write-config needs --checkpoint CKPT (and --update NEW for a config that swaps in "
                              "NEW in place when deployed over one of CKPT)")
        return write_config(args, cfg)
    if bool(args.checkpoint) == bool(args.update):
        raise ConfigError("give either --checkpoint CKPT (deploy) or --update CKPT (swap the running service's "
                          "model)")
    if args.update and (args.smoke or args.detach):
        raise ConfigError("--update swaps the model of a running service; --smoke and --detach do not apply")
    # Everything that needs no Ray fails here, before Ray starts: checkpoint, dataset, their match, the port.
    info = read_checkpoint(args.checkpoint or args.update)
    manifest = read_manifest(args.data)
    check_files(args.data, manifest)
    check_compatible(info, info.config, manifest)
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if args.update:
        if local:
            raise ConfigError("--update needs the cluster the service runs on (--address or RAY_ADDRESS)")
        return update(args, cfg, info)
    if args.detach and local:
        raise ConfigError("--detach needs a cluster (--address or RAY_ADDRESS): a local Ray ends with this command")
    if local:
        check_port_free(cfg.host, cfg.port)

    from raygr.distributed.session import ray_session

    with ray_session(args.address) as where:
        from raygr.distributed.serve import build_app, local_url, run_app, shutdown

        start = time.perf_counter()
        run_app(build_app(info.path, args.data, cfg), cfg, log_level="WARNING" if args.smoke else "INFO")
        url = local_url(cfg)
        print(f"raygr serve: {where}; {info.config.model.preset} checkpoint {info.path} (epoch {info.epoch}) "
              f"at {url} (ready in {time.perf_counter() - start:.1f} s)", flush=True)
        if args.smoke:
            try:
                return smoke(url, args.data, info.config.data.max_history, args.smoke)
            finally:
                shutdown()
        if args.detach:
            print("raygr serve: left running on the cluster; stop it with `serve shutdown`")
            return 0
        print("raygr serve: Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("raygr serve: shutting down", flush=True)
        finally:
            shutdown()
    return 0


def update(args: argparse.Namespace, cfg: Any, info: Any) -> int:
    """Swap the running service's model for ``info``'s checkpoint (already checked against --data)."""
    from raygr.distributed.session import ray_session

    with ray_session(args.address) as where:
        from raygr.distributed.serve import stage_status, update_app

        before = {stage: s["model_version"] for stage, s in stage_status().items()}
        start = time.perf_counter()
        after = update_app(info.path, args.data, cfg, log_level="WARNING")
        print(f"raygr serve: {where}; model version {', '.join(sorted(set(before.values())))} -> "
              f"{', '.join(sorted({s['model_version'] for s in after.values()}))} "
              f"({info.path}, epoch {info.epoch}) in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def write_config(args: argparse.Namespace, cfg: Any) -> int:
    """Write the deploy config. The paths may exist only on the cluster: then the graph is assumed to have a
    Ranker (the joint preset), and the command says so. With ``--checkpoint OLD --update NEW`` the application
    args keep OLD and the deployments' user_config names NEW: `serve deploy` over a service of OLD then swaps
    models in place (a change of args would restart every replica)."""
    from raygr.distributed.serve import write_deploy_config
    from raygr.training.checkpoint import CheckpointError, read_checkpoint

    graph, serving = args.checkpoint or args.update, args.update or args.checkpoint
    ranker = None
    try:
        read_checkpoint(graph)
    except CheckpointError:
        ranker = True
        print(f"raygr serve: {graph} is not readable here; assuming a preset with a ranker (joint)")
    path = write_deploy_config(args.write_config, graph, args.data, cfg, ranker=ranker, serving=serving)
    print(f"wrote {path}")
    return 0


def smoke(url: str, dataset_dir: str, max_history: int, n: int) -> int:
    """Send ``n`` test-split histories to ``url``, print each answer; 1 if any request failed."""
    from raygr.data.dataset import load_dataset
    from raygr.serving.client import Client, send_examples

    client = Client(url)
    client.wait_healthy()
    print(f"GET /metadata -> {client.get('/metadata')[1]}")
    failed = send_examples(client, load_dataset(dataset_dir), max_history, n)
    client.close()
    print(f"raygr serve: smoke {n - failed}/{n} requests answered")
    return 1 if failed else 0
