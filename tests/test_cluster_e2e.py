"""The cluster path end to end: `ray start --head`, `ray job submit` prepare -> train -> evaluate,
`serve deploy`, a request, and the cluster stopped again, also when a job fails.

A separate Ray instance from the suite's shared one (its own ports), driven only through the CLI and
HTTP, as a user would (benchmarks/cluster_e2e.py; docs/cluster.md).
"""

from __future__ import annotations

import sys

import pytest

from benchmarks.cluster_e2e import E2EError, local_cluster, port_open, run_e2e, submit

pytestmark = pytest.mark.ray


def test_submit_prepare_train_evaluate_then_serve_deploy(tmp_path):
    result = run_e2e(tmp_path, log=lambda m: None)

    assert result["train"]["epochs"] == 2
    assert set(result["train"]["test"]) >= {"recall@10", "ndcg@10"}
    evaluated = result["evaluate"]
    assert evaluated["main_mode"] == "retrieve_then_rank" and "ndcg@10" in evaluated["retrieval_only"]
    assert evaluated["decoding"] == {"invalid_rate": 0.0, "duplicate_rate": 0.0}
    reply = result["serve"]["reply"]
    assert len(reply["items"]) == 5 and all({"item_id", "score"} <= set(i) for i in reply["items"])
    assert result["serve"]["request"]["history"], "the request used a real user's history"
    assert result["serve"]["metadata"]["catalogue_size"] == 120
    assert result["stopped_cleanly"]


def test_a_failed_job_is_reported_and_the_cluster_still_stops(tmp_path):
    with pytest.raises(E2EError, match="job raygr-bad-input"):
        with local_cluster(tmp_path, log=lambda m: None) as cluster:
            gcs_port = cluster.gcs_port
            submit(cluster, "raygr-bad-input", [sys.executable, "jobs/prepare.py", "--format", "s3rec",
                                                "--input", str(tmp_path / "missing"), "--output",
                                                str(tmp_path / "out")], tmp_path / "jobs.log")
    assert not port_open(gcs_port), "the cluster was left running after the failure"
    assert "missing" in (tmp_path / "jobs.log").read_text(), "the job's error message is in the log"
    assert not (tmp_path / "out").exists(), "a failed prepare left a half-written dataset"
