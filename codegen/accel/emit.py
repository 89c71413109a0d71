"""Instructions for one layer: a GEMM-shaped layer from its tile events (codegen/accel/tir.py), an
elementwise layer in buffer-sized chunks on the vector unit, or a host call.

Buffer slots are fixed per layer (Footprint): two for each staged operand, alternating, so the DMA of the
next tile overlaps the work on this one; the tokens that make that safe come from the slots each
instruction reads and writes (codegen/accel/tokens.py). DRAM regions past a tensor's real extent (tiles
are padded) are clipped on load, zero-filled in the buffer, and never stored.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from codegen.accel.tiles import ALIGN, Footprint, GemmLayer, Tiling, align, decodes, itemsize
from codegen.accel.tir import TileEvent
from codegen.accel.tokens import Slotted, assign_tokens
from hwsim.accel.isa import DTYPES, KINDS, LAST, RESET, WT, AluOp, Buffer, Instr, Opcode, Operand, imm_bits
from targets.accel import AccelSpec, ArraySpec


@dataclass(frozen=True)
class DramRef:
    """A 2-D view of a DRAM tensor: base address, rows x cols, row stride (elements), dtype."""

    addr: int
    rows: int
    cols: int
    dtype: str

    def at(self, r: int, c: int) -> int:
        return self.addr + (r * self.cols + c) * itemsize(self.dtype)


@dataclass(frozen=True)
class Extras:
    """A layer's epilogue and prologue operands in DRAM, each optional: pre-scale [K], post-scale [N] (or a
    constant scalar, as `post_imm`), addend [M, N]."""

    pre: DramRef | None = None
    post: DramRef | None = None
    post_imm: float | None = None
    add: DramRef | None = None


def _dt(dtype: str) -> int:
    return DTYPES.index(dtype)


class _Slots:
    """A buffer's slots, handed out round robin."""

    def __init__(self, buffer: Buffer, base: int, size: int, count: int):
        self.buffer, self.addrs, self.next = buffer, [base + i * size for i in range(count)], 0

    def take(self) -> int:
        addr = self.addrs[self.next % len(self.addrs)]
        self.next += 1
        return addr


