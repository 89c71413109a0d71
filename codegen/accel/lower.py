"""An IR graph to an accelerator program: where each node runs, the DRAM layout, and the instruction stream.

Placement, node by node:
- MATMUL (2-D weights, or batched with equal batch dimensions) on the array that takes its kind (fp16,
  int8); SIGN/TERNARY_ACCUMULATE on the array that takes sign/ternary, with its pre-scale, post-scale and
  addend on the vector unit around the tiles. Tiled by TIR (codegen/accel/tir.py) to the buffers.
- Elementwise ops the vector unit lists, on same-shape operands, a row vector or a constant scalar.
- CONCAT, GATHER of constant indices and single-axis SLICE of float tensors (a KV cache's append, a layer's
  cache picked out of the stacked caches): block copies, strided DMA through the accumulator.
- RESHAPE, and a gather or slice of one contiguous range of its input: a view, no instruction. So is a
  transpose of the last two axes read only by a matmul as its W (attention's K^T): the matmul reads W [N, K].
- Casts, transposes and reshapes of constants alone (an exporter's fp32 cast and transpose of an fp16 weight):
  computed here, at build time, and stored as constants, as TVM's FoldConstant does for the CPU and GPU builds
  (and hwsim.roofline models); an fp32 result whose values are all fp16 (a cast fp16 weight) is stored
  in fp16, the format it came in and the fp16 array reads.
- Everything else: a HOST instruction, billed with the host CPU target's roofline.
A BARRIER separates layers. Every value gets its own DRAM region (constants, inputs, then activations).
"""

import math
from dataclasses import replace
from functools import cache

import numpy as np

from codegen.accel.emit import DramRef, Extras, Piece, emit_copy, emit_gemm, emit_vector, scalar, vector_chunk
from codegen.accel.tiles import ALIGN, Epilogue, GemmLayer, Tiling, choose_tiling, footprint
from codegen.accel.tir import TileEvent, schedule_gemm, tile_events
from codegen.accel.window import emit_window_gemm
from hwsim import roofline
from hwsim.accel.isa import Instr, Opcode, Operand
from hwsim.accel.program import AccelProgram, DramTensor, LayerPlan
from hwsim.errors import HwsimError
from hwsim.interp import evaluate
from hwsim.ir import DType, Graph, Node, Op, OpGroup, TensorType, Value, accumulate_inputs
from targets import Target, load_target
from targets.accel import AccelSpec, ArraySpec

COMMUTATIVE = {Op.ADD, Op.MUL, Op.MAX, Op.MIN}
# folded at build time when their inputs are constants: layout and dtype changes only, never more work
FOLDABLE = frozenset({Op.CAST, Op.TRANSPOSE, Op.RESHAPE})


def _label(n: Node) -> str:
    return n.name or n.outputs[0].name


@cache
def _tiled(layer: GemmLayer, t: Tiling) -> tuple[TileEvent, ...]:
    return tuple(tile_events(schedule_gemm(layer, t)))


def fold(graph: Graph) -> dict[int, np.ndarray]:
    """id(Value) -> data of every value computed from constants alone by FOLDABLE nodes (build-time work),
    in the dtype it is stored in: fp16 when an fp32 result holds fp16 values only."""
    folded: dict[int, np.ndarray] = {}
    for n in graph.nodes:
        if n.op in FOLDABLE and n.inputs and all(v.is_const or id(v) in folded for v in n.inputs):
            args = [v.data if v.is_const else folded[id(v)] for v in n.inputs]
            for v, data in zip(n.outputs, evaluate(n.op, args, n.attrs), strict=True):
                folded[id(v)] = data
    for k, data in folded.items():
        if data.dtype == np.float32 and np.array_equal(narrow := data.astype(np.float16), data):
            folded[k] = narrow
    return folded


