"""Window staging: a dense GEMM layer staged as SCALE-Sim 3.0.0's read buffers stage it, so that the
accelerator model can be compared with SCALE-Sim like for like (an array's `staging = "window"`).

Policies, each as SCALE-Sim implements it (scalesim/compute/systolic_compute_{ws,os}.py, memory/read_buffer.py):
- Fold order: column folds outer, row folds inner (weight-stationary: an R x C weight fold with all M rows
  streamed; output-stationary: R rows of A against C columns of W over the whole of K).
- Fetch order: each operand is fetched in the order the array consumes it: A (and W on an output-stationary
  array) along the anti-diagonals of its stacked folds, a skewed wavefront; a weight-stationary W by rows.
- The window: each operand buffer holds a window over that order, half active and half prefetching, in 100
  sets of ceil(buffer / 100) elements. A read outside the active half advances the window by the prefetch
  half (one DRAM fill of half the buffer, in whole lines of `bandwidth` bytes), only forward and around the
  end. So a read behind the window refetches the whole operand round to it: a weight-stationary array fills
  its rows bottom first, and a fold that straddles the window's edge costs a walk of all of W
  (scalesim-project/SCALE-Sim#130, "address not found in both active and prefetch buffers").
- Outputs: a write buffer (the accumulator buffer's words, of 4 bytes, as SCALE-Sim's ofmap buffer's) drained
  to DRAM half a buffer at a time once more than half is held, and what is left after the last fold; a
  weight-stationary array puts every K fold's sums in it (SCALE-Sim's ofmap demand per fold). Drains are
  DRAIN stores (traffic and time); the functional STOREs of C are WINDOW_WRITEs (no DRAM traffic).
The window is computed here, at compile time (it depends on the order of reads, not on time): its fills are
WINDOW_FILL loads, each fold's operands WINDOW_READ loads of the tiles the functional model computes with.
What this does not copy: SCALE-Sim counts a read stall twice (read_buffer.service_reads; also #130); the
simulator counts it once.
"""

import math

import numpy as np

from codegen.accel.emit import DramRef
from codegen.accel.tiles import GemmLayer, align, itemsize
from codegen.accel.tokens import Slotted, assign_tokens
from hwsim.accel.isa import (
    DRAIN,
    DTYPES,
    KINDS,
    LAST,
    RESET,
    WINDOW_FILL,
    WINDOW_READ,
    WINDOW_WRITE,
    Buffer,
    Instr,
    Opcode,
)
from hwsim.errors import HwsimError
from targets.accel import AccelSpec, ArraySpec

SETS = 100  # SCALE-Sim's read buffer tracks its contents in this many sets
ACTIVE = 0.5  # the active fraction of a read buffer (single_layer_sim.py)


class Window:
    """One operand buffer as a SCALE-Sim read buffer over `elems` elements in fetch order, `fetched` with the
    padding of ragged folds (which the first fill counts: SCALE-Sim fetches whole lines of its fetch matrix)."""

    def __init__(self, buffer_elems: int, line: int, elems: int, fetched: int):
        self.per_set = math.ceil(buffer_elems / SETS)
        active = math.ceil(buffer_elems * ACTIVE)
        prefetch = buffer_elems - active
        self.sets = elems // self.per_set + 1  # the hashed buffer's sets, the last one partial (or empty)
        self.active = min(math.ceil(active / self.per_set), self.sets)
        self.step = min(math.ceil(prefetch / self.per_set), self.sets - self.active)
        self.first_fill = min(math.ceil(active / line), math.ceil(fetched / line)) * line  # elements
        self.fill = math.ceil(prefetch / line) * line
        self.start: int | None = None

    def _inside(self, s: int) -> bool:
        assert self.start is not None
        end = (self.start + self.active) % self.sets if self.active < self.sets else self.sets
        return self.start <= s < end if self.start < end else s >= self.start or s < end

    def demand(self, s: int) -> list[int]:
        """The fills (elements each) that reading set `s` takes."""
        fills = []
        if self.start is None:
            self.start = 0
            fills.append(self.first_fill)
        while not self._inside(s):
            self.start = (self.start + self.step) % self.sets
            fills.append(self.fill)
        return fills


