"""Packed accumulations y[m, n] = sum_k W[n, k] x[m, k] with W read from packed rows:
signs (1 bit, bit 1 = +1) or trits (2-bit code t + 1).

Algorithm "select": extract each weight's field and add, subtract (or, for trits, skip) the activation;
no multiplies. The lanes of a packed byte are rfactor-ed into a vector accumulator, rows are split across
threads. Activations are fp32 (fp16 inputs are upcast by the caller); K must fill whole bytes. A pre-scale
multiplies each activation as it is read; post-scale and addend are applied per finished row.
"""

from tvm import s_tir, te, tirx
from tvm.tirx import Select, const

from codegen.kernels import UNFUSED, Fused
from codegen.kernels.extras import epilogue, placeholders, signature


def accumulate_te(m: int, n: int, k: int, bits: int, fused: Fused = UNFUSED) -> list[te.Tensor]:
    per = 8 // bits
    packed = te.placeholder((n, k // per), "uint8", name="packed")
    x = te.placeholder((m, k), "float32", name="x")
    extra = placeholders(fused, m, n, k)
    kw = te.reduce_axis((0, k // per), name="kw")
    kb = te.reduce_axis((0, per), name="kb")

    def field(o, w, b):
        return (packed[o, w] >> (b * bits).astype("uint8")) & const((1 << bits) - 1, "uint8")

    def term(i, o, w, b):
        v, f = x[i, w * per + b], field(o, w, b)
        if "pre" in extra:
            v = v * extra["pre"][w * per + b]
        if bits == 1:
            return Select(f == const(1, "uint8"), v, -v)
        return Select(f == const(2, "uint8"), v, Select(f == const(0, "uint8"), -v, const(0.0, "float32")))

    y = te.compute((m, n), lambda i, o: te.sum(term(i, o, kw, kb), axis=[kw, kb]), name="y")
    return signature(x, packed, extra, epilogue(y, extra))


def accumulate_kernel(m: int, n: int, k: int, name: str, bits: int = 1, fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """The scheduled kernel as a PrimFunc(x [m, k] f32, packed [n, k*bits/8] u8, extras, y [m, n] f32)."""
    if k % (8 // bits):
        raise ValueError(f"K={k} does not fill whole bytes at {bits} bit(s) per weight")
    sch = s_tir.Schedule(te.create_prim_func(accumulate_te(m, n, k, bits, fused)))
    blk = sch.get_sblock("y")
    i, o, kw, kb = sch.get_loops(blk)
    rows = next(f for f in (4, 2, 1) if n % f == 0)
    oo, oi = sch.split(o, factors=[None, rows])
    sch.reorder(i, oo, oi, kw, kb)
    rf = sch.rfactor(kb, factor_axis=2)  # y_rf[i, o, lane]: the byte's lanes accumulate independently
    loops = sch.get_loops(rf)  # i, oo, oi, kw, kb
    sch.vectorize(loops[-1])
    sch.parallel(sch.fuse(loops[0], loops[1]))
    sch.reverse_compute_at(blk, sch.get_loops(rf)[1])
    if fused.post or fused.add:
        sch.reverse_compute_at(sch.get_sblock("epilogue"), sch.get_loops(rf)[1])
    sch.decompose_reduction(rf, sch.get_loops(rf)[2])
    func = sch.mod["main"].with_attr("global_symbol", name)
    return func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
