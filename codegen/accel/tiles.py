"""Tile sizes for a GEMM-shaped layer on one PE array, chosen to fit the accelerator's buffers.

Order (io, jo, ko) in every dataflow. Weight-stationary (and weight-streaming): W tiles of whole R x C folds,
as many rows of A per tile as fit (ideally all M, so every fold's fill and skew is paid once).
Output-stationary: one R x C output fold per tile, K in chunks as long as fit, the partial sums staying in
the PEs across chunks.
A is staged once per row block when the whole row block fits, else per K chunk. Every operand has two
slots (double buffering); where the layer has them, the accumulator also keeps a scratch tile for the
addend and a vector for the post-scale, the activation buffer a vector for the pre-scale and room for an
fp32 copy of a pre-scaled fp16 tile. Candidates are scored by a roofline of their DRAM traffic against their compute
cycles; a layer no tile fits is an error naming it.
"""

import math
from dataclasses import dataclass

import numpy as np

from hwsim.accel.timing import gemm_cycles
from hwsim.errors import HwsimError
from targets.accel import AccelSpec, ArraySpec

ALIGN = 64  # bytes: buffer slots and DRAM tensors start on this boundary


def align(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class GemmLayer:
    """C[m, n] = sum_k A[m, k] W(k, n): the part of a layer the PE array computes."""

    m: int
    n: int
    k: int
    kind: str  # how the array computes it: fp16, int8 (dense MACs), sign, ternary
    a_dtype: str
    w_dtype: str  # "uint8" when packed
    packed: bool  # W is packed sign/ternary rows [N, ceil(K * bits / 8)]
    wt: bool  # a dense W is stored [N, K] (else [K, N])
    c_dtype: str = "float32"  # the output as stored in DRAM

    @property
    def per_byte(self) -> int:
        """Weights per byte of W's rows (packed), or 1."""
        return (8 if self.kind == "sign" else 4) if self.packed else 1


@dataclass(frozen=True)
class Tiling:
    tm: int
    tn: int
    tk: int
    mp: int  # padded dimensions (whole tiles)
    np_: int
    kp: int
    a_at_row: bool  # A is staged once per row block (tm x kp) instead of once per K chunk


@dataclass(frozen=True)
class Footprint:
    """Bytes of each slot in each buffer, for a tiling."""

    a_tile: int  # one staged A tile (tm x tk, or tm x kp)
    a_scaled: int  # an fp32 copy of a pre-scaled A tile (fp16 activations), else 0
    a_vector: int  # the pre-scale vector, or 0
    w_tile: int
    c_tile: int
    c_scratch: int  # the addend tile, or 0
    c_vector: int  # the post-scale vector, or 0

    def fits(self, spec: AccelSpec) -> str | None:
        """The first buffer this does not fit, or None."""
        need = {"activation": 2 * self.a_tile + self.a_scaled + self.a_vector, "weight": 2 * self.w_tile,
                "accumulator": 2 * self.c_tile + self.c_scratch + self.c_vector}
        return next((b for b, n in need.items() if n > spec.buffers[b].bytes), None)


def itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def decodes(layer: GemmLayer, array: ArraySpec) -> bool:
    """A MAC array reads packed sign/ternary weights decoded to fp16 by the DMA."""
    return layer.packed and array.pe == "mac"


@dataclass(frozen=True)
class Epilogue:
    """Which of a layer's extras exist (they take buffer room)."""

    pre: bool = False
    post: bool = False
    add: bool = False


def footprint(layer: GemmLayer, t: Tiling, array: ArraySpec, extras: Epilogue) -> Footprint:
    a_cols = t.kp if t.a_at_row else t.tk
    if layer.packed:
        w = t.tn * t.tk * 2 if decodes(layer, array) else t.tn * (t.tk // layer.per_byte)
    else:
        w = t.tk * t.tn * itemsize(layer.w_dtype)
    scaled = extras.pre and layer.a_dtype != "float32"
    c_tile = align(t.tm * t.tn * 4)
    return Footprint(align(t.tm * a_cols * itemsize(layer.a_dtype)), align(t.tm * a_cols * 4) if scaled else 0,
                     align(a_cols * 4) if extras.pre else 0, align(w), c_tile, c_tile if extras.add else 0,
                     align(t.tn * 4) if extras.post else 0)


def _candidates(total: int, unit: int, multiple: int) -> list[int]:
    """Tile extents for a dimension: whole multiples of `unit` (the array side), each a multiple of
    `multiple` (fields per packed byte), up to the padded total, largest first."""
    top = -(-total // multiple) * multiple
    out = {top} if top <= unit else set()
    step = math.lcm(unit, multiple)
    size = step
    while size < top + step:
        out.add(min(size, -(-top // step) * step))
        size *= 2
    return sorted(out, reverse=True)


def dram_bytes(layer: GemmLayer, t: Tiling) -> int:
    """Bytes moved for one GEMM of this tiling (weights per row block, A once or per column tile)."""
    a = layer.m * layer.k * itemsize(layer.a_dtype)
    w = layer.n * -(-layer.k // layer.per_byte) * (1 if layer.packed else itemsize(layer.w_dtype))
    return w * (t.mp // t.tm) + a * (1 if t.a_at_row else t.np_ // t.tn) + layer.m * layer.n * itemsize(layer.c_dtype)


def compute_cycles(layer: GemmLayer, t: Tiling, array: ArraySpec) -> int:
    tiles = (t.mp // t.tm) * (t.np_ // t.tn)
    chunks = t.kp // t.tk
    per = gemm_cycles(array, min(t.tm, layer.m), t.tn, t.tk, last=False)
    return tiles * (chunks * per + gemm_cycles(array, 1, 1, 0, last=True))


def choose_tiling(layer: GemmLayer, array: ArraySpec, spec: AccelSpec, extras: Epilogue, where: str) -> Tiling:
    """The best tiling that fits, by max(DRAM time, compute cycles) plus a DRAM latency per tile; then fewer
    compute cycles, then fewer tiles."""
    r, c = array.rows, array.cols
    # tile extents of at least 2: TVM folds unit loops out of the intrinsic's description, which then no
    # longer matches the tile (a 1-row GEMM gets a padded second row; `valid` keeps its cycles right)
    if array.dataflow != "output_stationary":
        tms = sorted({max(2, layer.m), *(max(2, -(-layer.m // d)) for d in (2, 4, 8, 16, 32, 64, 128, 256)
                                        if d < layer.m)}, reverse=True)
        tns, tks = _candidates(layer.n, c, 2), _candidates(layer.k, r, max(2, layer.per_byte))
    else:
        tms, tns = [max(2, min(layer.m, r))], [max(2, min(layer.n, c))]
        tks = _candidates(layer.k, r, max(2, layer.per_byte))
    best: tuple[tuple[float, int, int], Tiling] | None = None
    full: str | None = None
    for tm in tms:
        for tn in tns:
            for tk in tks:
                mp, np_, kp = -(-layer.m // tm) * tm, -(-layer.n // tn) * tn, -(-layer.k // tk) * tk
                for at_row in (True, False):
                    t = Tiling(tm, tn, tk, mp, np_, kp, at_row)
                    full = footprint(layer, t, array, extras).fits(spec)
                    if full is not None:
                        continue
                    tiles = (mp // tm) * (np_ // tn) * (kp // tk)
                    compute = compute_cycles(layer, t, array)
                    roof = max(dram_bytes(layer, t) / spec.dram.bandwidth_bytes_per_cycle, compute)
                    score = (roof + tiles * spec.dram.latency_cycles, compute, tiles)
                    if best is None or score < best[0]:
                        best = (score, t)
    if best is None:
        raise HwsimError(f"{where}: no tile of this {layer.kind} {layer.m}x{layer.n}x{layer.k} layer fits the "
                         f"{full} buffer ({spec.buffers[full].kib} KiB) on array '{array.name}'")
    return best[1]
