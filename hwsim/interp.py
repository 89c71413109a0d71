"""The numpy reference interpreter: the definition of every IR op's semantics.

It is the oracle for the frontend (against onnxruntime), for passes (outputs before == after) and for
code generation. Each result is cast to the type the verifier inferred, so numpy's promotion rules never
leak into the semantics.
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import special

from hwsim.errors import HwsimError
from hwsim.ir import Graph, Op, OpGroup, Value, accumulate_inputs, infer

Arrays = list[np.ndarray]
Impl = Callable[[Arrays, dict[str, Any]], Arrays]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q = np.abs(a) // np.abs(b)  # truncate toward zero, like C and ONNX
    return np.where((a < 0) ^ (b < 0), -q, q)


def _div(x: Arrays, a: dict) -> Arrays:
    return [_int_div(*x) if np.issubdtype(x[0].dtype, np.integer) else x[0] / x[1]]


def _matmul(x: Arrays, a: dict) -> Arrays:
    """fp16 matmuls accumulate in fp32 (as MLAS, cuBLAS and every fp16 MAC array do), then round."""
    if x[0].dtype == np.float16:
        return [np.matmul(x[0].astype(np.float32), x[1].astype(np.float32))]
    return [np.matmul(x[0], x[1])]


def _gelu(x: Arrays, a: dict) -> Arrays:
    v = x[0].astype(np.float64)
    if a["approximate"] == "tanh":
        return [0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))]
    return [0.5 * v * (1 + special.erf(v / np.sqrt(2)))]


def _softmax(x: Arrays, a: dict) -> Arrays:
    e = np.exp(x[0] - x[0].max(axis=a["axis"], keepdims=True))
    return [e / e.sum(axis=a["axis"], keepdims=True)]


def _layer_norm(x: Arrays, a: dict) -> Arrays:
    v = x[0].astype(np.float32)
    axes = tuple(range(a["axis"] % v.ndim, v.ndim))
    mean = v.mean(axis=axes, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (v - mean) / np.sqrt(var + np.float32(a["epsilon"])) * x[1]
    return [y + x[2] if len(x) == 3 else y]


def _reduce(fn: Callable) -> Impl:
    return lambda x, a: [fn(x[0], axis=tuple(a["axes"]), keepdims=bool(a["keepdims"]))]


def _slice(x: Arrays, a: dict) -> Arrays:
    idx: list[slice] = [slice(None)] * x[0].ndim
    for s, e, ax, st in zip(a["starts"], a["ends"], a["axes"], a["steps"], strict=True):
        idx[ax] = slice(s, e, st)
    return [x[0][tuple(idx)]]


def _split(x: Arrays, a: dict) -> Arrays:
    return np.split(x[0], np.cumsum(a["sizes"])[:-1], axis=a["axis"])


def _gather(x: Arrays, a: dict) -> Arrays:
    n = x[0].shape[a["axis"]]
    idx = x[1].astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise HwsimError(f"GATHER index out of range [{-n}, {n})")
    return [np.take(x[0], np.where(idx < 0, idx + n, idx), axis=a["axis"])]


def _gather_elements(x: Arrays, a: dict) -> Arrays:
    axis, idx = a["axis"], x[1].astype(np.int64)
    n = x[0].shape[axis]
    # indices may be smaller than the data off the axis: only that corner of the data is read
    data = x[0][tuple(slice(None) if i == axis else slice(0, d) for i, d in enumerate(idx.shape))]
    return [np.take_along_axis(data, np.where(idx < 0, idx + n, idx), axis=axis)]


def _gather_nd(x: Arrays, a: dict) -> Arrays:
    data, idx, b = x[0], x[1].astype(np.int64), a["batch_dims"]
    k = idx.shape[-1]
    bshape = data.shape[:b]
    flat_data = data.reshape((-1, *data.shape[b:]))
    flat_idx = idx.reshape((-1, *idx.shape[b:]))
    dims = np.array(data.shape[b:b + k])
    out = [d[tuple(np.moveaxis(np.where(i < 0, i + dims, i), -1, 0))] for d, i in zip(flat_data, flat_idx,
                                                                                     strict=True)]
    return [np.stack(out).reshape(bshape + idx.shape[b:-1] + data.shape[b + k:])]


def _cumsum(x: Arrays, a: dict) -> Arrays:
    v, ax = x[0], a["axis"]
    if a["reverse"]:
        v = np.flip(v, ax)
    out = np.cumsum(v, axis=ax, dtype=v.dtype)
    if a["exclusive"]:
        out = out - v
    return [np.flip(out, ax) if a["reverse"] else out]


def unpack_weights(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """uint8 rows -> int8 weights: signs (bit 1 = +1, LSB first) or trits (2-bit code t + 1)."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    fields = ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(packed.shape[0], -1)[:, :k]
    return (fields.astype(np.int8) * 2 - 1) if bits == 1 else fields.astype(np.int8) - 1


