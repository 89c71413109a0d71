"""CPU schedule rule for dense matmuls (batch, i, j, k), the bulk of transformer time.

dlight ships CPU rules for GEMV and reductions but none for GEMM; without one, legalised matmuls run as
naive single-threaded loops. This rule is the classic BLAS blocking: a register tile of `rows` x `cols`
accumulators (cols = a few vectors, j vectorised), K split into panels, and each thread packing the
K-panel x cols slice of B it is about to stream into a contiguous buffer. Without the pack, B rows
4096 floats apart all fall into the same L1 sets (16 KiB stride) and the kernel runs at ~10 GFLOP/s on
znver3; with it, ~100 (128x4096x4096, 2 cores). Elementwise epilogues (bias, residual) are inlined.
"""

import math
from collections.abc import Callable

import tvm
from tvm import s_tir, tirx
from tvm.error import InternalError
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.target import Target

K_PANELS = (256, 128, 64, 32)
PACK_MIN_ROWS = 4
# Below this many multiply-adds a GEMM runs on one thread: waking TVM's thread pool costs tens of us, a
# batch-1 256x256 layer (65k MACs) a few (measured: 75 us parallel, 0.27 ms for the six of tiny-llama)
PARALLEL_MIN_MACS = 1 << 18


def _divisor(n: int, options: tuple[int, ...]) -> int | None:
    return next((f for f in options if n % f == 0), None)


def register_tile(target: Target) -> tuple[int, int]:
    """(accumulator vectors, float lanes per vector) for the register tile: AVX2 has 16 vector registers
    (8 accumulators leave room for the B vectors and the broadcast), AVX-512 and aarch64 32 (24 and 16)."""
    if "aarch64" in str(target.attrs.get("mtriple", "")):
        return 16, 4
    with target:
        if tvm.target.codegen.target_has_features("avx512f"):
            return 24, 16
        return 8, 8 if tvm.target.codegen.target_has_features("avx2") else 4


def tile_shape(m: int, n: int, target: Target) -> tuple[int, int]:
    """(rows, columns) of the register tile for an m x n output: the most accumulators the registers hold,
    in 1, 2 or 4 vectors (LLVM splits a 3-vector row badly: 10 GFLOP/s). With AVX-512 and 16 prefill rows,
    16 x 1 vector: 16 multiply-adds per weight vector loaded (and widened, for fp16 weights), where 2 x 4 did
    8 per 4 (znver4, 2 threads, 16x576x1536 with fp16 weights: 227 GFLOP/s, 8 x 2 184, 2 x 4 165); with AVX2,
    4 x 2 vectors. One row (decode) keeps 4 vectors: a GEMV streams weights, 4 panels' worth at once."""
    accumulators, lanes = register_tile(target)

    def rows(vectors: int) -> int:
        return _divisor(m, tuple(r for r in (16, 8, 4, 2, 1) if r * vectors <= accumulators)) or 1

    fits = [v for v in (4, 2, 1) if n % (v * lanes) == 0]
    if not fits:  # narrower than a vector: 4 columns (or 1), one vector of accumulators
        return rows(1), _divisor(n, (4,)) or 1
    # Ties: AVX-512 to more rows (fewer weight vectors loaded and widened per multiply-add); AVX2 to two
    # vectors (16 rows: 4 x 16 over 2 x 32 on znver3, 2 threads, by 2-12% with fp16 weights and 0-9% with fp32,
    # 16x576x49152 fp16 11.9 vs 13.5 ms; 8 x 8 ran at half speed, a broadcast per multiply-add); NEON to wider
    # rows of vectors (fewer broadcasts), as measured before either had its own tile
    preference = {16: lambda v: rows(v), 8: lambda v: v == 2}.get(lanes, lambda v: v)
    vectors = max(fits, key=lambda v: (rows(v) * v, preference(v)))
    return rows(vectors), vectors * lanes


