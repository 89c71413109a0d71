"""Fold an ADD into the accumulate op that produces one of its operands, as the op's addend.

A LoRA-style branch ends in `base + branch`, a trit-plane layer in `T1 x + T2 x`: as separate ops the sum
is one more pass over an [M, N] activation (at prefill as long as the branch's own kernels). Fused, the
kernel adds the addend while it writes its output. Only exact fp32 cases are fused: the accumulate's
output is used by this ADD alone (not a graph output), both operands have the ADD's type (no broadcast),
and that type is float32, so the kernels' fp32 result is what the unfused graph computed.
"""

from hwsim.ir import DType, Graph, Node, Op, OpGroup


def _fusable(n: Node, operand: int, uses: dict[int, list[Node]], outputs: set[int]) -> bool:
    v = n.inputs[operand]
    p = v.producer
    return (p is not None and p.op in OpGroup.ACCUMULATE and not p.attrs.get("add")
            and uses.get(id(v)) == [n] and id(v) not in outputs and n.inputs[0] is not n.inputs[1])


def fuse_accumulate_add(graph: Graph) -> bool:
    changed = False
    for n in list(graph.nodes):
        out = n.outputs[0]
        if n.op is not Op.ADD or out.type.dtype is not DType.FLOAT32 or any(v.type != out.type for v in n.inputs):
            continue
        uses, outputs = graph.consumers(), {id(v) for v in graph.outputs}
        # the later accumulate takes the addend, so the other operand is ready by then
        for operand in (1, 0):
            if _fusable(n, operand, uses, outputs):
                acc, addend = n.inputs[operand].producer, n.inputs[1 - operand]
                acc.inputs.append(addend)
                acc.attrs["add"] = 1
                acc.outputs = [out]
                out.producer = acc
                graph.nodes.remove(n)
                changed = True
                break
    if changed:
        graph.toposort()
    return changed
