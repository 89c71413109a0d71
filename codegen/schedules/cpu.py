"""CPU schedule rule for dense matmuls (batch, i, j, k), the bulk of transformer time.

dlight ships CPU rules for GEMV and reductions but none for GEMM; without one, legalised matmuls run as
naive single-threaded loops. This rule tiles i x j into a register block (j vectorised), keeps the
accumulators local, parallelises the outer tiles and inlines elementwise epilogues (bias, residual).
"""

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target


def _divisor(n: int, options: tuple[int, ...]) -> int | None:
    return next((f for f in options if n % f == 0), None)


class Matmul(CPUScheduleRule):
    """Register-blocked, vectorised, parallel GEMM: one reduction block whose last iter reduces."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
        if not infos or not infos[0].is_reduction() or any(not b.is_injective() for b in infos[1:]):
            return None
        main = infos[0]
        kinds = "".join(i.kind for i in main.iters)
        if len(kinds) < 3 or kinds[-1] != "R" or kinds.count("R") != 1 or set(kinds) - {"S", "R"}:
            return None
        extents = [i.dom for i in main.iters]
        if not all(isinstance(e, int) or hasattr(e, "value") for e in extents):
            return None
        ext = [int(e) for e in extents]
        vec = _divisor(ext[-2], (16, 8, 4))
        if vec is None or ext[-1] < 8:
            return None
        rows = _divisor(ext[-3], (4, 2, 1))
        block = main.block_rv
        *batch, i, j, k = sch.get_loops(block)
        io, ii = sch.split(i, factors=[None, rows])
        jo, ji = sch.split(j, factors=[None, vec])
        sch.reorder(*batch, io, jo, k, ii, ji)
        writeback = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(writeback, jo)
        for epilogue in reversed(infos[1:]):
            try:
                sch.reverse_compute_inline(epilogue.block_rv)
            except s_tir.ScheduleError:
                return None
        sch.unroll(ii)
        sch.vectorize(ji)
        sch.parallel(sch.fuse(*batch, io, jo))
        sch.decompose_reduction(block, k)
        sch.vectorize(sch.get_loops(writeback)[-1])
        return sch
