"""One timing harness for every contestant of a kernel benchmark, warm and cold cache, outputs checked.

A contestant is a list of prepared calls, one per copy of its weights, each writing into a preallocated
output. The harness times every contestant the same way: one Python loop calling the prepared call, a
wall-clock reading around each call, the median taken. Warm: the same weight copy every call, so the weights
stay in the caches when they fit. Cold: the calls rotate through enough copies that more than twice the
last-level cache is streamed between two uses of a copy, so every call reads its weights from DRAM. Each
mode ends by checking the contestant's output against the reference.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Call = Callable[[], None]


@dataclass
class Contestant:
    """`make(copy)` prepares the call on weight copy `copy` (building sessions or kernels as it must) and
    returns it with a function reading the call's output; `weight_bytes` is what one call streams."""

    name: str
    weight_bytes: int
    make: Callable[[int], tuple[Call, Callable[[], np.ndarray]]]
    tolerance: float = 1e-3  # max abs error / max abs reference


def last_level_cache_bytes() -> int:
    """The largest CPU cache this machine reports (sysfs), 32 MiB where it reports none."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=32 << 20)


def copies_for_cold(weight_bytes: int, llc_bytes: int) -> int:
    """Weight copies whose rotation streams more than twice the last-level cache between two uses of one."""
    return max(2, math.ceil(2 * llc_bytes / weight_bytes) + 1)


class Prepared:
    """A contestant's calls, made once: copy 0 for the warm mode, all copies for the cold one."""

    def __init__(self, c: Contestant, reference: np.ndarray, llc_bytes: int, cold: bool = True):
        self.c, self.reference = c, reference
        self.calls = [c.make(i) for i in range(copies_for_cold(c.weight_bytes, llc_bytes) if cold else 1)]

    def check(self, read: Callable[[], np.ndarray], mode: str) -> None:
        out = np.asarray(read(), np.float64).reshape(self.reference.shape)
        err = np.abs(out - self.reference).max() / np.abs(self.reference).max()
        if not err <= self.c.tolerance:
            raise SystemExit(f"{self.c.name} ({mode}) is wrong: max error {err:.2e} of the reference's max")

    def measure(self, mode: str, calls: int) -> float:
        """Median ms per call; `mode` 'warm' or 'cold'."""
        pool = self.calls[:1] if mode == "warm" else self.calls
        for call, _ in pool:  # touch every copy once (first-call setup), then let the caches turn over
            call()
        times = []
        for i in range(calls):
            call = pool[i % len(pool)][0]
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        self.check(pool[(calls - 1) % len(pool)][1], mode)
        return float(np.median(times) * 1e3)


def dram_read_gbs(threads: int, mib: int = 1024, runs: int = 5) -> float:
    """Measured DRAM read bandwidth (GB/s): torch's vectorised, `threads`-parallel sum over a buffer far larger
    than the caches, best of `runs` (a reduction reads and writes nothing else)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mib << 18)  # mib MiB of float32
    best = math.inf
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9
