#!/usr/bin/env python3
"""Times the start-of-run token-id check (train_gpt.check_token_ids) on shards of the real data's
size: by default 80 train shards of 100,000,000 tokens (16 GB), written to a temporary folder.

    python scripts/bench_token_check.py                      # 80 x 100M tokens, one process
    python scripts/bench_token_check.py --shards 8 --tokens 10000000

Prints a markdown table: the check with the shards in the page cache (as on a machine that has
just downloaded them) and with each shard evicted from the cache first (read from disk), for one
process and for the share of one rank out of 8 (each rank checks every 8th shard).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_gpt as tg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
from make_sample import shard_bytes  # noqa: E402


def evict(files):
    """Drops the files' pages from the page cache, so the next read comes from disk."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_check(files, rank: int, world_size: int) -> float:
    """Seconds of check_token_ids for one process, or of one rank's share of it out of world_size
    (the share loop is the function's own, without the all-reduce, which gloo would add here)."""
    t0 = time.perf_counter()
    if world_size == 1:
        tg.check_token_ids(files, 1024, tg.Runtime(0, 1, torch.device("cpu")))
    else:
        assert all(tg.read_shard(f).max(initial=0) < 1024 for f in files[rank::world_size])
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=80)
    p.add_argument("--tokens", type=int, default=100_000_000, help="tokens per shard")
    p.add_argument("--dir", type=Path, default=None, help="where to write the shards (default: a temporary folder)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        files = []
        t0 = time.perf_counter()
        block = rng.integers(0, 1024, args.tokens, dtype=np.uint16)
        for i in range(args.shards):
            path = Path(tmp) / f"fineweb_train_{i:06d}.bin"
            tg.atomic_write({path: shard_bytes(np.roll(block, i))})
            files.append(path)
        print(f"wrote {args.shards} shards x {args.tokens:,} tokens "
              f"({args.shards * (args.tokens * 2 + tg.SHARD_HEADER_BYTES) / 1e9:.1f} GB) in {time.perf_counter() - t0:.0f} s")
        rows = []
        for label, world_size in (("1 process, all shards", 1), ("1 rank of 8, its share", 8)):
            evict(files)
            cold = timed_check(files, 0, world_size)
            warm = timed_check(files, 0, world_size)
            rows.append((label, len(files[::world_size]), cold, warm))
    print()
    print("| check | shards read | from disk (s) | from page cache (s) |")
    print("|---|---|---|---|")
    for label, n, cold, warm in rows:
        print(f"| {label} | {n} | {cold:.2f} | {warm:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
