"""T-MAC-style lookup-table accumulation: y[m, n] = sum_k S[n, k] x[m, k] for sign weights S in {-1, +1}.

For each group of 4 activations the 16 possible signed sums are precomputed once per activation row
(a table); a weight row then contributes one lookup per group, indexed by its 4 sign bits. The lookups
are byte shuffles over 16 (NEON `tbl`, SSSE3 `pshufb`) or 32 (AVX2 `vpshufb`) rows at once, so a
128/256-bit register covers 64/128 weights per instruction and no multiply or per-weight select is left.

Precision: T-MAC's int8 tables lose ~1% (shared/notes/tvm-0.27.md 3b), more than the verifier allows, and
int16 tables ~3e-5 per matmul, which 30 layers of a ternary base compound to 1.4e-3. Here each table entry
is a 24-bit integer (scale 8388607 / max |entry| per row, fp32's own mantissa) split into three bytes,
looked up separately and recombined per chunk of lookups: three shuffles per group and row vector, a
relative error near 1e-7, as fp32 summation in another order. The lookups are summed in int16 per chunk; x86
widens them by multiply-add (pmaddubsw, WIDEN), which halved the AVX2 kernel's time where sign extension kept
the shuffle pipes busy (1x4096x4096 signs, znver3, 2 threads: warm 235-262 vs 473-512 us, cold 318-411 vs
512-563).

Weights are re-laid out at build time (they are constants): W[ob, gp, r] holds, for row 16/32*ob + r,
the sign nibbles of groups 2gp (low nibble) and 2gp+1 (high nibble); bit j of a nibble = weight 4g+j. (On
x86, byte lane r reads row r/2 or L/2 + r/2 instead, so that the even and odd lanes widen into rows in order.)
Ternary weights t are two sign planes a, b with t = (a + b) / 2 (t=1: +,+; t=0: +,-; t=-1: -,-), stacked
along gp and looked up in the same tables: twice the sign work, no extra table. On x86 (`paired`) the two
planes of a row sit in adjacent byte lanes instead, so one multiply-add by ones both widens and sums them:
a vector covers 16 rows where a plane's covered 32, with half the multiply-adds and adds per lookup (znver3,
2 threads, warm: 1x3072x576 45 vs 67-77 us, 1x4096x4096 342-372 vs 474-711).

A pre-scale multiplies the activations as the tables are built (once per activation, not per weight);
post-scale and addend join the final conversion of each output vector.
"""

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from codegen.kernels import UNFUSED, Fused

SHUFFLE = {"avx2": ("llvm.x86.avx2.pshuf.b", 32), "ssse3": ("llvm.x86.ssse3.pshuf.b.128", 16),
           "neon": ("llvm.aarch64.neon.tbl1.v16i8", 16)}
# x86 widens each lookup to int16 by multiply-add (pmaddubsw by 1, 0: the even byte lanes; by 0, 1: the odd), on
# the multiply pipes, where sign extension (vpmovsxbw, vextracti128) took three shuffles beside the lookup's one
WIDEN = {"avx2": "llvm.x86.avx2.pmadd.ub.sw", "ssse3": "llvm.x86.ssse3.pmadd.ub.sw.128"}
CHUNK = 64  # group pairs per int16 accumulation chunk: 128 lookups of |v| <= 128 stay inside int16
FULL = 8388607  # 2**23 - 1: a table entry's integer range, three bytes
TILE_PAIRS = 256  # group pairs per K tile: its lo/hi tables (2 x 512 x L bytes, 32 KiB for AVX2) stay in L1
BLOCKS = 16  # row blocks (of L rows) per parallel task, whose int32 accumulators live across the K tiles
MIN_TASKS = 8  # parallel tasks to keep, where N allows, so every core gets work


