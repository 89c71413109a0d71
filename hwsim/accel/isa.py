"""The accelerator's instruction set: VTA-like, with three in-order queues (load, compute, store) that
synchronise through dependency tokens, plus host calls and barriers.

- LOAD   (load queue)    2-D strided DMA from DRAM into a buffer tile, zero-padding it, optionally decoding
                         packed sign/ternary bytes to fp16 on the way (for MAC arrays). `stream` (window
                         staging, codegen/accel/window.py): 0 a DMA; WINDOW_READ the tile read out of the
                         buffer's window, which already holds it (no DRAM traffic: it waits for the last
                         WINDOW_FILL of its buffer before it); WINDOW_FILL rows x cols bytes from DRAM into
                         the window (the traffic and time of a window advance; nothing a tile reads).
- GEMM   (compute queue) acc[tm, tn] (+)= inp[tm, tk] . W on one PE array (`valid` of the tm rows are real);
                         inp rows are `lda` elements apart; W is a weight tile [tk, tn], or [tn, tk] with flag
                         WT, packed ([tn, tk / fields per byte]) for adder PEs. Flags: RESET (start from
                         zero), WT, LAST (the last K chunk: an output-stationary array drains).
- ALU    (compute queue) the vector unit on buffer tiles: zero, copy/cast, binary ops with a same-shape
                         tile, a row vector broadcast along rows, or an immediate.
- STORE  (store queue)   a buffer tile back to DRAM, converted to the DRAM tensor's dtype. `stream` (window
                         staging): WINDOW_WRITE the tile into the write buffer (the data; no DRAM traffic),
                         DRAIN rows x cols of the write buffer to DRAM (the traffic and time; no data).
- HOST   (all queues)    an IR node the accelerator lacks, run by the host CPU on DRAM tensors.
- BARRIER(all queues)    every queue drains before anything after it starts (between layers).

Tokens: `pop_*` counts the tokens an instruction takes before it starts, `push_*` those it gives when it
ends, towards its queue's neighbour (`prev`: load <- compute <- store, `next`: load -> compute -> store).
VTA uses one bit per direction; counts let one GEMM wait for the two loads it reads.

Binary form: a 16-byte header ("HWSIMACC", version, count), then one 64-byte record per instruction:
op, buffer/array, four token counts, node (u16), 13 little-endian u32 fields in the order of FIELDS, 4 zero bytes.
"""

import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

MAGIC, VERSION = b"HWSIMACC", 1
RECORD = struct.Struct("<BBBBBBH13I4x")  # 64 bytes


class Opcode(IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    ALU = 3
    HOST = 4
    BARRIER = 5


class Buffer(IntEnum):
    WEIGHT = 0
    ACTIVATION = 1
    ACCUMULATOR = 2


class AluOp(IntEnum):
    ZERO = 0
    COPY = 1  # with a dtype change: a cast
    ADD = 2
    SUB = 3
    MUL = 4
    MAX = 5
    MIN = 6
    NEG = 7
    RELU = 8


RESET, WT, LAST = 1, 2, 4  # GEMM flags
WINDOW_READ, WINDOW_FILL = 1, 2  # LOAD `stream`: a tile read from the buffer's window, a window advance
WINDOW_WRITE, DRAIN = 1, 2  # STORE `stream`: a tile into the write buffer, a write-buffer drain


class Operand(IntEnum):
    """What an ALU op's second operand is."""

    NONE = 0
    TILE = 1  # a tile of the same shape
    ROW = 2  # a [cols] vector, broadcast along the rows
    IMM = 3  # the immediate


DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64", "bool")
KINDS = ("fp16", "int8", "sign", "ternary")
QUEUE = {Opcode.LOAD: "load", Opcode.GEMM: "compute", Opcode.ALU: "compute", Opcode.STORE: "store",
         Opcode.HOST: "sync", Opcode.BARRIER: "sync"}

# the u32 fields of each opcode, in record order (unused trailing fields are zero)
FIELDS: dict[Opcode, tuple[str, ...]] = {
    Opcode.LOAD: ("sram", "dram", "rows", "cols", "stride", "dtype", "pad_rows", "pad_cols", "decode", "stream"),
    Opcode.STORE: ("sram", "dram", "rows", "cols", "stride", "dtype", "src_dtype", "src_cols", "stream"),
    Opcode.GEMM: ("inp", "wgt", "acc", "tm", "tn", "tk", "lda", "valid", "kind", "inp_dtype", "wgt_dtype",
                  "flags"),
    Opcode.ALU: ("alu", "operand", "dst", "src", "src2", "rows", "cols", "dtype", "src_dtype", "src2_dtype",
                 "imm", "src2_buffer"),
    Opcode.HOST: (),
    Opcode.BARRIER: (),
}


@dataclass
class Instr:
    """One instruction. `unit` is the buffer (LOAD, STORE, ALU) or the array index (GEMM); `args` holds the
    opcode's FIELDS by name (dtypes and kinds as their index in DTYPES / KINDS, `imm` as float32 bits)."""

    op: Opcode
    node: int
    unit: int = 0
    args: dict[str, int] = field(default_factory=dict)
    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.args) - set(FIELDS[self.op])
        if unknown:
            raise ValueError(f"{self.op.name} has no fields {sorted(unknown)}")

    @property
    def queue(self) -> str:
        return QUEUE[self.op]


