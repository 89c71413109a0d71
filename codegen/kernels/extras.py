"""The accumulate op's extras (pre-scale [k], post-scale [n], addend [m, n]) as TE tensors, shared by the TE
kernels: placeholders in the kernel signature's order, the decoded (pre-scaled) weights and the epilogue
y * post + add."""

from collections.abc import Callable

from tvm import te
from tvm.ir.expr import Expr
from tvm.tirx import Select, const

from codegen.kernels import Fused


def placeholders(fused: Fused, m: int, n: int, k: int) -> dict[str, te.Tensor]:
    shapes = {"pre": (k,), "post": (n,), "add": (m, n)}
    return {name: te.placeholder(shape, "float32", name=name) for name, shape in shapes.items()
            if getattr(fused, name)}


def decoder(packed: te.Tensor, extra: dict[str, te.Tensor], bits: int) -> Callable[[Expr, Expr], Expr]:
    """Weight (o, kk) of a packed sign (bits=1) or trit (bits=2, code t + 1) matrix [n, k / per], times the
    fused pre-scale of column kk when there is one: the one decoding rule of the TE kernels."""
    per = 8 // bits

    def weight(o: Expr, kk: Expr) -> Expr:
        f = (packed[o, kk // per] >> ((kk % per) * bits).astype("uint8")) & const((1 << bits) - 1, "uint8")
        one = extra["pre"][kk] if "pre" in extra else const(1.0, "float32")
        if bits == 1:
            return Select(f == const(1, "uint8"), one, -one)
        return (f.astype("float32") - const(1.0, "float32")) * one

    return weight


def epilogue(y: te.Tensor, extra: dict[str, te.Tensor]) -> te.Tensor:
    """y itself, or y * post + add as one more (injective) block for the schedule to inline or place."""
    if "post" not in extra and "add" not in extra:
        return y

    def body(i, o):
        v = y[i, o] * extra["post"][o] if "post" in extra else y[i, o]
        return v + extra["add"][i, o] if "add" in extra else v

    return te.compute(y.shape, body, name="epilogue")


def signature(x: te.Tensor, w: te.Tensor, extra: dict[str, te.Tensor], out: te.Tensor) -> list[te.Tensor]:
    return [x, w, *(extra[k] for k in ("pre", "post", "add") if k in extra), out]
