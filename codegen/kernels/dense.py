"""Dense matmuls on CPUs against constant weights (every linear layer), with the weights packed into panels
at build time, as BLAS libraries prepack them.

A row-major [K, N] weight read by a register tile of `cols` outputs touches `cols` floats of each of K rows,
N floats apart: one short burst per 16 KiB stride (N=4096), which the hardware prefetchers follow badly
(16.7 GB/s at one row, cold, on znver4: 49% of DRAM bandwidth), and which the GEMM schedule otherwise packs
at run time, on every call. Laid out at build time as panels [N/cols, K, cols], each thread streams whole
panels front to back: at one row (decode) 32.7 GB/s fp32 cold on the same machine, where onnxruntime's fp32
MatMul reads 33 GB/s. At one row each thread reads several of its panels at once where their count allows
(`gemv_regions`): one stream per thread is bound by memory latency, not bandwidth. fp16 weights (an fp16
base) stay fp16 in memory and are widened in registers, so a GEMV reads half the bytes; accumulation is fp32
whatever the types, as the interpreter defines it.
"""

import numpy as np
from tvm import s_tir, te, tirx
from tvm.target import Target

from codegen.schedules.cpu import PARALLEL_MIN_MACS, block_gemm, tile_shape

PANEL_DTYPES = ("float32", "float16")
STACK_BYTES = 1024  # TVM's CPU lowering allocates buffers below this on the stack, larger ones as workspace calls


def panel_cols(m: int, n: int, target: Target) -> int | None:
    """Outputs per panel (the register tile's columns for m rows); None where N is not a multiple of 4."""
    return tile_shape(m, n, target)[1] if n % 4 == 0 else None


def panel_layout(w: np.ndarray, cols: int) -> np.ndarray:
    """[K, N] -> [N/cols, K, cols]: panel p holds outputs p*cols .. p*cols+cols-1, row k after row k-1."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k, n // cols, cols).transpose(1, 0, 2))


def dense_shape(m: int, k: int, n: int, target: Target, regions: int | None = None) -> tuple[int, ...]:
    """The dense kernel's output shape: [m, N], or, for a one-row GEMV read in several regions per thread
    (`gemv_regions`; `regions` overrides it), the same floats as [threads, regions, panels per region, cols],
    which the caller reshapes (a view)."""
    cols = tile_shape(m, n, target)[1]
    threads = int(target.attrs.get("num-cores", 1)) if m * n * k >= PARALLEL_MIN_MACS else 1
    regions = gemv_regions(m, n // cols, cols, threads) if regions is None else regions
    if regions == 1:
        return (m, n)
    if m != 1 or n // cols % (threads * regions):
        raise ValueError(f"{regions} regions do not divide {n // cols} panels among {threads} threads")
    return (threads, regions, n // cols // (threads * regions), cols)


def dense_kernel(m: int, k: int, n: int, x_dtype: str, w_dtype: str, name: str, target: Target,
                 regions: int | None = None) -> tirx.PrimFunc:
    """PrimFunc(x [m, K] x_dtype, w [N/cols, K, cols] w_dtype, y [dense_shape] x_dtype): y = x @ W, fp32 sums."""
    shape = dense_shape(m, k, n, target, regions)
    if len(shape) == 4:
        func = _multi_region_gemv(k, n, x_dtype, w_dtype, shape)
    else:
        func = _gemm(m, k, n, x_dtype, w_dtype, target)
    return func.with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def _gemm(m: int, k: int, n: int, x_dtype: str, w_dtype: str, target: Target) -> tirx.PrimFunc:
    """Any rows: the register-tiled GEMM (codegen/schedules/cpu.py), its epilogue cast inlined."""
    cols = tile_shape(m, n, target)[1]
    x = te.placeholder((m, k), x_dtype, name="x")
    w = te.placeholder((n // cols, k, cols), w_dtype, name="w")
    r = te.reduce_axis((0, k), name="r")
    acc = te.compute((m, n), lambda i, j: te.sum(x[i, r].astype("float32") * w[j // cols, r, j % cols].astype(
        "float32"), axis=r), name="acc")
    y = te.compute((m, n), lambda i, j: acc[i, j].astype(x_dtype), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, w, y]))
    block_gemm(sch, sch.get_sblock("acc"), [m, n, k], target, epilogues=(sch.get_sblock("y"),))
    return sch.mod["main"]


def gemv_regions(m: int, panels: int, cols: int, threads: int) -> int:
    """Panels each thread streams at once in a one-row GEMV: 4, 3 or 2 where they divide its share and their
    fp32 accumulators stay under STACK_BYTES, else 1 (the register-tiled GEMM, one stream per thread). One
    stream per thread is latency-bound: on znver3 (2 threads, cold, fp16 weights) 1x576x49152 3.4-3.8 ms with
    one, 2.3-3.0 with four; 1x1536x576 0.11-0.13 with one, 0.08-0.10 with three."""
    if m != 1:
        return 1
    return next((s for s in (4, 3, 2) if panels % (threads * s) == 0 and s * cols * 4 < STACK_BYTES), 1)


def _multi_region_gemv(k: int, n: int, x_dtype: str, w_dtype: str, shape: tuple[int, ...]) -> tirx.PrimFunc:
    """One row: thread t's contiguous share of the panels split into `regions` parts, row r of one panel of
    each part read per step. The output is [t, s, q, c] so that one step's accumulators are one tile."""
    threads, regions, per, cols = shape
    x = te.placeholder((1, k), x_dtype, name="x")
    w = te.placeholder((n // cols, k, cols), w_dtype, name="w")
    r = te.reduce_axis((0, k), name="r")
    acc = te.compute(shape, lambda t, s, q, c: te.sum(x[0, r].astype("float32") * w[
        (t * regions + s) * per + q, r, c].astype("float32"), axis=r), name="acc")
    y = te.compute(shape, lambda *i: acc[i].astype(x_dtype), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, w, y]))
    block = sch.get_sblock("acc")
    t, s, q, c, r = sch.get_loops(block)
    sch.reorder(t, q, r, s, c)
    writeback = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(writeback, q)
    sch.reverse_compute_inline(sch.get_sblock("y"))
    sch.unroll(s)
    sch.vectorize(c)
    if threads > 1:
        sch.parallel(t)
    sch.decompose_reduction(block, r)
    sch.vectorize(sch.get_loops(writeback)[-1])
    return sch.mod["main"]
