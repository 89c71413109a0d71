"""Packed accumulations for GPUs: y[m, n] = sum_k W[n, k] x[m, k] with W decoded from the packed words
inside the kernel.

Prefill (m >= GEMV_MAX_ROWS): an unscheduled decode + matmul, the shape of a dequantising matmul, which
TVM's dlight Matmul rule schedules (shared-memory tiles of x and of the decoded weights, thread blocks).
Decode (fewer rows): scheduled here, because dlight's GEMV rule emits a vector broadcast that TVM 0.27's CUDA
codegen rejects on this pattern: a warp per weight row, lane t reading packed bytes t, t+32, ... (coalesced),
unpacking a byte's 8 signs (4 trits) in registers, then a warp-shuffle reduction.
"""

from tvm import s_tir, te, tirx
from tvm.tirx import Select, const

GEMV_MAX_ROWS = 8
ROWS_PER_BLOCK = 4  # warps per thread block


def decode_matmul(m: int, n: int, k: int, name: str, bits: int) -> tirx.PrimFunc:
    """PrimFunc(x [m, k] f32, packed [n, k*bits/8] u8, y [m, n] f32), left for dlight to schedule."""
    per = 8 // bits
    if k % per:
        raise ValueError(f"K={k} does not fill whole bytes at {bits} bit(s) per weight")
    x = te.placeholder((m, k), "float32", name="x")
    packed = te.placeholder((n, k // per), "uint8", name="packed")

    def decode(o, kk):
        f = (packed[o, kk // per] >> ((kk % per) * bits).astype("uint8")) & const((1 << bits) - 1, "uint8")
        if bits == 1:
            return Select(f == const(1, "uint8"), const(1.0, "float32"), const(-1.0, "float32"))
        return f.astype("float32") - const(1.0, "float32")  # trit code t + 1

    w = te.compute((n, k), decode, name="decode")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, o: te.sum(x[i, r] * w[o, r], axis=r), name="y")
    # opaque to Relax's operator fusion (as the CPU kernels): FuseTIR cannot merge a kernel called twice in a group
    func = te.create_prim_func([x, packed, y]).with_attr("global_symbol", name).with_attr("op_pattern", 8)
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
