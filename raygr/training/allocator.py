"""Keep freed CPU memory in the process for reuse (glibc's ``mallopt``), so training steps stop page-faulting.

glibc serves every allocation above its mmap threshold (128 KiB at start, adapting up to 32 MiB) with a
fresh ``mmap`` and returns it with ``munmap`` when freed. A training step on CPU allocates and frees the
same large tensors (activations, the full-softmax logits over the catalogue, their gradients) every step,
so each step maps new pages and the kernel zero-fills every one on first touch: on Beauty's joint recipe a
third of the step was system time (benchmarks/bench_allocator.py; docs/results.md). Raising the mmap and
trim thresholds makes freed blocks stay in the heap, where the next step reuses them.

The cost: the process keeps its peak heap instead of returning it between steps, and the peak RSS rose by
6-13 % in the benchmark (blocks reused out of order fragment the heap; the heap grows in TOP_PAD steps).
Only glibc has ``mallopt`` (musl, macOS: a no-op).

Steps whose tensors change shape (a batch's number of targets varies) leave free blocks the next
allocation does not fit, so a heap that is never given back grew by ~5 MiB a step on Scientific and a
20-epoch run was OOM-killed at 8.5 GB. ``release_freed_memory`` (``malloc_trim``) every
``train.trim_every_steps`` gives the free pages back; the step after pays their page faults once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30  # above any tensor of a CPU step: every block comes from the heap
TRIM_THRESHOLD = 1 << 31  # never give the heap's top back between steps
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps, not page by page


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's libc has mallopt too, without effect)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


@functools.cache
def retain_freed_memory() -> bool:
    """Set the thresholds once per process; True when glibc took them (False elsewhere: nothing changes)."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(opt, val) == 1 for opt, val in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``); False where there is no glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
