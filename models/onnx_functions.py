"""The `ai.hwsim` ONNX ops: one op per format layer, each with a model-local function body.

Stock onnxruntime inlines the function (standard ops: BitShift/BitwiseAnd unpacking, MatMul, Mul), so
every exported variant still runs there, while hwsim's compiler sees which initializers are signs,
trits and scales and which format they belong to. Op signatures (x: float [..., in]):
  LoRDBA(x, signs_A u8[r, in/8], signs_B u8[out, r/8], mu f16[r], u f16[out], v f16[in])
  LoRDBARank(x, signs_A, signs_B, mu)
  DBF(x, signs_A u8[out, k/8], signs_B u8[k, in/8], a f16[out], mu f16[k], b f16[in])
  MDBFPath(x, signs_A u8[out, r/8], signs_B u8[r, in/8], A_amp f16[out, l], Q_U f16[r, l], Q_V f16[r, l],
           B_amp f16[in, l])
  TernaryMatMul(x, trits u8[out, in/4] (i2 codes), scale f32[])
  TritPlane(x, T1 u8[out, in/4], T2 u8[out, in/4], alpha1 f16[out], alpha2 f16[out])
  Q8MatMul(x, q i8[out, in], d f16[out, in/32]): Q8_0 weights times x quantized per 32 values (d = max|x| / 127,
           round(x / d) ties to even), as dequantized float matmuls
Signs: bit = 1 means +1, LSB first along the row; trits: code t + 1 in 2 bits, LSB first.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "ai.hwsim"
SIGNATURES: dict[str, list[str]] = {
    "LoRDBA": ["x", "signs_A", "signs_B", "mu", "u", "v"],
    "LoRDBARank": ["x", "signs_A", "signs_B", "mu"],
    "DBF": ["x", "signs_A", "signs_B", "a", "mu", "b"],
    "MDBFPath": ["x", "signs_A", "signs_B", "A_amp", "Q_U", "Q_V", "B_amp"],
    "TernaryMatMul": ["x", "trits", "scale"],
    "TritPlane": ["x", "T1", "T2", "alpha1", "alpha2"],
    "Q8MatMul": ["x", "q", "d"],
}


class _Body:
    """Accumulates the nodes of one function body with unique value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f"t{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value: np.ndarray) -> str:
        self._n += 1
        out = f"c{self._n}"
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(value)))
        return out

    def f32(self, v: str) -> str:
        return self.op("Cast", v, to=TensorProto.FLOAT)

    def unpack(self, packed: str, cols: str, bits: int) -> str:
        """uint8 [rows, C] -> float [rows, cols]: +-1 for bits=1, trits for bits=2."""
        shifts = self.const(np.arange(0, 8, bits, dtype=np.uint8))
        mask = self.const(np.array((1 << bits) - 1, np.uint8))
        fields = self.op("BitwiseAnd", self.op("BitShift", self.op("Unsqueeze", packed, self.const(np.array([2]))),
                                               shifts, direction="RIGHT"), mask)
        rows = self.op("Shape", packed, start=0, end=1)
        flat = self.op("Reshape", fields, self.op("Concat", rows, self.const(np.array([-1])), axis=0))
        cut = self.f32(self.op("Slice", flat, self.const(np.array([0])), cols, self.const(np.array([1]))))
        if bits == 1:
            return self.op("Sub", self.op("Mul", cut, self.const(np.array(2.0, np.float32))),
                           self.const(np.array(1.0, np.float32)))
        return self.op("Sub", cut, self.const(np.array(1.0, np.float32)))

    def matmul_t(self, h: str, w: str) -> str:
        return self.op("MatMul", h, self.op("Transpose", w, perm=[1, 0]))

    def last_dim(self, v: str) -> str:
        return self.op("Shape", v, start=-1)

    def dim0(self, v: str) -> str:
        return self.op("Shape", v, start=0, end=1)


def _lordba(b: _Body, channel: bool) -> str:
    sa = b.unpack("signs_A", b.last_dim("x"), 1)
    sb = b.unpack("signs_B", b.dim0("mu"), 1)
    h = b.op("Mul", "x", b.f32("v")) if channel else "x"
    h = b.op("Mul", b.matmul_t(h, sa), b.f32("mu"))
    y = b.matmul_t(h, sb)
    return b.op("Mul", y, b.f32("u")) if channel else y


