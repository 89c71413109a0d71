"""Lower an hwsim IR graph to a Relax module: one converter per IR op, no detour through ONNX."""

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from codegen import kv_cache
from hwsim.ir import Graph, Node, Op, OpGroup, Value, accumulate_inputs, weight_source

Lowering = Callable[[list[relax.Expr], dict[str, Any], Node], relax.Expr]


def _identifier(name: str) -> str:
    """IR value names ("layer/sign_accumulate", "input.1") become Relax var names, which TVM carries into
    generated C/CUDA parameter names: keep them valid identifiers."""
    name = re.sub(r"\W", "_", name)
    return f"v_{name}" if not name or name[0].isdigit() else name


def _scalar(value: float | int, like: Value) -> relax.Expr:
    return relax.const(value, like.type.dtype.value)


def _wrap_negative(idx: relax.Expr, n: int, v: Value) -> relax.Expr:
    """ONNX indices may be negative; Relax's take/gather_elements assume [0, n)."""
    if v.is_const:
        return idx
    zero, dim = _scalar(0, v), _scalar(n, v)
    return R.where(R.less(idx, zero), R.add(idx, dim), idx)


def _layer_norm(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    shape = n.inputs[0].type.shape
    axes = list(range(a["axis"], len(shape)))
    norm_shape = relax.ShapeExpr(list(shape[a["axis"]:]))
    gamma = R.broadcast_to(x[1], norm_shape)
    beta = R.broadcast_to(x[2], norm_shape) if len(x) == 3 else \
        relax.const(np.zeros(shape[a["axis"]:], n.inputs[0].type.dtype.numpy))
    return R.nn.layer_norm(x[0], gamma, beta, axes=axes, epsilon=a["epsilon"])


def _slice(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    shape = n.inputs[0].type.shape
    out, flips = x[0], []
    begins, ends, strides = [], [], []
    for s, e, ax, st in zip(a["starts"], a["ends"], a["axes"], a["steps"], strict=True):
        r = range(*slice(s, e, st).indices(shape[ax]))
        if st < 0:  # take the same elements forwards, then flip them
            r = r[::-1]
            flips.append(ax)
        begins.append(r.start if len(r) else 0)
        ends.append(r.stop if len(r) else 0)
        strides.append(r.step)
    out = R.strided_slice(out, list(a["axes"]), begins, ends, strides)
    for ax in flips:
        out = R.flip(out, ax)
    return out


def _gather(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    """A constant scalar index is a slice (a layer's KV cache out of the stacked one): strided_slice is
    injective, so TVM fuses it into its consumer (the cache's concat) where take, an indirect read, runs as a
    kernel and a copy of its own. Otherwise take, clipped: an out-of-range runtime index must not read wild
    memory."""
    data, idx = n.inputs
    size = data.type.shape[a["axis"]]
    if idx.is_const and idx.data.ndim == 0:
        i = int(idx.data) % size
        return R.reshape(R.strided_slice(x[0], [a["axis"]], [i], [i + 1]), list(n.outputs[0].type.shape))
    return R.take(x[0], _wrap_negative(x[1], size, idx), axis=a["axis"], mode="clip")


def _split(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    return R.split(x[0], [int(i) for i in np.cumsum(a["sizes"])[:-1]], axis=a["axis"])


def _cumsum(x: relax.Expr, a: dict) -> relax.Expr:
    if a["reverse"]:
        x = R.flip(x, a["axis"])
    y = R.cumsum(x, axis=a["axis"], exclusive=bool(a["exclusive"]))
    return R.flip(y, a["axis"]) if a["reverse"] else y


def _matmul(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    if n.inputs[0].type.dtype.value == "float16":  # accumulate in fp32, as the interpreter defines
        return R.astype(R.matmul(x[0], x[1], out_dtype="float32"), "float16")
    return R.matmul(x[0], x[1])


def _f32(e: relax.Expr, v: Value) -> relax.Expr:
    return R.astype(e, "float32") if v.type.dtype.value != "float32" else e


def _reshape(e: relax.Expr, shape: tuple[int, ...], to: list[int]) -> relax.Expr:
    """R.reshape unless the shape is already `to` (a reshape at a function boundary runs as a copy)."""
    return e if list(shape) == to else R.reshape(e, to)


def _accumulate(bits: int) -> Lowering:
    """Reference lowering: unpack the packed weights with Relax bit ops and multiply densely in fp32. TVM
    folds the unpacking of constant weights at build time, so this runs as a dense fp32 matmul; used where
    the packed TIR kernels do not apply (K not filling whole bytes)."""
    def lower(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
        e = dict(zip(accumulate_inputs(a), x, strict=True))
        v = dict(zip(accumulate_inputs(a), n.inputs, strict=True))
        rows, cols = v["packed"].type.shape
        shifts = relax.const(np.arange(0, 8, bits, dtype=np.uint8))
        fields = R.bitwise_and(R.right_shift(R.expand_dims(e["packed"], 2), shifts),
                               relax.const((1 << bits) - 1, "uint8"))
        w = R.astype(R.strided_slice(R.reshape(fields, [rows, cols * (8 // bits)]), [1], [0], [a["k"]]), "float32")
        w = R.subtract(R.multiply(w, relax.const(2.0, "float32")), relax.const(1.0, "float32")) if bits == 1 \
            else R.subtract(w, relax.const(1.0, "float32"))
        h = _f32(e["x"], v["x"])
        h = R.multiply(h, _f32(e["pre"], v["pre"])) if "pre" in e else h
        y = R.matmul(h, R.permute_dims(w, [1, 0]))
        y = R.multiply(y, _f32(e["post"], v["post"])) if "post" in e else y
        y = R.add(y, _f32(e["add"], v["add"])) if "add" in e else y
        return R.astype(y, v["x"].type.dtype.value) if v["x"].type.dtype.value != "float32" else y
    return lower


def _quantize_blocks(x: relax.Expr, v: Value, rows: int, k: int) -> tuple[relax.Expr, relax.Expr]:
    """x [..., K] -> (round(x / d) [rows, K/32, 32] fp32, d [rows, K/32, 1]): hwsim.interp.quantize_blocks."""
    h = R.reshape(_f32(x, v), [rows, k // 32, 32])
    d = R.divide(R.max(R.abs(h), axis=[-1], keepdims=True), relax.const(127.0, "float32"))
    safe = R.where(R.greater(d, relax.const(0.0, "float32")), d, relax.const(1.0, "float32"))
    return R.round(R.divide(h, safe)), d


def _q8_matmul(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    """Reference lowering of Q8_MATMUL: the dequantized activations times the dequantized weights in fp32 (TVM
    folds the weights' dequantization at build time: a dense fp32 matmul); where codegen/kernels/q8.py does not
    apply (GPUs; partial panels or blocks)."""
    v, (outs, k) = n.inputs[0], n.inputs[1].type.shape
    rows = int(np.prod(v.type.shape[:-1]))
    q, d = _quantize_blocks(x[0], v, rows, k)
    h = R.reshape(R.multiply(q, d), [rows, k])
    w = R.reshape(R.multiply(R.reshape(R.astype(x[1], "float32"), [outs, k // 32, 32]),
                             R.expand_dims(_f32(x[2], n.inputs[2]), [-1])), [outs, k])
    y = R.reshape(R.matmul(h, R.permute_dims(w, [1, 0])), list(n.outputs[0].type.shape))
    return R.astype(y, v.type.dtype.value) if v.type.dtype.value != "float32" else y


def _q8_kernel_fits(n: Node, target: tvm.target.Target | None) -> bool:
    from codegen.kernels.q8 import q8_fits

    _, q, d = n.inputs
    return q.is_const and d.is_const and d.type.dtype.value == "float16" and q8_fits(*q.type.shape, target)


def _q8_kernel(bb: relax.BlockBuilder, kernels: dict[str, relax.GlobalVar], x: relax.Expr, n: Node,
               target: tvm.target.Target) -> relax.Expr:
    """Q8_MATMUL through codegen/kernels/q8.py: the activations quantized by Relax ops (fused by TVM), the
    weights re-laid out at build time."""
    from codegen.kernels.q8 import has_pmaddwd, q8_kernel, q8_layout

    v, (outs, k) = n.inputs[0], n.inputs[1].type.shape
    rows = int(np.prod(v.type.shape[:-1]))
    name = f"dense_q8_0_{rows}x{outs}x{k}"  # "dense_": the host model's dense class (codegen/census.py)
    if name not in kernels:
        threads = int(target.attrs.get("num-cores", 1))
        kernels[name] = bb.add_func(q8_kernel(rows, outs, k, name, threads, has_pmaddwd(target)), name)
    q, d = _quantize_blocks(x, v, rows, k)
    w, dw = q8_layout(n.inputs[1].data, n.inputs[2].data)
    args = [R.reshape(R.astype(q, "int16"), [rows, k]), R.reshape(d, [rows, k // 32]), relax.const(w), relax.const(dw)]
    y = relax.call_tir(kernels[name], args, relax.TensorType((rows, outs // 8, 8), "float32"))
    y = R.reshape(y, list(n.outputs[0].type.shape))
    return R.astype(y, v.type.dtype.value) if v.type.dtype.value != "float32" else y


def _bits(n: Node) -> int:
    return 1 if n.op is Op.SIGN_ACCUMULATE else 2


def _packed_kernel_fits(n: Node) -> bool:
    return n.attrs["k"] % (8 // _bits(n)) == 0 and n.inputs[0].type.dtype.value in ("float32", "float16")


def _accumulate_kernel(bb: relax.BlockBuilder, kernels: dict[str, relax.GlobalVar], x: list[relax.Expr],
                       n: Node, target: tvm.target.Target | None) -> relax.Expr:
    """SIGN/TERNARY_ACCUMULATE through a packed TIR kernel chosen by shape and target (codegen.kernels), fp32
    inside (fp16 activations are widened). The kernel applies the scales and the addend it fuses; Relax
    elementwise ops apply any it does not."""
    from codegen.kernels import Fused, choose_accumulate

    e = dict(zip(accumulate_inputs(n.attrs), x, strict=True))
    v = dict(zip(accumulate_inputs(n.attrs), n.inputs, strict=True))
    shape, dtype = v["x"].type.shape, v["x"].type.dtype.value
    rows, k, outs = int(np.prod(shape[:-1])), n.attrs["k"], n.outputs[0].type.shape[-1]
    extras = {"pre": _f32(e["pre"], v["pre"]) if "pre" in e else None,
              "post": R.broadcast_to(R.reshape(bb.normalize(_f32(e["post"], v["post"])), [-1]), [outs])
              if "post" in e else None,
              "add": _reshape(_f32(e["add"], v["add"]), v["add"].type.shape, [rows, outs]) if "add" in e else None}
    weights = v["packed"].data if v["packed"].is_const else None
    wanted = Fused(**{name: ex is not None for name, ex in extras.items()})
    kernel = choose_accumulate(_bits(n), rows, outs, k, target, weights, wanted)
    if kernel.name not in kernels:  # one kernel per algorithm, extras and shape, shared by every layer of that shape
        kernels[kernel.name] = bb.add_func(kernel.func, kernel.name)
    h = bb.normalize(_reshape(_f32(e["x"], v["x"]), shape, [rows, k]))
    if extras["pre"] is not None and not kernel.fused.pre:
        h = R.multiply(h, extras["pre"])
    w = relax.const(kernel.relayout(weights)) if kernel.relayout else e["packed"]
    args = [h, w, *(extras[name] for name in ("pre", "post", "add") if getattr(kernel.fused, name))]
    y = relax.call_tir(kernels[kernel.name], args, relax.TensorType((rows, outs), "float32"))
    if extras["post"] is not None and not kernel.fused.post:
        y = R.multiply(y, extras["post"])
    if extras["add"] is not None and not kernel.fused.add:
        y = R.add(y, extras["add"])
    y = _reshape(y, (rows, outs), list(n.outputs[0].type.shape))
    return R.astype(y, dtype) if dtype != "float32" else y


def _panel_weights(n: Node, target: tvm.target.Target | None) -> tuple[np.ndarray, tuple[Node, ...]] | None:
    """The constant [K, N] weights of a MATMUL that runs as the CPU's prepacked dense kernel
    (codegen/kernels/dense.py), with the transposes and casts it reads them through (hwsim.ir.weight_source),
    or None. It needs an LLVM target, fp32/fp16 activations and a constant of their type, or an fp16 constant
    cast up to fp32 (an fp16 base, which then stays fp16 in memory)."""
    from codegen.kernels.dense import PANEL_DTYPES, panel_cols

    x = n.inputs[0]
    source = weight_source(n.inputs[1])
    if target is None or target.kind.name != "llvm" or x.type.dtype.value not in PANEL_DTYPES or source is None:
        return None
    w = source.const
    if len(w.type.shape) != 2 or w.type.dtype.value not in PANEL_DTYPES:
        return None
    data = w.data.T if source.transposed else w.data
    k, outs = data.shape
    rows = int(np.prod(x.type.shape[:-1]))
    return (data, source.chain) if k >= 8 and panel_cols(rows, outs, target) is not None else None


def _dense_matmul(bb: relax.BlockBuilder, kernels: dict[str, relax.GlobalVar], x: relax.Expr, n: Node,
                  w: np.ndarray, target: tvm.target.Target) -> relax.Expr:
    """MATMUL by constant weights through the prepacked dense kernel, the weights re-laid out at build time."""
    from codegen.kernels.dense import dense_kernel, dense_shape, panel_cols, panel_layout

    v = n.inputs[0]
    (k, outs), xt, wt = w.shape, v.type.dtype.value, str(w.dtype)
    rows = int(np.prod(v.type.shape[:-1]))
    name = f"dense_{xt}_{wt}_{rows}x{outs}x{k}"
    if name not in kernels:
        kernels[name] = bb.add_func(dense_kernel(rows, k, outs, xt, wt, name, target), name)
    h = _reshape(x, v.type.shape, [rows, k])
    packed = relax.const(panel_layout(w, panel_cols(rows, outs, target)))
    shape = list(dense_shape(rows, k, outs, target))  # [rows, outs], or a one-row GEMV's [t, s, q, c]
    y = relax.call_tir(kernels[name], [h, packed], relax.TensorType(shape, xt))
    return _reshape(y, shape, list(n.outputs[0].type.shape))


def _is_two(v: Value) -> bool:
    """A constant exponent of 2 (RMSNorm's x.pow(2)): a multiply, where `power` calls libm's powf per element
    (17 us for 16x576 on znver4)."""
    return v.is_const and v.type.size == 1 and float(np.asarray(v.data).reshape(-1)[0]) == 2.0


def _transposed_operand(n: Node, target: tvm.target.Target | None) -> Node | None:
    """The TRANSPOSE (of the last two dims, of a runtime fp32 tensor) a MATMUL's second operand comes from,
    where the CPU's dot kernel (codegen/kernels/dot.py) can read its input directly; else None."""
    from codegen.kernels.dot import dot_fits
    from codegen.schedules.cpu import register_tile

    a, b = n.inputs
    t = b.producer
    if target is None or target.kind.name != "llvm" or t is None or t.op is not Op.TRANSPOSE or b.is_const:
        return None
    r = b.type.rank
    if r < 3 or a.type.rank != r or tuple(t.attrs["perm"]) != (*range(r - 2), r - 1, r - 2):
        return None
    if a.type.shape[:-2] != b.type.shape[:-2] or {a.type.dtype.value, b.type.dtype.value} != {"float32"}:
        return None
    return t if dot_fits(a.type.shape[-2], a.type.shape[-1], register_tile(target)[1]) else None


def _dot_matmul(bb: relax.BlockBuilder, kernels: dict[str, relax.GlobalVar], a: relax.Expr, x: relax.Expr,
                n: Node, target: tvm.target.Target) -> relax.Expr:
    """MATMUL(a, TRANSPOSE(x)) as dot products of rows of a and x, x never transposed."""
    from codegen.kernels.dot import dot_kernel
    from codegen.schedules.cpu import register_tile

    shape = n.inputs[0].type.shape
    batch, m, k = int(np.prod(shape[:-2])), shape[-2], shape[-1]
    cols = n.outputs[0].type.shape[-1]
    name = f"dot_{batch}x{m}x{cols}x{k}"
    if name not in kernels:
        kernels[name] = bb.add_func(dot_kernel(batch, m, cols, k, register_tile(target)[1], name), name)
    untransposed = n.inputs[1].producer.inputs[0].type.shape
    y = relax.call_tir(kernels[name], [_reshape(a, shape, [batch, m, k]), _reshape(x, untransposed, [batch, cols, k])],
                       relax.TensorType((batch, m, cols), "float32"))
    return _reshape(y, (batch, m, cols), list(n.outputs[0].type.shape))


def _gelu(x: list[relax.Expr], a: dict, n: Node) -> relax.Expr:
    return R.nn.gelu_tanh(x[0]) if a["approximate"] == "tanh" else R.nn.gelu(x[0])


LOWERINGS: dict[Op, Lowering] = {
    Op.NEG: lambda x, a, n: R.negative(x[0]),
    Op.ABS: lambda x, a, n: R.abs(x[0]),
    Op.SQRT: lambda x, a, n: R.sqrt(x[0]),
    Op.RECIPROCAL: lambda x, a, n: R.divide(_scalar(1, n.inputs[0]), x[0]),
    Op.EXP: lambda x, a, n: R.exp(x[0]),
    Op.LOG: lambda x, a, n: R.log(x[0]),
    Op.SIN: lambda x, a, n: R.sin(x[0]),
    Op.COS: lambda x, a, n: R.cos(x[0]),
    Op.TANH: lambda x, a, n: R.tanh(x[0]),
    Op.SIGMOID: lambda x, a, n: R.sigmoid(x[0]),
    Op.RELU: lambda x, a, n: R.nn.relu(x[0]),
    Op.ERF: lambda x, a, n: R.erf(x[0]),
    Op.GELU: _gelu,
    Op.FLOOR: lambda x, a, n: R.floor(x[0]),
    Op.CEIL: lambda x, a, n: R.ceil(x[0]),
    Op.ROUND: lambda x, a, n: R.round(x[0]),
    Op.ISNAN: lambda x, a, n: R.isnan(x[0]),
    Op.NOT: lambda x, a, n: R.logical_not(x[0]),
    Op.CAST: lambda x, a, n: R.astype(x[0], a["to"].value),
    Op.ADD: lambda x, a, n: R.add(x[0], x[1]),
    Op.SUB: lambda x, a, n: R.subtract(x[0], x[1]),
    Op.MUL: lambda x, a, n: R.multiply(x[0], x[1]),
    Op.DIV: lambda x, a, n: R.divide(x[0], x[1]),
    Op.POW: lambda x, a, n: R.multiply(x[0], x[0]) if _is_two(n.inputs[1]) else R.power(x[0], x[1]),
    Op.MAX: lambda x, a, n: R.maximum(x[0], x[1]),
    Op.MIN: lambda x, a, n: R.minimum(x[0], x[1]),
    Op.EQUAL: lambda x, a, n: R.equal(x[0], x[1]),
    Op.LESS: lambda x, a, n: R.less(x[0], x[1]),
    Op.LESS_EQUAL: lambda x, a, n: R.less_equal(x[0], x[1]),
    Op.GREATER: lambda x, a, n: R.greater(x[0], x[1]),
    Op.GREATER_EQUAL: lambda x, a, n: R.greater_equal(x[0], x[1]),
    Op.AND: lambda x, a, n: R.logical_and(x[0], x[1]),
    Op.OR: lambda x, a, n: R.logical_or(x[0], x[1]),
    Op.WHERE: lambda x, a, n: R.where(x[0], x[1], x[2]),
    Op.SHIFT_LEFT: lambda x, a, n: R.left_shift(x[0], x[1]),
    Op.SHIFT_RIGHT: lambda x, a, n: R.right_shift(x[0], x[1]),
    Op.BITWISE_AND: lambda x, a, n: R.bitwise_and(x[0], x[1]),
    Op.MATMUL: _matmul,
    Op.SOFTMAX: lambda x, a, n: R.nn.softmax(x[0], axis=a["axis"]),
    Op.LAYER_NORM: _layer_norm,
    Op.REDUCE_SUM: lambda x, a, n: R.sum(x[0], axis=list(a["axes"]), keepdims=bool(a["keepdims"])),
    Op.REDUCE_MEAN: lambda x, a, n: R.mean(x[0], axis=list(a["axes"]), keepdims=bool(a["keepdims"])),
    Op.REDUCE_MAX: lambda x, a, n: R.max(x[0], axis=list(a["axes"]), keepdims=bool(a["keepdims"])),
    Op.RESHAPE: lambda x, a, n: R.reshape(x[0], list(a["shape"])),
    Op.TRANSPOSE: lambda x, a, n: R.permute_dims(x[0], list(a["perm"])),
    Op.CONCAT: lambda x, a, n: R.concat(x, axis=a["axis"]),
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.GATHER_ELEMENTS: lambda x, a, n: R.gather_elements(
        x[0], _wrap_negative(x[1], n.inputs[0].type.shape[a["axis"]], n.inputs[1]), axis=a["axis"]),
    Op.GATHER_ND: lambda x, a, n: R.gather_nd(x[0], x[1], batch_dims=a["batch_dims"]),
    Op.CUMSUM: lambda x, a, n: _cumsum(x[0], a),
    Op.SIGN_ACCUMULATE: _accumulate(1),
    Op.TERNARY_ACCUMULATE: _accumulate(2),
    Op.Q8_MATMUL: _q8_matmul,
    Op.BROADCAST_TO: lambda x, a, n: R.broadcast_to(x[0], list(a["shape"])),
    Op.TRILU: lambda x, a, n: (R.triu if a["upper"] else R.tril)(x[0], a["k"]),
}
assert set(LOWERINGS) == set(Op), f"ops without a Relax lowering: {set(Op) - set(LOWERINGS)}"
assert set(LOWERINGS) >= OpGroup.UNARY


def _unused(graph: Graph, readers: Iterable[int], chains: Iterable[Node]) -> set[int]:
    """The transform nodes (a weight's cast or transpose, an attention key's transpose) that only the matmuls
    `readers` (node ids: prepacked or dot kernels) and other such nodes read: those matmuls read the
    untransformed tensor itself, so these are not emitted."""
    consumers, outputs = graph.consumers(), {id(v) for v in graph.outputs}
    skip, done = set(), set(readers)
    changed = True
    while changed:
        changed = False
        for c in chains:
            if id(c) not in skip and id(c.outputs[0]) not in outputs and \
                    all(id(m) in done for m in consumers.get(id(c.outputs[0]), [])):
                skip.add(id(c))
                done.add(id(c))
                changed = True
    return skip


def to_relax(graph: Graph, target: tvm.target.Target | None = None) -> "relax.IRModule":
    """Build a Relax module whose `main` takes the graph inputs (in order) and returns its outputs.
    `target` picks the accumulate kernels' algorithm (lookup tables need AVX2 or NEON shuffles)."""
    bb = relax.BlockBuilder()
    params = [relax.Var(_identifier(v.name), relax.TensorType(v.type.shape, v.type.dtype.value)) for v in graph.inputs]
    env: dict[int, relax.Expr] = {id(v): p for v, p in zip(graph.inputs, params, strict=True)}
    kernels: dict[str, relax.GlobalVar] = {}
    panels = {id(n): p for n in graph.nodes if n.op is Op.MATMUL and (p := _panel_weights(n, target)) is not None}
    dots = {id(n): t for n in graph.nodes if n.op is Op.MATMUL and id(n) not in panels
            and (t := _transposed_operand(n, target)) is not None}
    skip = _unused(graph, [*panels.keys(), *dots.keys()],
                   [*(c for _, chain in panels.values() for c in chain), *dots.values()])
    caches = kv_cache.find(graph) if target is not None and target.kind.name == "llvm" else []
    appends = {c: cache for cache in caches for c in cache.layer}
    skip |= {i for cache in caches for i in cache.skip}

    def arg(v: Value) -> relax.Expr:
        if id(v) not in env:
            env[id(v)] = relax.const(v.data, v.type.dtype.value)
        return env[id(v)]

    with bb.function("main", params):
        with bb.dataflow():
            for n in graph.nodes:
                if id(n) in skip:
                    continue
                if id(n) in panels:
                    expr = _dense_matmul(bb, kernels, arg(n.inputs[0]), n, panels[id(n)][0], target)
                elif id(n) in dots:
                    expr = _dot_matmul(bb, kernels, arg(n.inputs[0]), arg(dots[id(n)].inputs[0]), n, target)
                elif id(n) in appends:
                    cache = appends[id(n)]
                    expr = kv_cache.append(bb, kernels, cache, n, arg(cache.past), arg(n.inputs[1]))
                elif n.op is Op.Q8_MATMUL and _q8_kernel_fits(n, target):
                    expr = _q8_kernel(bb, kernels, arg(n.inputs[0]), n, target)
                elif n.op in OpGroup.ACCUMULATE and _packed_kernel_fits(n):
                    expr = _accumulate_kernel(bb, kernels, [arg(v) for v in n.inputs], n, target)
                else:
                    expr = LOWERINGS[n.op]([arg(v) for v in n.inputs], n.attrs, n)
                if len(n.outputs) == 1:
                    env[id(n.outputs[0])] = bb.emit(expr, name_hint=_identifier(n.outputs[0].name))
                else:
                    tup = bb.emit(expr)
                    for i, v in enumerate(n.outputs):
                        env[id(v)] = bb.emit(relax.TupleGetItem(tup, i), name_hint=_identifier(v.name))
            for cache in caches:
                env[id(cache.present)] = cache.stacked
            outs = [arg(v) for v in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    return bb.get()
