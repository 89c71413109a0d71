"""Packed sign accumulation y[m, n] = sum_k S[n, k] x[m, k], S in {-1,+1} read from 1-bit rows.

Algorithm "select": extract each weight's bit and add or subtract the activation (no multiplies). The 8
bit lanes of a packed byte are rfactor-ed into a vector accumulator, rows are split across threads.
Activations are fp32 (fp16 inputs are upcast by the caller); K must be a multiple of 8.
"""

import tvm
from tvm import s_tir, te, tirx
from tvm.tirx import Select, const


def sign_accumulate_te(m: int, n: int, k: int) -> list[te.Tensor]:
    packed = te.placeholder((n, k // 8), "uint8", name="packed")
    x = te.placeholder((m, k), "float32", name="x")
    kw = te.reduce_axis((0, k // 8), name="kw")
    kb = te.reduce_axis((0, 8), name="kb")

    def bit(o, w, b):
        return (packed[o, w] >> b.astype("uint8")) & const(1, "uint8")

    y = te.compute((m, n), lambda i, o: te.sum(
        Select(bit(o, kw, kb) == const(1, "uint8"), x[i, kw * 8 + kb], -x[i, kw * 8 + kb]), axis=[kw, kb]),
        name="y")
    return [x, packed, y]


def sign_accumulate(m: int, n: int, k: int, name: str) -> tirx.PrimFunc:
    """The scheduled kernel as a PrimFunc(x [m, k] f32, packed [n, k/8] u8, y [m, n] f32)."""
    if k % 8:
        raise ValueError(f"K={k} is not a multiple of 8")
    sch = s_tir.Schedule(te.create_prim_func(sign_accumulate_te(m, n, k)))
    blk = sch.get_sblock("y")
    i, o, kw, kb = sch.get_loops(blk)
    rows = next(f for f in (4, 2, 1) if n % f == 0)
    oo, oi = sch.split(o, factors=[None, rows])
    sch.reorder(i, oo, oi, kw, kb)
    rf = sch.rfactor(kb, factor_axis=2)  # y_rf[i, o, lane]: the 8 lanes accumulate independently
    loops = sch.get_loops(rf)  # i, oo, oi, kw, kb
    sch.vectorize(loops[-1])
    sch.parallel(sch.fuse(loops[0], loops[1]))
    sch.reverse_compute_at(blk, sch.get_loops(rf)[1])
    sch.decompose_reduction(rf, sch.get_loops(rf)[2])
    func = sch.mod["main"].with_attr("global_symbol", name)
    return func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


__all__ = ["sign_accumulate", "tvm"]
