"""Memory accounting on the IR: weight bytes by format, and peak activation bytes from liveness.

Weights: the packed signs or trits and the scales of an accumulate node belong to that node's format
layer (at their stored dtypes); every other constant is dense, counted by dtype.
Activations: walking the nodes in their (topological) order, a value is live from its definition to
its last use (graph inputs from the start, graph outputs to the end); the peak is the largest total.
Nodes of constants alone are weights computed at build time, not activations, and are left out.
"""

from collections import Counter
from dataclasses import dataclass

from hwsim.ir import Graph, Op, OpGroup, accumulate_inputs
from hwsim.roofline import folded_at_compile_time


@dataclass(frozen=True)
class MemoryReport:
    weight_bytes_by_format: dict[str, int]  # "LoRDBA", "DBF", ..., "dense float32", "dense float16", ...
    weight_bytes: int
    peak_activation_bytes: int


def memory_report(graph: Graph) -> MemoryReport:
    layer_of = {layer.name: layer.op_type for layer in graph.layers if layer.lowered}
    owner: dict[int, str] = {}
    for n in graph.nodes:
        if n.op in OpGroup.ACCUMULATE:
            for role, v in zip(accumulate_inputs(n.attrs), n.inputs, strict=True):
                if role in ("packed", "pre", "post"):
                    owner[id(v)] = layer_of.get(n.name, n.op.name)
        elif n.op is Op.Q8_MATMUL:
            for v in n.inputs[1:]:
                owner[id(v)] = "Q8_0"
    by_format: Counter[str] = Counter()
    for c in graph.constants():
        by_format[owner.get(id(c), f"dense {c.type.dtype.value}")] += c.type.nbytes
    return MemoryReport(dict(sorted(by_format.items())), sum(by_format.values()), peak_activation_bytes(graph))


def peak_activation_bytes(graph: Graph) -> int:
    """The largest sum of live activations over the nodes in order. Values computed from constants alone (an
    fp16 weight's cast to fp32) are weights folded at build time (roofline.folded_at_compile_time), not
    activations: they were counted as such, 365 MB for one fp16 Llama-2-7B-shaped block."""
    folded = folded_at_compile_time(graph)
    nodes = [n for n in graph.nodes if id(n) not in folded]
    last_use: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if not v.is_const:
                last_use[id(v)] = i
    end = len(nodes)
    for v in graph.outputs:
        last_use[id(v)] = end
    live = {id(v): v.type.nbytes for v in graph.inputs}
    peak = sum(live.values())
    for i, n in enumerate(nodes):
        for v in n.outputs:
            live[id(v)] = v.type.nbytes
        peak = max(peak, sum(live.values()))
        for v in {id(x): x for x in (*n.inputs, *n.outputs)}.values():
            if id(v) in live and last_use.get(id(v), -1) <= i:
                del live[id(v)]
    return peak