def emit_gemm(node: int, layer: GemmLayer, t: Tiling, array_index: int, array: ArraySpec, fp: Footprint,
              events: list[TileEvent], operands: list[tuple[DramRef, DramRef, DramRef]], extras: Extras) -> list[Instr]:
    """One GEMM-shaped layer (see the module docstring); each (A, W, C) of `operands` is one GEMM of it (a
    batched matmul has one per batch element), the DRAM tensors of the layer's TE buffers "A", "W", "C" (W as
    stored: [K, N], [N, K] or packed rows). All of them share the slots and are ordered by one set of tokens:
    emitted apart, the next GEMM's first load overwrote a slot the last GEMM of the previous one still read."""
    act = _Slots(Buffer.ACTIVATION, 0, fp.a_tile, 2)
    scaled_at, pre_at = 2 * fp.a_tile, 2 * fp.a_tile + fp.a_scaled
    wgt = _Slots(Buffer.WEIGHT, 0, fp.w_tile, 2)
    acc = _Slots(Buffer.ACCUMULATOR, 0, fp.c_tile, 2)
    scratch_at, vec_at = 2 * fp.c_tile, 2 * fp.c_tile + fp.c_scratch
    decode = decodes(layer, array)
    out: list[Slotted] = []
    staged: dict[str, tuple[int, int, int, int, str]] = {}  # operand -> (addr, row0, col0, cols, dtype)
    acc_of: dict[tuple[int, int], int] = {}  # (row0, col0) of an accumulator tile -> its slot
    fresh: set[int] = set()  # accumulator slots reset, not yet written by a GEMM
    pre_loaded: tuple[int, int] | None = None

    def load(buffer: Buffer, sram: int, ref: DramRef, r0: int, rows: int, c0: int, cols: int,
             unpack: int = 1) -> Slotted:
        vr, vc = max(0, min(rows, ref.rows - r0)), max(0, min(cols, ref.cols - c0))
        args = {"sram": sram, "dram": ref.at(r0, c0), "rows": vr, "cols": vc, "stride": ref.cols,
                "dtype": _dt(ref.dtype), "pad_rows": rows - vr, "pad_cols": (cols - vc) * unpack}
        if unpack > 1:
            args["decode"] = KINDS.index(layer.kind)
        return Slotted(Instr(Opcode.LOAD, node, buffer, args), writes=[(buffer, sram)])

    for a, w, c, ev in ((*abc, ev) for abc in operands for ev in events):
        if ev.kind == "load":
            (name, _, ((r0, rr), (c0, cc))), = ev.reads
            if name == "A":
                slot = act.take()
                out.append(load(Buffer.ACTIVATION, slot, a, r0, rr, c0, cc))
                dtype = layer.a_dtype
                if extras.pre is not None:  # x * pre[k], in fp32 (a copy beside the tile for fp16 activations)
                    if pre_loaded != (c0, cc):
                        out.append(load(Buffer.ACTIVATION, pre_at, extras.pre, 0, 1, c0, cc))
                        pre_loaded = (c0, cc)
                    dst = slot if layer.a_dtype == "float32" else scaled_at
                    out.append(Slotted(Instr(Opcode.ALU, node, Buffer.ACTIVATION, {
                        "alu": AluOp.MUL, "operand": Operand.ROW, "dst": dst, "src": slot, "src2": pre_at,
                        "rows": rr, "cols": cc, "dtype": _dt("float32"), "src_dtype": _dt(layer.a_dtype),
                        "src2_dtype": _dt(extras.pre.dtype), "src2_buffer": Buffer.ACTIVATION}),
                        reads=[(Buffer.ACTIVATION, slot), (Buffer.ACTIVATION, pre_at)],
                        writes=[(Buffer.ACTIVATION, dst)]))
                    slot, dtype = dst, "float32"
                staged["A"] = (slot, r0, c0, cc, dtype)
            else:
                slot = wgt.take()
                unpack = layer.per_byte if decode else 1
                out.append(load(Buffer.WEIGHT, slot, w, r0, rr, c0, cc, unpack))
                staged["W"] = (slot, r0, c0, cc, "float16" if decode else layer.w_dtype)
        elif ev.kind == "zero":
            (_, _, ((r0, _), (c0, _))), = ev.writes
            slot = acc.take()
            acc_of[(r0, c0)] = slot
            fresh.add(slot)
        elif ev.kind == "gemm":
            (_, _, ((r0, tm), (n0, tn))), (_, _, (_, (k0, tk))), _ = ev.reads
            a_slot, ar0, ac0, acols, a_dtype = staged["A"]
            inp = a_slot + ((r0 - ar0) * acols + (k0 - ac0)) * itemsize(a_dtype)
            w_slot, *_, w_dtype = staged["W"]
            slot = acc_of[(r0, n0)]
            flags = (RESET if slot in fresh else 0) | (LAST if k0 + tk >= t.kp else 0)
            flags |= WT if (layer.packed and decode) or (not layer.packed and layer.wt) else 0
            fresh.discard(slot)
            out.append(Slotted(Instr(Opcode.GEMM, node, array_index, {
                "inp": inp, "wgt": w_slot, "acc": slot, "tm": tm, "tn": tn, "tk": tk, "lda": acols,
                "valid": max(0, min(tm, layer.m - r0)), "kind": KINDS.index(layer.kind),
                "inp_dtype": _dt(a_dtype), "wgt_dtype": _dt(w_dtype), "flags": flags}),
                reads=[(Buffer.ACTIVATION, a_slot), (Buffer.WEIGHT, w_slot)] + ([] if flags & RESET else
                                                                                [(Buffer.ACCUMULATOR, slot)]),
                writes=[(Buffer.ACCUMULATOR, slot)]))
        else:  # store, after the epilogue on the finished accumulator tile
            (_, _, ((r0, rows), (n0, cols))), = ev.reads
            slot = acc_of.pop((r0, n0))
            out += _epilogue(node, slot, r0, rows, n0, cols, extras, scratch_at, vec_at, load)
            vr, vc = max(0, min(rows, c.rows - r0)), max(0, min(cols, c.cols - n0))
            out.append(Slotted(Instr(Opcode.STORE, node, Buffer.ACCUMULATOR, {
                "sram": slot, "dram": c.at(r0, n0), "rows": vr, "cols": vc, "stride": c.cols, "dtype": _dt(c.dtype),
                "src_dtype": _dt("float32"), "src_cols": cols}), reads=[(Buffer.ACCUMULATOR, slot)]))
    return assign_tokens(out)


