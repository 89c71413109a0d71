"""The accumulate op's extras (pre-scale [k], post-scale [n], addend [m, n]) as TE tensors, shared by the TE
kernels: placeholders in the kernel signature's order, and the epilogue y * post + add."""

from tvm import te

from codegen.kernels import Fused


def placeholders(fused: Fused, m: int, n: int, k: int) -> dict[str, te.Tensor]:
    shapes = {"pre": (k,), "post": (n,), "add": (m, n)}
    return {name: te.placeholder(shape, "float32", name=name) for name, shape in shapes.items()
            if getattr(fused, name)}


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
