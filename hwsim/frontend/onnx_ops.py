"""One converter per ONNX op type. This is the only place ONNX op names appear.

A converter maps an ONNX node onto IR ops via `ctx.emit`; inputs that ONNX passes as tensors but the
IR needs at compile time (shapes, axes, starts) are read with `ctx.static`, which errors if they are not
constant after folding.
"""

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from hwsim.frontend.importer import ImportContext, attr
from hwsim.frontend.reader import onnx_dtype
from hwsim.ir import Op, Value
from hwsim.ir.infer import broadcast, norm_axis

Ins = list[Value | None]
Converter = Callable[[ImportContext, onnx.NodeProto, Ins], list[Value]]


def _out(node: onnx.NodeProto, i: int = 0) -> str:
    return node.output[i] if len(node.output) > i else ""


def _ints(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(a).reshape(-1))


def _int(a: np.ndarray) -> int:
    """A scalar that exporters write as shape () or (1,)."""
    return int(np.asarray(a).reshape(-1)[0])


def unary(op: Op) -> Converter:
    return lambda ctx, node, ins: [ctx.emit1(op, [ins[0]], name=_out(node))]


def _match_dtypes(ctx: ImportContext, a: Value, b: Value) -> tuple[Value, Value]:
    """ONNX Pow takes an exponent of another type; the IR's binary ops take one dtype."""
    if a.type.dtype is b.type.dtype:
        return a, b
    return a, ctx.emit1(Op.CAST, [b], {"to": a.type.dtype})