def diagonal_ranks(valid: np.ndarray) -> np.ndarray:
    """The rank of each element of a matrix among its valid elements, read along anti-diagonals (i + j), each
    from its bottom row up (SCALE-Sim's prefetch order, the wavefront a systolic array consumes)."""
    h, w = valid.shape
    i, j = np.indices((h, w))
    d = i + j
    lengths = np.minimum(np.arange(h + w - 1), h - 1) - np.maximum(0, np.arange(h + w - 1) - w + 1) + 1
    before = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    pos = before[d] + (np.minimum(d, h - 1) - i)
    flat = np.zeros(h * w, bool)
    flat[pos[valid]] = True
    return (np.cumsum(flat) - 1)[pos]


def row_ranks(valid: np.ndarray) -> np.ndarray:
    return (np.cumsum(valid.reshape(-1)) - 1).reshape(valid.shape)


def _stacked(rows: int, cols: int, unit: int) -> tuple[np.ndarray, int]:
    """Validity of an operand [rows, cols] cut into column blocks of `unit` (padded) and stacked vertically:
    [blocks * rows, unit]."""
    blocks = -(-cols // unit)
    valid = (np.arange(blocks)[:, None, None] * unit + np.arange(unit)[None, None, :] < cols)
    return np.broadcast_to(valid, (blocks, rows, unit)).reshape(blocks * rows, unit), blocks


def _sets(ranks: np.ndarray, per_set: int) -> list[int]:
    """The sets of `ranks` (in reading order), each the first time it is read."""
    sets = ranks // per_set
    keep = np.ones(len(sets), bool)
    keep[1:] = sets[1:] != sets[:-1]
    return [int(s) for s in sets[keep]]


def emit_window_gemm(node: int, layer: GemmLayer, array_index: int, array: ArraySpec, spec: AccelSpec,
                     a: DramRef, w: DramRef, c: DramRef, where: str) -> list[Instr]:
    """One plain dense GEMM (C = A W, W stored [K, N]) under window staging (see the module docstring)."""
    if layer.packed or layer.wt or array.dataflow == "weight_streaming":
        raise HwsimError(f"{where}: window staging (SCALE-Sim's) takes dense GEMMs with W stored [K, N] on a "
                         f"weight- or output-stationary array, not this {layer.kind} layer on a {array.dataflow} "
                         "array")
    r, cc, m, k, n = array.rows, array.cols, layer.m, layer.k, layer.n
    ai, wi = itemsize(layer.a_dtype), itemsize(layer.w_dtype)
    line = {b: max(1, int(spec.dram.bandwidth_bytes_per_cycle) // i) for b, i in (("a", ai), ("w", wi))}
    ws = array.dataflow == "weight_stationary"
    if ws:  # A folds [M, R] by K; W blocks [K, C] by N, read by rows
        a_valid, _ = _stacked(m, k, r)
        a_rank = diagonal_ranks(a_valid)
        w_valid, _ = _stacked(k, n, cc)
        w_rank = row_ranks(w_valid)
    else:  # A^T folds [K, R] by M; W blocks [K, C] by N, both along diagonals
        a_valid, _ = _stacked(k, m, r)
        a_rank = diagonal_ranks(a_valid)
        w_valid, _ = _stacked(k, n, cc)
        w_rank = diagonal_ranks(w_valid)
    win = {"a": Window(spec.buffers["activation"].bytes // ai, line["a"], int(a_valid.sum()), a_valid.size),
           "w": Window(spec.buffers["weight"].bytes // wi, line["w"], int(w_valid.sum()), w_valid.size)}
    row_folds, col_folds = (-(-k // r), -(-n // cc)) if ws else (-(-m // r), -(-n // cc))
    # each fold's tiles in two slots per buffer; an output-stationary fold's K in chunks that fit a slot
    chunk = k if ws else max(1, min(k, spec.buffers["activation"].bytes // 2 // (r * ai),
                                    spec.buffers["weight"].bytes // 2 // (cc * wi)))
    a_tile = align((m * r if ws else r * chunk) * ai)
    w_tile = align((r if ws else chunk) * cc * wi)
    c_tile = align((m if ws else r) * cc * 4)
    for buf, need in (("activation", 2 * a_tile), ("weight", 2 * w_tile), ("accumulator", 2 * c_tile)):
        if need > spec.buffers[buf].bytes:
            raise HwsimError(f"{where}: window staging needs {need} bytes of the {buf} buffer for this "
                             f"{m}x{n}x{k} layer's fold tiles, it has {spec.buffers[buf].bytes}")
    out: list[Slotted] = []
    slot = {"a": 0, "w": 0}  # tiles read so far per operand: they alternate between two slots

    def fills(which: str, buffer: Buffer, sets: list[int], ref: DramRef, dtype: str) -> None:
        for s in sets:
            for elems in win[which].demand(s):
                out.append(Slotted(Instr(Opcode.LOAD, node, buffer, {
                    "dram": ref.addr, "rows": 1, "cols": elems, "stride": elems, "dtype": DTYPES.index(dtype),
                    "stream": WINDOW_FILL})))

    def read(buffer: Buffer, which: str, ref: DramRef, r0: int, rows: int, c0: int, cols: int) -> int:
        addr = (slot[which] % 2) * (a_tile if which == "a" else w_tile)
        slot[which] += 1
        vr, vc = max(0, min(rows, ref.rows - r0)), max(0, min(cols, ref.cols - c0))
        out.append(Slotted(Instr(Opcode.LOAD, node, buffer, {
            "sram": addr, "dram": ref.at(r0, c0), "rows": vr, "cols": vc, "stride": ref.cols,
            "dtype": DTYPES.index(ref.dtype), "pad_rows": rows - vr, "pad_cols": cols - vc, "stream": WINDOW_READ}),
            writes=[(buffer, addr)]))
        return addr

    def gemm(inp: int, wgt: int, acc: int, tm: int, tk: int, valid: int, flags: int, snapshot: int) -> None:
        out.append(Slotted(Instr(Opcode.GEMM, node, array_index, {
            "inp": inp, "wgt": wgt, "acc": acc, "tm": tm, "tn": cc, "tk": tk, "lda": tk, "valid": valid,
            "kind": KINDS.index(layer.kind), "inp_dtype": DTYPES.index(layer.a_dtype),
            "wgt_dtype": DTYPES.index(layer.w_dtype), "flags": flags}),
            reads=[(Buffer.ACTIVATION, inp), (Buffer.WEIGHT, wgt)] + ([] if flags & RESET else
                                                                    [(Buffer.ACCUMULATOR, acc)]),
            writes=[(Buffer.ACCUMULATOR, acc), (Buffer.ACCUMULATOR, -1 - snapshot)]))

    drain_words = (spec.buffers["accumulator"].bytes // 4) // 2  # the write buffer's half, in output words
    pending = 0  # output words in the write buffer

    def write(acc: int, r0: int, rows: int, n0: int, words: int, fold: int, result: bool) -> None:
        """A fold's outputs into the write buffer (the functional STORE of C when `result`), drained to DRAM
        in halves of the buffer once more than half is held (and the rest after the last fold)."""
        nonlocal pending
        if result:
            vr, vc = max(0, min(rows, c.rows - r0)), max(0, min(cc, c.cols - n0))
            out.append(Slotted(Instr(Opcode.STORE, node, Buffer.ACCUMULATOR, {
                "sram": acc, "dram": c.at(r0, n0), "rows": vr, "cols": vc, "stride": c.cols,
                "dtype": DTYPES.index(c.dtype), "src_dtype": DTYPES.index("float32"), "src_cols": cc,
                "stream": WINDOW_WRITE}), reads=[(Buffer.ACCUMULATOR, acc)]))
        pending += words
        while pending > drain_words or (pending and fold == total_folds):
            words_out = min(pending, drain_words)
            pending -= words_out
            # reads its fold's snapshot of the sums: no slot for the next GEMM to wait on
            out.append(Slotted(Instr(Opcode.STORE, node, Buffer.ACCUMULATOR, {
                "dram": c.addr, "rows": 1, "cols": words_out, "stride": words_out, "dtype": DTYPES.index(c.dtype),
                "src_dtype": DTYPES.index("float32"), "stream": DRAIN}), reads=[(Buffer.ACCUMULATOR, -1 - fold)]))

    fold, total_folds = 0, col_folds * row_folds
    for fc in range(col_folds):
        n0 = fc * cc
        w_block = w_rank[fc * k:(fc + 1) * k]  # W's rows [K, C] of this column fold, in fetch ranks
        for fr in range(row_folds):
            fold += 1
            acc = (fc if ws else fold) % 2 * c_tile
            if ws:
                k0, k1 = fr * r, min(k, fr * r + r)
                rows = w_block[k1 - 1:k0 - 1 if k0 else None:-1]  # filled bottom row first
                fills("w", Buffer.WEIGHT, _sets(rows[w_valid[fc * k + k0:fc * k + k1][::-1]], win["w"].per_set),
                      w, layer.w_dtype)
                wgt = read(Buffer.WEIGHT, "w", w, k0, r, n0, cc)
                a_fold = a_rank[fr * m:(fr + 1) * m][a_valid[fr * m:(fr + 1) * m]]
                fills("a", Buffer.ACTIVATION, _sets(np.sort(a_fold), win["a"].per_set), a, layer.a_dtype)
                inp = read(Buffer.ACTIVATION, "a", a, 0, m, k0, r)
                last = fr == row_folds - 1
                gemm(inp, wgt, acc, m, r, m, (RESET if fr == 0 else 0) | (LAST if last else 0), fold)
                write(acc, 0, m, n0, m * min(cc, n - n0), fold, last)
                continue
            m0 = fr * r
            a_block = a_rank[fr * k:(fr + 1) * k]  # A^T's rows [K, R] of this row fold
            a_sets = _sets(np.sort(a_block[a_valid[fr * k:(fr + 1) * k]]), win["a"].per_set)
            w_sets = _sets(np.sort(w_block[w_valid[fc * k:(fc + 1) * k]]), win["w"].per_set)
            a_at, w_at = _chunk_of(a_block, a_valid[fr * k:(fr + 1) * k], win["a"].per_set, chunk), _chunk_of(
                w_block, w_valid[fc * k:(fc + 1) * k], win["w"].per_set, chunk)
            for k0 in range(0, k, chunk):
                j = k0 // chunk
                fills("w", Buffer.WEIGHT, [s for s in w_sets if w_at[s] == j], w, layer.w_dtype)
                wgt = read(Buffer.WEIGHT, "w", w, k0, chunk, n0, cc)
                fills("a", Buffer.ACTIVATION, [s for s in a_sets if a_at[s] == j], a, layer.a_dtype)
                inp = read(Buffer.ACTIVATION, "a", a, m0, r, k0, chunk)
                flags = (RESET if k0 == 0 else 0) | (LAST if k0 + chunk >= k else 0)
                gemm(inp, wgt, acc, r, chunk, max(0, min(r, m - m0)), flags, fold)
            write(acc, m0, r, n0, min(r, m - m0) * min(cc, n - n0), fold, True)
    return assign_tokens(out)


def _chunk_of(block: np.ndarray, valid: np.ndarray, per_set: int, chunk: int) -> dict[int, int]:
    """For each set a block [K, cols] reads, the K chunk that first reads it (monotone in the set order)."""
    ranks, krow = block[valid], np.nonzero(valid)[0]
    order = np.argsort(ranks, kind="stable")
    sets, chunks = ranks[order] // per_set, krow[order] // chunk
    out: dict[int, int] = {}
    top = 0
    for s, j in zip(sets.tolist(), chunks.tolist(), strict=True):
        if s not in out:
            top = max(top, j)
            out[s] = top
    return out