def _epilogue(node: int, slot: int, r0: int, rows: int, n0: int, cols: int, extras: Extras, scratch_at: int,
              vec_at: int, load: Callable[..., Slotted]) -> list[Slotted]:
    """acc *= post, acc += addend: vector-unit ops on the finished accumulator tile."""
    out, acc = [], Buffer.ACCUMULATOR
    f32 = _dt("float32")
    if extras.post is not None:
        out.append(load(acc, vec_at, extras.post, 0, 1, n0, cols))
        out.append(Slotted(Instr(Opcode.ALU, node, acc, {
            "alu": AluOp.MUL, "operand": Operand.ROW, "dst": slot, "src": slot, "src2": vec_at, "rows": rows,
            "cols": cols, "dtype": f32, "src_dtype": f32, "src2_dtype": _dt(extras.post.dtype), "src2_buffer": acc}),
            reads=[(acc, slot), (acc, vec_at)], writes=[(acc, slot)]))
    elif extras.post_imm is not None:
        out.append(Slotted(Instr(Opcode.ALU, node, acc, {
            "alu": AluOp.MUL, "operand": Operand.IMM, "dst": slot, "src": slot, "rows": rows, "cols": cols,
            "dtype": f32, "src_dtype": f32, "imm": imm_bits(extras.post_imm)}), reads=[(acc, slot)],
            writes=[(acc, slot)]))
    if extras.add is not None:
        out.append(load(acc, scratch_at, extras.add, r0, rows, n0, cols))
        out.append(Slotted(Instr(Opcode.ALU, node, acc, {
            "alu": AluOp.ADD, "operand": Operand.TILE, "dst": slot, "src": slot, "src2": scratch_at, "rows": rows,
            "cols": cols, "dtype": f32, "src_dtype": f32, "src2_dtype": _dt(extras.add.dtype), "src2_buffer": acc}),
            reads=[(acc, slot), (acc, scratch_at)], writes=[(acc, slot)]))
    return out


ALU_OF = {"ADD": AluOp.ADD, "SUB": AluOp.SUB, "MUL": AluOp.MUL, "MAX": AluOp.MAX, "MIN": AluOp.MIN,
          "NEG": AluOp.NEG, "RELU": AluOp.RELU, "CAST": AluOp.COPY}


