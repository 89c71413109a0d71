"""A decode step's stacked KV caches, updated in place instead of copied three times (CPU builds).

An exported decode step takes every layer's cache stacked in one tensor (past [L, ...]) and returns them one
step longer, stacked (present [L, ...]): each layer picks its cache out (GATHER by a constant index), appends
the step's keys or values (CONCAT) and reads the result; at the end the L results are stacked (a RESHAPE each,
then CONCAT on axis 0). Emitted as written that is three copies of every cache a step (SmolLM2-135M: 2 x 3
MB, 129 tokens), where a functional step needs one. Here present is allocated once, as past padded by the new
rows (the one copy), each layer writes its new rows into its slice in place (call_tir_inplace) and reads its
cache as a view of that slice; the gathers, the per-layer concats and the stack emit nothing. A layer's rows
are written before any reader of its slice and no layer writes another's slice, so the views see exactly the
concatenations they replace.
"""

import math
from dataclasses import dataclass, field

from tvm import relax, tirx
from tvm.script import tirx as T

from hwsim.ir import Graph, Node, Op, Value

OPAQUE = 8  # TVM's kOpaque op pattern: FuseOps leaves an in-place write alone


@dataclass
class StackedCache:
    past: Value  # the graph input [L, *cache]
    present: Value  # the graph output [L, *cache one step longer]
    layer: dict[int, int]  # id of each layer's CONCAT -> its layer index
    skip: set[int]  # ids of the nodes that emit nothing: the gathers, the stack's reshapes, the stack
    stacked: relax.Expr | None = field(default=None)  # present as emitted so far


def find(graph: Graph) -> list[StackedCache]:
    """The outputs that are stacks of per-layer appends to a stacked input, in the exporter's pattern."""
    producer = {id(v): n for n in graph.nodes for v in n.outputs}
    consumers = graph.consumers()
    inputs = {id(v) for v in graph.inputs}
    found = []
    for present in graph.outputs:
        stack = producer.get(id(present))
        if stack is None or stack.op is not Op.CONCAT or stack.attrs["axis"] != 0 or consumers.get(id(present)):
            continue
        layers = [_layer(v, stack, producer, consumers) for v in stack.inputs]
        if any(x is None for x in layers):
            continue
        past = layers[0][2].inputs[0]
        size = past.type.shape[0]
        if (id(past) not in inputs or len(layers) != size or any(g.inputs[0] is not past for _, _, g in layers)
                or [int(g.inputs[1].data) % size for _, _, g in layers] != list(range(size))
                or present.type.shape != (size, *layers[0][1].outputs[0].type.shape)):
            continue
        found.append(StackedCache(past, present, {id(c): i for i, (_, c, _) in enumerate(layers)},
                                  {id(stack), *(id(n) for r, _, g in layers for n in (r, g))}))
    return found


def _layer(v: Value, stack: Node, producer: dict[int, Node], consumers: dict[int, list[Node]]
           ) -> tuple[Node, Node, Node] | None:
    """(reshape, concat, gather) of one stacked layer: v = RESHAPE(CONCAT(GATHER(past, i), new)), each read
    by the next alone."""
    reshape = producer.get(id(v))
    if reshape is None or reshape.op is not Op.RESHAPE or consumers.get(id(v)) != [stack]:
        return None
    cat = producer.get(id(reshape.inputs[0]))
    if cat is None or cat.op is not Op.CONCAT or len(cat.inputs) != 2:
        return None
    gather = producer.get(id(cat.inputs[0]))
    if (gather is None or gather.op is not Op.GATHER or gather.attrs["axis"] != 0 or not gather.inputs[1].is_const
            or gather.inputs[1].data.ndim != 0 or consumers.get(id(gather.outputs[0])) != [cat]):
        return None
    shape = cat.outputs[0].type.shape
    if reshape.outputs[0].type.shape != (1, *shape) or cat.inputs[1].type.dtype != cat.outputs[0].type.dtype:
        return None
    return reshape, cat, gather


def append(bb: relax.BlockBuilder, kernels: dict[str, relax.GlobalVar], cache: StackedCache, cat: Node,
           past: relax.Expr, new: relax.Expr) -> relax.Expr:
    """Write `cat`'s new rows into its layer's slice of the stacked present (allocating that, as past padded,
    on the first append) and return the layer's cache: a view of its slice."""
    layer, full = cache.layer[id(cat)], cat.outputs[0].type
    axis = cat.attrs["axis"] % full.rank
    rows = cat.inputs[1].type
    if cache.stacked is None:
        pad = [0, 0] * (full.rank + 1)
        pad[2 * (axis + 1) + 1] = rows.shape[axis]
        cache.stacked = bb.emit(relax.op.nn.pad(past, pad), name_hint=f"{cache.present.name}_padded")
    name = f"kv_write_{'x'.join(map(str, cache.present.type.shape))}_{axis}_{full.dtype.value}"
    if name not in kernels:
        func = _write_rows(cache.present.type.shape, rows.shape, axis, full.dtype.value)
        kernels[name] = bb.add_func(func.with_attr("global_symbol", name), name)
    cache.stacked = bb.emit(relax.op.call_tir_inplace(
        kernels[name], [cache.stacked, new, relax.prim_value(tirx.IntImm("int64", layer))], [0],
        relax.TensorType(cache.present.type.shape, full.dtype.value)))
    offset = layer * full.nbytes
    view = bb.emit(relax.op.memory.view(cache.stacked, relax.ShapeExpr(list(full.shape)),
                                        relative_byte_offset=relax.prim_value(tirx.IntImm("int64", offset))))
    return relax.op.memory.ensure_zero_offset(view)  # on a CPU a pointer offset, not a copy


def _write_rows(stacked: tuple[int, ...], rows: tuple[int, ...], axis: int, dtype: str) -> tirx.PrimFunc:
    """PrimFunc(p [L, *cache], x [*rows], layer): the rows x, appended along `axis`, into layer's slice of p."""
    outer, t, inner = math.prod(rows[:axis]), rows[axis], math.prod(rows[axis + 1:])
    along = stacked[1 + axis]

    @T.prim_func
    def write(p: T.Buffer(stacked, dtype), x: T.Buffer(rows, dtype), layer: T.int64):
        T.func_attr({"tirx.noalias": True})
        pf = T.decl_buffer((math.prod(stacked),), dtype, data=p.data)
        xf = T.decl_buffer((math.prod(rows),), dtype, data=x.data)
        for o, s, i in T.grid(outer, t, inner):
            pf[((layer * outer + o) * along + along - t + s) * inner + i] = xf[(o * t + s) * inner + i]

    return write.with_attr("op_pattern", OPAQUE).with_attr("tirx.is_scheduled", True)
