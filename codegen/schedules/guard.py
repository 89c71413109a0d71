"""dlight rules that decline instead of failing a build where they break on a function they claim."""

import tvm
from tvm import s_tir
from tvm.error import InternalError
from tvm.s_tir import dlight as dl


class Guarded(dl.ScheduleRule):
    """A dlight rule that declines, instead of failing the build, where it breaks on a function it claims:
    TVM 0.27's GEMV rules (CPU and GPU) assert on reductions whose loops normalise away (batch-1 attention
    over one key), so the next rule schedules those."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool) -> s_tir.Schedule | None:
        try:
            return self.rule.apply(func, target, tunable)
        except (AssertionError, s_tir.ScheduleError, InternalError):
            return None
