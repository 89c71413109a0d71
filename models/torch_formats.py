"""Torch modules that run each format through `torch.library` custom ops, so the dynamo exporter writes
one `ai.hwsim` node per layer (see models/onnx_functions.py) holding the packed initializers.

Each custom op's torch implementation unpacks and computes exactly what its ONNX function body does;
the module is both the export source and the torch reference the exported file is checked against.
"""

import numpy as np
import onnxscript
import torch
from onnxscript import FLOAT, FLOAT16, INT8, UINT8
from onnxscript import opset20 as op
from onnxscript.values import Opset

from models.formats import Dbf, LoraFp16, Lordba, Mdbf, Ternary, TritPlane, WeightFormat
from models.formats.adapter import FactorAdapter

hwsim = Opset("ai.hwsim", 1)
_translate = Opset("pkg.hwsim.translate", 1)


def _unpack(p: torch.Tensor, cols: int, bits: int) -> torch.Tensor:
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    f = ((p.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(p.shape[0], -1)[:, :cols].float()
    return f * 2 - 1 if bits == 1 else f - 1


def _out(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], n))


def _lordba(x: torch.Tensor, signs_a: torch.Tensor, signs_b: torch.Tensor, mu: torch.Tensor, u: torch.Tensor,
           v: torch.Tensor) -> torch.Tensor:
    sa, sb = _unpack(signs_a, x.shape[-1], 1), _unpack(signs_b, mu.shape[0], 1)
    return (((x * v.float()) @ sa.T) * mu.float()) @ sb.T * u.float()


