"""Inputs that can be checked without Ray are checked before Ray starts, by train, tune, serve, evaluate and
demo: a missing or damaged dataset, a bad config, a checkpoint that is missing or of another dataset, an
output directory that is not raygr's, a busy port. Each error is one line, and Ray never starts.

Ray not starting is asserted two ways: in-process, ``ray_session`` is replaced by one that fails the test;
in a fresh interpreter, ``ray`` is never even imported, and the error comes within seconds.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

import raygr.distributed.session as session
from raygr.cli import main
from raygr.config import config_to_dict, load_config
from raygr.data.dataset import read_manifest
from raygr.data.prepare import prepare
from raygr.training.checkpoint import FORMAT_VERSION, DatasetIdentity, write_json_atomic


def meta_only_checkpoint(run_dir: Path, manifest: dict, *overrides: str) -> Path:
    """RUN_DIR/checkpoints/{best,latest} with only meta.json: what these checks read (none may need weights)."""
    for name in ("best", "latest"):
        ckpt = run_dir / "checkpoints" / name
        ckpt.mkdir(parents=True)
        write_json_atomic(ckpt / "meta.json", {
            "format": FORMAT_VERSION, "dataset": asdict(DatasetIdentity.from_manifest(manifest)),
            "config": config_to_dict(load_config(None, list(overrides))),
            "train_state": {"epoch": 1, "step": 10}, "run": {}})
    return run_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("failfast")
    prepare("synthetic", None, root / "ds", options={"num_users": "30", "num_items": "12"}, num_shards=2)
    prepare("synthetic", None, root / "other", options={"num_users": "30", "num_items": "12", "seed": "1"})
    prepare("synthetic", None, root / "damaged", options={"num_users": "30", "num_items": "12"}, num_shards=2)
    (root / "damaged" / "sequences" / "part-00001.parquet").unlink()
    mine = root / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    meta_only_checkpoint(root / "run", read_manifest(root / "ds"))
    meta_only_checkpoint(root / "run-other", read_manifest(root / "other"))
    return root


def cases(r: Path, busy_port: int) -> list[tuple[list[str], str]]:
    """(arguments, words the one-line error must contain)."""
    ds, damaged, mine = str(r / "ds"), str(r / "damaged"), str(r / "mine")
    return [
        (["train", "--data", str(r / "nope"), "--output", str(r / "o1")],
         f"dataset directory {r / 'nope'} does not exist"),
        (["train", "--data", damaged, "--output", str(r / "o2")], "part-00001.parquet is missing"),
        (["train", "--data", ds, "--output", str(r / "o3"), "--set", "train.epochs=zero"], "train.epochs"),
        (["train", "--data", ds, "--output", mine], "holds no raygr run (found 'config.yaml')"),
        (["train", "--data", str(r / "other"), "--output", str(r / "run")], "was trained on dataset 'ds'"),
        (["train", "--data", ds, "--output", str(r / "o4"), "--set", f"train.init_from={r / 'nope'}"],
         "train.init_from"),
        (["tune", "--data", damaged, "--output", str(r / "t1")], "part-00001.parquet is missing"),
        (["tune", "--data", ds, "--output", mine], "holds no raygr search (found 'config.yaml')"),
        (["tune", "--data", ds, "--output", str(r / "run")], "is a raygr run"),
        (["serve", "--checkpoint", str(r / "nope"), "--data", ds], f"checkpoint {r / 'nope'} does not exist"),
        (["serve", "--checkpoint", str(r / "run"), "--data", damaged], "part-00001.parquet is missing"),
        (["serve", "--checkpoint", str(r / "run-other"), "--data", ds], "was trained on dataset 'other'"),
        (["serve", "--checkpoint", str(r / "run"), "--data", ds, "--port", str(busy_port)],
         f"cannot listen on 127.0.0.1:{busy_port}"),
        (["evaluate", "--checkpoint", str(r / "nope"), "--data", ds], "does not exist"),
        (["evaluate", "--checkpoint", str(r / "run-other"), "--data", ds], "was trained on dataset 'other'"),
        (["demo", "--data", ds, "--output", mine], "holds no raygr run"),
    ]


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_bad_inputs_fail_before_ray_starts(world, busy_port, monkeypatch, capsys):
    def no_ray(*_args, **_kwargs):
        raise AssertionError("Ray was started although an input was bad")

    monkeypatch.setattr(session, "ray_session", no_ray)
    for argv, words in cases(world, busy_port):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and words in err, (argv, err)
        assert err.count("\n") == 1 and err.startswith(f"raygr {argv[0]}: error: "), err
    assert (world / "mine" / "config.yaml").read_text() == "my own notes\n"  # never written over


def test_train_serve_tune_on_a_missing_dataset_do_not_even_import_ray(world, busy_port):
    argvs = [argv for argv, _ in cases(world, busy_port) if argv[0] in ("train", "serve", "tune")]
    script = (
        "import sys, time\n"
        "from raygr.cli import main\n"
        f"cases = {argvs!r}\n"
        "for argv in cases:\n"
        "    t = time.perf_counter()\n"
        "    assert main(argv) == 2, argv\n"
        "    assert 'ray' not in sys.modules, ('ray imported by', argv)\n"
        "    print(f'{time.perf_counter() - t:.2f}')\n"
    )
    # No timing bound: 'ray' absent from sys.modules already proves nothing started it, and a wall-clock
    # bound fails on a loaded machine (28 s for one case with the 2 cores shared by 4 trainings).
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(out.stdout.split()) == len(argvs), out.stdout  # every case ran
