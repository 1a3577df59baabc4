"""train.keep_freed_memory: glibc keeps freed memory for reuse; the setting reaches every training path."""

import subprocess
import sys

import pytest

from raygr.training import allocator
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext
from tests.helpers import tiny_config, tiny_dataset


def test_glibc_takes_the_thresholds():
    if allocator._glibc() is None:
        pytest.skip("not glibc: mallopt is a no-op here")
    assert allocator.retain_freed_memory() is True


def test_a_large_freed_block_is_reused_not_unmapped():
    # With glibc's default a 64 MiB block is mmap'ed and unmapped on free, so a second one maps fresh pages
    # (minor faults for each of its 16k pages); with the thresholds raised the heap keeps and reuses it.
    code = """
import ctypes, resource, sys
from raygr.training import allocator
if sys.argv[1] == "1":
    assert allocator.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    faults = {keep: int(subprocess.run([sys.executable, "-c", code, keep], capture_output=True, text=True,
                                       check=True).stdout) for keep in ("0", "1")}
    pages = 5 * (64 << 20) // 4096
    assert faults["0"] > 0.9 * pages  # every block's pages faulted in again
    assert faults["1"] < 0.05 * pages  # reused


@pytest.mark.parametrize("keep", [True, False])
def test_the_config_decides(tmp_path, monkeypatch, keep):
    calls = []
    monkeypatch.setattr("raygr.training.loop.retain_freed_memory", lambda: calls.append(1) or True)
    cfg = tiny_config("model.preset=sasrec", f"train.keep_freed_memory={str(keep).lower()}")
    ds = tiny_dataset(tmp_path, num_users=50, num_items=30)
    TrainContext.create(build_model(cfg, ds), cfg, 5, verbose=False)
    assert calls == ([1] if keep else [])


def test_trimming_gives_the_kept_heap_back():
    # A kept 256 MiB block stays resident after free; release_freed_memory (malloc_trim) returns its pages.
    code = """
import ctypes, sys
from raygr.training import allocator
assert allocator.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
n = 256 << 20
p = libc.malloc(n)
ctypes.memset(p, 1, n)
libc.free(p)
kept = rss()
assert allocator.release_freed_memory()
print(kept, rss())
"""
    if allocator._glibc() is None:
        pytest.skip("not glibc")
    kept, trimmed = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert kept - trimmed > 200  # MiB


def test_the_training_step_trims_every_n_steps(tmp_path, monkeypatch):
    from raygr.data.windows import make_train_windows_csr
    from raygr.models.batch import TrainBatch
    from raygr.training.loop import train_step

    calls = []
    monkeypatch.setattr("raygr.training.loop.release_freed_memory", lambda: calls.append(1) or True)
    cfg = tiny_config("model.preset=sasrec", "train.trim_every_steps=3")
    ds = tiny_dataset(tmp_path, num_users=50, num_items=30)
    ctx = TrainContext.create(build_model(cfg, ds), cfg, 10, verbose=False)
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    batch = TrainBatch.from_mapping({k: v[:16] for k, v in w.items()})
    for step in range(1, 8):
        train_step(ctx, batch, step)
    assert len(calls) == 2  # steps 3 and 6
