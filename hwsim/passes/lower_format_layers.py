"""Rewrite the format layers the frontend found (ai.hwsim ops) into sign/ternary accumulate ops.

Each rule reads the layer's own inputs (packed signs or trits, fp16 channel scales) and emits
SIGN_ACCUMULATE / TERNARY_ACCUMULATE nodes with the scales folded in as pre/post scales:
  LoRDBA      u * S_B(mu * S_A(v * x))           -> acc(acc(x, S_A, pre=v, post=mu), S_B, post=u)
  LoRDBARank  S_B(mu * S_A x)                    -> acc(acc(x, S_A, post=mu), S_B)
  DBF         a * S_A(mu * S_B(b * x))           -> acc(acc(x, S_B, pre=b, post=mu), S_A, post=a)
  MDBFPath    sum_j A_j * S_A(Q_U,j * z), z = sum_j Q_V,j * S_B(B_j * x)   (2l accumulations)
  TernaryMatMul  scale * (T x)                   -> tacc(x, T, post=scale)
  TritPlane   a1 * T1 x + a2 * T2 x              -> tacc(x, T1, post=a1) + tacc(x, T2, post=a2)
  Q8MatMul    Q8_0 weights x Q8_0-quantized x    -> Q8_MATMUL(x, q, d)
Uses of the layer's output move to the new value; its expanded (dense) body becomes dead and
`eliminate_dead_code` removes it. A layer that does not match exactly (non-constant packed weights, a
shape or dtype that does not fit) stays dense, with the reason in `Layer.status` (`hwsim inspect`).
"""

from collections.abc import Callable

import numpy as np

from hwsim.ir import DType, Graph, Layer, Node, Op, Value, infer


class Mismatch(Exception):
    """Why a layer stays as it was."""


class _Builder:
    def __init__(self, layer: Layer, names: set[str]):
        self.layer, self.names, self.nodes = layer, names, []

    def fresh(self, base: str) -> str:
        name, i = f"{self.layer.name}/{base}", 0
        while name in self.names:
            i += 1
            name = f"{self.layer.name}/{base}_{i}"
        self.names.add(name)
        return name

    def emit(self, op: Op, inputs: list[Value], attrs: dict | None = None) -> Value:
        (t,) = infer(op, [v.type for v in inputs], attrs or {})
        out = Value(self.fresh(op.name.lower()), t)
        self.nodes.append(Node(op, inputs, [out], attrs or {}, name=self.layer.name))
        return out

    def acc(self, op: Op, x: Value, packed: Value, pre: Value | None = None, post: Value | None = None) -> Value:
        scales = [s for s in (pre, post) if s is not None]
        return self.emit(op, [x, packed, *scales], {"k": x.type.shape[-1], "pre": int(pre is not None),
                                                   "post": int(post is not None)})

    def column(self, v: Value, j: int) -> Value:
        return Value.const(self.fresh(f"{v.name}_col{j}"), np.ascontiguousarray(v.data[:, j]))


def _need(layer: Layer, names: list[str]) -> list[Value]:
    if len(layer.inputs) != len(names):
        raise Mismatch(f"{len(layer.inputs)} inputs, expected {len(names)} ({', '.join(names)})")
    x, *rest = layer.inputs
    if not x.type.dtype.is_float or x.type.rank < 1:
        raise Mismatch(f"input x is {x.type}, expected a float tensor")
    for v, name in zip(rest, names[1:], strict=True):
        if not v.is_const:
            raise Mismatch(f"input {name} is not a constant")
        want = DType.UINT8 if name.startswith(("signs", "trits", "T")) else DType.INT8 if name == "q" else None
        if want is not None and v.type.dtype is not want:
            raise Mismatch(f"input {name} is {v.type}, expected {want.value} weights")
        if want is None and not v.type.dtype.is_float:
            raise Mismatch(f"input {name} is {v.type}, expected float scales")
    return layer.inputs


def _lordba(b: _Builder) -> Value:
    x, sa, sb, mu, u, v = _need(b.layer, ["x", "signs_A", "signs_B", "mu", "u", "v"])
    return b.acc(Op.SIGN_ACCUMULATE, b.acc(Op.SIGN_ACCUMULATE, x, sa, v, mu), sb, None, u)


