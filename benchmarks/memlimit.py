"""A memory limit on a group of processes, as a container runtime sets one on a pod: a Linux memory cgroup.

    limit = MemoryLimit.create("raygr-worker-node", 1536 * 2**20)   # needs root and a memory cgroup
    subprocess.Popen(cmd, preexec_fn=limit.enter)                    # the process and all it starts
    limit.stats()        # {"limit_mib", "usage_mib", "peak_mib", "oom_kills"}
    limit.remove()       # once its processes are gone

A process joins at birth (``enter`` runs in the child before exec), so everything it and its descendants
allocate is charged to the group: with the kernel's memory controller, exceeding the limit first reclaims
the group's page cache, then OOM-kills one of its processes, exactly what a Kubernetes memory limit does to
a Ray worker pod. Swap is not a way out (the memory+swap limit is set to the same value).

Both cgroup versions are handled: v1 (``/sys/fs/cgroup/memory``, this project's machines) and v2 (a
unified hierarchy whose root enables the memory controller).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


class MemoryLimitUnavailable(RuntimeError):
    """No writable memory cgroup here (not root, or no memory controller): say so, do not pretend."""


def available() -> str | None:
    """Why a limit cannot be set here, or None when it can."""
    if (V1_ROOT / "memory.limit_in_bytes").is_file():
        root = V1_ROOT
    elif "memory" in _read(V2_ROOT / "cgroup.controllers").split():
        root = V2_ROOT
    else:
        return "no memory cgroup controller is mounted (/sys/fs/cgroup/memory or cgroup v2 with memory)"
    if not os.access(root, os.W_OK):
        return f"{root} is not writable (memory limits need root)"
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@dataclass
class MemoryLimit:
    path: Path
    limit_bytes: int
    v2: bool

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryLimit:
        why = available()
        if why is not None:
            raise MemoryLimitUnavailable(why)
        v2 = not (V1_ROOT / "memory.limit_in_bytes").is_file()
        path = (V2_ROOT if v2 else V1_ROOT) / name
        if path.exists():
            raise MemoryLimitUnavailable(f"cgroup {path} exists already (a previous run's? remove it with rmdir)")
        path.mkdir()
        self = cls(path, int(limit_bytes), v2)
        try:
            if v2:
                (path / "memory.max").write_text(str(self.limit_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
                if (path / "memory.memsw.limit_in_bytes").exists():  # memory+swap: no escape into swap
                    (path / "memory.memsw.limit_in_bytes").write_text(str(self.limit_bytes))
        except OSError:
            path.rmdir()
            raise
        return self

    def enter(self) -> None:
        """Move the calling process into the group (as a ``preexec_fn``: the child, before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def stats(self) -> dict[str, float | int]:
        """The limit, the group's usage now and at its peak (MiB), and the OOM kills inside it."""
        mib = 2**20
        if self.v2:
            events = dict(line.split() for line in _read(self.path / "memory.events").splitlines() if line)
            usage, peak = _read(self.path / "memory.current"), _read(self.path / "memory.peak")
            ooms = int(events.get("oom_kill", 0))
        else:
            oom = dict(line.split() for line in _read(self.path / "memory.oom_control").splitlines() if line)
            usage, peak = _read(self.path / "memory.usage_in_bytes"), _read(self.path / "memory.max_usage_in_bytes")
            ooms = int(oom.get("oom_kill", 0))  # (memory.failcnt stays 0 on this kernel: not used)
        return {"limit_mib": round(self.limit_bytes / mib, 1),
                "usage_mib": round(int(usage or 0) / mib, 1),
                "peak_mib": round(int(peak or 0) / mib, 1) if peak else None,
                "oom_kills": ooms}

    def remove(self, timeout_s: float = 10) -> None:
        """Remove the group once its processes have exited (the kernel refuses while one is inside)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise MemoryLimitUnavailable(
                        f"cgroup {self.path} still holds processes {self.pids()}; stop them, then rmdir it") from None
                time.sleep(0.2)
