"""Packed accumulations for GPUs: y[m, n] = sum_k W[n, k] x[m, k] with W decoded from the packed words
inside the kernel.

Prefill (m >= GEMV_MAX_ROWS): an unscheduled decode + matmul, the shape of a dequantising matmul, which
TVM's dlight Matmul rule schedules (shared-memory tiles of x and of the decoded weights, thread blocks).
Decode (fewer rows): scheduled here, because dlight's GEMV rule emits a vector broadcast that TVM 0.27's CUDA
codegen rejects on this pattern: a warp per weight row, lane t reading packed bytes t, t+32, ... (coalesced),
unpacking a byte's 8 signs (4 trits) in registers, then a warp-shuffle reduction.

Extras (codegen.kernels.Fused): both fold a pre-scale into the decoded weights; the prefill kernel also takes
post-scale and addend as the matmul epilogue dlight schedules. The decode kernel leaves those two to Relax
(`gpu_fusable`): placing an epilogue after the warp reduction is not something this machine, which has no
GPU, can check.
"""

from tvm import s_tir, te, tirx
from tvm.tirx import Select, const

from codegen.kernels import UNFUSED, Fused
from codegen.kernels.extras import epilogue, placeholders, signature

GEMV_MAX_ROWS = 8
ROWS_PER_BLOCK = 4  # warps per thread block


def gpu_fusable(m: int, fused: Fused) -> Fused:
    """The part of `fused` the kernel for m rows applies itself."""
    return fused if m >= GEMV_MAX_ROWS else Fused(pre=fused.pre)


def decode_matmul(m: int, n: int, k: int, name: str, bits: int, fused: Fused = UNFUSED) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, packed [n, k*bits/8] u8, extras, y [m, n] f32); prefill is left for dlight to
    schedule. `fused` must be what gpu_fusable allows."""
    per = 8 // bits
    if k % per:
        raise ValueError(f"K={k} does not fill whole bytes at {bits} bit(s) per weight")
    if fused != gpu_fusable(m, fused):
        raise ValueError(f"the {m}-row GPU kernel does not fuse {fused}")
    x = te.placeholder((m, k), "float32", name="x")
    packed = te.placeholder((n, k // per), "uint8", name="packed")
    extra = placeholders(fused, m, n, k)

    def decode(o, kk):
        f = (packed[o, kk // per] >> ((kk % per) * bits).astype("uint8")) & const((1 << bits) - 1, "uint8")
        one = extra["pre"][kk] if "pre" in extra else const(1.0, "float32")
        if bits == 1:
            return Select(f == const(1, "uint8"), one, -one)
        return (f.astype("float32") - const(1.0, "float32")) * one  # trit code t + 1

    w = te.compute((n, k), decode, name="decode")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, o: te.sum(x[i, r] * w[o, r], axis=r), name="y")
    # opaque to Relax's operator fusion (as the CPU kernels): FuseTIR cannot merge a kernel called twice in a group
    func = te.create_prim_func(signature(x, packed, extra, epilogue(y, extra)))
    func = func.with_attr("global_symbol", name).with_attr("op_pattern", 8)
    if m >= GEMV_MAX_ROWS:
        return func
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("decode"))
    i, o, r = sch.get_loops(sch.get_sblock("y"))
    rows = next(f for f in (ROWS_PER_BLOCK, 2, 1) if n % f == 0)
    ob, oy = sch.split(o, factors=[None, rows])
    ro, lane, field = sch.split(r, factors=[None, 32, per]) if k % (32 * per) == 0 else \
        (*sch.split(r, factors=[None, per]), None)
    if field is None:  # K not a multiple of 32 bytes: lanes take whole bytes, strided
        ro, field = ro, lane
        ro, lane = sch.split(ro, factors=[None, 32])
    sch.reorder(i, ob, oy, lane, ro, field)
    sch.bind(i, "blockIdx.y")
    sch.bind(ob, "blockIdx.x")
    sch.bind(oy, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")  # a reduction loop on threads: TVM emits the warp-shuffle allreduce
    sch.unroll(field)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
