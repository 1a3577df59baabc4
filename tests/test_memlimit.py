"""The memory limit the memory-limited scale run puts on a Ray worker node (benchmarks/memlimit.py) is real:
a process in the group that allocates past it is OOM-killed, one that stays under it is not, and the
group's stats say which happened."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from benchmarks.memlimit import MemoryLimit, available

pytestmark = pytest.mark.skipif(available() is not None, reason=f"no memory cgroup here: {available()}")

ALLOCATE = "import sys\nkeep = [bytearray(16 * 2**20) for _ in range(int(sys.argv[1]))]\nprint('done')"


@pytest.fixture
def limit():
    lim = MemoryLimit.create(f"raygr-test-{uuid.uuid4().hex[:8]}", 96 * 2**20)
    yield lim
    lim.remove()


def run_in(lim: MemoryLimit, chunks: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", ALLOCATE, str(chunks)], preexec_fn=lim.enter,
                          capture_output=True, text=True, timeout=60)


def test_a_process_under_the_limit_runs_and_one_over_it_is_oom_killed(limit):
    ok = run_in(limit, 2)  # 32 MiB + the interpreter, under 96 MiB
    assert ok.returncode == 0 and ok.stdout.strip() == "done"
    assert limit.stats()["oom_kills"] == 0

    over = run_in(limit, 12)  # 192 MiB
    assert over.returncode == -9, "the kernel's OOM killer ends it"
    stats = limit.stats()
    assert stats["oom_kills"] == 1
    assert stats["limit_mib"] == 96 and stats["peak_mib"] is not None and stats["peak_mib"] <= 96


def test_an_existing_group_is_refused_not_reused(limit):
    with pytest.raises(Exception, match="exists already"):
        MemoryLimit.create(limit.path.name, 2**30)