def block_gemm(sch: s_tir.Schedule, block: SBlockRV, ext: list[int], target: Target,
               stage_b: Callable[[LoopRV], None] | None = None, epilogues: tuple = ()) -> None:
    """Tile the reduction `block` (loops *batch, i, j, k with extents `ext`) into the register-blocked,
    K-paneled GEMM; `stage_b(ko)` may stage the B panel under the K-panel loop (pack or unpack it)."""
    rows, cols = tile_shape(ext[-3], ext[-2], target)
    *batch, i, j, k = sch.get_loops(block)
    # Threads take column panels; when there are too few (a rank-16 LoRA down-projection has one), they
    # also take row chunks, each chunk staging its own copy of the B panels.
    panels = ext[-2] // cols
    for e in ext[:-3]:
        panels *= e
    want = int(target.attrs.get("num-cores", 1))
    chunks = next((c for c in range(min(want // panels, ext[-3] // rows), 1, -1) if ext[-3] % (c * rows) == 0), 1) \
        if panels < want else 1
    ic, i = sch.split(i, factors=[chunks, None])
    io, ii = sch.split(i, factors=[None, rows])
    jo, ji = sch.split(j, factors=[None, cols])
    ko, ki = sch.split(k, factors=[None, _divisor(ext[-1], K_PANELS) or ext[-1]])
    sch.reorder(ic, *batch, jo, ko, io, ki, ii, ji)
    # "global", not "local": TVM's CPU lowering keeps only global-scope buffers under 1 KiB on the stack; a
    # local one costs a TVMBackendAllocWorkspace call and a free per tile (16x576x576: 95 us, 48 on the stack)
    writeback = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(writeback, jo)
    if stage_b is not None:
        stage_b(ko)
    for epilogue in reversed(epilogues):
        sch.reverse_compute_inline(epilogue)
    sch.unroll(ii)
    sch.vectorize(ji)
    fused = sch.fuse(ic, *batch, jo)
    if math.prod(ext) >= PARALLEL_MIN_MACS:
        sch.parallel(fused)
    sch.decompose_reduction(block, ko)
    sch.vectorize(sch.get_loops(writeback)[-1])


class Matmul(CPUScheduleRule):
    """Register-blocked, K-paneled, B-packing, vectorised, parallel GEMM: one reduction block whose last
    iter reduces."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        # Epilogues that TVM cannot inline (broadcast batch dims, e.g. grouped-query attention) make
        # reverse_compute_inline fail, sometimes with an internal error: retry leaving them separate.
        for inline_epilogues in (True, False):
            try:
                sch = self._schedule(func, target, inline_epilogues)
            except (s_tir.ScheduleError, InternalError):
                continue
            if sch is not None or not inline_epilogues:
                return sch
        return None

    @staticmethod
    def _schedule(func: tirx.PrimFunc, target: Target, inline_epilogues: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
        if not infos or not infos[0].is_reduction() or any(not b.is_injective() for b in infos[1:]):
            return None
        main = infos[0]
        kinds = "".join(i.kind for i in main.iters)
        if len(kinds) < 2 or kinds[-1] != "R" or kinds.count("R") != 1 or set(kinds) - {"S", "R"}:
            return None
        if not all(isinstance(i.dom, int) or hasattr(i.dom, "value") for i in main.iters):
            return None
        ext = [int(i.dom) for i in main.iters]
        if ext[-2] % 4 or ext[-1] < 8:  # odd widths: dlight's GEMV rule, or the dot kernel (decode scores)
            return None
        block = main.block_rv
        stmt = sch.get(block)
        # pack B only when its rows run along j (x @ W); a transposed B would need a gather per vector. With
        # fewer rows than PACK_MIN_ROWS the packed panel is not reused enough to pay for the copy.
        pack_b = (len(stmt.reads) == 2 and stmt.reads[1].region[-1].min.same_as(stmt.iter_vars[-2].var)
                  and (len(ext) > 2 and ext[-3] >= PACK_MIN_ROWS))
        if len(ext) == 2:  # batch 1: normalisation dropped the unit row loop; a GEMV, tiled as a 1-row GEMM
            j, k = sch.get_loops(block)
            sch.reorder(sch.add_unit_loop(block), j, k)  # the unit loop comes innermost: move it out
            ext = [1, *ext]

        def pack(ko: LoopRV) -> None:
            panel = sch.cache_read(block, 1, "global")
            sch.compute_at(panel, ko)
            sch.vectorize(sch.get_loops(panel)[-1])

        epilogues = tuple(b.block_rv for b in infos[1:]) if inline_epilogues else ()
        block_gemm(sch, block, ext, target, pack if pack_b else None, epilogues)
        return sch


PARALLEL_MIN_ELEMENTS = 1 << 14  # below this a thread-pool launch costs more than the loop


class Elementwise(CPUScheduleRule):
    """Injective functions (scales, residual adds, casts, reshapes), which no dlight CPU rule covers and which
    otherwise run as serial scalar loops: inline producers, fuse the loops, vectorise and parallelise."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
        if not infos or len(infos) != 1 or not infos[0].is_injective():
            return None
        # A reduction over one element (a K=1 matmul, from a rank-1 adapter) normalises to an "injective"
        # block that still has an init; TVM 0.27 inlines the epilogue into both init and update, applying it
        # twice ((a + x w) * s + a for x w * s + a). Such a block is left to TVM's default lowering.
        if sch.get(infos[0].block_rv).init is not None:
            return None
        return sch if flatten_injective(sch, infos[0].block_rv, target) else None


def flatten_injective(sch: s_tir.Schedule, block: SBlockRV, target: Target) -> bool:
    """Fuse an elementwise block's loops into one, vectorise it by the float lanes where they divide it and
    parallelise it where it is large enough; False (schedule untouched) where its extents are symbolic."""
    loops = sch.get_loops(block)
    extents = [sch.get(loop).extent for loop in loops]
    if not loops or not all(hasattr(e, "value") for e in extents):
        return False
    total = math.prod(int(e.value) for e in extents)
    fused = sch.fuse(*loops)
    lanes = register_tile(target)[1]
    if total % lanes == 0 and total >= lanes:
        fused, vec = sch.split(fused, factors=[None, lanes])
        sch.vectorize(vec)
    if total >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(fused)
    return True
