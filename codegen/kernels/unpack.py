"""Packed accumulations y[m, n] = sum_k W[n, k] x[m, k] computed as a blocked fp32 GEMM whose B panels are
unpacked from the packed weights on the fly: signs to +-1, trits to -1/0/+1.

Algorithm "unpack": each thread decodes the K-panel x cols slice of W it is about to stream (the step a BLAS
GEMM spends packing B) and reuses it for every activation row, so the decode is paid once per panel, not
once per token. The multiply-adds then run at FMA rate (on a CPU an FMA by +-1 costs what an add costs).
A pre-scale folds into the decoded panel (+-pre[k] instead of +-1: free), post-scale and addend into the
write-back of the register tile. Pays off for prefill (many rows); at batch 1 the decode would cost as
much as the product, so `lut` or `select` take those shapes.
"""

from tvm import s_tir, te, tirx
from tvm.target import Target

from codegen.kernels import UNFUSED, Fused
from codegen.kernels.extras import decoder, epilogue, placeholders, signature
from codegen.schedules.cpu import block_gemm


def unpack_te(m: int, n: int, k: int, bits: int, fused: Fused = UNFUSED) -> list[te.Tensor]:
    per = 8 // bits
    packed = te.placeholder((n, k // per), "uint8", name="packed")
    x = te.placeholder((m, k), "float32", name="x")
    extra = placeholders(fused, m, n, k)

    weight = decoder(packed, extra, bits)
    w = te.compute((k, n), lambda kk, o: weight(o, kk), name="w")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, o: te.sum(x[i, r] * w[r, o], axis=r), name="y")
    return signature(x, packed, extra, epilogue(y, extra))


def unpack_kernel(m: int, n: int, k: int, name: str, bits: int, target: Target,
                  fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, packed [n, k*bits/8] u8, extras, y [m, n] f32)."""
    if k % (8 // bits):
        raise ValueError(f"K={k} does not fill whole bytes at {bits} bit(s) per weight")
    sch = s_tir.Schedule(te.create_prim_func(unpack_te(m, n, k, bits, fused)))
    decode = sch.get_sblock("w")

    def unpack_panel(ko: s_tir.schedule.LoopRV) -> None:
        sch.compute_at(decode, ko)
        sch.vectorize(sch.get_loops(decode)[-1])

    epilogues = (sch.get_sblock("epilogue"),) if fused.post or fused.add else ()
    block_gemm(sch, sch.get_sblock("y"), [m, n, k], target, unpack_panel, epilogues)
    func = sch.mod["main"].with_attr("global_symbol", name)
    return func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
