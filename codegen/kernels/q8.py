"""Q8_0 x Q8_0 matmuls on CPUs (the Q8_MATMUL op: a Q8_0 LM head): int8 weights, activations quantized to int8
per block of 32 before the call, products summed in int32 per block (on AVX2 int16 pairs multiplied and summed
by vpmaddwd; elsewhere widened lanes that LLVM turns into widening multiply-accumulates, smlal on aarch64), each
block's sum scaled once by its two scales in fp32, as llama.cpp's Q8_0 dot does.

The weights are laid out at build time as panels of 8 outputs [N/8, K/2, 16] (each 16 bytes: the 8 outputs'
weights k and k+1, as vpmaddwd pairs them) with their fp16 scales [N/8, K/32, 8]. At one row each thread reads
several of its panels at once (`regions`), as the dense GEMV does (codegen/kernels/dense.py): one stream per
thread is bound by memory latency. Measured on znver3 (2 threads, cold, SmolLM2's head 1x576x49152): 1.4-2.1 ms
where the fp16 dense GEMV takes 2.2-3.2 (it is compute-bound there, widening fp16 to fp32 per weight; this kernel
reads half the bytes and does a sixteenth of the instructions per weight).
"""

import numpy as np
import tvm
from tvm.script import tirx as T

from codegen.schedules.cpu import PARALLEL_MIN_MACS

BLOCK = 32
LANES = 8  # outputs per panel: one int32x8 accumulator


def q8_fits(n: int, k: int, target: tvm.target.Target | None) -> bool:
    """A CPU (LLVM) target, whole panels and whole blocks."""
    return target is not None and target.kind.name == "llvm" and n % LANES == 0 and k % BLOCK == 0


def has_pmaddwd(target: tvm.target.Target) -> bool:
    """x86 with AVX2: vpmaddwd on 256-bit vectors. Elsewhere the kernel multiplies widened int32 lanes, which
    LLVM turns into widening multiply-accumulates (smlal/smlal2 on aarch64)."""
    if "arm_cpu" in target.keys:
        return False
    with target:
        return bool(tvm.target.codegen.target_has_features("avx2"))


def q8_layout(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q int8 [N, K], d [N, K/32] -> panels [N/8, K/2, 16] (w[p, j, 2c + i] = q[8p + c, 2j + i]) and scales
    [N/8, K/32, 8] fp16."""
    n, k = q.shape
    w = q.reshape(n // LANES, LANES, k // 2, 2).transpose(0, 2, 1, 3).reshape(n // LANES, k // 2, 2 * LANES)
    s = d.astype(np.float16).reshape(n // LANES, LANES, k // BLOCK).transpose(0, 2, 1)
    return np.ascontiguousarray(w), np.ascontiguousarray(s)


def _split(m: int, n: int, k: int, threads: int) -> tuple[int, int, int]:
    """(threads, regions per thread, rows per tile): panels shared evenly by the threads; at one row up to 4
    regions a thread, else one region and up to 4 rows sharing each weight load."""
    panels = n // LANES
    threads = threads if m * n * k >= PARALLEL_MIN_MACS and panels % threads == 0 else 1
    regions = next(r for r in (4, 3, 2, 1) if (panels // threads) % r == 0) if m == 1 else 1
    return threads, regions, next(t for t in (4, 2, 1) if m % t == 0)


def q8_kernel(m: int, n: int, k: int, name: str, threads: int, pmaddwd: bool = True) -> tvm.tirx.PrimFunc:
    """PrimFunc(xq int16 [m, K] (int8 values), dx f32 [m, K/32], w int8 [N/8, K/2, 16], dw f16 [N/8, K/32, 8],
    y f32 [m, N/8, 8]): y[i, p, c] = sum_b dx[i, b] * dw[p, b, c] * sum_k xq[i, 32b + k] * q[8p + c, 32b + k].
    `pmaddwd`: the AVX2 instruction (has_pmaddwd), else portable integer vector code."""
    threads, regions, tile = _split(m, n, k, threads)
    panels, pairs, blocks = n // LANES, k // 2, k // BLOCK
    per = panels // (threads * regions)
    half = BLOCK // 2

    @T.prim_func(s_tir=True)
    def q8(xq: T.Buffer((m, k), "int16"), dx: T.Buffer((m, blocks), "float32"),
           w: T.Buffer((panels, pairs, 16), "int8"), dw: T.Buffer((panels, blocks, 8), "float16"),
           y: T.Buffer((m, panels, 8), "float32")):
        T.func_attr({"tirx.noalias": True})
        xp = T.decl_buffer((m, pairs), "int32", data=xq.data)
        for t in T.parallel(threads):
            for q in range(per):
                for row in range(m // tile):
                    accf = T.alloc_buffer((tile, regions, 8), "float32", scope="local")
                    acci = T.alloc_buffer((tile, regions, 8), "int32", scope="local")
                    for i in T.unroll(tile):
                        for r in T.unroll(regions):
                            accf[i, r, T.ramp(0, 1, 8)] = T.broadcast(T.float32(0), 8)
                    for blk in range(blocks):
                        for i in T.unroll(tile):
                            for r in T.unroll(regions):
                                acci[i, r, T.ramp(0, 1, 8)] = T.broadcast(T.int32(0), 8)
                        for j in T.unroll(half):
                            for r in T.unroll(regions):
                                p = (t * regions + r) * per + q
                                if pmaddwd:
                                    wv = T.Cast("int16x16", w[p, blk * half + j, T.ramp(0, 1, 16)])
                                    for i in T.unroll(tile):
                                        pair = xp[row * tile + i, blk * half + j]  # x[2j], x[2j + 1] as one int32
                                        xb = T.reinterpret("int16x16", T.broadcast(pair, 8))
                                        acci[i, r, T.ramp(0, 1, 8)] = acci[i, r, T.ramp(0, 1, 8)] + \
                                            T.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.pmadd.wd", wv, xb)
                                else:
                                    we = T.Cast("int32x8", w[p, blk * half + j, T.ramp(0, 2, 8)])
                                    wo = T.Cast("int32x8", w[p, blk * half + j, T.ramp(1, 2, 8)])
                                    for i in T.unroll(tile):
                                        k0 = (blk * half + j) * 2
                                        acci[i, r, T.ramp(0, 1, 8)] = acci[i, r, T.ramp(0, 1, 8)] + we * T.broadcast(
                                            T.Cast("int32", xq[row * tile + i, k0]), 8) + wo * T.broadcast(
                                            T.Cast("int32", xq[row * tile + i, k0 + 1]), 8)
                        for i in T.unroll(tile):
                            for r in T.unroll(regions):
                                accf[i, r, T.ramp(0, 1, 8)] = accf[i, r, T.ramp(0, 1, 8)] + T.Cast(
                                    "float32x8", acci[i, r, T.ramp(0, 1, 8)]) * (T.Cast(
                                        "float32x8", dw[(t * regions + r) * per + q, blk, T.ramp(0, 1, 8)])
                                        * T.broadcast(dx[row * tile + i, blk], 8))
                    for i in T.unroll(tile):
                        for r in T.unroll(regions):
                            p = (t * regions + r) * per + q
                            y[row * tile + i, p, T.ramp(0, 1, 8)] = accf[i, r, T.ramp(0, 1, 8)]

    return q8.with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