def binary(op: Op) -> Converter:
    def conv(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
        a, b = ins
        if op is Op.POW:
            a, b = _match_dtypes(ctx, a, b)
        return [ctx.emit1(op, [a, b], name=_out(node))]
    return conv


def variadic(op: Op) -> Converter:
    def conv(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
        acc = ins[0]
        for i, v in enumerate(ins[1:], start=1):
            acc = ctx.emit1(op, [acc, v], name=_out(node) if i == len(ins) - 1 else None)
        return [acc]
    return conv


def clip(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    """Clip(x, min, max) with optional bounds = MIN(MAX(x, min), max)."""
    y = ins[0]
    bounds = [(Op.MAX, ins[1] if len(ins) > 1 else None), (Op.MIN, ins[2] if len(ins) > 2 else None)]
    present = [(op, b) for op, b in bounds if b is not None]
    for i, (op, b) in enumerate(present):
        y = ctx.emit1(op, [y, b], name=_out(node) if i == len(present) - 1 else None)
    return [y]


def bit_shift(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    direction = attr(node, "direction", b"")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise ctx.fail(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")
    return [ctx.emit1(Op.SHIFT_LEFT if direction == "LEFT" else Op.SHIFT_RIGHT, ins[:2], name=_out(node))]


def alias(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    if node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None and bool(ctx.static(ins[2], "training")):
        raise ctx.fail("Dropout in training mode is not supported")
    return [ins[0]]


def cast(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    to = onnx_dtype(attr(node, "to"), f"node '{ctx.node_name}'")
    return [ins[0] if ins[0].type.dtype is to else ctx.emit1(Op.CAST, [ins[0]], {"to": to}, _out(node))]


def cast_like(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    to = ins[1].type.dtype
    return [ins[0] if ins[0].type.dtype is to else ctx.emit1(Op.CAST, [ins[0]], {"to": to}, _out(node))]


def gelu(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    approx = attr(node, "approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return [ctx.emit1(Op.GELU, [ins[0]], {"approximate": approx}, _out(node))]


def softmax(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    return [ctx.emit1(Op.SOFTMAX, [ins[0]], {"axis": norm_axis(attr(node, "axis", -1), ins[0].type.rank)},
                      _out(node))]


def layer_norm(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    a = {"axis": norm_axis(attr(node, "axis", -1), x.type.rank), "epsilon": float(attr(node, "epsilon", 1e-5))}
    return [ctx.emit1(Op.LAYER_NORM, [v for v in ins if v is not None], a, _out(node))]


def matmul(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    return [ctx.emit1(Op.MATMUL, ins[:2], name=_out(node))]


def _transpose2d(ctx: ImportContext, v: Value) -> Value:
    return ctx.emit1(Op.TRANSPOSE, [v], {"perm": (1, 0)})


def gemm(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    a, b = ins[0], ins[1]
    if attr(node, "transA", 0):
        a = _transpose2d(ctx, a)
    if attr(node, "transB", 0):
        b = _transpose2d(ctx, b)
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    c = ins[2] if len(ins) > 2 else None
    y = ctx.emit1(Op.MATMUL, [a, b], name=None if (alpha != 1.0 or c is not None) else _out(node))
    dt = y.type.dtype.numpy
    if alpha != 1.0:
        y = ctx.emit1(Op.MUL, [y, ctx.const(alpha, dtype=dt)], name=None if c is not None else _out(node))
    if c is not None:
        if beta != 1.0:
            c = ctx.emit1(Op.MUL, [c, ctx.const(beta, dtype=dt)])
        y = ctx.emit1(Op.ADD, [y, c], name=_out(node))
    return [y]


def reduce(op: Op) -> Converter:
    def conv(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
        x = ins[0]
        axes_in = ins[1] if len(ins) > 1 else None
        axes = _ints(ctx.static(axes_in, "axes")) if axes_in is not None else tuple(attr(node, "axes", ()))
        if not axes:
            if attr(node, "noop_with_empty_axes", 0):
                return [x]
            axes = tuple(range(x.type.rank))
        a = {"axes": tuple(sorted(norm_axis(ax, x.type.rank) for ax in axes)),
             "keepdims": int(attr(node, "keepdims", 1))}
        return [ctx.emit1(op, [x], a, _out(node))]
    return conv


def reduce_l2(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    """ReduceL2 = SQRT(REDUCE_SUM(x * x))."""
    sq = ctx.emit1(Op.MUL, [ins[0], ins[0]])
    summed = reduce(Op.REDUCE_SUM)(ctx, _renamed(node, "_sumsq"), [sq, *ins[1:]])[0]
    return [ctx.emit1(Op.SQRT, [summed], name=_out(node))]


def _renamed(node: onnx.NodeProto, suffix: str) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.output[0] = node.output[0] + suffix
    return copy


def _reshape_to(ctx: ImportContext, node: onnx.NodeProto, x: Value, shape: tuple[int, ...]) -> Value:
    return x if shape == x.type.shape else ctx.emit1(Op.RESHAPE, [x], {"shape": shape}, _out(node))


def reshape(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x, spec = ins[0], list(_ints(ctx.static(ins[1], "shape")))
    if not attr(node, "allowzero", 0):
        spec = [x.type.shape[i] if d == 0 else d for i, d in enumerate(spec)]
    if spec.count(-1) > 1:
        raise ctx.fail(f"Reshape to {spec}: more than one -1")
    if -1 in spec:
        known = int(np.prod([d for d in spec if d != -1]))
        spec[spec.index(-1)] = x.type.size // known if known else 0
    return [_reshape_to(ctx, node, x, tuple(spec))]


def flatten(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    s = ins[0].type.shape
    axis = norm_axis(attr(node, "axis", 1), len(s) + 1) if s else 0
    return [_reshape_to(ctx, node, ins[0], (int(np.prod(s[:axis])), int(np.prod(s[axis:]))))]


def unsqueeze(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    axes = _ints(ctx.static(ins[1], "axes")) if len(ins) > 1 else tuple(attr(node, "axes", ()))
    rank = x.type.rank + len(axes)
    shape, it = [], iter(x.type.shape)
    norm = {norm_axis(a, rank) for a in axes}
    for i in range(rank):
        shape.append(1 if i in norm else next(it))
    return [_reshape_to(ctx, node, x, tuple(shape))]


def squeeze(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    axes_in = ins[1] if len(ins) > 1 else None
    axes = _ints(ctx.static(axes_in, "axes")) if axes_in is not None else tuple(attr(node, "axes", ()))
    norm = {norm_axis(a, x.type.rank) for a in axes} or {i for i, d in enumerate(x.type.shape) if d == 1}
    if any(x.type.shape[a] != 1 for a in norm):
        raise ctx.fail(f"Squeeze of axes {sorted(norm)} that are not 1 in {x.type.shape}")
    return [_reshape_to(ctx, node, x, tuple(d for i, d in enumerate(x.type.shape) if i not in norm))]


def transpose(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    perm = tuple(attr(node, "perm", ())) or tuple(reversed(range(ins[0].type.rank)))
    if perm == tuple(range(len(perm))):
        return [ins[0]]
    return [ctx.emit1(Op.TRANSPOSE, [ins[0]], {"perm": perm}, _out(node))]


def concat(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    vals = [v for v in ins if v is not None and v.type.size > 0] or [ins[0]]
    if len(vals) == 1:
        return vals
    return [ctx.emit1(Op.CONCAT, vals, {"axis": norm_axis(attr(node, "axis"), vals[0].type.rank)}, _out(node))]


def split(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    axis = norm_axis(attr(node, "axis", 0), x.type.rank)
    dim = x.type.shape[axis]
    if len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ctx.static(ins[1], "split"))
    elif attr(node, "split") is not None:
        sizes = tuple(attr(node, "split"))
    else:
        n = attr(node, "num_outputs", len(node.output))
        chunk = -(-dim // n)
        sizes = tuple(min(chunk, dim - i * chunk) for i in range(n))
    return ctx.emit(Op.SPLIT, [x], {"axis": axis, "sizes": sizes}, list(node.output))


def slice_(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    starts, ends = _ints(ctx.static(ins[1], "starts")), _ints(ctx.static(ins[2], "ends"))
    def get(i, d):
        return (_ints(ctx.static(ins[i], "axes/steps")) if len(ins) > i and ins[i] is not None else d)
    axes = tuple(norm_axis(a, x.type.rank) for a in get(3, tuple(range(len(starts)))))
    steps = get(4, (1,) * len(starts))
    keep = [i for i, (s, e, a, st) in enumerate(zip(starts, ends, axes, steps, strict=True))
            if range(*slice(s, e, st).indices(x.type.shape[a])) != range(x.type.shape[a])]
    if not keep:
        return [x]
    a = {k: tuple(v[i] for i in keep) for k, v in
         {"starts": starts, "ends": ends, "axes": axes, "steps": steps}.items()}
    return [ctx.emit1(Op.SLICE, [x], a, _out(node))]


def gather(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x, idx = ins
    axis = norm_axis(attr(node, "axis", 0), x.type.rank)
    if idx.is_const:
        n = x.type.shape[axis]
        data = idx.data.astype(np.int64)
        if data.size and (data.min() < -n or data.max() >= n):
            raise ctx.fail(f"Gather index out of range [{-n}, {n})")
        idx = ctx.const(np.where(data < 0, data + n, data), "indices")
    return [ctx.emit1(Op.GATHER, [x, idx], {"axis": axis}, _out(node))]


def gather_elements(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    axis = norm_axis(attr(node, "axis", 0), ins[0].type.rank)
    return [ctx.emit1(Op.GATHER_ELEMENTS, ins[:2], {"axis": axis}, _out(node))]


def gather_nd(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    return [ctx.emit1(Op.GATHER_ND, ins[:2], {"batch_dims": int(attr(node, "batch_dims", 0))}, _out(node))]


def cumsum(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    a = {"axis": norm_axis(_int(ctx.static(ins[1], "axis")), ins[0].type.rank),
         "exclusive": int(attr(node, "exclusive", 0)), "reverse": int(attr(node, "reverse", 0))}
    return [ctx.emit1(Op.CUMSUM, [ins[0]], a, _out(node))]


def expand(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    x = ins[0]
    shape = broadcast(x.type.shape, _ints(ctx.static(ins[1], "shape")))
    if shape == x.type.shape:
        return [x]
    return [ctx.emit1(Op.BROADCAST_TO, [x], {"shape": shape}, _out(node))]


def where(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    return [ctx.emit1(Op.WHERE, ins[:3], name=_out(node))]


def trilu(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    k = _int(ctx.static(ins[1], "k")) if len(ins) > 1 and ins[1] is not None else 0
    return [ctx.emit1(Op.TRILU, [ins[0]], {"upper": int(attr(node, "upper", 1)), "k": k}, _out(node))]


# --- ops that only describe constants: they never reach the IR ----------------------------------

def shape(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    dims = ins[0].type.shape
    start, end = attr(node, "start", 0), attr(node, "end", len(dims))
    return [ctx.const(np.array(dims[start:end], dtype=np.int64), _out(node))]


def size(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    return [ctx.const(np.array(ins[0].type.size, dtype=np.int64), _out(node))]


def constant(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    a = node.attribute[0]
    if a.name == "value":
        data = numpy_helper.to_array(a.t)
    elif a.name in ("value_float", "value_floats"):
        data = np.array(onnx.helper.get_attribute_value(a), dtype=np.float32)
    elif a.name in ("value_int", "value_ints"):
        data = np.array(onnx.helper.get_attribute_value(a), dtype=np.int64)
    else:
        raise ctx.fail(f"Constant with attribute '{a.name}' is not supported")
    return [ctx.const(data, _out(node))]


def constant_of_shape(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    t = attr(node, "value")
    fill = numpy_helper.to_array(t).reshape(-1) if t is not None else np.zeros(1, np.float32)
    return [ctx.const(np.full(_ints(ctx.static(ins[0], "shape")), fill[0], dtype=fill.dtype), _out(node))]


def range_(ctx: ImportContext, node: onnx.NodeProto, ins: Ins) -> list[Value]:
    start, limit, delta = (ctx.static(v, n) for v, n in zip(ins, ("start", "limit", "delta"), strict=True))
    dtype = start.dtype
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    return [ctx.const(np.arange(start, limit, delta, dtype=dtype), _out(node))]


CONVERTERS: dict[str, Converter] = {
    "Neg": unary(Op.NEG), "Abs": unary(Op.ABS), "Sqrt": unary(Op.SQRT), "Reciprocal": unary(Op.RECIPROCAL),
    "Exp": unary(Op.EXP), "Log": unary(Op.LOG), "Sin": unary(Op.SIN), "Cos": unary(Op.COS),
    "Tanh": unary(Op.TANH), "Sigmoid": unary(Op.SIGMOID), "Relu": unary(Op.RELU), "Erf": unary(Op.ERF),
    "Floor": unary(Op.FLOOR), "Ceil": unary(Op.CEIL), "Round": unary(Op.ROUND), "IsNaN": unary(Op.ISNAN),
    "Not": unary(Op.NOT),
    "Gelu": gelu, "Cast": cast, "CastLike": cast_like,
    "Add": binary(Op.ADD), "Sub": binary(Op.SUB), "Mul": binary(Op.MUL), "Div": binary(Op.DIV),
    "Pow": binary(Op.POW), "Equal": binary(Op.EQUAL), "Less": binary(Op.LESS),
    "LessOrEqual": binary(Op.LESS_EQUAL), "Greater": binary(Op.GREATER),
    "GreaterOrEqual": binary(Op.GREATER_EQUAL), "And": binary(Op.AND), "Or": binary(Op.OR),
    "BitShift": bit_shift, "BitwiseAnd": binary(Op.BITWISE_AND), "Clip": clip,
    "Max": variadic(Op.MAX), "Min": variadic(Op.MIN), "Sum": variadic(Op.ADD),
    "Where": where, "MatMul": matmul, "Gemm": gemm, "Softmax": softmax, "LayerNormalization": layer_norm,
    "ReduceSum": reduce(Op.REDUCE_SUM), "ReduceMean": reduce(Op.REDUCE_MEAN), "ReduceMax": reduce(Op.REDUCE_MAX),
    "ReduceL2": reduce_l2,
    "Reshape": reshape, "Flatten": flatten, "Unsqueeze": unsqueeze, "Squeeze": squeeze,
    "Transpose": transpose, "Concat": concat, "Split": split, "Slice": slice_, "Gather": gather,
    "GatherElements": gather_elements, "GatherND": gather_nd, "CumSum": cumsum, "Expand": expand, "Trilu": trilu,
    "Identity": alias, "Dropout": alias,
    "Shape": shape, "Size": size, "Constant": constant, "ConstantOfShape": constant_of_shape, "Range": range_,
}
