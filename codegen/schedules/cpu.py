"""CPU schedule rule for dense matmuls (batch, i, j, k), the bulk of transformer time.

dlight ships CPU rules for GEMV and reductions but none for GEMM; without one, legalised matmuls run as
naive single-threaded loops. This rule tiles i x j into a register block (j vectorised), keeps the
accumulators local, parallelises the outer tiles and inlines elementwise epilogues (bias, residual).
"""

from tvm import s_tir, tirx
from tvm.error import InternalError
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
        # Epilogues that TVM cannot inline (broadcast batch dims, e.g. grouped-query attention) make
        # reverse_compute_inline fail, sometimes with an internal error: retry leaving them separate.
        for inline_epilogues in (True, False):
            try:
                sch = self._schedule(func, inline_epilogues)
            except (s_tir.ScheduleError, InternalError):
                continue
            if sch is not None or not inline_epilogues:
                return sch
        return None

    @staticmethod
    def _schedule(func: tirx.PrimFunc, inline_epilogues: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
        if not infos or not infos[0].is_reduction() or any(not b.is_injective() for b in infos[1:]):
            return None
        main = infos[0]
        kinds = "".join(i.kind for i in main.iters)
        if len(kinds) < 3 or kinds[-1] != "R" or kinds.count("R") != 1 or set(kinds) - {"S", "R"}:
            return None
        if not all(isinstance(i.dom, int) or hasattr(i.dom, "value") for i in main.iters):
            return None
        ext = [int(i.dom) for i in main.iters]
        vec = _divisor(ext[-2], (16, 8, 4))
        if vec is None or ext[-1] < 8:
            return None
        block = main.block_rv
        *batch, i, j, k = sch.get_loops(block)
        io, ii = sch.split(i, factors=[None, _divisor(ext[-3], (4, 2, 1))])
        jo, ji = sch.split(j, factors=[None, vec])
        sch.reorder(*batch, io, jo, k, ii, ji)
        writeback = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(writeback, jo)
        if inline_epilogues:
            for epilogue in reversed(infos[1:]):
                sch.reverse_compute_inline(epilogue.block_rv)
        sch.unroll(ii)
        sch.vectorize(ji)
        sch.parallel(sch.fuse(*batch, io, jo))
        sch.decompose_reduction(block, k)
        sch.vectorize(sch.get_loops(writeback)[-1])
        return sch
