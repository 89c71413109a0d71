"""CPU schedules for row reductions (RMSNorm, LayerNorm, softmax): dlight's rule where it is right, per-block
loop nests where it is not.

dlight's CPU Reduction rule parallelises the last block's leading spatial loop and computes every other block
under it, assuming all blocks share those leading axes. An RMSNorm of one token breaks that: the mean has one
row ([1] x 4096, reduced) while the scale that follows is 4096 wide, so the mean ends up computed under the
4096-wide loop, once per output element: 4096 x the work, 14 ms for one norm at d=4096 (three of them were
42 of the 53 ms of a Llama-2-7B-shaped block's ternary decode). Such functions get `Staged` instead.
"""

import math

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from codegen.schedules.cpu import PARALLEL_MIN_ELEMENTS, flatten_injective


def _extents(info: SBlockInfo) -> list[int] | None:
    dims = [i.dom for i in info.iters]
    return [int(d) for d in dims] if all(isinstance(d, int) or hasattr(d, "value") for d in dims) else None


def _rows(info: SBlockInfo, extents: list[int]) -> int:
    """The product of the block's leading spatial extents: the rows a row-parallel schedule splits."""
    return math.prod(extents[:_leading(info)])


def _leading(info: SBlockInfo) -> int:
    kinds = info.dom_kind()
    return len(kinds) - len(kinds.lstrip("S"))


def shared_rows(func: tirx.PrimFunc) -> bool | None:
    """True when every block of a reduction function has the same leading spatial extents (dlight's rule is
    right), False when they differ, None when it is not such a function (or extents are symbolic)."""
    infos = normalize_prim_func(s_tir.Schedule(func))
    if not infos or all(i.is_injective() for i in infos):
        return None
    extents = [_extents(i) for i in infos]
    if any(e is None for e in extents):
        return None
    return len({_rows(i, e) for i, e in zip(infos, extents, strict=True)}) == 1


class SharedRows(dl.ScheduleRule):
    """dlight's CPU Reduction rule, only on functions whose blocks all share their leading rows."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or shared_rows(func) is False:
            return None
        return self.rule.apply(func, target, tunable)


class Staged(CPUScheduleRule):
    """Reduction functions whose blocks differ in rows: each block keeps its own loop nest, reductions parallel
    over their rows where there are enough, elementwise blocks flattened, vectorised and parallel."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        if shared_rows(func) is not False:
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        for info in infos:
            loops = sch.get_loops(info.block_rv)
            if not loops:
                continue
            if info.is_injective():
                flatten_injective(sch, info.block_rv, target)
                continue
            lead = _leading(info)
            extents = _extents(info) or []
            if lead > 1:
                sch.fuse(*loops[:lead])
            if _rows(info, extents) > 1 and math.prod(extents) >= PARALLEL_MIN_ELEMENTS:
                sch.parallel(sch.get_loops(info.block_rv)[0])
        return sch
