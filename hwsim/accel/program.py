"""An accelerator program: the instruction stream with everything needed to run and account for it (where
each IR value lives in DRAM, where each layer ran and why, host-run layers' cost). Made by
codegen/accel/lower.py, run by hwsim.accel.timing and hwsim.accel.functional.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from hwsim.accel.isa import Instr
from hwsim.ir import Graph
from targets import Target


@dataclass(frozen=True)
class DramTensor:
    name: str
    addr: int
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "const", "input", "activation"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass
class LayerPlan:
    """Where a node runs and why, and its instructions [first, last)."""

    index: int
    name: str
    op: str
    unit: str  # "array:<name>", "vector", "host", "view"
    detail: str
    first: int = 0
    last: int = 0


@dataclass
class AccelProgram:
    graph: Graph
    target: Target
    instrs: list[Instr]
    tensors: dict[int, DramTensor]  # id(Value) -> its DRAM region
    layers: list[LayerPlan]
    host_cycles: dict[int, int]  # node index -> host cycles (accelerator clock)
    host_pj: dict[int, tuple[float, float]]  # node index -> (compute, memory) pJ on the host
    dram_bytes: int
    host: Target = field(repr=False, default=None)
    folded: dict[int, np.ndarray] = field(repr=False, default_factory=dict)  # id(Value) -> data, build-time

    def node_names(self) -> list[str]:
        return [f"{p.name} ({p.op})" for p in self.layers]