def signed_sum(x: tirx.Buffer, pre: tirx.Buffer, i: tirx.Expr, g: tirx.Expr, p: tirx.Expr,
               prescale: bool) -> tirx.Expr:
    """Entry p of group g's table in activation units: the sum of (pre-scaled) x[i, 4g + j], added where bit j
    of p is set, subtracted where not. Vectorised over p the signs fold to constant vectors: a broadcast and
    a multiply-add per activation. Shared by the shuffle (here) and the VNNI (lut_vnni.py) kernels."""
    total = T.float32(0)
    for j in range(4):
        a = x[i, 4 * g + j] * pre[4 * g + j] if prescale else x[i, 4 * g + j]
        total = total + a * T.Cast("float32", (T.shift_right(p, j) & 1) * 2 - 1)
    return total


def table_entry(total: tirx.Expr, inv: tirx.Expr) -> tirx.Expr:
    """A table entry as an integer of FULL / the row's scale (inv = FULL / scale). Clamped: the row's largest
    entry may round one past FULL (fp32 has 24 bits), which the signed high byte would wrap."""
    return T.max(T.min(T.Cast("int32", T.round(total * inv)), FULL), -FULL)


def epilogue(total: tirx.Expr, unit: tirx.Expr, post: tirx.Buffer, add: tirx.Buffer, i: tirx.Expr, col: tirx.Expr,
             lanes: int, fused: Fused) -> tirx.Expr:
    """An output vector (columns col .. col + lanes - 1 of row i): the integer sums times the table unit, then
    the fused post-scale and addend. Shared by the shuffle (here) and the VNNI (lut_vnni.py) kernels."""
    out = total * T.broadcast(unit, lanes)
    if fused.post:
        out = out * post[T.ramp(col, 1, lanes)]
    if fused.add:
        out = out + add[i, T.ramp(col, 1, lanes)]
    return out


@T.macro
def row_scales(x: T.Buffer, pre: T.Buffer, inv: T.Buffer, scale: T.Buffer, m: int, groups: int,
               prescale: bool) -> None:
    """scale[i] = the largest entry of row i's tables (the largest |sum| of a group of 4 pre-scaled
    activations), inv[i] = FULL / scale[i]: the entries' unit. Vectorised over the 16 sign patterns, as the
    tables are; one scalar division per row. Shared by the shuffle (here) and the VNNI (lut_vnni.py) kernels."""
    for i in T.parallel(m) if m > 1 else T.serial(m):
        top = T.alloc_buffer((16,), "float32")  # running max per sign pattern
        for p in T.vectorized(16):
            top[p] = T.float32(0)
        for g in range(groups):
            for p in T.vectorized(16):
                top[p] = T.max(top[p], signed_sum(x, pre, i, g, p, prescale))
        scale[i] = T.float32(0)
        for p in range(16):
            scale[i] = T.max(scale[i], top[p])
        inv[i] = T.float32(FULL) / T.max(scale[i], T.float32(1e-30))


