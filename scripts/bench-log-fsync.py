#!/usr/bin/env python3
"""What an append's fdatasync costs on this disk, by how the file was made.

Three processes (the servers of a cluster on one disk) each append records
and fdatasync after every one, for a few seconds, into a file that either
grows with each append ("grows", Berth's log before it wrote zeros ahead),
was fallocate()d first ("fallocate", what etcd does to its WAL files), or
was written with zeros and synced first ("zeros", Berth's log now). Prints
syncs per second and latency percentiles per writer, medians over rounds.

Usage: scripts/bench-log-fsync.py [DIR] [--rounds N] [--secs S] [--record BYTES]
DIR must be on the disk under test (default: the current directory).
"""

import argparse
import os
import statistics
import time
from multiprocessing import Process, Queue

PREPARED = 256 << 20


def writer(path, how, secs, record, out):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if how == "fallocate":
            os.posix_fallocate(fd, 0, PREPARED)
            os.fsync(fd)
        elif how == "zeros":
            chunk = b"\0" * (1 << 20)
            for at in range(0, PREPARED, len(chunk)):
                os.pwrite(fd, chunk, at)
            os.fsync(fd)
        payload = os.urandom(record)
        offset, latencies = 0, []
        end = time.monotonic() + secs
        while time.monotonic() < end and offset + record <= PREPARED:
            start = time.perf_counter()
            os.pwrite(fd, payload, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
            offset += record
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    if not latencies:
        out.put((0.0, float("nan"), float("nan")))
        return
    out.put((len(latencies) / secs, latencies[len(latencies) // 2], latencies[int(0.99 * len(latencies))]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", nargs="?", default=".")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--secs", type=float, default=3.0)
    parser.add_argument("--record", type=int, default=8192)
    parser.add_argument("--writers", type=int, default=3)
    args = parser.parse_args()
    if not os.path.isdir(args.dir):
        parser.error(f"DIR {args.dir!r} is not a directory: give one on the disk under test")
    if args.rounds < 1 or args.writers < 1:
        parser.error("--rounds and --writers must be at least 1")
    if args.secs <= 0:
        parser.error("--secs must be more than 0")
    if not 1 <= args.record <= PREPARED:
        parser.error(f"--record must be 1..{PREPARED} bytes (the prepared file's size)")
    results = {how: [] for how in ("grows", "fallocate", "zeros")}
    for _ in range(args.rounds):
        for how in results:
            out = Queue()
            procs = [
                Process(
                    target=writer,
                    args=(os.path.join(args.dir, f"fsync-bench-{how}-{i}"), how, args.secs, args.record, out),
                )
                for i in range(args.writers)
            ]
            for p in procs:
                p.start()
            per_writer = [out.get() for _ in procs]
            for p in procs:
                p.join()
            results[how].extend(per_writer)
    print(f"{args.writers} writers, {args.record}-byte appends, each followed by fdatasync; "
          f"{args.rounds} rounds of {args.secs:g} s; medians over writers and rounds")
    print("| file | syncs/s per writer | p50 (µs) | p99 (µs) |")
    print("|---|---:|---:|---:|")
    for how, rows in results.items():
        rate = statistics.median(r[0] for r in rows)
        p50 = statistics.median(r[1] for r in rows) * 1e6
        p99 = statistics.median(r[2] for r in rows) * 1e6
        print(f"| {how} | {rate:,.0f} | {p50:,.0f} | {p99:,.0f} |")


if __name__ == "__main__":
    main()
