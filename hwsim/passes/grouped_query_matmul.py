"""Grouped-query attention without copies of the repeated K/V heads.

Exporters write grouped-query attention as `repeat_kv`: each of the KV cache's heads is broadcast to the G
query heads that share it (RESHAPE to [b, KV, 1, T, D], BROADCAST_TO [b, KV, G, T, D], RESHAPE to
[b, KV*G, T, D]), often then transposed and scaled, before the MATMUL with the queries. Executed as
written, that materialises G copies of the whole cache for both matmuls of every layer, every token
(SmolLM2-135M, 3 KV heads for 9 query heads: 8% of a decode step on the host). Query head h = kv*G + g reads
KV head kv, so the same product is the queries regrouped, [b, KV, G*S, K] (a free reshape), times the cache
itself, [b, KV, K, N]: the rewrite applies the transposes on the way to the un-repeated tensor and the scalar
scales to the queries (c q . k for q . c k: the same value up to fp32 rounding), multiplies, and reshapes the
result back to the MATMUL's [b, KV*G, S, N]. The broadcast and whatever only it fed become dead
(eliminate_dead_code runs after this pass).
"""

import math

from hwsim.ir import Graph, Node, Op, Value, infer


def layout_step(p: Node) -> Value | None:
    """The input a layout-only step on the way from the broadcast to the MATMUL keeps, or None if `p` is not
    one: a RESHAPE of the leading (head) dims, a TRANSPOSE of the last two dims, a MUL by a scalar constant."""
    src = p.inputs[0]
    if p.op is Op.RESHAPE and src.type.rank >= 3 and src.type.shape[-2:] == p.outputs[0].type.shape[-2:]:
        return src
    if p.op is Op.TRANSPOSE:
        return src if tuple(p.attrs["perm"]) == swap_last_two(src.type.rank) else None
    if p.op is Op.MUL and p.outputs[0].type == src.type and p.inputs[1].is_const and p.inputs[1].type.size == 1:
        return src
    if p.op is Op.MUL and p.outputs[0].type == p.inputs[1].type and p.inputs[0].is_const and p.inputs[0].type.size == 1:
        return p.inputs[1]
    return None


def _repeated(v: Value) -> tuple[Node, list[Node]] | None:
    """The BROADCAST_TO that repeats KV heads behind MATMUL operand `v`, and the steps from it to `v`
    (broadcast side first); None unless `v` is such a repeat."""
    steps: list[Node] = []
    while v.producer is not None and v.producer.op is not Op.BROADCAST_TO:
        src = layout_step(v.producer)
        if src is None:
            return None
        steps.append(v.producer)
        v = src
    b = v.producer
    if b is None:
        return None
    before, after = b.inputs[0].type.shape, b.outputs[0].type.shape
    # [.., KV, 1, T, D] -> [.., KV, G, T, D]: the one broadcast axis is the group axis, right before the matrix
    if len(before) != len(after) or len(after) < 4 or before[-3] != 1 or after[-3] == 1:
        return None
    if before[:-3] != after[:-3] or before[-2:] != after[-2:]:
        return None
    return b, steps[::-1]


def swap_last_two(rank: int) -> tuple[int, ...]:
    """The TRANSPOSE perm of a matrix (the last two dims) under any leading dims."""
    return (*range(rank - 2), rank - 1, rank - 2)


def add_node(new: list[Node], op: Op, inputs: list[Value], attrs: dict, name: str) -> Value:
    """Append a node named `name` to `new`; its output, typed by inference."""
    out = Value(name, infer(op, [v.type for v in inputs], attrs)[0])
    new.append(Node(op, inputs, [out], attrs, name=name))
    return out


def grouped_query_matmul(graph: Graph) -> bool:
    changed = False
    for mm in list(graph.nodes):
        if mm.op is not Op.MATMUL or mm.inputs[0].type.rank < 3 or mm.inputs[0].type.rank != mm.inputs[1].type.rank:
            continue
        a, bval, out = mm.inputs[0], mm.inputs[1], mm.outputs[0]
        found = _repeated(bval)
        if found is None or a.type.shape[:-2] != bval.type.shape[:-2]:
            continue
        bcast, steps = found
        lead, groups = bcast.outputs[0].type.shape[:-3], bcast.outputs[0].type.shape[-3]
        if math.prod(a.type.shape[:-2]) != math.prod(lead) * groups:
            continue
        new: list[Node] = []
        base = f"{out.name}.gqa"
        # the queries of the G heads sharing a KV head, as one matrix per KV head: [.., KV, G*S, K]
        rows = a.type.shape[-2] * groups
        qa = add_node(new, Op.RESHAPE, [a], {"shape": (*lead, rows, a.type.shape[-1])}, f"{base}.q")
        src = bcast.inputs[0]
        kv = add_node(new, Op.RESHAPE, [src], {"shape": (*lead, *src.type.shape[-2:])}, f"{base}.kv")
        # scalar scales move to the (G times smaller, per KV head) queries; a transpose stays last, so a backend
        # may read the keys untransposed (codegen/kernels/dot.py)
        transposes = 0
        for i, s in enumerate(steps):
            if s.op is Op.TRANSPOSE:
                transposes += 1
            elif s.op is Op.MUL:
                scalar = s.inputs[1] if s.inputs[1].is_const else s.inputs[0]
                qa = add_node(new, Op.MUL, [qa, scalar], {}, f"{base}.s{i}")
        if transposes % 2:
            kv = add_node(new, Op.TRANSPOSE, [kv], {"perm": swap_last_two(kv.type.rank)}, f"{base}.t")
        prod = add_node(new, Op.MATMUL, [qa, kv], {}, f"{base}.mm")
        new.append(Node(Op.RESHAPE, [prod], [out], {"shape": out.type.shape}, name=f"{base}.out"))
        graph.replace_node(mm, new)
        changed = True
    if changed:
        graph.toposort()
    return changed