def imm_bits(value: float) -> int:
    return int(np.array(value, np.float32).view(np.uint32))


def imm_value(bits: int) -> float:
    return float(np.array(bits, np.uint32).view(np.float32))


def encode(program: list[Instr]) -> bytes:
    out = [MAGIC + struct.pack("<II", VERSION, len(program))]
    for ins in program:
        values = [ins.args.get(name, 0) for name in FIELDS[ins.op]]
        out.append(RECORD.pack(ins.op, ins.unit, ins.pop_prev, ins.pop_next, ins.push_prev, ins.push_next,
                               ins.node, *values, *[0] * (13 - len(values))))
    return b"".join(out)


def decode(data: bytes) -> list[Instr]:
    if data[:8] != MAGIC:
        raise ValueError("not an hwsim accelerator program (bad magic)")
    version, count = struct.unpack_from("<II", data, 8)
    if version != VERSION or len(data) != 16 + count * RECORD.size:
        raise ValueError(f"program version {version} with {count} records does not match its {len(data)} bytes")
    program = []
    for i in range(count):
        op, unit, pp, pn, up, un, node, *values = RECORD.unpack_from(data, 16 + i * RECORD.size)
        names = FIELDS[Opcode(op)]
        program.append(Instr(Opcode(op), node, unit, {n: v for n, v in zip(names, values, strict=False) if v},
                             pp, pn, up, un))
    return program


def _describe(ins: Instr) -> str:
    a = ins.args
    if ins.op in (Opcode.LOAD, Opcode.STORE):
        text = (f"{Buffer(ins.unit).name.lower():11s} sram=0x{a.get('sram', 0):06x} dram=0x{a.get('dram', 0):08x} "
                f"{a.get('rows', 0)}x{a.get('cols', 0)} stride={a.get('stride', 0)} {DTYPES[a.get('dtype', 0)]}")
        if ins.op is Opcode.LOAD and (a.get("pad_rows") or a.get("pad_cols")):
            text += f" pad=+{a.get('pad_rows', 0)}x+{a.get('pad_cols', 0)}"
        if a.get("decode"):
            text += f" decode={KINDS[a['decode']]}->fp16"
        if a.get("stream"):
            text += " " + {(Opcode.LOAD, WINDOW_READ): "window-read", (Opcode.LOAD, WINDOW_FILL): "window-fill",
                           (Opcode.STORE, WINDOW_WRITE): "window-write", (Opcode.STORE, DRAIN): "drain"}[
                (ins.op, a["stream"])]
        return text
    if ins.op is Opcode.GEMM:
        flags = a.get("flags", 0)
        names = [n for bit, n in ((RESET, "reset"), (WT, "wt"), (LAST, "last")) if flags & bit]
        return (f"array={ins.unit} {KINDS[a.get('kind', 0)]} {a.get('tm', 0)}x{a.get('tn', 0)}x{a.get('tk', 0)} "
                f"valid_m={a.get('valid', 0)} inp=0x{a.get('inp', 0):06x}/{a.get('lda', 0)} "
                f"{DTYPES[a.get('inp_dtype', 0)]} wgt=0x{a.get('wgt', 0):06x} {DTYPES[a.get('wgt_dtype', 0)]} "
                f"acc=0x{a.get('acc', 0):06x}{' ' + ','.join(names) if names else ''}")
    if ins.op is Opcode.ALU:
        second = Operand(a.get("operand", 0))
        text = (f"{AluOp(a.get('alu', 0)).name.lower():4s} {Buffer(ins.unit).name.lower()} dst=0x{a.get('dst', 0):06x} "
                f"src=0x{a.get('src', 0):06x} {a.get('rows', 0)}x{a.get('cols', 0)} "
                f"{DTYPES[a.get('src_dtype', 0)]}->{DTYPES[a.get('dtype', 0)]}")
        if second is Operand.IMM:
            text += f" imm={imm_value(a.get('imm', 0)):g}"
        elif second is not Operand.NONE:
            text += (f" {second.name.lower()}={Buffer(a.get('src2_buffer', 0)).name.lower()}:"
                     f"0x{a.get('src2', 0):06x}")
        return text
    return ""


def to_text(program: list[Instr], node_names: list[str]) -> str:
    """One line per instruction: index, opcode, queue, operands, tokens, and the IR node it belongs to."""
    lines = []
    for i, ins in enumerate(program):
        tokens = " ".join(f"{k}={getattr(ins, k)}" for k in ("pop_prev", "pop_next", "push_prev", "push_next")
                          if getattr(ins, k))
        lines.append(f"{i:6d} {ins.op.name:7s} {ins.queue:7s} {_describe(ins)}"
                     f"{'  [' + tokens + ']' if tokens else ''}  # {node_names[ins.node]}")
    return "\n".join(lines) + "\n"
