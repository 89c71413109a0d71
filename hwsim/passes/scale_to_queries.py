"""Attention scores whose keys are scaled, and transposed behind reshapes, on the way to the MATMUL.

Exporters write softmax(q k^T / sqrt(d)) with the scale on both sides (torch's SDPA scales q and k^T each
by d^-1/4) and the transpose wrapped in reshapes of the head dims ([1, H, T, D] -> [H, T, D] -> [H, D, T] ->
[1, H, D, T]). Executed as written, every layer copies and scales the whole cache at every token through a
strided transpose (tiny-llama's decode at 129 tokens: 45 us a layer of a 300 us step), and the CPU's dot
kernel (codegen/kernels/dot.py), which reads the keys untransposed, never sees a plain transpose. The
rewrite moves the scalar scales to the other operand where it is the smaller (the queries: c q . k for
q . c k, the same value up to fp32 rounding) and applies the transpose to the keys themselves, last.
Grouped-query attention (a broadcast of the KV heads in the chain) is grouped_query_matmul's, which runs
first; the old chain becomes dead (eliminate_dead_code runs after this pass).
"""

import math

from hwsim.ir import Graph, Node, Op
from hwsim.passes.grouped_query_matmul import add_node, layout_step, swap_last_two


def scale_to_queries(graph: Graph) -> bool:
    changed = False
    for mm in list(graph.nodes):
        if mm.op is not Op.MATMUL or mm.inputs[0].type.rank < 3 or mm.inputs[0].type.rank != mm.inputs[1].type.rank:
            continue
        a, b, out = *mm.inputs, mm.outputs[0]
        steps: list[Node] = []
        v = b
        while v.producer is not None and (src := layout_step(v.producer)) is not None:
            steps.append(v.producer)
            v = src
        if v.is_const or math.prod(v.type.shape[:-2]) != math.prod(b.type.shape[:-2]):
            continue
        scales = [s for s in steps if s.op is Op.MUL]
        transposes = sum(s.op is Op.TRANSPOSE for s in steps)
        canonical = len(steps) == transposes <= 1  # nothing, or a plain transpose: already what backends read
        if canonical or (scales and a.type.size > b.type.size):
            continue
        new: list[Node] = []
        base = f"{out.name}.scaled"
        q = a
        for i, s in enumerate(reversed(scales)):
            q = add_node(new, Op.MUL, [q, s.inputs[1] if s.inputs[1].is_const else s.inputs[0]], {}, f"{base}.q{i}")
        k = v
        if k.type.shape[:-2] != b.type.shape[:-2]:
            k = add_node(new, Op.RESHAPE, [k], {"shape": (*b.type.shape[:-2], *k.type.shape[-2:])}, f"{base}.k")
        if transposes % 2:
            k = add_node(new, Op.TRANSPOSE, [k], {"perm": swap_last_two(k.type.rank)}, f"{base}.kt")
        new.append(Node(Op.MATMUL, [q, k], [out], dict(mm.attrs), name=mm.name))
        graph.replace_node(mm, new)
        changed = True
    if changed:
        graph.toposort()
    return changed
