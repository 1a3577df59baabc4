"""A synthetic prepared dataset larger than the memory that generates it: users drawn a chunk at a time.

``raygr.data.synthetic.generate`` builds every user in memory (~100 bytes per interaction at its peak), so
the 200M+ interactions whose prepared Parquet exceeds a worker's memory limit (issue 23) would need ~25 GB
to generate in one piece. Here each chunk of users is one ``generate`` call with its own seed, written as
its own sequence shards, then dropped; the manifest (length histogram, split sizes, checksums) is built
from the chunks and written last, as ``write_dataset`` does. The item table is seed 0's; chunk k's users
follow seed k's item structure (clusters, successors), so this data measures volume, not model quality.

    python -m benchmarks.synthetic_chunks --interactions 250M --items 2000 --avg-len 40 --out DIR
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raygr.data.dataset import (
    finish_manifest,
    items_to_arrow,
    sequence_counts,
    sequences_to_arrow,
    swap_into_place,
    validate_contents,
)
from raygr.data.synthetic import generate

CHUNK = 20_000_000  # interactions per generate() call: ~2 GB at its peak


def mean_length(num_items: int, avg_len: float) -> float:
    probe = generate(num_users=20_000, num_items=num_items, seed=0, avg_len=avg_len)[1]
    return len(probe.items) / probe.num_users


def write_chunked(out: Path, interactions: int, num_items: int, avg_len: float, shards_per_chunk: int = 2,
                  chunk: int = CHUNK, log=print) -> dict:
    """Write about ``interactions`` interactions over ``num_items`` items to the dataset directory ``out``."""
    out = out.resolve()
    per_user = mean_length(num_items, avg_len)
    total_users = max(1, round(interactions / per_user))
    chunk_users = max(1, round(chunk / per_user))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        items = generate(num_users=1, num_items=num_items, seed=0, avg_len=avg_len)[0]
        pq.write_table(items_to_arrow(items), tmp / "items.parquet")
        (tmp / "sequences").mkdir()
        hist: dict[int, int] = {}
        first, k, shard, nnz = 0, 0, 0, 0
        t0 = time.perf_counter()
        while first < total_users:
            n = min(chunk_users, total_users - first)
            _, seqs = generate(num_users=n, num_items=num_items, seed=k, avg_len=avg_len)
            validate_contents(items, seqs, where=f"chunk {k}")
            lengths = seqs.lengths()
            for v, c in zip(*np.unique(lengths, return_counts=True)):
                hist[int(v)] = hist.get(int(v), 0) + int(c)
            users = np.arange(n)
            for s in range(shards_per_chunk):
                table = sequences_to_arrow(seqs, users[users % shards_per_chunk == s])
                # global user indices: this chunk's users follow every earlier chunk's
                table = table.set_column(0, "user_idx", pa.array(table["user_idx"].to_numpy() + first, pa.int32()))
                pq.write_table(table, tmp / "sequences" / f"part-{shard:05d}.parquet")
                shard += 1
            nnz += len(seqs.items)
            first, k = first + n, k + 1
            log(f"chunk {k}: {first:,} / {total_users:,} users, {nnz:,} interactions, "
                f"{time.perf_counter() - t0:.0f} s")
            del seqs
        pq.write_table(pa.table({"user_idx": pa.array(np.arange(total_users, dtype=np.int32)),
                                 "user_id": pa.array([f"user{u:09d}" for u in range(total_users)], pa.string())}),
                       tmp / "users.parquet")
        lengths = np.repeat(np.array(list(hist), dtype=np.int64), list(hist.values()))
        manifest = finish_manifest(tmp, {
            "name": out.name, "num_users": total_users, "num_items": num_items, "num_interactions": nnz,
            "num_shards": shard, **sequence_counts(lengths), "has_dense": False,
            "source": {"format": "synthetic", "seed": 0, "bench": "memory_limit", "chunks": k,
                       "avg_len": avg_len},
        })
        swap_into_place(tmp, out, manifest, overwrite=False)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    from benchmarks.bench_scale import parse_size
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", type=parse_size, required=True)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--avg-len", type=float, default=40.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    m = write_chunked(args.out, args.interactions, args.items, args.avg_len)
    print(f"wrote {args.out}: {m['num_users']:,} users, {m['num_interactions']:,} interactions")


if __name__ == "__main__":
    main()