def _accumulate(bits: int) -> Impl:
    """y[..., n] = post[n] * sum_k W[n, k] * (pre[k] * x[..., k]) + add[..., n], W in {-1,+1} or {-1,0,+1}:
    the weights only add, subtract or skip; scales are applied once per input and once per output channel.
    Everything inside is fp32 (what the kernels compute); the result is rounded once to x's dtype."""
    def impl(x: Arrays, a: dict) -> Arrays:
        t = dict(zip(accumulate_inputs(a), x, strict=True))
        h = t["x"].astype(np.float32)
        if "pre" in t:
            h = h * t["pre"].astype(np.float32)
        y = h @ unpack_weights(t["packed"], a["k"], bits).T.astype(np.float32)
        if "post" in t:
            y = y * t["post"].astype(np.float32)
        return [y + t["add"].astype(np.float32) if "add" in t else y]
    return impl


def quantize_blocks(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """fp32 [..., K] -> (int8 codes [..., K], fp32 scales [..., K/block]): per block d = max|x| / 127 and
    q = round(x / d), ties to even (0 where the block is all zero). The activations' half of Q8_0 x Q8_0."""
    xb = x.astype(np.float32).reshape(*x.shape[:-1], -1, block)
    d = np.abs(xb).max(-1) / np.float32(127)
    q = np.round(xb / np.where(d > 0, d, np.float32(1))[..., None])
    return q.astype(np.int8).reshape(x.shape), d.astype(np.float32)


def _q8_matmul(x: Arrays, a: dict) -> Arrays:
    """y[..., n] = sum_b (dx[..., b] * dw[n, b]) * sum_i qx[..., b, i] * qw[n, b, i]: the activations quantized
    per block (`quantize_blocks`), exact integer dot products per block, fp32 scaling and summation over blocks."""
    block = a["block"]
    qx, dx = quantize_blocks(x[0], block)
    qw, dw = x[1], x[2].astype(np.float32)
    n, k = qw.shape
    lead = x[0].shape[:-1]
    qx = qx.reshape(-1, k // block, block).astype(np.int32)
    dots = np.einsum("mbi,nbi->mnb", qx, qw.reshape(n, k // block, block).astype(np.int32))
    scale = dx.reshape(-1, 1, k // block) * dw[None]
    return [(dots.astype(np.float32) * scale).sum(-1, dtype=np.float32).reshape(*lead, n)]


def _trilu(x: Arrays, a: dict) -> Arrays:
    return [(np.triu if a["upper"] else np.tril)(x[0], a["k"])]


IMPLS: dict[Op, Impl] = {
    Op.NEG: lambda x, a: [-x[0]],
    Op.ABS: lambda x, a: [np.abs(x[0])],
    Op.SQRT: lambda x, a: [np.sqrt(x[0])],
    Op.RECIPROCAL: lambda x, a: [1 / x[0]],
    Op.EXP: lambda x, a: [np.exp(x[0])],
    Op.LOG: lambda x, a: [np.log(x[0])],
    Op.SIN: lambda x, a: [np.sin(x[0])],
    Op.COS: lambda x, a: [np.cos(x[0])],
    Op.TANH: lambda x, a: [np.tanh(x[0])],
    Op.SIGMOID: lambda x, a: [special.expit(x[0])],
    Op.RELU: lambda x, a: [np.maximum(x[0], 0)],
    Op.ERF: lambda x, a: [special.erf(x[0])],
    Op.GELU: _gelu,
    Op.FLOOR: lambda x, a: [np.floor(x[0])],
    Op.CEIL: lambda x, a: [np.ceil(x[0])],
    Op.ROUND: lambda x, a: [np.round(x[0])],
    Op.ISNAN: lambda x, a: [np.isnan(x[0])],
    Op.NOT: lambda x, a: [np.logical_not(x[0])],
    Op.CAST: lambda x, a: [x[0].astype(a["to"].numpy)],
    Op.ADD: lambda x, a: [x[0] + x[1]],
    Op.SUB: lambda x, a: [x[0] - x[1]],
    Op.MUL: lambda x, a: [x[0] * x[1]],
    Op.DIV: _div,
    Op.POW: lambda x, a: [np.power(x[0], x[1])],
    Op.MAX: lambda x, a: [np.maximum(x[0], x[1])],
    Op.MIN: lambda x, a: [np.minimum(x[0], x[1])],
    Op.EQUAL: lambda x, a: [x[0] == x[1]],
    Op.LESS: lambda x, a: [x[0] < x[1]],
    Op.LESS_EQUAL: lambda x, a: [x[0] <= x[1]],
    Op.GREATER: lambda x, a: [x[0] > x[1]],
    Op.GREATER_EQUAL: lambda x, a: [x[0] >= x[1]],
    Op.AND: lambda x, a: [np.logical_and(x[0], x[1])],
    Op.OR: lambda x, a: [np.logical_or(x[0], x[1])],
    Op.WHERE: lambda x, a: [np.where(x[0], x[1], x[2])],
    Op.SHIFT_LEFT: lambda x, a: [np.left_shift(x[0], x[1])],
    Op.SHIFT_RIGHT: lambda x, a: [np.right_shift(x[0], x[1])],
    Op.BITWISE_AND: lambda x, a: [np.bitwise_and(x[0], x[1])],
    Op.MATMUL: _matmul,
    Op.SOFTMAX: _softmax,
    Op.LAYER_NORM: _layer_norm,
    Op.REDUCE_SUM: _reduce(np.sum),
    Op.REDUCE_MEAN: _reduce(np.mean),
    Op.REDUCE_MAX: _reduce(np.max),
    Op.RESHAPE: lambda x, a: [x[0].reshape(a["shape"])],
    Op.TRANSPOSE: lambda x, a: [x[0].transpose(a["perm"])],
    Op.CONCAT: lambda x, a: [np.concatenate(x, axis=a["axis"])],
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.GATHER_ELEMENTS: _gather_elements,
    Op.GATHER_ND: _gather_nd,
    Op.CUMSUM: _cumsum,
    Op.BROADCAST_TO: lambda x, a: [np.broadcast_to(x[0], a["shape"])],
    Op.TRILU: _trilu,
    Op.SIGN_ACCUMULATE: _accumulate(1),
    Op.TERNARY_ACCUMULATE: _accumulate(2),
    Op.Q8_MATMUL: _q8_matmul,
}
assert set(IMPLS) == set(Op), f"ops without semantics: {set(Op) - set(IMPLS)}"
assert set(IMPLS) >= OpGroup.UNARY


def evaluate(op: Op, inputs: Arrays, attrs: dict[str, Any]) -> Arrays:
    """Apply one op to numpy arrays; results have exactly the inferred shapes and dtypes."""
    types = infer(op, [Value.const("_", x).type for x in inputs], attrs)
    with np.errstate(all="ignore"):
        outs = IMPLS[op](inputs, attrs)
    return [np.array(np.asarray(o, dtype=t.dtype.numpy).reshape(t.shape), order="C")
            for o, t in zip(outs, types, strict=True)]


def run(graph: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Execute `graph` on `feeds` (by input name); returns the outputs in order."""
    env: dict[int, np.ndarray] = {}
    for v in graph.inputs:
        if v.name not in feeds:
            raise HwsimError(f"missing input '{v.name}'")
        x = np.asarray(feeds[v.name])
        if tuple(x.shape) != v.type.shape or x.dtype != v.type.dtype.numpy:
            raise HwsimError(f"input '{v.name}' is {x.dtype}{list(x.shape)}, expected {v.type}")
        env[id(v)] = x
    for n in graph.nodes:
        args = [v.data if v.is_const else env[id(v)] for v in n.inputs]
        for v, out in zip(n.outputs, evaluate(n.op, args, n.attrs), strict=True):
            env[id(v)] = out
    return [v.data if v.is_const else env[id(v)] for v in graph.outputs]
