"""Dense matmuls on CPUs against constant weights (every linear layer), with the weights packed into panels
at build time, as BLAS libraries prepack them.

A row-major [K, N] weight read by a register tile of `cols` outputs touches `cols` floats of each of K rows,
N floats apart: one short burst per 16 KiB stride (N=4096), which the hardware prefetchers follow badly
(16.7 GB/s at one row, cold, on znver4: 49% of DRAM bandwidth), and which the GEMM schedule otherwise packs
at run time, on every call. Laid out at build time as panels [N/cols, K, cols], each thread streams whole
panels front to back: at one row (decode) 32.7 GB/s fp32 cold on the same machine, where onnxruntime's fp32
MatMul reads 33 GB/s. fp16 weights (an fp16 base) stay fp16 in memory and are widened in registers, so a
GEMV reads half the bytes; accumulation is fp32 whatever the types, as the interpreter defines it.
"""

import numpy as np
from tvm import s_tir, te, tirx
from tvm.target import Target

from codegen.schedules.cpu import block_gemm, tile_shape

PANEL_DTYPES = ("float32", "float16")


def panel_cols(m: int, n: int, target: Target) -> int | None:
    """Outputs per panel (the register tile's columns for m rows); None where N is not a multiple of 4."""
    return tile_shape(m, n, target)[1] if n % 4 == 0 else None


def panel_layout(w: np.ndarray, cols: int) -> np.ndarray:
    """[K, N] -> [N/cols, K, cols]: panel p holds outputs p*cols .. p*cols+cols-1, row k after row k-1."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k, n // cols, cols).transpose(1, 0, 2))


def dense_kernel(m: int, k: int, n: int, x_dtype: str, w_dtype: str, name: str, target: Target) -> tirx.PrimFunc:
    """PrimFunc(x [m, K] x_dtype, w [N/cols, K, cols] w_dtype, y [m, N] x_dtype): y = x @ W, fp32 sums."""
    cols = tile_shape(m, n, target)[1]
    x = te.placeholder((m, k), x_dtype, name="x")
    w = te.placeholder((n // cols, k, cols), w_dtype, name="w")
    r = te.reduce_axis((0, k), name="r")
    acc = te.compute((m, n), lambda i, j: te.sum(x[i, r].astype("float32") * w[j // cols, r, j % cols].astype(
        "float32"), axis=r), name="acc")
    y = te.compute((m, n), lambda i, j: acc[i, j].astype(x_dtype), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, w, y]))
    block_gemm(sch, sch.get_sblock("acc"), [m, n, k], target, epilogues=(sch.get_sblock("y"),))
    func = sch.mod["main"].with_attr("global_symbol", name)
    return func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