def vector_chunk(spec: AccelSpec, elems: int, row: int, operand: Operand) -> int:
    """Elements per chunk of an elementwise layer: two slots each (fp32-sized) for the operand, the second
    operand and the result in the accumulator (a result slot of its own, so the next chunk's load waits
    only on compute, never on a store), a whole number of `row`-long rows for a row broadcast; 0 if not
    even one row fits."""
    room = spec.buffers["accumulator"].bytes - (align(row * 4) if operand is Operand.ROW else 0)
    tiles = 6 if operand is Operand.TILE else 4
    per = (room // tiles) // 4 // ALIGN * ALIGN
    if operand is Operand.ROW:
        per = per // row * row
    return min(per, elems)


def emit_vector(node: int, op: str, spec: AccelSpec, x: DramRef, y: DramRef | None, operand: Operand,
                imm: float, out: DramRef) -> list[Instr]:
    """out = op(x[, y]) over flat chunks (y a same-shape tile, a row vector of x's last dim, or `imm`)."""
    total, row = x.rows * x.cols, x.cols
    chunk = vector_chunk(spec, total, row, operand)
    size = align(chunk * 4)
    acc = Buffer.ACCUMULATOR
    xs, rs, ys = _Slots(acc, 0, size, 2), _Slots(acc, 2 * size, size, 2), _Slots(acc, 4 * size, size, 2)
    vec_at = (6 if operand is Operand.TILE else 4) * size
    flat = [DramRef(r.addr, 1, total, r.dtype) if r is not None else None for r in (x, out)]
    items: list[Slotted] = []
    if operand is Operand.ROW:
        items.append(Slotted(Instr(Opcode.LOAD, node, acc, {
            "sram": vec_at, "dram": y.addr, "rows": 1, "cols": row, "stride": row, "dtype": _dt(y.dtype)}),
            writes=[(acc, vec_at)]))
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        xa = xs.take()
        items.append(Slotted(Instr(Opcode.LOAD, node, acc, {
            "sram": xa, "dram": flat[0].at(0, start), "rows": 1, "cols": n, "stride": n, "dtype": _dt(x.dtype)}),
            writes=[(acc, xa)]))
        ra = rs.take()
        args = {"alu": ALU_OF[op], "operand": operand, "dst": ra, "src": xa, "rows": n // row if operand is
                Operand.ROW else 1, "cols": row if operand is Operand.ROW else n, "dtype": _dt(out.dtype),
                "src_dtype": _dt(x.dtype)}
        reads = [(acc, xa)]
        if operand is Operand.TILE:
            ya = ys.take()
            items.append(Slotted(Instr(Opcode.LOAD, node, acc, {
                "sram": ya, "dram": DramRef(y.addr, 1, total, y.dtype).at(0, start), "rows": 1, "cols": n,
                "stride": n, "dtype": _dt(y.dtype)}), writes=[(acc, ya)]))
            args |= {"src2": ya, "src2_dtype": _dt(y.dtype), "src2_buffer": acc}
            reads.append((acc, ya))
        elif operand is Operand.ROW:
            args |= {"src2": vec_at, "src2_dtype": _dt(y.dtype), "src2_buffer": acc}
            reads.append((acc, vec_at))
        elif operand is Operand.IMM:
            args["imm"] = imm_bits(imm)
        items.append(Slotted(Instr(Opcode.ALU, node, acc, args), reads=reads, writes=[(acc, ra)]))
        items.append(Slotted(Instr(Opcode.STORE, node, acc, {
            "sram": ra, "dram": flat[1].at(0, start), "rows": 1, "cols": n, "stride": n, "dtype": _dt(out.dtype),
            "src_dtype": _dt(out.dtype), "src_cols": n}), reads=[(acc, ra)]))
    return assign_tokens(items)


@dataclass(frozen=True)
class Piece:
    """A block copy: `rows` rows of `cols` elements from column `src_col` of `src` to column `dst_col` of
    `dst` (both 2-D views of DRAM tensors, the same rows)."""

    src: DramRef
    src_col: int
    dst: DramRef
    dst_col: int
    cols: int


def emit_copy(node: int, spec: AccelSpec, pieces: list[Piece]) -> list[Instr]:
    """Data movement alone (a concat, a gather of constant indices, a slice) as strided DMA through the
    accumulator: load a tile, copy it on the vector unit (loads reach the store queue only through compute),
    store it at its place; two slots each, so loads, copies and stores overlap."""
    acc = Buffer.ACCUMULATOR
    chunk = vector_chunk(spec, 1 << 62, 1, Operand.NONE)
    size = align(chunk * 4)
    xs, rs = _Slots(acc, 0, size, 2), _Slots(acc, 2 * size, size, 2)
    items: list[Slotted] = []
    for p in pieces:
        dtype = _dt(p.src.dtype)
        rows_per = max(1, chunk // p.cols)
        for r0 in range(0, p.src.rows, rows_per):
            rows = min(rows_per, p.src.rows - r0)
            for c0 in range(0, p.cols, chunk):
                cols = min(chunk, p.cols - c0)
                xa, ra = xs.take(), rs.take()
                items.append(Slotted(Instr(Opcode.LOAD, node, acc, {
                    "sram": xa, "dram": p.src.at(r0, p.src_col + c0), "rows": rows, "cols": cols,
                    "stride": p.src.cols, "dtype": dtype}), writes=[(acc, xa)]))
                items.append(Slotted(Instr(Opcode.ALU, node, acc, {
                    "alu": AluOp.COPY, "operand": Operand.NONE, "dst": ra, "src": xa, "rows": rows, "cols": cols,
                    "dtype": dtype, "src_dtype": dtype}), reads=[(acc, xa)], writes=[(acc, ra)]))
                items.append(Slotted(Instr(Opcode.STORE, node, acc, {
                    "sram": ra, "dram": p.dst.at(r0, p.dst_col + c0), "rows": rows, "cols": cols,
                    "stride": p.dst.cols, "dtype": dtype, "src_dtype": dtype, "src_cols": cols}),
                    reads=[(acc, ra)]))
    return assign_tokens(items)


def scalar(value: np.ndarray) -> float:
    return float(np.asarray(value, np.float64).reshape(-1)[0])