def _lordba_rank(x: torch.Tensor, signs_a: torch.Tensor, signs_b: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    sa, sb = _unpack(signs_a, x.shape[-1], 1), _unpack(signs_b, mu.shape[0], 1)
    return ((x @ sa.T) * mu.float()) @ sb.T


def _dbf(x: torch.Tensor, signs_a: torch.Tensor, signs_b: torch.Tensor, a: torch.Tensor, mu: torch.Tensor,
        b: torch.Tensor) -> torch.Tensor:
    sb, sa = _unpack(signs_b, x.shape[-1], 1), _unpack(signs_a, mu.shape[0], 1)
    return ((((x * b.float()) @ sb.T) * mu.float()) @ sa.T) * a.float()


def _mdbf_path(x: torch.Tensor, signs_a: torch.Tensor, signs_b: torch.Tensor, a_amp: torch.Tensor,
              q_u: torch.Tensor, q_v: torch.Tensor, b_amp: torch.Tensor) -> torch.Tensor:
    sb, sa = _unpack(signs_b, x.shape[-1], 1), _unpack(signs_a, q_u.shape[0], 1)
    xs = x.unsqueeze(-2) * b_amp.float().T  # [..., l, in]
    z = ((xs @ sb.T) * q_v.float().T).sum(-2)
    zs = z.unsqueeze(-2) * q_u.float().T
    return ((zs @ sa.T) * a_amp.float().T).sum(-2)


def _ternary_matmul(x: torch.Tensor, trits: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x @ _unpack(trits, x.shape[-1], 2).T) * scale


def _tritplane(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, alpha1: torch.Tensor,
              alpha2: torch.Tensor) -> torch.Tensor:
    m = x.shape[-1]
    return (x @ _unpack(t1, m, 2).T) * alpha1.float() + (x @ _unpack(t2, m, 2).T) * alpha2.float()


def _q8_matmul(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    xb = x.unflatten(-1, (-1, 32))
    dx = xb.abs().amax(-1, keepdim=True) / 127
    xd = (torch.round(xb / torch.where(dx > 0, dx, torch.ones_like(dx))) * dx).flatten(-2)
    return xd @ (q.float().unflatten(-1, (-1, 32)) * d.float().unsqueeze(-1)).flatten(-2).T


lordba = torch.library.custom_op("hwsim::lordba", mutates_args=())(_lordba)
lordba_rank = torch.library.custom_op("hwsim::lordba_rank", mutates_args=())(_lordba_rank)
dbf = torch.library.custom_op("hwsim::dbf", mutates_args=())(_dbf)
mdbf_path = torch.library.custom_op("hwsim::mdbf_path", mutates_args=())(_mdbf_path)
ternary_matmul = torch.library.custom_op("hwsim::ternary_matmul", mutates_args=())(_ternary_matmul)
tritplane = torch.library.custom_op("hwsim::tritplane", mutates_args=())(_tritplane)
q8_matmul = torch.library.custom_op("hwsim::q8_matmul", mutates_args=())(_q8_matmul)


lordba.register_fake(lambda x, sa, sb, mu, u, v: _out(x, sb.shape[0]))
lordba_rank.register_fake(lambda x, sa, sb, mu: _out(x, sb.shape[0]))
dbf.register_fake(lambda x, sa, sb, a, mu, b: _out(x, sa.shape[0]))
mdbf_path.register_fake(lambda x, sa, sb, aa, qu, qv, ba: _out(x, sa.shape[0]))
ternary_matmul.register_fake(lambda x, t, s: _out(x, t.shape[0]))
tritplane.register_fake(lambda x, t1, t2, a1, a2: _out(x, t1.shape[0]))
q8_matmul.register_fake(lambda x, q, d: _out(x, q.shape[0]))


def _grad_in_x(impl):
    """Autograd for an op in x only (its packed weights are constants): the gradient of its own torch body.
    Sign-form training backpropagates through the frozen low-bit base layers."""
    def setup(ctx, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad: torch.Tensor) -> tuple:
        x, *rest = ctx.saved_tensors
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(impl(xr, *rest), xr, grad)
        return (gx, *[None] * len(rest))
    return setup, backward


for _op, _impl in ((lordba, _lordba), (lordba_rank, _lordba_rank), (dbf, _dbf), (mdbf_path, _mdbf_path),
                   (ternary_matmul, _ternary_matmul), (tritplane, _tritplane), (q8_matmul, _q8_matmul)):
    _setup, _backward = _grad_in_x(_impl)
    _op.register_autograd(_backward, setup_context=_setup)


# --- translations for the dynamo exporter: each emits one bare ai.hwsim node ---------------------------

@onnxscript.script(_translate, default_opset=op)
def _t_lordba(x: FLOAT, signs_a: UINT8, signs_b: UINT8, mu: FLOAT16, u: FLOAT16, v: FLOAT16) -> FLOAT:
    return hwsim.LoRDBA(x, signs_a, signs_b, mu, u, v)


@onnxscript.script(_translate, default_opset=op)
def _t_lordba_rank(x: FLOAT, signs_a: UINT8, signs_b: UINT8, mu: FLOAT16) -> FLOAT:
    return hwsim.LoRDBARank(x, signs_a, signs_b, mu)


@onnxscript.script(_translate, default_opset=op)
def _t_dbf(x: FLOAT, signs_a: UINT8, signs_b: UINT8, a: FLOAT16, mu: FLOAT16, b: FLOAT16) -> FLOAT:
    return hwsim.DBF(x, signs_a, signs_b, a, mu, b)


@onnxscript.script(_translate, default_opset=op)
def _t_mdbf_path(x: FLOAT, signs_a: UINT8, signs_b: UINT8, a_amp: FLOAT16, q_u: FLOAT16, q_v: FLOAT16,
                 b_amp: FLOAT16) -> FLOAT:
    return hwsim.MDBFPath(x, signs_a, signs_b, a_amp, q_u, q_v, b_amp)


@onnxscript.script(_translate, default_opset=op)
def _t_ternary(x: FLOAT, trits: UINT8, scale: FLOAT) -> FLOAT:
    return hwsim.TernaryMatMul(x, trits, scale)


@onnxscript.script(_translate, default_opset=op)
def _t_tritplane(x: FLOAT, t1: UINT8, t2: UINT8, alpha1: FLOAT16, alpha2: FLOAT16) -> FLOAT:
    return hwsim.TritPlane(x, t1, t2, alpha1, alpha2)


@onnxscript.script(_translate, default_opset=op)
def _t_q8_matmul(x: FLOAT, q: INT8, d: FLOAT16) -> FLOAT:
    return hwsim.Q8MatMul(x, q, d)


TRANSLATIONS = {
    torch.ops.hwsim.lordba.default: _t_lordba, torch.ops.hwsim.lordba_rank.default: _t_lordba_rank,
    torch.ops.hwsim.dbf.default: _t_dbf, torch.ops.hwsim.mdbf_path.default: _t_mdbf_path,
    torch.ops.hwsim.ternary_matmul.default: _t_ternary, torch.ops.hwsim.tritplane.default: _t_tritplane,
    torch.ops.hwsim.q8_matmul.default: _t_q8_matmul,
}


# --- modules -------------------------------------------------------------------------------------------

class PackedOp(torch.nn.Module):
    """One custom-op call on packed buffers (registered as buffers so they export as initializers)."""

    def __init__(self, fn, tensors: list[np.ndarray]):
        super().__init__()
        self.fn = fn
        self.names = []
        for i, t in enumerate(tensors):
            self.register_buffer(f"p{i}", torch.from_numpy(np.ascontiguousarray(t)))
            self.names.append(f"p{i}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *(getattr(self, n) for n in self.names))


def _ternary_op(t: Ternary) -> PackedOp:
    p = Ternary(t.t, t.gamma, "i2").pack()  # ONNX carries the 2-bit packing
    return PackedOp(ternary_matmul, [p["trits"], np.array(t.gamma, np.float32)])


def _tritplane_op(t: TritPlane) -> PackedOp:
    p = TritPlane(t.t1, t.t2, t.a1, t.a2, "i2").pack()
    return PackedOp(tritplane, [p["T1"], p["T2"], p["alpha1"], p["alpha2"]])


def format_ops(f: WeightFormat) -> list[torch.nn.Module]:
    """The op modules whose outputs sum to x @ f.reconstruct().T."""
    if isinstance(f, Dbf):
        p = f.pack()
        return [PackedOp(dbf, [p["signs_A"], p["signs_B"], p["a"], p["mu"], p["b"]])]
    if isinstance(f, Mdbf):
        p = f.pack()
        return [PackedOp(mdbf_path, [p[f"p{i}.{k}"] for k in ("signs_A", "signs_B", "A_amp", "Q_U", "Q_V", "B_amp")])
                for i in range(len(f.paths))]
    if isinstance(f, Ternary):
        return [_ternary_op(f)]
    if isinstance(f, TritPlane):
        return [_tritplane_op(f)]
    raise TypeError(f"no torch op for {type(f).__name__}")


class FormatLinear(torch.nn.Module):
    """A base nn.Linear whose weight is stored in a low-bit format."""

    def __init__(self, f: WeightFormat, bias: torch.Tensor | None):
        super().__init__()
        self.ops = torch.nn.ModuleList(format_ops(f))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ops[0](x)
        for o in self.ops[1:]:
            y = y + o(x)
        return y if self.bias is None else y + self.bias


class HalfLinear(torch.nn.Module):
    """A base nn.Linear stored in fp16, computed in fp32."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().half(), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight.float(), self.bias)


class HalfEmbedding(torch.nn.Module):
    """An input embedding reading an fp16 table (the LM head's, when tied), rows widened to fp32."""

    def __init__(self, weight: torch.nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.weight).float()


class Q8Linear(torch.nn.Module):
    """A bias-free nn.Linear (the LM head) in Q8_0 (models/formats/q8_0.py), its input quantized per 32 values;
    q and d are frozen parameters, shared with the embedding where it is tied (as HalfLinear's weight is)."""

    def __init__(self, q: torch.nn.Parameter, d: torch.nn.Parameter):
        super().__init__()
        self.q, self.d = q, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return q8_matmul(x, self.q, self.d)


class Q8Embedding(torch.nn.Module):
    """An input embedding reading a Q8_0 table (the LM head's, when tied): rows dequantized to fp32."""

    def __init__(self, q: torch.nn.Parameter, d: torch.nn.Parameter):
        super().__init__()
        self.q, self.d = q, d

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.nn.functional.embedding(ids, self.q).float().unflatten(-1, (-1, 32))
        return (rows * torch.nn.functional.embedding(ids, self.d).float().unsqueeze(-1)).flatten(-2)


class Fp32LoraBranch(torch.nn.Module):
    """The trained adapter as PEFT computes it in fp32: the unquantised reference."""

    def __init__(self, a: np.ndarray, b: np.ndarray, scaling: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.from_numpy(np.asarray(a, np.float32)), requires_grad=False)
        self.b = torch.nn.Parameter(torch.from_numpy(np.asarray(b, np.float32)), requires_grad=False)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.T) @ self.b.T * self.scaling


class LoraFp16Branch(torch.nn.Module):
    def __init__(self, f: LoraFp16):
        super().__init__()
        self.a = torch.nn.Parameter(torch.from_numpy(f.a.copy()), requires_grad=False)
        self.b = torch.nn.Parameter(torch.from_numpy(f.b.copy()), requires_grad=False)
        self.scaling = f.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.half() @ self.a.T) @ self.b.T).float() * self.scaling


class Chain(torch.nn.Module):
    """scaling * second(first(x)): a LoRA branch whose factors are each stored in a format."""

    def __init__(self, first: torch.nn.Module, second: torch.nn.Module, scaling: float):
        super().__init__()
        self.first, self.second, self.scaling = first, second, scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x)) * self.scaling


def branch_module(f: WeightFormat) -> torch.nn.Module:
    """The adapter branch for a fitted adapter format."""
    if isinstance(f, LoraFp16):
        return LoraFp16Branch(f)
    if isinstance(f, Lordba):
        p = f.pack()
        if f.layout == "channel":
            return PackedOp(lordba, [p["signs_A"], p["signs_B"], p["mu"], p["u"], p["v"]])
        return PackedOp(lordba_rank, [p["signs_A"], p["signs_B"], p["mu"]])
    if isinstance(f, FactorAdapter):
        return Chain(FormatLinear(f.fa, None), FormatLinear(f.fb, None), f.scaling)
    raise TypeError(f"no torch branch for {type(f).__name__}")


class AdaptedLinear(torch.nn.Module):
    """base(x) + branch(x): the unmerged adapter, as deployed."""

    def __init__(self, base: torch.nn.Module, branch: torch.nn.Module):
        super().__init__()
        self.base, self.branch = base, branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.branch(x)
