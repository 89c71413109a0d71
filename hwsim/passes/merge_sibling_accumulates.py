"""Merge accumulate ops of equal width that read the same activations into one, its output sliced back.

A decoder's MLP reads one normalised input twice (gate and up projections), grouped-query attention its keys
and values from one input (k and v, each a few KV heads wide). As separate kernels each pays a call, a
thread-pool launch and, for the LUT kernels, builds the same tables from the same activations again.
Merged, the weights are one constant (packed rows stacked; each member's post-scale broadcast to its rows and
stacked), one kernel computes every member's outputs, and a SLICE of the last axis per member gives each
consumer its part, which TVM fuses into the consumer's elementwise kernel where it can. Equal widths only:
q beside k and v would leave its slice to be copied out on its own (its consumer, the adapter's fused addend,
is a kernel of ours, which TVM does not fuse into), costing about what the merge saves.

Members must be constant-weight accumulates of one op, reading the same x, with the same K and packing,
without a pre-scale (a pre-scale is per member: LoRDBA's v) or an addend, and not graph outputs. Every
member computes exactly what it did: its rows, its post-scale, fp32 throughout. Run on CPU builds only
(hwsim.api applies CPU_PIPELINE): the accelerator would run the slices on its host.
"""

import numpy as np

from hwsim.ir import DType, Graph, Node, Op, OpGroup, Value, infer


def _key(n: Node, outputs: set[int]) -> tuple | None:
    if n.op not in OpGroup.ACCUMULATE:
        return None
    packed = n.inputs[1]
    post = n.inputs[2] if n.attrs.get("post") else None
    if (n.attrs.get("pre") or n.attrs.get("add") or not packed.is_const
            or (post is not None and not post.is_const) or id(n.outputs[0]) in outputs
            or n.outputs[0].type.dtype is not DType.FLOAT32):
        return None
    return (n.op, id(n.inputs[0]), n.attrs["k"], bool(post), packed.type.dtype, packed.type.shape[1:],
            n.outputs[0].type.shape[-1])


def _post(n: Node) -> np.ndarray:
    """A member's post-scale as one fp32 value per output row (a scalar scale broadcast)."""
    rows = n.outputs[0].type.shape[-1]
    return np.broadcast_to(np.asarray(n.inputs[2].data, np.float32).reshape(-1), (rows,))


def merge_sibling_accumulates(graph: Graph) -> bool:
    outputs = {id(v) for v in graph.outputs}
    groups: dict[tuple, list[Node]] = {}
    for n in graph.nodes:
        if (key := _key(n, outputs)) is not None:
            groups.setdefault(key, []).append(n)
    changed = False
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        name = "+".join(m.outputs[0].name for m in members)
        inputs = [first.inputs[0], Value.const(f"{name}/packed", np.concatenate([m.inputs[1].data for m in members]))]
        if first.attrs.get("post"):
            inputs.append(Value.const(f"{name}/post", np.concatenate([_post(m) for m in members])))
        attrs = dict(first.attrs)
        (t,) = infer(first.op, [v.type for v in inputs], attrs)
        merged = Value(name, t)
        new = [Node(first.op, inputs, [merged], attrs, name="+".join(m.name for m in members))]
        start, axis = 0, t.rank - 1
        for m in members:
            out = m.outputs[0]
            width = out.type.shape[-1]
            new.append(Node(Op.SLICE, [merged], [out], {"starts": [start], "ends": [start + width], "axes": [axis],
                                                        "steps": [1]}, name=m.name))
            start += width
        at = graph.nodes.index(first)
        for m in members:
            graph.nodes.remove(m)
        graph.nodes[at:at] = new
        changed = True
    if changed:
        graph.toposort()
    return changed
