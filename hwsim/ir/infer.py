"""Static type inference: the output types each op produces from its input types and attributes.

The frontend uses it to type new nodes; the verifier re-runs it to check every node after each pass.
Raises `TypeError` with the reason when inputs are not acceptable.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from hwsim.ir.dtypes import DType
from hwsim.ir.graph import TensorType
from hwsim.ir.ops import Op, OpGroup, accumulate_inputs

Types = list[TensorType]
Attrs = dict[str, Any]


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise TypeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast") from None


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def _same_dtype(ts: Types) -> DType:
    dts = {t.dtype for t in ts}
    if len(dts) != 1:
        raise TypeError(f"operand dtypes differ: {sorted(d.value for d in dts)}")
    return dts.pop()


def _unary(ts: Types, a: Attrs) -> Types:
    if not ts[0].dtype.is_float:
        raise TypeError(f"needs a float input, got {ts[0].dtype.value}")
    return [ts[0]]


def _binary(ts: Types, a: Attrs) -> Types:
    return [TensorType(broadcast(ts[0].shape, ts[1].shape), _same_dtype(ts))]


def _compare(ts: Types, a: Attrs) -> Types:
    _same_dtype(ts)
    return [TensorType(broadcast(ts[0].shape, ts[1].shape), DType.BOOL)]


def _logical(ts: Types, a: Attrs) -> Types:
    if _same_dtype(ts) is not DType.BOOL:
        raise TypeError("logical ops need bool inputs")
    return [TensorType(broadcast(ts[0].shape, ts[1].shape), DType.BOOL)]


def _bitwise(ts: Types, a: Attrs) -> Types:
    if not _same_dtype(ts).is_int:
        raise TypeError("bit operations need integer inputs")
    return _binary(ts, a)


def _where(ts: Types, a: Attrs) -> Types:
    if ts[0].dtype is not DType.BOOL:
        raise TypeError("WHERE condition must be bool")
    return [TensorType(broadcast(ts[0].shape, ts[1].shape, ts[2].shape), _same_dtype(ts[1:]))]


def _matmul(ts: Types, a: Attrs) -> Types:
    x, y = ts[0].shape, ts[1].shape
    if not x or not y:
        raise TypeError("MATMUL operands must have rank >= 1")
    xs, ys = (1, *x) if len(x) == 1 else x, (*y, 1) if len(y) == 1 else y
    if xs[-1] != ys[-2]:
        raise TypeError(f"MATMUL inner dims differ: {x} @ {y}")
    out = [*broadcast(xs[:-2], ys[:-2]), xs[-2], ys[-1]]
    if len(x) == 1:
        out.pop(-2)
    if len(y) == 1:
        out.pop(-1)
    return [TensorType(tuple(out), _same_dtype(ts))]


def _layer_norm(ts: Types, a: Attrs) -> Types:
    x = ts[0]
    axis = norm_axis(a["axis"], x.rank)
    for t in ts[1:]:
        if broadcast(t.shape, x.shape[axis:]) != x.shape[axis:]:
            raise TypeError(f"LAYER_NORM scale/bias {t.shape} do not fit normalised dims {x.shape[axis:]}")
    return [x]


def _reduce(ts: Types, a: Attrs) -> Types:
    x = ts[0]
    axes = {norm_axis(ax, x.rank) for ax in a["axes"]}
    shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if a["keepdims"] else \
        [d for i, d in enumerate(x.shape) if i not in axes]
    return [TensorType(tuple(shape), x.dtype)]


def _reshape(ts: Types, a: Attrs) -> Types:
    shape = tuple(a["shape"])
    if any(d < 0 for d in shape) or int(np.prod(shape)) != ts[0].size:
        raise TypeError(f"cannot reshape {ts[0].shape} to {shape}")
    return [TensorType(shape, ts[0].dtype)]


def _transpose(ts: Types, a: Attrs) -> Types:
    perm = tuple(a["perm"])
    if sorted(perm) != list(range(ts[0].rank)):
        raise TypeError(f"bad permutation {perm} for rank {ts[0].rank}")
    return [TensorType(tuple(ts[0].shape[p] for p in perm), ts[0].dtype)]


def _concat(ts: Types, a: Attrs) -> Types:
    axis = norm_axis(a["axis"], ts[0].rank)
    for t in ts[1:]:
        if t.rank != ts[0].rank or any(d != e for i, (d, e) in enumerate(zip(t.shape, ts[0].shape, strict=False))
                                       if i != axis):
            raise TypeError(f"CONCAT shapes {[t.shape for t in ts]} differ off axis {axis}")
    shape = list(ts[0].shape)
    shape[axis] = sum(t.shape[axis] for t in ts)
    return [TensorType(tuple(shape), _same_dtype(ts))]


def _split(ts: Types, a: Attrs) -> Types:
    x = ts[0]
    axis = norm_axis(a["axis"], x.rank)
    if sum(a["sizes"]) != x.shape[axis]:
        raise TypeError(f"SPLIT sizes {a['sizes']} do not add up to {x.shape[axis]}")
    return [TensorType((*x.shape[:axis], s, *x.shape[axis + 1:]), x.dtype) for s in a["sizes"]]


def slice_shape(shape: tuple[int, ...], starts, ends, axes, steps) -> tuple[int, ...]:
    out = list(shape)
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        ax = norm_axis(ax, len(shape))
        if st == 0:
            raise TypeError("SLICE step 0")
        out[ax] = len(range(*slice(s, e, st).indices(shape[ax])))
    return tuple(out)


def _slice(ts: Types, a: Attrs) -> Types:
    return [TensorType(slice_shape(ts[0].shape, a["starts"], a["ends"], a["axes"], a["steps"]), ts[0].dtype)]


def _gather(ts: Types, a: Attrs) -> Types:
    x, idx = ts
    if not idx.dtype.is_int:
        raise TypeError("GATHER indices must be integers")
    axis = norm_axis(a["axis"], x.rank)
    return [TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)]


def _gather_elements(ts: Types, a: Attrs) -> Types:
    x, idx = ts
    if idx.rank != x.rank or not idx.dtype.is_int:
        raise TypeError("GATHER_ELEMENTS indices must be integers of the data's rank")
    norm_axis(a["axis"], x.rank)
    return [TensorType(idx.shape, x.dtype)]


def _gather_nd(ts: Types, a: Attrs) -> Types:
    x, idx = ts
    b, k = a["batch_dims"], idx.shape[-1] if idx.rank else 0
    if not idx.dtype.is_int or idx.rank < 1 or b + k > x.rank or x.shape[:b] != idx.shape[:b]:
        raise TypeError(f"GATHER_ND indices {idx} do not fit data {x} with batch_dims {b}")
    return [TensorType(idx.shape[:-1] + x.shape[b + k:], x.dtype)]


def _cumsum(ts: Types, a: Attrs) -> Types:
    norm_axis(a["axis"], ts[0].rank)
    return [ts[0]]


def _accumulate(bits: int) -> Callable[[Types, Attrs], Types]:
    """x [..., K] and packed weights [N, ceil(K * bits / 8)] uint8 -> [..., N] in x's dtype; the optional
    addend has exactly that type."""
    def rule(ts: Types, a: Attrs) -> Types:
        roles = accumulate_inputs(a)
        if len(ts) != len(roles):
            raise TypeError(f"{len(ts)} inputs do not match the pre/post/add attributes ({', '.join(roles)})")
        t = dict(zip(roles, ts, strict=True))
        x, packed, k = t["x"], t["packed"], a["k"]
        if not x.dtype.is_float or not x.rank or x.shape[-1] != k:
            raise TypeError(f"x {x} does not end in K={k}")
        if packed.dtype is not DType.UINT8 or packed.rank != 2 or packed.shape[1] != -(-k * bits // 8):
            raise TypeError(f"packed weights {packed} do not hold K={k} at {bits} bit(s) per weight")
        n = packed.shape[0]
        if "pre" in t and t["pre"].shape != (k,):
            raise TypeError(f"pre-scale {t['pre']} is not [K={k}]")
        if "post" in t and t["post"].shape not in ((n,), (1,), ()):
            raise TypeError(f"post-scale {t['post']} is not [N={n}] or a scalar")
        if any(not t[s].dtype.is_float for s in ("pre", "post") if s in t):
            raise TypeError("scales must be float")
        out = TensorType((*x.shape[:-1], n), x.dtype)
        if "add" in t and t["add"] != out:
            raise TypeError(f"addend {t['add']} is not {out}")
        return [out]
    return rule


def _q8_matmul(ts: Types, a: Attrs) -> Types:
    """x [..., K] float, q [N, K] int8, scales [N, K/block] float -> [..., N] in x's dtype."""
    x, q, d = ts
    block = a["block"]
    if not x.dtype.is_float or not x.rank:
        raise TypeError(f"x {x} is not a float tensor")
    if q.dtype is not DType.INT8 or q.rank != 2 or q.shape[1] != x.shape[-1] or x.shape[-1] % block:
        raise TypeError(f"weights {q} are not int8 [N, K={x.shape[-1]}] in whole blocks of {block}")
    if not d.dtype.is_float or d.shape != (q.shape[0], q.shape[1] // block):
        raise TypeError(f"scales {d} are not float [N={q.shape[0]}, K/{block}={q.shape[1] // block}]")
    return [TensorType((*x.shape[:-1], q.shape[0]), x.dtype)]


def _broadcast_to(ts: Types, a: Attrs) -> Types:
    shape = tuple(a["shape"])
    if broadcast(ts[0].shape, shape) != shape:
        raise TypeError(f"cannot broadcast {ts[0].shape} to {shape}")
    return [TensorType(shape, ts[0].dtype)]


def _trilu(ts: Types, a: Attrs) -> Types:
    if ts[0].rank < 2:
        raise TypeError("TRILU needs rank >= 2")
    return [ts[0]]


def _softmax(ts: Types, a: Attrs) -> Types:
    norm_axis(a["axis"], ts[0].rank)
    return _unary(ts, a)


def _isnan(ts: Types, a: Attrs) -> Types:
    _unary(ts, a)
    return [TensorType(ts[0].shape, DType.BOOL)]


def _not(ts: Types, a: Attrs) -> Types:
    if ts[0].dtype is not DType.BOOL:
        raise TypeError("NOT needs a bool input")
    return [ts[0]]


RULES: dict[Op, Callable[[Types, Attrs], Types]] = {
    **dict.fromkeys(OpGroup.UNARY, _unary),
    Op.NEG: lambda ts, a: [ts[0]],
    Op.ABS: lambda ts, a: [ts[0]],
    Op.ISNAN: _isnan,
    Op.NOT: _not,
    Op.CAST: lambda ts, a: [TensorType(ts[0].shape, a["to"])],
    **dict.fromkeys(OpGroup.ARITH_BINARY, _binary),
    **dict.fromkeys(OpGroup.COMPARE, _compare),
    **dict.fromkeys(OpGroup.LOGICAL, _logical),
    **dict.fromkeys(OpGroup.BITWISE, _bitwise),
    Op.WHERE: _where,
    Op.MATMUL: _matmul,
    Op.SOFTMAX: _softmax,
    Op.LAYER_NORM: _layer_norm,
    **dict.fromkeys(OpGroup.REDUCE, _reduce),
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.CONCAT: _concat,
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.GATHER_ELEMENTS: _gather_elements,
    Op.GATHER_ND: _gather_nd,
    Op.CUMSUM: _cumsum,
    Op.BROADCAST_TO: _broadcast_to,
    Op.SIGN_ACCUMULATE: _accumulate(1),
    Op.TERNARY_ACCUMULATE: _accumulate(2),
    Op.Q8_MATMUL: _q8_matmul,
    Op.TRILU: _trilu,
}


def infer(op: Op, inputs: Types, attrs: Attrs) -> Types:
    """Output types of `op` applied to `inputs`; raises TypeError naming what does not fit."""
    return RULES[op](inputs, attrs)