@T.macro
def build_tables(x: T.Buffer, pre: T.Buffer, inv: T.Buffer, lo: T.Buffer, mid: T.Buffer, hi: T.Buffer, m: int,
                 groups: int, lanes: int, prescale: bool) -> None:
    """The tables, m * k/4 * L entries (as many as a 4 x L block of weights), each entry's three bytes in lo,
    mid (both biased by -128) and hi (signed)."""
    for ig in T.parallel(m * groups) if m > 1 else T.serial(groups):
        i, g = T.bind(ig // groups), T.bind(ig % groups)
        # p & 15 selects the signs: the table repeats across 128-bit lanes. (No let-bindings inside these
        # vectorised loops: TVM 0.27 vectorises a let-bound value as the scalar of the last lane.)
        v = T.alloc_buffer((lanes,), "int32")
        for p in T.vectorized(lanes):
            v[p] = table_entry(signed_sum(x, pre, i, g, p & 15, prescale), inv[i])
        for p in T.vectorized(lanes):
            lo[i, g, p] = T.Cast("int8", (v[p] & 255) - 128)
            mid[i, g, p] = T.Cast("int8", (T.shift_right(v[p], 8) & 255) - 128)
            hi[i, g, p] = T.Cast("int8", T.shift_right(v[p], 16))


def lut_fits(n: int, k: int, isa: str) -> bool:
    return n % SHUFFLE[isa][1] == 0 and k % 8 == 0


def paired(isa: str, planes: int) -> bool:
    """Trits on x86: byte lanes 2j and 2j+1 hold the two sign planes of one row, so that one multiply-add by
    ones sums both planes' lookups into that row's int16 (half the widening of a plane per vector)."""
    return isa in WIDEN and planes == 2


def lut_layout(weights: np.ndarray, isa: str, planes: int) -> np.ndarray:
    """Signs (planes=1) or trits (planes=2) [n, k] -> the kernel's [n/L, planes * k/8, L] nibble layout, or,
    `paired`, [n/(L/2), k/8, L] with the planes of row j in lanes 2j, 2j+1."""
    lanes = SHUFFLE[isa][1]
    n, k = weights.shape
    bit_planes = [weights > 0] if planes == 1 else [weights >= 0, weights > 0]
    # a byte = 8 consecutive weights = groups 2gp (low 4 bits) and 2gp+1 (high 4 bits)
    packed = [np.packbits(plane.reshape(n, k // 8, 8), axis=-1, bitorder="little")[..., 0] for plane in bit_planes]
    if paired(isa, planes):
        both = np.stack(packed, axis=-1)  # [n, k/8, 2]
        return np.ascontiguousarray(both.reshape(n // (lanes // 2), lanes // 2, k // 8, 2).transpose(0, 2, 1, 3)
                                    .reshape(n // (lanes // 2), k // 8, lanes))
    if isa in WIDEN:  # byte lane 2j holds row j of the block, 2j+1 row L/2 + j: the widened halves come out in order
        packed = [p.reshape(n // lanes, lanes, k // 8)[:, _interleave(lanes)].reshape(n, k // 8) for p in packed]
    out = [p.reshape(n // lanes, lanes, k // 8).transpose(0, 2, 1) for p in packed]
    return np.ascontiguousarray(np.concatenate(out, axis=1))


def _interleave(lanes: int) -> np.ndarray:
    """Row of the block read by each byte lane where lookups are widened even/odd (WIDEN)."""
    return np.arange(lanes).reshape(2, lanes // 2).T.reshape(-1)


def lut_kernel(m: int, n: int, k: int, name: str, isa: str, planes: int = 1, fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, w [n/L, planes * k/8, L] u8, extras, y [m, n] f32), rows split across threads;
    y is the mean over the planes (1: signs, 2: trits)."""
    intrin, lanes = SHUFFLE[isa]
    if not lut_fits(n, k, isa):
        raise ValueError(f"LUT kernel needs N % {lanes} == 0 and K % 8 == 0, got N={n}, K={k}")
    if paired(isa, planes):
        return _paired_kernel(m, n, k, name, isa, fused)
    groups, pairs = k // 4, k // 8
    tile, chunk, blocks = _split(n // lanes, pairs, CHUNK)
    u8, i8, i16, i32, f32 = (f"{t}x{lanes}" for t in ("uint8", "int8", "int16", "int32", "float32"))
    widened, half, h16 = isa in WIDEN, lanes // 2, f"int16x{lanes // 2}"

    @T.macro
    def widen_add(acc16: T.Buffer, a: T.int8, b: T.int8) -> None:
        """acc16 += lookups a and b as int16: even byte lanes into the first half, odd into the second."""
        even = T.Cast(u8, (T.ramp(0, 1, lanes) + 1) & 1)  # 1, 0, 1, 0, ...: the multiply-add keeps even lanes
        odd = T.Cast(u8, T.ramp(0, 1, lanes) & 1)
        acc16[T.ramp(0, 1, half)] = acc16[T.ramp(0, 1, half)] + (
            T.call_llvm_pure_intrin(h16, WIDEN[isa], even, a) + T.call_llvm_pure_intrin(h16, WIDEN[isa], even, b))
        acc16[T.ramp(half, 1, half)] = acc16[T.ramp(half, 1, half)] + (
            T.call_llvm_pure_intrin(h16, WIDEN[isa], odd, a) + T.call_llvm_pure_intrin(h16, WIDEN[isa], odd, b))

    @T.prim_func
    def kernel(x: T.Buffer((m, k), "float32"), w: T.Buffer((n // lanes, planes * pairs, lanes), "uint8"),
               pre: T.Buffer((k,), "float32"), post: T.Buffer((n,), "float32"), add: T.Buffer((m, n), "float32"),
               y: T.Buffer((m, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        lo = T.alloc_buffer((m, groups, lanes), "int8")  # low byte of each 24-bit entry, biased by -128
        mid = T.alloc_buffer((m, groups, lanes), "int8")  # middle byte, biased by -128
        hi = T.alloc_buffer((m, groups, lanes), "int8")  # high byte, signed
        scale = T.alloc_buffer((m,), "float32")
        inv = T.alloc_buffer((m,), "float32")
        row_scales(x, pre, inv, scale, m, groups, fused.pre)
        build_tables(x, pre, inv, lo, mid, hi, m, groups, lanes, fused.pre)
        for obo in T.parallel(n // lanes // blocks):
            for i in range(m):
                acc = T.alloc_buffer((blocks, lanes), "float32")
                lo16 = T.alloc_buffer((lanes,), "int16")
                mid16 = T.alloc_buffer((lanes,), "int16")
                hi16 = T.alloc_buffer((lanes,), "int16")
                for obi in range(blocks):
                    acc[obi, T.ramp(0, 1, lanes)] = T.broadcast(T.float32(0), lanes)
                # K tiles: the tables of one tile stay in L1 while every row block of this thread reads them
                for kt, obi, pl, c in T.grid(pairs // tile, blocks, planes, tile // chunk):
                    lo16[T.ramp(0, 1, lanes)] = T.broadcast(T.int16(0), lanes)
                    mid16[T.ramp(0, 1, lanes)] = T.broadcast(T.int16(0), lanes)
                    hi16[T.ramp(0, 1, lanes)] = T.broadcast(T.int16(0), lanes)
                    for gi in range(chunk):
                        gp = T.bind(kt * tile + c * chunk + gi)
                        b = T.bind(w.vload([obo * blocks + obi, pl * pairs + gp, 0], u8))
                        ia = T.bind(b & T.broadcast(T.uint8(15), lanes))
                        ib = T.bind(b >> T.broadcast(T.uint8(4), lanes))
                        la = T.bind(T.call_llvm_pure_intrin(i8, intrin, lo.vload([i, 2 * gp, 0], i8), ia))
                        lb = T.bind(T.call_llvm_pure_intrin(i8, intrin, lo.vload([i, 2 * gp + 1, 0], i8), ib))
                        ma = T.bind(T.call_llvm_pure_intrin(i8, intrin, mid.vload([i, 2 * gp, 0], i8), ia))
                        mb = T.bind(T.call_llvm_pure_intrin(i8, intrin, mid.vload([i, 2 * gp + 1, 0], i8), ib))
                        ha = T.bind(T.call_llvm_pure_intrin(i8, intrin, hi.vload([i, 2 * gp, 0], i8), ia))
                        hb = T.bind(T.call_llvm_pure_intrin(i8, intrin, hi.vload([i, 2 * gp + 1, 0], i8), ib))
                        if widened:
                            widen_add(lo16, la, lb)
                            widen_add(mid16, ma, mb)
                            widen_add(hi16, ha, hb)
                        else:
                            lo16[T.ramp(0, 1, lanes)] = lo16[T.ramp(0, 1, lanes)] + T.Cast(i16, la) + T.Cast(i16, lb)
                            mid16[T.ramp(0, 1, lanes)] = mid16[T.ramp(0, 1, lanes)] + T.Cast(i16, ma) + T.Cast(i16, mb)
                            hi16[T.ramp(0, 1, lanes)] = hi16[T.ramp(0, 1, lanes)] + T.Cast(i16, ha) + T.Cast(i16, hb)
                    # the chunk's exact integer sum (|sum| < 2**30), the -128 biases of its 2 * chunk lookups
                    # undone, then accumulated in fp32
                    acc[obi, T.ramp(0, 1, lanes)] = acc[obi, T.ramp(0, 1, lanes)] + T.Cast(f32, (
                        T.Cast(i32, lo16[T.ramp(0, 1, lanes)])
                        + T.Cast(i32, mid16[T.ramp(0, 1, lanes)]) * T.broadcast(256, lanes)
                        + T.Cast(i32, hi16[T.ramp(0, 1, lanes)]) * T.broadcast(65536, lanes)
                        + T.broadcast(T.int32(128 * 257 * 2 * chunk), lanes)))
                for obi in range(blocks):
                    col = T.bind((obo * blocks + obi) * lanes)
                    y[i, T.ramp(col, 1, lanes)] = epilogue(acc[obi, T.ramp(0, 1, lanes)], scale[i] / T.float32(
                        FULL * planes), post, add, i, col, lanes, fused)

    return _drop_unused(kernel, fused).with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True)


def _paired_kernel(m: int, n: int, k: int, name: str, isa: str, fused: Fused) -> tirx.PrimFunc:
    """Trits on x86 (`paired`): PrimFunc(x, w [n/(L/2), k/8, L] u8, extras, y). One shuffle looks up both
    planes of L/2 rows, one multiply-add by ones sums them per row into int16: per vector of weights half the
    multiply-adds and adds of the plane-per-vector kernel, the same shuffles and table loads."""
    intrin, lanes = SHUFFLE[isa]
    rows = lanes // 2
    groups, pairs = k // 4, k // 8
    # four lookups of |entry| < 2**23 per group pair: 32 pairs keep a chunk's exact sum inside int32
    tile, chunk, blocks = _split(n // rows, pairs, CHUNK // 2)
    u8, i8, h16, r32 = f"uint8x{lanes}", f"int8x{lanes}", f"int16x{rows}", f"int32x{rows}"

    @T.macro
    def pair_add(acc16: T.Buffer, a: T.int8, b: T.int8) -> None:
        """acc16 += per row, the sum of both planes' lookups in a and in b."""
        ones = T.broadcast(T.uint8(1), lanes)
        acc16[T.ramp(0, 1, rows)] = acc16[T.ramp(0, 1, rows)] + (
            T.call_llvm_pure_intrin(h16, WIDEN[isa], ones, a) + T.call_llvm_pure_intrin(h16, WIDEN[isa], ones, b))

    @T.prim_func
    def kernel(x: T.Buffer((m, k), "float32"), w: T.Buffer((n // rows, pairs, lanes), "uint8"),
               pre: T.Buffer((k,), "float32"), post: T.Buffer((n,), "float32"), add: T.Buffer((m, n), "float32"),
               y: T.Buffer((m, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        lo = T.alloc_buffer((m, groups, lanes), "int8")
        mid = T.alloc_buffer((m, groups, lanes), "int8")
        hi = T.alloc_buffer((m, groups, lanes), "int8")
        scale = T.alloc_buffer((m,), "float32")
        inv = T.alloc_buffer((m,), "float32")
        row_scales(x, pre, inv, scale, m, groups, fused.pre)
        build_tables(x, pre, inv, lo, mid, hi, m, groups, lanes, fused.pre)
        for obo in T.parallel(n // rows // blocks):
            for i in range(m):
                acc = T.alloc_buffer((blocks, rows), "float32")
                lo16 = T.alloc_buffer((rows,), "int16")
                mid16 = T.alloc_buffer((rows,), "int16")
                hi16 = T.alloc_buffer((rows,), "int16")
                for obi in range(blocks):
                    acc[obi, T.ramp(0, 1, rows)] = T.broadcast(T.float32(0), rows)
                for kt, obi, c in T.grid(pairs // tile, blocks, tile // chunk):
                    lo16[T.ramp(0, 1, rows)] = T.broadcast(T.int16(0), rows)
                    mid16[T.ramp(0, 1, rows)] = T.broadcast(T.int16(0), rows)
                    hi16[T.ramp(0, 1, rows)] = T.broadcast(T.int16(0), rows)
                    for gi in range(chunk):
                        gp = T.bind(kt * tile + c * chunk + gi)
                        b = T.bind(w.vload([obo * blocks + obi, gp, 0], u8))
                        ia = T.bind(b & T.broadcast(T.uint8(15), lanes))
                        ib = T.bind(b >> T.broadcast(T.uint8(4), lanes))
                        pair_add(lo16, T.call_llvm_pure_intrin(i8, intrin, lo.vload([i, 2 * gp, 0], i8), ia),
                                 T.call_llvm_pure_intrin(i8, intrin, lo.vload([i, 2 * gp + 1, 0], i8), ib))
                        pair_add(mid16, T.call_llvm_pure_intrin(i8, intrin, mid.vload([i, 2 * gp, 0], i8), ia),
                                 T.call_llvm_pure_intrin(i8, intrin, mid.vload([i, 2 * gp + 1, 0], i8), ib))
                        pair_add(hi16, T.call_llvm_pure_intrin(i8, intrin, hi.vload([i, 2 * gp, 0], i8), ia),
                                 T.call_llvm_pure_intrin(i8, intrin, hi.vload([i, 2 * gp + 1, 0], i8), ib))
                    # the chunk's exact sum, the -128 biases of its 4 * chunk lo and mid lookups undone
                    acc[obi, T.ramp(0, 1, rows)] = acc[obi, T.ramp(0, 1, rows)] + T.Cast(f"float32x{rows}", (
                        T.Cast(r32, lo16[T.ramp(0, 1, rows)])
                        + T.Cast(r32, mid16[T.ramp(0, 1, rows)]) * T.broadcast(256, rows)
                        + T.Cast(r32, hi16[T.ramp(0, 1, rows)]) * T.broadcast(65536, rows)
                        + T.broadcast(T.int32(128 * 257 * 4 * chunk), rows)))
                for obi in range(blocks):
                    col = T.bind((obo * blocks + obi) * rows)
                    y[i, T.ramp(col, 1, rows)] = epilogue(acc[obi, T.ramp(0, 1, rows)], scale[i] / T.float32(
                        FULL * 2), post, add, i, col, rows, fused)

    return _drop_unused(kernel, fused).with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True)


def _split(row_blocks: int, pairs: int, max_chunk: int) -> tuple[int, int, int]:
    """(group pairs per K tile, per int16 chunk, row blocks per parallel task): the largest that divide,
    keeping MIN_TASKS tasks where the row blocks allow."""
    tile = next(t for t in range(min(TILE_PAIRS, pairs), 0, -1) if pairs % t == 0)
    chunk = next(c for c in range(min(max_chunk, tile), 0, -1) if tile % c == 0)
    blocks = next(b for b in (BLOCKS, 8, 4, 2, 1) if row_blocks % b == 0 and (row_blocks // b >= MIN_TASKS or b == 1))
    return tile, chunk, blocks


def _drop_unused(func: tirx.PrimFunc, fused: Fused) -> tirx.PrimFunc:
    """The kernel is written with every extra buffer; keep only those `fused` uses (x, w, extras, y)."""
    used = [True, True, fused.pre, fused.post, fused.add, True]
    params = [p for p, keep in zip(func.params, used, strict=True) if keep]
    return tirx.PrimFunc(params, func.body, func.ret_type, func.attrs)
