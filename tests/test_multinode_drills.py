"""Failure drills on a real two-node Ray cluster (two `ray start` processes on loopback addresses), with
real SIGKILLs by PID: a training worker process, then the whole worker node (benchmarks/bench_drills.py;
docs/cluster.md, "When a worker or a node dies").

Each node has 1 logical CPU, so the 2 training workers run one per node; the GCS's failure detector is
set faster than Ray's default (1 s x 3) to keep the suite short. Every process started here is stopped by
its PID when the module ends, pass or fail (the cluster fixture's teardown fails if one survives).
"""

from __future__ import annotations

import pytest

from benchmarks.bench_drills import (
    FAST_DETECTOR,
    GROUP_START_TIMEOUT_S,
    drill_worker_node,
    drill_worker_process,
    prepare_data,
)
from benchmarks.multinode import alive, two_node_cluster

pytestmark = pytest.mark.ray

EPOCHS = 3
OUTCOMES: dict[str, dict] = {}  # the process drill's outcome, the node drill's reference


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("drills")
    data = prepare_data(workdir / "data")
    env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(GROUP_START_TIMEOUT_S), **FAST_DETECTOR}
    with two_node_cluster(workdir / "cluster", head_cpus=1, worker_cpus=1, system_env=env,
                          log=lambda m: None) as c:
        yield c, data, workdir
    # two_node_cluster raised if a process of a node outlived SIGKILL; check the record ourselves too
    survivors = [pid for node in c.nodes.values() for pid in node.seen if alive(pid)]
    assert not survivors, f"cluster processes still running: {survivors}"


def test_killing_a_training_worker_process_resumes_from_the_last_checkpoint(cluster):
    c, data, workdir = cluster
    out = drill_worker_process(c, data, workdir, EPOCHS, log=lambda m: None)

    assert out["placement_before"] == {"head": 1, "worker": 1}, "the workers ran one per node"
    killed = out["killed"]
    assert killed["in_epoch"] == 2 and killed["after_checkpoint_s"] >= 0  # measured at the kill
    assert not alive(killed["pid"])
    # at most one epoch lost: the new worker group started from the checkpoint of the epoch before
    assert killed["checkpoint_epoch"] == 1 and out["resumed_from_epoch"] == 1
    assert out["resumed_at"] == [1], "metrics.json records the resume"
    assert out["placement_after"] == {"head": 1, "worker": 1}
    assert out["exit_status"] == 0 and out["epochs"] == EPOCHS
    cluster_state = {n.name: n.running() for n in c.nodes.values()}
    assert cluster_state == {"head": True, "worker": True}, "a process kill leaves the nodes up"
    OUTCOMES["process"] = out


def test_killing_the_worker_node_waits_for_resources_then_resumes_on_a_replacement(cluster):
    c, data, workdir = cluster
    worker_pids = dict(c.nodes["worker"].processes())
    out = drill_worker_node(c, data, workdir, EPOCHS, "worker2", log=lambda m: None)

    assert out["placement_before"] == {"head": 1, "worker": 1}
    assert not any(alive(pid) for pid in worker_pids), "every process of the killed node is gone"
    assert c.node_state("worker") == "DEAD"
    # without a replacement the run says that it waits, and the driver's log names the lost node
    assert "waiting for 2 workers" in out["waiting_message"]
    assert out["dead_node_named"]["address"] == out["dead_node_named"]["expected"] == c.nodes["worker"].ip
    assert out["kill_to_waiting_message_s"] >= GROUP_START_TIMEOUT_S
    # the replacement node takes the lost worker's place; the run resumes from epoch 1 and finishes
    assert out["placement_after"] == {"head": 1, "worker2": 1}
    assert out["killed"]["checkpoint_epoch"] == 1 and out["resumed_from_epoch"] == 1
    assert out["resumed_at"] == [1] and out["exit_status"] == 0 and out["epochs"] == EPOCHS
    # Both runs were killed in epoch 2 and resumed from epoch 1: they end with the same model (a resumed
    # run repeats the undisturbed one's numbers exactly here, benchmarks/results/drills.json).
    if "process" in OUTCOMES:
        for key in ("valid_ndcg@10", "test_ndcg@10"):
            assert out[key] == pytest.approx(OUTCOMES["process"][key], abs=0.01), key


def test_drills_leave_no_process_behind_when_a_step_fails(tmp_path):
    """A drill that fails (here: no training worker to kill, the dataset is missing) still stops its
    driver and both nodes by PID."""
    from benchmarks.bench_drills import DrillError

    seen: dict[int, str] = {}
    with pytest.raises(DrillError, match="exited"):
        with two_node_cluster(tmp_path / "cluster", head_cpus=1, worker_cpus=1, log=lambda m: None) as c:
            try:
                drill_worker_process(c, tmp_path / "missing", tmp_path, 2, log=lambda m: None)
            finally:
                for node in c.nodes.values():
                    seen.update(node.processes())
    assert seen and not any(alive(pid) for pid in seen)
    driver_log = (tmp_path / "process-kill.log").read_text()
    assert "missing" in driver_log, "the driver's own error is in its log"


def test_killing_the_node_holding_a_tune_trial_restarts_it_from_its_checkpoint(tmp_path_factory):
    """`raygr tune` with one trial on a cluster whose head has no CPUs: the worker node holds the trial (its
    driver, Train controller and worker); SIGKILL to that node after the checkpoint of epoch 1; a replacement
    joins; Tune restarts the trial (tune.max_failures=1), which resumes from epoch 1 and finishes."""
    from benchmarks.bench_drills import drill_tune

    workdir = tmp_path_factory.mktemp("tune-drill")
    data = prepare_data(workdir / "data")
    seen: dict[int, str] = {}
    out = drill_tune(workdir, data, 2, lrs=(3.0e-3,), system_env=FAST_DETECTOR, seen=seen, log=lambda m: None)
    # (a failing drill stops them too: two_node_cluster and the driver's stop, as the test above shows)
    assert seen and not any(alive(pid) for pid in seen), "every process of the drill is stopped"

    before = out["processes_before_kill"]
    assert before["worker"].get("ray::ImplicitFunc.train") == 1, "the trial's driver ran on the killed node"
    assert before["worker"].get("ray::RayTrainWorker") == 1 and "ray::RayTrainWorker" not in before["head"]
    (trial,) = out["tune_trials"]
    assert out["killed"]["checkpoints"][trial]["epoch"] == 1, "killed after epoch 1, before epoch 2 ended"
    assert len(out["restarting"]) == 1 and "retry 1 of 1" in out["restarting"][0]
    # the search finished: the trial completed, after one failure, resuming from its checkpoint of epoch 1
    assert out["exit_status"] == 0
    assert out["tune_trials"][trial] == {"status": "TERMINATED", "num_failures": 1, "last_epoch": 2}
    assert out["trials_final"][trial] == {"epoch": 2, "resumed_at": [1]}
    assert out["summary_trials"]["completed"] == 1 and out["summary_trials"]["error"] == 0
