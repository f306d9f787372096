"""Shared helpers for the benchmarks: timing in one process, peak memory in a fresh one.

Ratios are what the benchmarks report: every variant of one comparison runs in the same process
run, one after the other, after warm-up, so machine load affects them alike.
"""

import json
import os
import resource
import subprocess
import sys
import time


def time_call(fn, warmup=2, repeats=5):
    """Median wall time in seconds of fn() (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mib(module, variant, extra_env=None):
    """Runs `python -m <module> --measure-memory <variant>` in a fresh process and returns its peak
    resident memory in MiB (VmHWM), so variants do not share allocator state. The module must
    handle --measure-memory by running that variant once and exiting."""
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.run([sys.executable, "-m", module, "--measure-memory", json.dumps(variant)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run of {variant} failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def own_peak_rss_mib():
    """This process's peak resident memory in MiB: VmHWM from /proc, which belongs to the process's own
    address space. (getrusage's ru_maxrss is carried over from the parent across fork + exec, so a
    child of a 2 GiB parent would report at least 2 GiB.) Falls back to ru_maxrss off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report_own_peak_rss():
    """Prints this process's peak resident memory in MiB (the last line read by peak_rss_mib)."""
    print(own_peak_rss_mib())


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(f"{{:>{w}}}" for w in widths)
    print(line.format(*header))
    for row in rows:
        print(line.format(*row))