def _dbf(b: _Body) -> str:
    sb = b.unpack("signs_B", b.last_dim("x"), 1)
    sa = b.unpack("signs_A", b.dim0("mu"), 1)
    h = b.op("Mul", b.matmul_t(b.op("Mul", "x", b.f32("b")), sb), b.f32("mu"))
    return b.op("Mul", b.matmul_t(h, sa), b.f32("a"))


def _mdbf_path(b: _Body) -> str:
    """z = sum_j Q_V[:, j] * S_B(B_amp[:, j] * x); y = sum_j A_amp[:, j] * S_A(Q_U[:, j] * z), as
    batched contractions over the l envelope columns."""
    sb = b.unpack("signs_B", b.last_dim("x"), 1)  # [r, in]
    sa = b.unpack("signs_A", b.dim0("Q_U"), 1)  # [out, r]
    xs = b.op("Mul", b.op("Unsqueeze", "x", b.const(np.array([-2]))),
              b.op("Transpose", b.f32("B_amp"), perm=[1, 0]))  # [..., l, in]
    z = b.op("ReduceSum", b.op("Mul", b.matmul_t(xs, sb), b.op("Transpose", b.f32("Q_V"), perm=[1, 0])),
             b.const(np.array([-2])), keepdims=0)  # [..., r]
    zs = b.op("Mul", b.op("Unsqueeze", z, b.const(np.array([-2]))), b.op("Transpose", b.f32("Q_U"), perm=[1, 0]))
    return b.op("ReduceSum", b.op("Mul", b.matmul_t(zs, sa), b.op("Transpose", b.f32("A_amp"), perm=[1, 0])),
                b.const(np.array([-2])), keepdims=0)


def _ternary(b: _Body) -> str:
    t = b.unpack("trits", b.last_dim("x"), 2)
    return b.op("Mul", b.matmul_t("x", t), "scale")


def _tritplane(b: _Body) -> str:
    cols = b.last_dim("x")
    y1 = b.op("Mul", b.matmul_t("x", b.unpack("T1", cols, 2)), b.f32("alpha1"))
    y2 = b.op("Mul", b.matmul_t("x", b.unpack("T2", cols, 2)), b.f32("alpha2"))
    return b.op("Add", y1, y2)


def _q8_matmul(b: _Body) -> str:
    """(round(x / dx) * dx) @ (q * d).T, per block of 32: the int8 dot products' value, in float."""
    block = b.const(np.array([-1, 32]))
    lead = b.op("Shape", "x", start=0, end=-1)
    xb = b.op("Reshape", "x", b.op("Concat", lead, block, axis=0))  # [..., K/32, 32]
    amax = b.op("ReduceMax", b.op("Abs", xb), b.const(np.array([-1])), keepdims=1)
    dx = b.op("Div", amax, b.const(np.array(127.0, np.float32)))
    safe = b.op("Where", b.op("Greater", dx, b.const(np.array(0.0, np.float32))), dx,
                b.const(np.array(1.0, np.float32)))
    xq = b.op("Mul", b.op("Round", b.op("Div", xb, safe)), dx)
    xd = b.op("Reshape", xq, b.op("Concat", lead, b.const(np.array([-1])), axis=0))
    rows = b.dim0("q")
    qb = b.op("Reshape", b.f32("q"), b.op("Concat", rows, block, axis=0))  # [N, K/32, 32]
    w = b.op("Mul", qb, b.op("Unsqueeze", b.f32("d"), b.const(np.array([-1]))))
    return b.matmul_t(xd, b.op("Reshape", w, b.op("Concat", rows, b.const(np.array([-1])), axis=0)))


_BODIES = {"LoRDBA": lambda b: _lordba(b, True), "LoRDBARank": lambda b: _lordba(b, False), "DBF": _dbf,
           "MDBFPath": _mdbf_path, "TernaryMatMul": _ternary, "TritPlane": _tritplane,
           "Q8MatMul": _q8_matmul}


def function_proto(op_type: str, opset: int) -> onnx.FunctionProto:
    """The op's definition in standard ops; its opset must equal the model's or onnxruntime ignores it."""
    body = _Body()
    out = _BODIES[op_type](body)
    body.nodes.append(helper.make_node("Identity", [out], ["y"]))
    return helper.make_function(DOMAIN, op_type, SIGNATURES[op_type], ["y"], body.nodes,
                                [helper.make_opsetid("", opset)])


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the function bodies (and the domain's opset import) for every ai.hwsim op the graph uses."""
    used = sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    have = {(f.domain, f.name) for f in model.functions}
    for op_type in used:
        if (DOMAIN, op_type) not in have:
            model.functions.append(function_proto(op_type, opset))
    if used and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model
