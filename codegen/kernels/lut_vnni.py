"""Lookup-table accumulation on AVX-512 VBMI + VNNI: the tables of four groups in one register, one `vpermb`
looking up 64 entries at once and one `vpdpbusd` summing them, four lookups to an int32 lane.

Same arithmetic as codegen/kernels/lut.py (24-bit integer tables split into three bytes, exact to ~1e-7),
different instructions. There, a 16-entry `vpshufb` table holds one group, so every lookup is widened to
int16 and added on its own: per 32 rows x 8 weights, 6 shuffles, 6 widenings and 6 adds. Here the 64-entry
`vpermb` table holds four groups (entry 16j + p: group 4q + j, sign pattern p), byte lane 4r + j of the index
selects row r's pattern of group j, and `vpdpbusd` (times an all-ones vector) adds the four bytes of each row
into its int32 accumulator: per 16 rows x 16 weights, 3 permutes and 3 dot-products. The int32 sums need no
chunking, and the three byte planes recombine once per output (low and middle exactly in int32: K up to
65536 for trits, 131072 for signs; the high byte in fp32).

Weights are re-laid out at build time: for the 16 rows of block ob and the pair of quads qp (activations
32qp .. 32qp+31), byte 4r + j holds row 16ob + r's sign nibble of group 4(2qp) + j (low) and of group
4(2qp + 1) + j (high); bit i of a nibble = weight 4g + i. One load and a mask or a shift give the indices of
two quads. Ternary weights are two sign planes (t = (a + b) / 2), looked up in the same tables, as in lut.py.
The blocks are stored in the order the kernel reads them, so each thread streams its share front to back.
"""

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from codegen.kernels import UNFUSED, Fused
from codegen.kernels.lut import FULL, epilogue, row_scales

ISA = "avx512vnni"
ROWS = 16  # rows per register: 64 index bytes = 16 rows x 4 groups
QUAD = 16  # activations per table register: 4 groups of 4
TILE_QUADS = 64  # quads per K tile: its three tables (3 x 64 x 64 B = 12 KiB) stay in L1
BLOCKS = 16  # row blocks per parallel task
MIN_TASKS = 8
PERMUTE = "llvm.x86.avx512.permvar.qi.512"
DOT = "llvm.x86.avx512.vpdpbusd.512"
SPREAD = "llvm.x86.avx512.permvar.sf.512"
# Software prefetch of the weight stream: a decode step's layers are small (28-221 KB on SmolLM2) and come from
# DRAM, too short for the hardware prefetcher to ramp up. A decode thread requests its first LEAD bytes before
# it builds its tables (a prefill task before its first load), then every 64-byte load requests the line
# PREFETCH bytes ahead into L1 (1x1536x576 trits from DRAM: 13.7 vs 15.6 us, 576x1536 20.6 vs 22.9; 4096 bytes
# ahead gained less) and the line FAR bytes ahead into L2, which keeps more lines in flight than L1's miss
# buffers allow (cold, alternated with the L1 prefetch alone: 1x4096x4096 signs 74-78 vs 87-99 us, 1x3072x576
# trits 17.0-17.3 vs 19.5, 1x576x576 5.1-6.1 vs 5.7-6.7; znver4, 2 threads). Prefetches never fault, so the
# ones past the end of the weights are harmless.
PREFETCH = 2048
FAR = 6144
LEAD = 4096


def quad_entries(xs: tirx.Expr, c: tirx.Expr) -> tirx.Expr:
    """Vector c of a quad's table: lane 4L + r holds entry 4c + r of group L (xs: the quad's 16 scaled
    activations), the order in which _pack's lane-wise packs put entry p of group j at byte 16j + p."""
    lane = T.ramp(0, 1, 16)
    total = T.broadcast(T.float32(0), 16)
    for t in range(4):  # activation 4L + t, added where bit t of the pattern 4c + r is set
        spread = T.call_llvm_pure_intrin("float32x16", SPREAD, xs, T.shift_right(lane, T.broadcast(2, 16))
                                         * T.broadcast(4, 16) + T.broadcast(t, 16))
        pattern = T.broadcast(4 * c, 16) + T.bitwise_and(lane, T.broadcast(3, 16))
        sign = T.bitwise_and(T.shift_right(pattern, T.broadcast(t, 16)), T.broadcast(1, 16))
        total = total + spread * T.Cast("float32x16", sign * T.broadcast(2, 16) - T.broadcast(1, 16))
    return total