def allocate(graph: Graph, folded: dict[int, np.ndarray] | None = None) -> tuple[dict[int, DramTensor], int]:
    """DRAM regions, ALIGN-ed: constants, then inputs, then every node output; a RESHAPE aliases its input, a
    gather or slice of one contiguous range of it (`contiguous_part`) the range.
    Folded values (see `fold`) are constants, in their stored dtype."""
    folded = folded or {}
    out: dict[int, DramTensor] = {}
    addr = 0
    consts = graph.constants()
    values = [*consts, *graph.inputs, *(v for n in graph.nodes for v in n.outputs)]
    for v in values:
        if id(v) in out:
            continue
        p = v.producer
        if p is not None and p.inputs and id(p.inputs[0]) in out and id(v) not in folded and (
                p.op is Op.RESHAPE or (part := contiguous_part(p)) is not None):
            src = out[id(p.inputs[0])]
            offset = 0 if p.op is Op.RESHAPE else part * np.dtype(src.dtype).itemsize
            out[id(v)] = DramTensor(v.name, src.addr + offset, v.type.shape, v.type.dtype.value, src.kind)
            continue
        kind = "const" if v.is_const or id(v) in folded else "input" if p is None else "activation"
        dtype = folded[id(v)].dtype.name if id(v) in folded else v.type.dtype.value
        out[id(v)] = DramTensor(v.name, addr, v.type.shape, dtype, kind)
        addr += -(-max(out[id(v)].nbytes, 1) // ALIGN) * ALIGN
    return out, addr


def _ref(t: DramTensor, rows: int, cols: int, offset: int = 0) -> DramRef:
    return DramRef(t.addr + offset, rows, cols, t.dtype)


def swaps_into_matmul(t: Node, graph: Graph, folded: dict[int, np.ndarray], consumers: dict[int, list[Node]]) -> bool:
    """A run-time TRANSPOSE of the last two axes whose one reader is a MATMUL taking it as its second operand
    (attention's K^T): the matmul reads the untransposed tensor as a W stored [N, K], and the transpose is
    not executed. `consumers` is graph.consumers()."""
    if t.op is not Op.TRANSPOSE or t.inputs[0].is_const or id(t.outputs[0]) in folded:
        return False
    rank = t.inputs[0].type.rank
    if rank < 2 or list(t.attrs["perm"]) != [*range(rank - 2), rank - 1, rank - 2]:
        return False
    readers = consumers.get(id(t.outputs[0]), [])
    return len(readers) == 1 and readers[0].op is Op.MATMUL and readers[0].inputs[1] is t.outputs[0] \
        and readers[0].inputs[0] is not t.outputs[0] and all(o is not t.outputs[0] for o in graph.outputs)


def _gemm_node(n: Node, spec: Target, swapped: frozenset[int] = frozenset()) -> tuple[GemmLayer, str, int, dict] | str:
    """(layer, array name, batches, operand roles) for a GEMM-shaped node, or why it is not one; a second
    operand in `swapped` (ids of `swaps_into_matmul` outputs) is read untransposed, as W [N, K]."""
    accel = spec.accel
    if n.op is Op.MATMUL:
        a, b = n.inputs
        dtypes = {a.type.dtype, b.type.dtype}
        kind = "int8" if dtypes == {DType.INT8} else "fp16" if all(d.is_float for d in dtypes) else None
        if kind is None:
            return f"no array takes a {'/'.join(sorted(d.value for d in dtypes))} matmul"
        if b.type.rank == 2:
            batches, (k, nn) = 1, b.type.shape
            m = math.prod(a.type.shape[:-1])
        elif a.type.rank == b.type.rank and a.type.shape[:-2] == b.type.shape[:-2]:
            batches, (m, k), nn = math.prod(a.type.shape[:-2]), a.type.shape[-2:], b.type.shape[-1]
        else:
            return "batch dimensions that broadcast"
        wt = id(b) in swapped
        layer = GemmLayer(m, nn, k, kind, a.type.dtype.value, b.type.dtype.value, packed=False, wt=wt,
                          c_dtype=n.outputs[0].type.dtype.value)
        roles = {"A": a, "W": b.producer.inputs[0] if wt else b}
    elif n.op in OpGroup.ACCUMULATE:
        kind = "sign" if n.op is Op.SIGN_ACCUMULATE else "ternary"
        v = dict(zip(accumulate_inputs(n.attrs), n.inputs, strict=True))
        x, packed = v["x"], v["packed"]
        if "post" in v and v["post"].type.size == 1 and not v["post"].is_const:
            return "a scalar post-scale computed at run time"
        batches, m, k, nn = 1, math.prod(x.type.shape[:-1]), n.attrs["k"], packed.type.shape[0]
        layer = GemmLayer(m, nn, k, kind, x.type.dtype.value, "uint8", packed=True, wt=False,
                          c_dtype=n.outputs[0].type.dtype.value)
        roles = {"A": x, "W": packed, **{r: v[r] for r in ("pre", "post", "add") if r in v}}
    elif n.op is Op.Q8_MATMUL:
        return "a Q8_0 matmul (a scale per 32 products): no array applies per-block scales"
    else:
        return "not a GEMM"
    array = accel.array_for(kind)
    if array is None:
        return f"no array takes {kind} layers"
    return layer, array.name, batches, roles


def _vector_node(n: Node, spec: Target) -> tuple[Value, Value | None, Operand, float] | str:
    """(x, second operand, how it is applied, immediate) for an elementwise node, or why not."""
    accel = spec.accel
    if n.op.name not in accel.vector.ops:
        return f"the vector unit has no {n.op.name}"
    out = n.outputs[0].type
    if not out.dtype.is_float or any(not v.type.dtype.is_float for v in n.inputs):
        return "non-float operands"
    if len(n.inputs) == 1:
        plan = n.inputs[0], None, Operand.NONE, 0.0
        return plan if _chunk_fits(accel, out, Operand.NONE) else "the accumulator cannot hold a chunk of it"
    x, y = n.inputs
    if x.type.shape != out.shape and n.op in COMMUTATIVE:
        x, y = y, x
    if x.type.shape != out.shape:
        return "a broadcast first operand"
    if y.type.shape == out.shape:
        plan = x, y, Operand.TILE, 0.0
    elif y.type.size == 1 and y.is_const:
        plan = x, None, Operand.IMM, scalar(y.data)
    elif out.rank and y.type.size == out.shape[-1] and all(d == 1 for d in y.type.shape[:-1]):
        plan = x, y, Operand.ROW, 0.0
    else:
        return "a broadcast the vector unit does not do"
    return plan if _chunk_fits(accel, out, plan[2]) else "the accumulator cannot hold a chunk of it"


def _runs(n: Node) -> tuple[int, list[tuple[int, int, int]]] | str:
    """(axis, [(source index, output index, length)]) of a data-movement node along its axis (see the module
    docstring), or why it is not one."""
    out = n.outputs[0]
    if n.op not in (Op.CONCAT, Op.GATHER, Op.SLICE):
        return "not a block copy"
    data = n.inputs if n.op is Op.CONCAT else n.inputs[:1]
    if not out.type.dtype.is_float or any(v.type.dtype != out.type.dtype for v in data):
        return "non-float data"
    if any(v.is_const for v in data):
        return "constant data"
    if n.op is Op.SLICE:
        if len(n.attrs["axes"]) != 1 or n.attrs["steps"][0] != 1:
            return "a slice over several axes or with a step"
        ax = n.attrs["axes"][0] % out.type.rank
        start = range(*slice(n.attrs["starts"][0], n.attrs["ends"][0]).indices(n.inputs[0].type.shape[ax])).start
        return ax, [(start, 0, out.type.shape[ax])]
    if n.op is Op.GATHER:
        if not n.inputs[1].is_const:
            return "indices known only at run time"
        ax = n.attrs["axis"] % n.inputs[0].type.rank
        size = n.inputs[0].type.shape[ax]
        runs: list[tuple[int, int, int]] = []  # consecutive indices merged
        for j, v in enumerate(int(i) % size for i in np.asarray(n.inputs[1].data).reshape(-1)):
            if runs and runs[-1][0] + runs[-1][2] == v:
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((v, j, 1))
        return ax, runs
    ax = n.attrs["axis"] % out.type.rank
    offsets = np.cumsum([0] + [v.type.shape[ax] for v in n.inputs])
    return ax, [(0, int(o), v.type.shape[ax]) for o, v in zip(offsets, n.inputs, strict=False)]


def _outer_inner(n: Node, ax: int) -> tuple[int, int]:
    """Rows before the axis, elements per index of it."""
    shape = n.inputs[0].type.shape
    return math.prod(shape[:ax]), math.prod(shape[ax + 1:])


def contiguous_part(n: Node) -> int | None:
    """The element offset at which a gather or slice output is one contiguous range of its input (one run,
    nothing before its axis: a layer's cache picked out of stacked caches), which is then a view of it."""
    found = _runs(n)
    if n.op is Op.CONCAT or isinstance(found, str) or len(found[1]) != 1:
        return None
    ax, ((a, _, _),) = found
    outer, inner = _outer_inner(n, ax)
    return a * inner if outer == 1 else None


def _copy_node(n: Node, tensors: dict[int, DramTensor]) -> list[Piece] | str:
    """The block copies of a data-movement node, or why it is not one."""
    found = _runs(n)
    if isinstance(found, str):
        return found
    ax, runs = found
    out = n.outputs[0]
    outer, inner = _outer_inner(n, ax)
    dst = _ref(tensors[id(out)], outer, out.type.size // max(outer, 1))
    sources = n.inputs if n.op is Op.CONCAT else [n.inputs[0]] * len(runs)
    return [Piece(_ref(tensors[id(v)], outer, v.type.size // max(outer, 1)), a * inner, dst, b * inner, length * inner)
            for v, (a, b, length) in zip(sources, runs, strict=True)]


def _chunk_fits(accel: AccelSpec, out: TensorType, operand: Operand) -> bool:
    return vector_chunk(accel, out.size, out.shape[-1] if out.rank else 1, operand) > 0


def lower(graph: Graph, target: Target) -> AccelProgram:
    """The whole graph as one program (see the module docstring)."""
    accel = target.accel
    host = load_target(accel.host)
    folded = fold(graph)
    tensors, dram_bytes = allocate(graph, folded)
    instrs: list[Instr] = []
    layers: list[LayerPlan] = []
    host_cycles: dict[int, int] = {}
    host_pj: dict[int, tuple[float, float]] = {}
    arrays = {a.name: (i, a) for i, a in enumerate(accel.arrays)}
    consumers = graph.consumers()
    swapped = frozenset(id(n.outputs[0]) for n in graph.nodes if swaps_into_matmul(n, graph, folded, consumers))
    for i, n in enumerate(graph.nodes):
        plan = LayerPlan(i, _label(n), n.op.name, "", "", first=len(instrs))
        if all(id(v) in folded for v in n.outputs):
            plan.unit, plan.detail = "build time", "constants alone: computed when lowering, stored as a constant"
        elif n.op is Op.RESHAPE:
            plan.unit, plan.detail = "view", "aliases its input in DRAM"
        elif contiguous_part(n) is not None:
            plan.unit, plan.detail = "view", "a contiguous range of its input: aliases it in DRAM"
        elif id(n.outputs[0]) in swapped:
            plan.unit, plan.detail = "view", "read transposed by the matmul it feeds (as a W stored [N, K])"
        elif isinstance(gemm := _gemm_node(n, target, swapped), tuple):
            layer, name, batches, roles = gemm
            if not layer.packed:  # a folded weight may be stored narrower than its IR type
                layer = replace(layer, w_dtype=tensors[id(roles["W"])].dtype)
            index, array = arrays[name]
            instrs += _emit_gemm(i, n, layer, batches, roles, index, array, target, tensors, plan)
            instrs.append(Instr(Opcode.BARRIER, i))
            plan.unit = f"array:{name}"
        elif isinstance(pieces := _copy_node(n, tensors), list):
            instrs += emit_copy(i, accel, pieces)
            instrs.append(Instr(Opcode.BARRIER, i))
            plan.unit, plan.detail = "vector", f"block copy ({len(pieces)} piece{'s' * (len(pieces) > 1)})"
        elif isinstance(vec := _vector_node(n, target), tuple):
            x, y, operand, imm = vec
            out = n.outputs[0]
            rows = math.prod(out.type.shape[:-1]) if out.type.rank else 1
            cols = out.type.shape[-1] if out.type.rank else 1
            instrs += emit_vector(i, n.op.name, accel, _ref(tensors[id(x)], rows, cols),
                                  _ref(tensors[id(y)], 1, y.type.size) if y is not None else None, operand, imm,
                                  _ref(tensors[id(out)], rows, cols))
            instrs.append(Instr(Opcode.BARRIER, i))
            plan.unit, plan.detail = "vector", f"{operand.name.lower()} operand" if y is not None or imm else ""
        else:
            why = gemm if n.op in (Op.MATMUL, Op.Q8_MATMUL) or n.op in OpGroup.ACCUMULATE else vec
            seconds = roofline.node_seconds(n, host)
            host_cycles[i] = max(1, math.ceil(seconds * accel.clock_mhz * 1e6))
            host_pj[i] = roofline.node_pj(n, host)
            instrs.append(Instr(Opcode.HOST, i))
            plan.unit, plan.detail = "host", f"{host.name}: {why}"
        plan.last = len(instrs)
        layers.append(plan)
    return AccelProgram(graph, target, instrs, tensors, layers, host_cycles, host_pj, dram_bytes, host, folded)


def _emit_gemm(i: int, n: Node, layer: GemmLayer, batches: int, roles: dict, index: int, array: ArraySpec,
               target: Target, tensors: dict[int, DramTensor], plan: LayerPlan) -> list[Instr]:
    accel = target.accel
    where = f"layer '{_label(n)}' ({n.op.name})"
    if array.staging == "window":
        extra = next((r for r in ("pre", "post", "add") if r in roles), None)
        if extra or batches > 1:
            raise HwsimError(f"{where}: window staging (SCALE-Sim's) takes plain GEMMs, not one with "
                             f"{f'a {extra} operand' if extra else f'{batches} batches'}")
        a, w, c = (tensors[id(roles["A"])], tensors[id(roles["W"])], tensors[id(n.outputs[0])])
        plan.detail = f"{layer.kind} {layer.m}x{layer.n}x{layer.k}, window staging (SCALE-Sim's folds and buffers)"
        return emit_window_gemm(i, layer, index, array, accel, _ref(a, layer.m, layer.k), _ref(w, layer.k, layer.n),
                                _ref(c, layer.m, layer.n), where)
    epilogue = Epilogue(pre="pre" in roles, post="post" in roles and roles["post"].type.size > 1, add="add" in roles)
    t = choose_tiling(layer, array, accel, epilogue, where)
    fp = footprint(layer, t, array, epilogue)
    events = list(_tiled(layer, t))
    plan.detail = (f"{layer.kind} {layer.m}x{layer.n}x{layer.k}{f' x{batches}' if batches > 1 else ''}, tiles "
                   f"{t.tm}x{t.tn}x{t.tk}{', A per row block' if t.a_at_row else ''}")
    a, w, c = tensors[id(roles["A"])], tensors[id(roles["W"])], tensors[id(n.outputs[0])]
    wshape = (layer.n, w.shape[1]) if layer.packed else (layer.n, layer.k) if layer.wt else (layer.k, layer.n)
    isz = {x: np.dtype(x.dtype).itemsize for x in (a, w, c)}
    extras = Extras(
        pre=_ref(tensors[id(roles["pre"])], 1, layer.k) if "pre" in roles else None,
        post=_ref(tensors[id(roles["post"])], 1, layer.n) if "post" in roles and roles["post"].type.size > 1 else None,
        post_imm=scalar(roles["post"].data) if "post" in roles and roles["post"].type.size == 1 else None,
        add=_ref(tensors[id(roles["add"])], layer.m, layer.n) if "add" in roles else None)
    # batched matmuls: one GEMM per batch element, at its DRAM offsets
    return emit_gemm(i, layer, t, index, array, fp, events, [
        (_ref(a, layer.m, layer.k, b * layer.m * layer.k * isz[a]),
         _ref(w, *wshape, b * wshape[0] * wshape[1] * isz[w] if batches > 1 else 0),
         _ref(c, layer.m, layer.n, b * layer.m * layer.n * isz[c])) for b in range(batches)], extras)
