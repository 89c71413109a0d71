"""One timing harness for every contestant of a kernel benchmark, warm and cold cache, outputs checked.

A contestant is a list of prepared calls, one per copy of its weights, each writing into a preallocated
output. The harness times every contestant the same way: one Python loop calling the prepared call, a
wall-clock reading around each call, the median taken. Warm: the same weight copy every call, so the weights
stay in the caches when they fit. Cold: the calls rotate through enough copies that more than twice the
last-level cache is streamed between two uses of a copy, so every call reads its weights from DRAM. Each
mode ends by checking the contestant's output against the reference.
"""

import gc
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
        gc.disable()  # as timeit does: a collection inside a timed call is noise, whichever contestant it hits
        try:
            for i in range(calls):
                call = pool[i % len(pool)][0]
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        self.check(pool[(calls - 1) % len(pool)][1], mode)
        return float(np.median(times) * 1e3)


def _stream_sum(parts: int, streams: int, rows: int, lanes: int) -> list:
    from tvm import te

    a = te.placeholder((parts, streams, rows, lanes), "float32", name="a")
    r = te.reduce_axis((0, rows), name="r")
    return [a, te.compute((parts, streams, lanes), lambda p, q, j: te.sum(a[p, q, r, j], axis=r), name="s")]


def dram_read_gbs(threads: int, mib: int = 1024, runs: int = 5) -> float:
    """Measured DRAM read bandwidth (GB/s): the best of `runs` streaming reads of a buffer far larger than the
    caches, built with TVM for this CPU, `threads` threads each summing `streams` contiguous chunks at once (1,
    2, 4 or 8: more streams in flight can draw more bandwidth) into independent vector accumulators, so no
    add latency limits it. It reads and writes nothing else."""
    import tvm
    from tvm import s_tir, te

    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                "num-cores": threads})
    lanes, chunks = 64, 64
    rows = (mib << 20) // 4 // lanes // chunks
    data = np.ones((chunks, rows, lanes), np.float32)
    buf = tvm.runtime.tensor(data)
    best = math.inf
    for streams in (1, 2, 4, 8):
        sch = s_tir.Schedule(te.create_prim_func(_stream_sum(chunks // streams, streams, rows, lanes)))
        block = sch.get_sblock("s")
        p, q, j, rr = sch.get_loops(block)
        sch.reorder(p, rr, q, j)
        sch.reverse_compute_at(sch.cache_write(block, 0, "local"), p)
        sch.unroll(q)
        sch.vectorize(j)
        sch.parallel(p)
        sch.decompose_reduction(block, rr)
        fn = tvm.tirx.build(sch.mod, target=target)["main"]
        view = buf._create_view((chunks // streams, streams, rows, lanes))
        out = tvm.runtime.empty((chunks // streams, streams, lanes), "float32")
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            fn(view, out)
            best = min(best, time.perf_counter() - t0)
        if not np.allclose(out.numpy(), rows):
            raise SystemExit("the bandwidth kernel summed wrong")
    return data.nbytes / best / 1e9