def _pack(v: tirx.Buffer, mask: int, shift: int, signed: bool) -> tirx.Expr:
    """Byte `shift / 8` of the 64 entries in v [4, 16] as one int8x64 (packs saturate: the masked low and middle
    bytes fit unsigned, the shifted high byte signed)."""
    words, narrow = (("llvm.x86.avx512.packssdw.512", "llvm.x86.avx512.packsswb.512") if signed
                     else ("llvm.x86.avx512.packusdw.512", "llvm.x86.avx512.packuswb.512"))
    part = [T.shift_right(v[c, T.ramp(0, 1, 16)], T.broadcast(shift, 16)) for c in range(4)]
    if mask != -1:
        part = [T.bitwise_and(p, T.broadcast(mask, 16)) for p in part]
    return T.call_llvm_pure_intrin("int8x64", narrow, T.call_llvm_pure_intrin("int16x32", words, part[0], part[1]),
                                   T.call_llvm_pure_intrin("int16x32", words, part[2], part[3]))


def vnni_fits(n: int, k: int, planes: int = 2) -> bool:
    """Whole 16-row blocks, whole quad pairs, and few enough lookups per row for the int32 recombination."""
    return n % ROWS == 0 and k % (2 * QUAD) == 0 and planes * k // 4 < 1 << 15


