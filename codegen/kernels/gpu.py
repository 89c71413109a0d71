"""Packed accumulations for GPUs: y[m, n] = sum_k W[n, k] x[m, k] with W decoded from the packed words
inside the kernel.

Prefill (m >= GEMV_MAX_ROWS): an unscheduled decode + matmul, the shape of a dequantising matmul, which
TVM's dlight Matmul rule schedules (shared-memory tiles of x and of the decoded weights, thread blocks).
Decode (fewer rows): scheduled here, because dlight's GEMV rule emits a vector broadcast that TVM 0.27's CUDA
codegen rejects on this pattern. `decode_gemv` (constant weights, K a multiple of a word's fields): the
packed rows re-laid out as uint32 words, a warp per weight row, lane t loading words t, t+32, ... (a warp
reads 128 contiguous bytes), the word's 32 signs (16 trits) unpacked in registers against the lane's 32
(16) activations, fetched as float4 vectors, then a warp-shuffle reduction. `decode_matmul` scheduled the same
way over bytes covers the rest.

Extras (codegen.kernels.Fused): both fold a pre-scale into the decoded weights; the prefill kernel also takes
post-scale and addend as the matmul epilogue dlight schedules. The decode kernel leaves those two to Relax
(`gpu_fusable`): placing an epilogue after the warp reduction is not something this machine, which has no
GPU, can check.
"""

import numpy as np
from tvm import s_tir, te, tirx
from tvm.tirx import Select, const

from codegen.kernels import UNFUSED, Fused
from codegen.kernels.extras import decoder, epilogue, placeholders, signature

GEMV_MAX_ROWS = 8
ROWS_PER_BLOCK = 4  # warps per thread block


def word_layout(packed: np.ndarray) -> np.ndarray:
    """Packed rows [n, k*bits/8] uint8 -> [n, k*bits/32] uint32: the same fields, four bytes per word
    (little-endian, so field j of a word is field j of its bytes in order)."""
    if packed.shape[1] % 4:
        raise ValueError(f"rows of {packed.shape[1]} bytes do not fill whole 32-bit words")
    return np.ascontiguousarray(packed).view("<u4")


def gemv_te(m: int, n: int, k: int, bits: int, fused: Fused = UNFUSED) -> list[te.Tensor]:
    """The word GEMV's computation, unscheduled (tests run it on the CPU against numpy)."""
    per = 32 // bits  # fields per word
    if k % per or m >= GEMV_MAX_ROWS or fused.post or fused.add:
        raise ValueError(f"the word GEMV takes fewer than {GEMV_MAX_ROWS} rows, K a multiple of {per} and at most "
                         f"a pre-scale; got {m}x{n}x{k}, {fused}")
    x = te.placeholder((m, k), "float32", name="x")
    words = te.placeholder((n, k // per), "uint32", name="words")
    extra = placeholders(fused, m, n, k)
    rw = te.reduce_axis((0, k // per), name="rw")
    rf = te.reduce_axis((0, per), name="rf")

    def term(i, o):
        f = (words[o, rw] >> (rf * bits).astype("uint32")) & const((1 << bits) - 1, "uint32")
        v = x[i, rw * per + rf] * extra["pre"][rw * per + rf] if "pre" in extra else x[i, rw * per + rf]
        if bits == 1:
            return Select(f == const(1, "uint32"), v, -v)
        return Select(f == const(2, "uint32"), v, Select(f == const(0, "uint32"), -v, const(0.0, "float32")))

    y = te.compute((m, n), lambda i, o: te.sum(term(i, o), axis=[rw, rf]), name="y")
    return signature(x, words, extra, y)


def decode_gemv(m: int, n: int, k: int, name: str, bits: int, fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, words [n, k*bits/32] u32, [pre [k] f32], y [m, n] f32) for m < GEMV_MAX_ROWS."""
    func = te.create_prim_func(gemv_te(m, n, k, bits, fused)).with_attr("global_symbol", name)
    sch = s_tir.Schedule(func.with_attr("op_pattern", 8))
    block = sch.get_sblock("y")
    i, o, w, f = sch.get_loops(block)
    ob, oy = sch.split(o, factors=[None, next(r for r in (ROWS_PER_BLOCK, 2, 1) if n % r == 0)])
    wo, lane = sch.split(w, factors=[None, 32])  # a predicate masks the lanes past the last word
    sch.reorder(i, ob, oy, lane, wo, f)
    for buf in ["x", "words", *(["pre"] if fused.pre else [])]:
        index = [r.source.name for r in sch.get(block).reads].index(buf)
        local = sch.cache_read(block, index, "local")
        sch.compute_at(local, wo)
        if buf != "words":  # the lane's `per` activations (and pre-scales) as float4 loads
            _, vec = sch.split(sch.get_loops(local)[-1], factors=[None, 4])
            sch.vectorize(vec)
    _bind_warp_per_row(sch, i, ob, oy, lane)
    sch.unroll(f)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _bind_warp_per_row(sch: s_tir.Schedule, i: s_tir.schedule.LoopRV, ob: s_tir.schedule.LoopRV,
                       oy: s_tir.schedule.LoopRV, lane: s_tir.schedule.LoopRV) -> None:
    """Activation rows x row blocks on the grid, a warp per weight row in the block, its lanes along K."""
    sch.bind(i, "blockIdx.y")
    sch.bind(ob, "blockIdx.x")
    sch.bind(oy, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")  # a reduction loop on threads: TVM emits the warp-shuffle allreduce


def gpu_fusable(m: int, fused: Fused) -> Fused:
    """The part of `fused` the kernel for m rows applies itself."""
    return fused if m >= GEMV_MAX_ROWS else Fused(pre=fused.pre)


def decode_matmul(m: int, n: int, k: int, name: str, bits: int, fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, packed [n, k*bits/8] u8, extras, y [m, n] f32); prefill is left for dlight to
    schedule. `fused` must be what gpu_fusable allows."""
    per = 8 // bits
    if k % per:
        raise ValueError(f"K={k} does not fill whole bytes at {bits} bit(s) per weight")
    if fused != gpu_fusable(m, fused):
        raise ValueError(f"the {m}-row GPU kernel does not fuse {fused}")
    x = te.placeholder((m, k), "float32", name="x")
    packed = te.placeholder((n, k // per), "uint8", name="packed")
    extra = placeholders(fused, m, n, k)

    w = te.compute((n, k), decoder(packed, extra, bits), name="decode")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, o: te.sum(x[i, r] * w[o, r], axis=r), name="y")
    # opaque to Relax's operator fusion (as the CPU kernels): FuseTIR cannot merge a kernel called twice in a group
    func = te.create_prim_func(signature(x, packed, extra, epilogue(y, extra)))
    func = func.with_attr("global_symbol", name).with_attr("op_pattern", 8)
    if m >= GEMV_MAX_ROWS:
        return func
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("decode"))
    i, o, r = sch.get_loops(sch.get_sblock("y"))
    rows = next(f for f in (ROWS_PER_BLOCK, 2, 1) if n % f == 0)
    ob, oy = sch.split(o, factors=[None, rows])
    ro, lane, field = sch.split(r, factors=[None, 32, per]) if k % (32 * per) == 0 else \
        (*sch.split(r, factors=[None, per]), None)
    if field is None:  # K not a multiple of 32 bytes: lanes take whole bytes, strided
        ro, field = ro, lane
        ro, lane = sch.split(ro, factors=[None, 32])
    sch.reorder(i, ob, oy, lane, ro, field)
    _bind_warp_per_row(sch, i, ob, oy, lane)
    sch.unroll(field)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
