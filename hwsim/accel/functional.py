"""Functional execution of an instruction stream on numpy: DRAM and each buffer as byte arrays, every
instruction reading its operands when the timing model starts it and writing its results when it ends.

Executing in that order (not program order) means a missing or wrong dependency token shows up as wrong
data: a load that overwrites a buffer slot before the GEMM reading it has started, or a store that reads
an accumulator before the last GEMM into it has finished. Every access is bounds-checked against the
buffer it names. Arithmetic follows the IR's semantics (fp32 accumulation, results rounded once to the
stored dtype), so the outputs must match the reference interpreter.
"""

from collections.abc import Callable

import numpy as np

from hwsim import interp
from hwsim.accel.isa import (
    DRAIN,
    DTYPES,
    KINDS,
    RESET,
    WINDOW_FILL,
    WT,
    AluOp,
    Buffer,
    Instr,
    Opcode,
    Operand,
    imm_value,
)
from hwsim.accel.program import AccelProgram, DramTensor
from hwsim.accel.timing import Timeline
from hwsim.errors import HwsimError
from hwsim.interp import unpack_weights
from hwsim.ir import Graph, Node
from targets.accel import AccelSpec


class Memory:
    def __init__(self, dram_bytes: int, spec: AccelSpec):
        self.dram = np.zeros(dram_bytes, np.uint8)
        self.sram = {b: np.zeros(spec.buffers[b.name.lower()].bytes, np.uint8) for b in Buffer}

    def span(self, where: np.ndarray, addr: int, nbytes: int, what: str) -> np.ndarray:
        if addr < 0 or addr + nbytes > where.size:
            raise HwsimError(f"{what}: bytes [{addr}, {addr + nbytes}) outside its {where.size}-byte memory")
        return where[addr:addr + nbytes]

    def tile(self, buf: Buffer, addr: int, rows: int, cols: int, dtype: str, what: str,
             stride: int | None = None) -> np.ndarray:
        """A rows x cols view of a buffer (rows `stride` elements apart)."""
        stride = stride or cols
        size = np.dtype(dtype).itemsize
        raw = self.span(self.sram[buf], addr, ((rows - 1) * stride + cols) * size if rows else 0, what)
        flat = raw.view(dtype) if rows else np.zeros(0, dtype)
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (stride * size, size)) if rows else \
            flat.reshape(0, cols)

    def write_tile(self, buf: Buffer, addr: int, value: np.ndarray, stride: int, what: str) -> None:
        rows, cols = value.shape
        dst = self.tile(buf, addr, rows, cols, value.dtype.name, what, stride)
        dst[...] = value

    def dram_rows(self, addr: int, rows: int, cols: int, stride: int, dtype: str, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        raw = self.span(self.dram, addr, ((rows - 1) * stride + cols) * size if rows else 0, what)
        if not rows:
            return np.zeros((0, cols), dtype)
        return np.lib.stride_tricks.as_strided(raw.view(dtype), (rows, cols), (stride * size, size))


def _apply(op: AluOp, x: np.ndarray, y: np.ndarray | float | None) -> np.ndarray:
    return {AluOp.ZERO: lambda: np.zeros_like(x), AluOp.COPY: lambda: x, AluOp.ADD: lambda: x + y,
            AluOp.SUB: lambda: x - y, AluOp.MUL: lambda: x * y, AluOp.MAX: lambda: np.maximum(x, y),
            AluOp.MIN: lambda: np.minimum(x, y), AluOp.NEG: lambda: -x, AluOp.RELU: lambda: np.maximum(x, 0)}[op]()


def _execute(ins: Instr, mem: Memory, what: str, graph: Graph, tensors: dict,
             spec: AccelSpec) -> Callable[[], None]:
    """Read the instruction's operands now; return the write of its results (called at its end)."""
    a = ins.args
    get = ins.args.get
    if (ins.op is Opcode.LOAD and get("stream") == WINDOW_FILL) or (ins.op is Opcode.STORE and get("stream") == DRAIN):
        return lambda: None  # a window advance or a write-buffer drain: traffic and time only
    if ins.op is Opcode.LOAD:
        rows, cols, dtype = get("rows", 0), get("cols", 0), DTYPES[get("dtype", 0)]
        data = mem.dram_rows(get("dram", 0), rows, cols, get("stride", 0), dtype, what).copy()
        if get("decode"):
            bits = 1 if KINDS[a["decode"]] == "sign" else 2
            data = unpack_weights(data, data.shape[1] * 8 // bits, bits).astype(np.float16)
        tile = np.zeros((rows + get("pad_rows", 0), data.shape[1] + get("pad_cols", 0)), data.dtype)
        tile[:rows, :data.shape[1]] = data
        return lambda: mem.write_tile(Buffer(ins.unit), get("sram", 0), tile, tile.shape[1], what)
    if ins.op is Opcode.STORE:
        rows, cols = get("rows", 0), get("cols", 0)
        src = mem.tile(Buffer(ins.unit), get("sram", 0), rows, cols, DTYPES[get("src_dtype", 0)], what,
                       get("src_cols", 0) or cols)
        value = src.astype(DTYPES[get("dtype", 0)])

        def store() -> None:
            mem.dram_rows(get("dram", 0), rows, cols, get("stride", 0), DTYPES[get("dtype", 0)], what)[...] = value
        return store
    if ins.op is Opcode.GEMM:
        tm, tn, tk, kind = get("tm", 0), get("tn", 0), get("tk", 0), KINDS[get("kind", 0)]
        x = mem.tile(Buffer.ACTIVATION, get("inp", 0), tm, tk, DTYPES[get("inp_dtype", 0)], what,
                     get("lda", 0) or tk).astype(np.float32)
        wdtype = DTYPES[get("wgt_dtype", 0)]
        if kind in ("sign", "ternary") and wdtype == "uint8":  # packed [tn, tk / per] on adder PEs
            bits = 1 if kind == "sign" else 2
            packed = mem.tile(Buffer.WEIGHT, get("wgt", 0), tn, tk * bits // 8, "uint8", what)
            w = unpack_weights(packed, tk, bits).astype(np.float32)
        elif get("flags", 0) & WT:
            w = mem.tile(Buffer.WEIGHT, get("wgt", 0), tn, tk, wdtype, what).astype(np.float32)
        else:
            w = mem.tile(Buffer.WEIGHT, get("wgt", 0), tk, tn, wdtype, what).astype(np.float32).T
        acc = np.zeros((tm, tn), np.float32) if get("flags", 0) & RESET else \
            mem.tile(Buffer.ACCUMULATOR, get("acc", 0), tm, tn, "float32", what).copy()
        acc += x @ w.T
        return lambda: mem.write_tile(Buffer.ACCUMULATOR, get("acc", 0), acc, tn, what)
    if ins.op is Opcode.ALU:
        rows, cols, buf = get("rows", 0), get("cols", 0), Buffer(ins.unit)
        op, second = AluOp(get("alu", 0)), Operand(get("operand", 0))
        x = mem.tile(buf, get("src", 0), rows, cols, DTYPES[get("src_dtype", 0)], what).astype(np.float32)
        y: np.ndarray | float | None = None
        if second is Operand.TILE:
            y = mem.tile(Buffer(get("src2_buffer", 0)), get("src2", 0), rows, cols, DTYPES[get("src2_dtype", 0)],
                         what).astype(np.float32)
        elif second is Operand.ROW:
            y = mem.tile(Buffer(get("src2_buffer", 0)), get("src2", 0), 1, cols, DTYPES[get("src2_dtype", 0)],
                         what).astype(np.float32)
        elif second is Operand.IMM:
            y = np.float32(imm_value(get("imm", 0)))
        result = _apply(op, x, y).astype(DTYPES[get("dtype", 0)])
        return lambda: mem.write_tile(buf, get("dst", 0), result, cols, what)
    if ins.op is Opcode.HOST:
        node = graph.nodes[ins.node]
        # a folded constant may be stored narrower than its IR type (lower.fold): the host op sees the IR type
        args = [v.data if v.is_const else _read(mem, tensors[id(v)], what).astype(v.type.dtype.numpy, copy=False)
                for v in node.inputs]
        results = interp.evaluate(node.op, args, node.attrs)
        return lambda: _write_outputs(mem, node, results, tensors, what)
    return lambda: None


def _read(mem: Memory, t: DramTensor, what: str) -> np.ndarray:
    raw = mem.span(mem.dram, t.addr, t.nbytes, what)
    return raw.view(t.dtype).reshape(t.shape).copy()


def _write_outputs(mem: Memory, node: Node, results: list[np.ndarray], tensors: dict, what: str) -> None:
    for v, r in zip(node.outputs, results, strict=True):
        t = tensors[id(v)]
        mem.span(mem.dram, t.addr, t.nbytes, what)[...] = np.ascontiguousarray(r, t.dtype).view(np.uint8).reshape(-1)


def run(program: AccelProgram, timeline: Timeline, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Execute `program` in its timeline's order; returns the graph outputs."""
    graph, spec = program.graph, program.target.accel
    mem = Memory(program.dram_bytes, spec)
    for v in [*graph.constants(), *graph.inputs]:
        t = program.tensors[id(v)]
        data = v.data if v.is_const else inputs[v.name]
        mem.span(mem.dram, t.addr, t.nbytes, f"tensor {v.name}")[...] = np.ascontiguousarray(
            data, t.dtype).view(np.uint8).reshape(-1)
    for vid, data in program.folded.items():  # constants the lowering computed (codegen/accel/lower.py fold)
        t = program.tensors[vid]
        mem.span(mem.dram, t.addr, t.nbytes, f"tensor {t.name}")[...] = np.ascontiguousarray(
            data, t.dtype).view(np.uint8).reshape(-1)
    names = program.node_names()
    # reads at an instruction's start, writes at its end; a write at cycle t is seen by a read at t
    n = len(program.instrs)
    events = sorted([(timeline.start[i], 1, i) for i in range(n)]  # an instant instruction ends after it starts
                    + [(timeline.end[i], 0 if timeline.end[i] > timeline.start[i] else 2, i) for i in range(n)])
    pending: dict[int, Callable[[], None]] = {}
    for _, phase, i in events:
        ins = program.instrs[i]
        if phase == 1:
            pending[i] = _execute(ins, mem, f"instruction {i} ({ins.op.name}, {names[ins.node]})", graph,
                                  program.tensors, spec)
        else:
            pending.pop(i)()
    return [_read(mem, program.tensors[id(v)], f"output {v.name}") if not v.is_const else v.data
            for v in graph.outputs]
