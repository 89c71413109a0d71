"""Batched A @ B^T on CPUs with B given untransposed: y[b, i, j] = sum_r a[b, i, r] x[b, j, r].

Attention's scores are queries times keys transposed. Exported graphs transpose the keys first (a copy of the
whole cache per layer per token: 16 us for 3 x 129 x 64 on znver4) and then multiply with an output width of
past + 1 tokens, which fits no vector tile. Here both operands are read along their contiguous K axis: each
output is a dot product of two rows, one vector of partial sums per output (3 x 3 x 129 x 64, a decode step's
scores: 3.2 us where the transpose took 16 and the GEMM rule's matmul 38, znver4). With many query rows
(prefill) the GEMM schedule on the transposed copy is faster (its copy amortises over the rows): this kernel is
for few rows.
"""

from tvm import tirx
from tvm.script import tirx as T

PARALLEL_MIN_MACS = 1 << 18  # as the GEMM rule: below this a thread-pool launch costs more than it saves


MAX_ROWS = 8  # query rows per batch (KV head) up to which this beats transpose + GEMM (decode: G x 1 token)


def dot_fits(m: int, k: int, lanes: int) -> bool:
    return m <= MAX_ROWS and k % lanes == 0 and lanes in (4, 8, 16)


def dot_kernel(batch: int, m: int, n: int, k: int, lanes: int, name: str) -> tirx.PrimFunc:
    """PrimFunc(a [batch, m, k] f32, x [batch, n, k] f32, y [batch, m, n] f32): y = a @ x^T per batch."""
    if not dot_fits(m, k, lanes):
        raise ValueError(f"dot kernel needs at most {MAX_ROWS} rows, 4, 8 or 16 lanes and K % lanes == 0, "
                         f"got M={m}, K={k}, lanes={lanes}")
    vec = f"float32x{lanes}"
    outs = batch * m * n
    parallel = outs * k >= PARALLEL_MIN_MACS

    @T.prim_func
    def kernel(a: T.Buffer((batch, m, k), "float32"), x: T.Buffer((batch, n, k), "float32"),
               y: T.Buffer((batch, m, n), "float32")):
        T.func_attr({"tirx.noalias": True})
        for o in T.parallel(outs) if parallel else T.serial(outs):
            b, i, j = T.bind(o // (m * n)), T.bind(o // n % m), T.bind(o % n)
            acc = T.alloc_buffer((lanes,), "float32")
            acc[T.ramp(0, 1, lanes)] = T.broadcast(T.float32(0), lanes)
            for r in range(k // lanes):
                acc[T.ramp(0, 1, lanes)] = acc[T.ramp(0, 1, lanes)] + a.vload([b, i, r * lanes], vec) * x.vload(
                    [b, j, r * lanes], vec)
            # the lanes summed by halving (a tree of vector adds), not lane by lane: 16 dependent scalar adds
            # took half the kernel (3 x 3 x 129 x 64: 6.8 us summed lane by lane, 3.2 by halving; znver4)
            if lanes >= 16:
                acc[T.ramp(0, 1, 8)] = acc[T.ramp(0, 1, 8)] + acc[T.ramp(8, 1, 8)]
            if lanes >= 8:
                acc[T.ramp(0, 1, 4)] = acc[T.ramp(0, 1, 4)] + acc[T.ramp(4, 1, 4)]
            acc[T.ramp(0, 1, 2)] = acc[T.ramp(0, 1, 2)] + acc[T.ramp(2, 1, 2)]
            y[b, i, j] = acc[0] + acc[1]

    return kernel.with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True)