def _lordba_rank(b: _Builder) -> Value:
    x, sa, sb, mu = _need(b.layer, ["x", "signs_A", "signs_B", "mu"])
    return b.acc(Op.SIGN_ACCUMULATE, b.acc(Op.SIGN_ACCUMULATE, x, sa, None, mu), sb)


def _dbf(b: _Builder) -> Value:
    x, sa, sb, a, mu, bb = _need(b.layer, ["x", "signs_A", "signs_B", "a", "mu", "b"])
    return b.acc(Op.SIGN_ACCUMULATE, b.acc(Op.SIGN_ACCUMULATE, x, sb, bb, mu), sa, None, a)


def _sum(b: _Builder, values: list[Value]) -> Value:
    total = values[0]
    for v in values[1:]:
        total = b.emit(Op.ADD, [total, v])
    return total


def _mdbf_path(b: _Builder) -> Value:
    x, sa, sb, a_amp, q_u, q_v, b_amp = _need(b.layer, ["x", "signs_A", "signs_B", "A_amp", "Q_U", "Q_V", "B_amp"])
    envelopes = a_amp.type.shape[1] if a_amp.type.rank == 2 else 0
    if not envelopes or any(v.type.rank != 2 or v.type.shape[1] != envelopes for v in (q_u, q_v, b_amp)):
        raise Mismatch("envelope matrices do not share one rank l")
    z = _sum(b, [b.acc(Op.SIGN_ACCUMULATE, x, sb, b.column(b_amp, j), b.column(q_v, j)) for j in range(envelopes)])
    return _sum(b, [b.acc(Op.SIGN_ACCUMULATE, z, sa, b.column(q_u, j), b.column(a_amp, j))
                    for j in range(envelopes)])


def _ternary(b: _Builder) -> Value:
    x, t, scale = _need(b.layer, ["x", "trits", "scale"])
    return b.acc(Op.TERNARY_ACCUMULATE, x, t, None, scale)


def _tritplane(b: _Builder) -> Value:
    x, t1, t2, a1, a2 = _need(b.layer, ["x", "T1", "T2", "alpha1", "alpha2"])
    y1, y2 = (b.acc(Op.TERNARY_ACCUMULATE, x, t, None, a) for t, a in ((t1, a1), (t2, a2)))
    return b.emit(Op.ADD, [y1, y2])


def _q8_matmul(b: _Builder) -> Value:
    x, q, d = _need(b.layer, ["x", "q", "d"])
    return b.emit(Op.Q8_MATMUL, [x, q, d], {"block": 32})


RULES: dict[str, Callable[[_Builder], Value]] = {
    "LoRDBA": _lordba, "LoRDBARank": _lordba_rank, "DBF": _dbf, "MDBFPath": _mdbf_path,
    "TernaryMatMul": _ternary, "TritPlane": _tritplane, "Q8MatMul": _q8_matmul,
}


def lower_format_layers(graph: Graph) -> bool:
    changed = False
    names = {v.name for v in graph.values()}
    for layer in graph.layers:
        if layer.lowered:
            continue
        (out,) = layer.outputs if len(layer.outputs) == 1 else (None,)
        if layer.op_type not in RULES or out is None:
            layer.status = f"kept dense: no accumulate rule for {layer.op_type}"
            continue
        if out.producer is None or out.producer not in graph.nodes:
            layer.status = "kept dense: its output was folded to a constant or is no longer computed"
            continue
        b = _Builder(layer, names)
        try:
            new = RULES[layer.op_type](b)
        except (Mismatch, TypeError) as e:
            layer.status = f"kept dense: {e}"
            continue
        if new.type != out.type:
            layer.status = f"kept dense: rewritten output {new.type} differs from {out.type}"
            continue
        at = graph.nodes.index(out.producer)
        graph.nodes[at:at] = b.nodes
        graph.replace_all_uses(out, new)
        for other in graph.layers:  # a layer may feed the next (the A and B factors of a LoRA branch)
            other.inputs = [new if v is out else v for v in other.inputs]
        layer.outputs, layer.lowered = [new], True
        layer.status = "lowered: " + ", ".join(sorted({n.op.name for n in b.nodes if n.op is not Op.ADD}))
        changed = True
    return changed

