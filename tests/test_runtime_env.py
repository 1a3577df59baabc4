"""jobs/runtime_env.yaml's excludes keep local outputs out of a job's upload, and all of raygr in it."""

import subprocess
import zipfile
from pathlib import Path

import yaml
from ray._private.runtime_env.packaging import create_package

ROOT = Path(__file__).resolve().parents[1]


def test_the_working_dir_upload_holds_every_tracked_source_file_and_no_local_outputs(tmp_path):
    excludes = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())["excludes"]
    tree = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "raygr", "jobs"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in [*tracked, "runs/r/metrics.json", "data/beauty/manifest.json", "benchmarks/results/x.json"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    create_package(str(tree), tmp_path / "pkg.zip", include_gitignore=True, excludes=excludes)
    uploaded = {n.rstrip("/") for n in zipfile.ZipFile(tmp_path / "pkg.zip").namelist()}
    assert "raygr/data/dataset.py" in tracked, "the case this test is about"
    assert sorted(set(tracked) - uploaded) == []
    assert not [n for n in uploaded if n.split("/")[0] in ("runs", "data") or n.startswith("benchmarks/results")]