def _plan(n: int, k: int, threads: int = 1) -> tuple[int, int]:
    """(quads per K tile, row blocks per parallel task) for an n x k layer: a task count that the threads
    share evenly where N allows (36 blocks over 2 threads: 18 tasks of 2, not 9 of 4)."""
    quads, obs = k // QUAD, n // ROWS
    tile = next(t for t in range(min(TILE_QUADS, quads), 0, -2) if quads % t == 0)
    fits = [b for b in (BLOCKS, 8, 4, 2, 1) if obs % b == 0 and (obs // b >= MIN_TASKS or b == 1)]
    return tile, next((b for b in fits if obs // b % threads == 0), fits[0])


def vnni_layout(weights: np.ndarray, planes: int, threads: int = 1) -> np.ndarray:
    """Signs (planes=1) or trits (planes=2) [n, k] -> the kernel's nibble layout, in the order the kernel reads
    it: [task, K tile, block, plane, quad pair in tile, 4r + j] (each thread streams its tasks front to back)."""
    n, k = weights.shape
    tile, blocks = _plan(n, k, threads)
    bit_planes = [weights > 0] if planes == 1 else [weights >= 0, weights > 0]
    out = []
    for plane in bit_planes:
        # nibble[row, group]: bit j = weight 4 * group + j
        nib = np.packbits(plane.reshape(n, k // 4, 4), axis=-1, bitorder="little")[..., 0]
        nib = nib.reshape(n // ROWS, ROWS, k // (2 * QUAD), 2, 4)  # [ob, r, qp, s, j]: quad 2qp + s
        byte = nib[:, :, :, 0] | (nib[:, :, :, 1] << 4)  # [ob, r, qp, j]: low nibble quad 2qp, high 2qp + 1
        out.append(byte.transpose(0, 2, 1, 3).reshape(n // ROWS, k // (2 * QUAD), 64))  # [ob, qp, 4r + j]
    w = np.stack(out, axis=1).reshape(n // ROWS // blocks, blocks, planes, k // QUAD // tile, tile // 2, 64)
    return np.ascontiguousarray(w.transpose(0, 3, 1, 2, 4, 5))


def vnni_kernel(m: int, n: int, k: int, name: str, planes: int = 1, fused: Fused = UNFUSED,
                threads: int = 1) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, w (vnni_layout) u8, extras, y [m, n] f32), row blocks split across threads; y is
    the mean over the planes (1: signs, 2: trits).

    One row (decode) runs as one parallel region of `threads` iterations, each building its own copy of the
    tables and then streaming its share of the weights: a table built by one core and read by the other costs
    a cross-core transfer for every line the next call rewrites (a serial build of K=1536's 18 KiB of tables
    stalled about 5 us a call on its stores, znver4), and the weights' first lines arrive while the tables are
    built.
    Several rows (prefill) build the tables in one parallel loop and split the row blocks in a second."""
    if not vnni_fits(n, k, planes):
        raise ValueError(f"VNNI LUT kernel needs N % {ROWS} == 0, K % {2 * QUAD} == 0 and planes x K/4 < 2**15, "
                         f"got N={n}, K={k}, planes={planes}")
    groups, quads, obs = k // 4, k // QUAD, n // ROWS
    tile, blocks = _plan(n, k, threads)
    tasks = obs // blocks
    per = -(-tasks // threads)  # a decode thread's tasks
    # lo and mid bytes are stored biased by -128; with the bias back, lo + 256 mid lies in [0, 65535 x lookups],
    # inside int32 for fewer than 2**15 lookups per row (vnni_fits)
    bias = 128 * 257 * planes * groups
    task_bytes = blocks * planes * quads * 32
    flat = obs * planes * quads * 32 + max(PREFETCH, FAR, LEAD)  # w, flat, for prefetches (which may pass its end)

    @T.macro
    def build_quad(x: T.Buffer, pre: T.Buffer, inv: T.Buffer, lo: T.Buffer, mid: T.Buffer, hi: T.Buffer,
                   i: tirx.Expr, q: tirx.Expr) -> None:
        """Quad q's 64 entries of row i at once: four vectors of 16 (vpermps spreads the quad's activations),
        packed to bytes by saturating packs whose 128-bit-lane order puts entry p of group j at byte 16j + p."""
        xs = T.alloc_buffer((16,), "float32")
        v = T.alloc_buffer((4, 16), "int32")
        xs[T.ramp(0, 1, 16)] = x[i, T.ramp(16 * q, 1, 16)] * T.broadcast(inv[i], 16)
        if fused.pre:
            xs[T.ramp(0, 1, 16)] = xs[T.ramp(0, 1, 16)] * pre[T.ramp(16 * q, 1, 16)]
        for c in T.unroll(4):
            v[c, T.ramp(0, 1, 16)] = T.max(T.min(T.Cast("int32x16", T.round(quad_entries(
                xs[T.ramp(0, 1, 16)], c))), T.broadcast(FULL, 16)), T.broadcast(-FULL, 16))
        lo[i, q, T.ramp(0, 1, 64)] = T.bitwise_xor(_pack(v, 255, 0, False), T.broadcast(T.int8(-128), 64))
        mid[i, q, T.ramp(0, 1, 64)] = T.bitwise_xor(_pack(v, 255, 8, False), T.broadcast(T.int8(-128), 64))
        hi[i, q, T.ramp(0, 1, 64)] = _pack(v, -1, 16, True)

    @T.macro
    def lead(wf: T.Buffer, obo: tirx.Expr) -> None:
        """Request task obo's first LEAD bytes."""
        for j in range(LEAD // 64):
            T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(
                wf[obo * task_bytes + j * 64]), 0, 3, 1))

    @T.macro
    def accumulate(w: T.Buffer, wf: T.Buffer, lo: T.Buffer, mid: T.Buffer, hi: T.Buffer, scale: T.Buffer,
                   post: T.Buffer, add: T.Buffer, y: T.Buffer, obo: tirx.Expr, i: tirx.Expr) -> None:
        """Task obo's row blocks for activation row i, through the epilogue."""
        acc = T.alloc_buffer((blocks, 3, 16), "int32")
        # one accumulator set per nibble (even and odd quads): consecutive dot-products do not wait
        part = T.alloc_buffer((2, 3, 16), "int32")
        for obi, c in T.grid(blocks, 3):
            acc[obi, c, T.ramp(0, 1, 16)] = T.broadcast(T.int32(0), 16)
        for kt, obi in T.grid(quads // tile, blocks):
            for s, c in T.grid(2, 3):
                part[s, c, T.ramp(0, 1, 16)] = T.broadcast(T.int32(0), 16)
            for pl, qp in T.grid(planes, tile // 2):
                b = T.bind(w.vload([obo, kt, obi, pl, qp, 0], "uint8x64"))
                at = T.bind((((obo * (quads // tile) + kt) * blocks + obi) * planes + pl) * (tile // 2) * 64 + qp * 64)
                T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(wf[at + PREFETCH]), 0, 3, 1))
                T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(wf[at + FAR]), 0, 2, 1))
                for s in T.unroll(2):  # the low nibbles index quad 2qp, the high ones quad 2qp + 1
                    q = T.bind(kt * tile + 2 * qp + s)
                    # byte lane 4r + j looks up entries 16j .. 16j + 15
                    idx = T.bind(T.reinterpret("int8x64", ((b >> T.broadcast(T.uint8(4 * s), 64)) & T.broadcast(
                        T.uint8(15), 64)) | T.Cast("uint8x64", (T.ramp(0, 1, 64) % 4) * 16)))
                    ones = T.bind(T.broadcast(T.int8(1), 64))
                    part[s, 0, T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin("int32x16", DOT, part[
                        s, 0, T.ramp(0, 1, 16)], ones, T.call_llvm_pure_intrin(
                        "int8x64", PERMUTE, lo.vload([i, q, 0], "int8x64"), idx))
                    part[s, 1, T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin("int32x16", DOT, part[
                        s, 1, T.ramp(0, 1, 16)], ones, T.call_llvm_pure_intrin(
                        "int8x64", PERMUTE, mid.vload([i, q, 0], "int8x64"), idx))
                    part[s, 2, T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin("int32x16", DOT, part[
                        s, 2, T.ramp(0, 1, 16)], ones, T.call_llvm_pure_intrin(
                        "int8x64", PERMUTE, hi.vload([i, q, 0], "int8x64"), idx))
            for s, c in T.grid(2, 3):
                acc[obi, c, T.ramp(0, 1, 16)] = acc[obi, c, T.ramp(0, 1, 16)] + part[s, c, T.ramp(0, 1, 16)]
        for obi in range(blocks):
            col = T.bind((obo * blocks + obi) * 16)
            # low and middle bytes recombine exactly in int32, the high byte joins in fp32
            y[i, T.ramp(col, 1, 16)] = epilogue(T.Cast("float32x16", acc[obi, 0, T.ramp(0, 1, 16)] + acc[
                obi, 1, T.ramp(0, 1, 16)] * T.broadcast(256, 16) + T.broadcast(bias, 16)) + T.Cast(
                "float32x16", acc[obi, 2, T.ramp(0, 1, 16)]) * T.broadcast(T.float32(65536), 16),
                scale[i] / T.float32(FULL * planes), post, add, i, col, 16, fused)

    @T.prim_func
    def decode(x: T.Buffer((1, k), "float32"),
               w: T.Buffer((tasks, quads // tile, blocks, planes, tile // 2, 64), "uint8"),
               pre: T.Buffer((k,), "float32"), post: T.Buffer((n,), "float32"), add: T.Buffer((1, n), "float32"),
               y: T.Buffer((1, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        wf = T.decl_buffer((flat,), "uint8", data=w.data)
        for t in T.parallel(threads):
            lo = T.alloc_buffer((1, quads, 64), "int8")  # low byte of each 24-bit entry, biased by -128
            mid = T.alloc_buffer((1, quads, 64), "int8")  # middle byte, biased by -128
            hi = T.alloc_buffer((1, quads, 64), "int8")  # high byte, signed
            scale = T.alloc_buffer((1,), "float32")
            inv = T.alloc_buffer((1,), "float32")
            lead(wf, T.min(t * per, tasks - 1))
            row_scales(x, pre, inv, scale, 1, groups, fused.pre)
            for q in range(quads):
                build_quad(x, pre, inv, lo, mid, hi, 0, q)
            for o in range(per):
                if t * per + o < tasks:
                    accumulate(w, wf, lo, mid, hi, scale, post, add, y, t * per + o, 0)

    @T.prim_func
    def prefill(x: T.Buffer((m, k), "float32"),
                w: T.Buffer((tasks, quads // tile, blocks, planes, tile // 2, 64), "uint8"),
                pre: T.Buffer((k,), "float32"), post: T.Buffer((n,), "float32"), add: T.Buffer((m, n), "float32"),
                y: T.Buffer((m, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        wf = T.decl_buffer((flat,), "uint8", data=w.data)
        lo = T.alloc_buffer((m, quads, 64), "int8")
        mid = T.alloc_buffer((m, quads, 64), "int8")
        hi = T.alloc_buffer((m, quads, 64), "int8")
        scale = T.alloc_buffer((m,), "float32")
        inv = T.alloc_buffer((m,), "float32")
        row_scales(x, pre, inv, scale, m, groups, fused.pre)
        for iq in T.parallel(m * quads):
            build_quad(x, pre, inv, lo, mid, hi, iq // quads, iq % quads)
        for obo in T.parallel(tasks):
            lead(wf, obo)
            for i in range(m):
                accumulate(w, wf, lo, mid, hi, scale, post, add, y, obo, i)

    kernel = decode if m == 1 else prefill
    used = [True, True, fused.pre, fused.post, fused.add, True]
    params = [p for p, keep in zip(kernel.params, used, strict=True) if keep]
    func = tirx.PrimFunc(params, kernel.body, kernel.ret_type, kernel.attrs)
    return func.with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True)
