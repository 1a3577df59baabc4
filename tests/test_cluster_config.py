"""cluster.yaml is a valid Ray cluster-launcher config (checked offline with the schema Ray ships)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

util = pytest.importorskip("ray.autoscaler._private.util")
jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema_and_checks(cluster):
    prepared = util.prepare_config(copy.deepcopy(cluster))  # fills in the provider's defaults, as `ray up` does
    util.validate_config(prepared)


def test_cluster_yaml_has_a_cpu_head_and_autoscaling_gpu_workers(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "training must not land on the head"
    gpu = [t for name, t in types.items() if name != cluster["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no GPU worker type"
    assert all(t["min_workers"] == 0 < t["max_workers"] <= cluster["max_workers"] for t in gpu), \
        "GPU workers should scale from zero"
    assert any("pip install" in c and "raygr" in c for c in cluster["setup_commands"])
    assert "." in cluster["file_mounts"].values(), "the checkout is not synced to the nodes"


def test_rsync_excludes_cannot_match_inside_the_package(cluster):
    # rsync matches a pattern without a leading / against the end of each path: "data/**" skips raygr/data/.
    assert (ROOT / "raygr" / "data").is_dir(), "the case this test is about"
    for pattern in cluster["rsync_exclude"]:
        assert pattern.startswith(("/", "**/")), f"rsync_exclude {pattern!r} is not anchored"


def test_schema_rejects_a_broken_copy(cluster):
    # The validation above is only meaningful if it can fail.
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["head"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        util.validate_config(util.prepare_config(broken))
