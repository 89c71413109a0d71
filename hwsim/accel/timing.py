"""Cycle-approximate execution of an instruction stream: three in-order queues (load, compute, store)
overlapping as far as their dependency tokens allow, one DRAM channel shared by loads and stores, PE
arrays timed by the systolic fold formulas, host calls and barriers draining every queue.

Timing rules (cycles of the accelerator clock):
- LOAD: DRAM latency + bytes / bandwidth; STORE: bytes / bandwidth. Each transfer holds its DRAM channel
  for its bytes / bandwidth, in the first free interval after it is ready: one channel that loads and
  stores contend for, or one per buffer (dram.channels = "per_buffer", SCALE-Sim's per-operand ports).
- Window staging (LOAD `stream`): a WINDOW_FILL is a DRAM transfer into its buffer's window; with
  dram.prefetch = "run_ahead" it starts when its channel is free, outside the load queue's order (SCALE-Sim
  times each prefetch from the end of the previous one), else in order like any load. A WINDOW_READ moves
  no DRAM data: it starts once the last fill of its buffer before it has arrived and lasts its bytes at
  the buffer's bytes_per_cycle; so does a WINDOW_WRITE store. A DRAIN store is the DRAM transfer, started
  once its fold's sums exist and its channel is free, beside the store queue (the write buffer keeps
  taking results while it drains).
- GEMM on an R x C array, per fold of the tile: weight-stationary m + 2R + C - 2 (R to fill the weights,
  m rows streamed, R + C - 2 of skew), output-stationary tk per K chunk plus R + C - 2 to drain on the last
  chunk; SCALE-Sim's compute cycles for the same dataflows. Weight-streaming (no SCALE-Sim counterpart): each
  fold's weights enter in one step, double-buffered behind the previous fold, so folds x m + R + C - 2 (skew
  once per instruction). At least each buffer's bytes / bytes_per_cycle (the weight port bounds streaming).
- ALU: elements / lanes.
- HOST / BARRIER: start when every queue is idle; HOST lasts its node's host-CPU estimate.
A token popped by an instruction was pushed by an earlier one (the emitter guarantees program order), so
one pass in program order resolves every start time.
"""

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field

from hwsim.accel.isa import (
    DRAIN,
    DTYPES,
    KINDS,
    LAST,
    WINDOW_FILL,
    WINDOW_READ,
    WINDOW_WRITE,
    AluOp,
    Buffer,
    Instr,
    Opcode,
    Operand,
)
from targets.accel import AccelSpec, ArraySpec

# the channel an instruction of a queue pushes to / pops from, towards its neighbours
CHANNELS = {("load", "next"): "load->compute", ("compute", "prev"): "compute->load",
            ("compute", "next"): "compute->store", ("store", "prev"): "store->compute"}
POPS = {("compute", "prev"): "load->compute", ("load", "next"): "compute->load",
        ("store", "prev"): "compute->store", ("compute", "next"): "store->compute"}
# what a queue waits for when it pops from a channel
STALL_CAUSE = {"load->compute": "waiting for loaded data", "compute->load": "waiting for a free buffer slot",
               "compute->store": "waiting for results", "store->compute": "waiting for a stored accumulator"}
ITEM = {name: size for name, size in zip(DTYPES, (4, 2, 1, 1, 4, 8, 1), strict=True)}


def gemm_cycles(array: ArraySpec, m: int, tn: int, tk: int, last: bool) -> int:
    """Compute cycles of one GEMM instruction (see the module docstring)."""
    r, c = array.rows, array.cols
    folds = math.ceil(tk / r) * math.ceil(tn / c)
    if array.dataflow == "weight_stationary":
        return folds * (m + 2 * r + c - 2)
    if array.dataflow == "weight_streaming":
        return folds * m + r + c - 2
    return tk + (r + c - 2 if last else 0)


def sram_traffic(ins: Instr, array: ArraySpec | None) -> dict[str, int]:
    """Bytes an instruction reads from (`r:`) and writes to (`w:`) each buffer, and DRAM."""
    a = ins.args
    if ins.op is Opcode.LOAD:
        rows, cols = a.get("rows", 0), a.get("cols", 0)
        per = 8 // (1 if KINDS[a.get("decode", 0)] == "sign" else 2) if a.get("decode") else 1
        sram = (rows + a.get("pad_rows", 0)) * (cols * per + a.get("pad_cols", 0)) * (
            2 if a.get("decode") else ITEM[DTYPES[a.get("dtype", 0)]])
        if a.get("stream") == WINDOW_READ:  # the array reads the window in place: its GEMM bills the reads
            return {}
        return {"dram:r": rows * cols * ITEM[DTYPES[a.get("dtype", 0)]], f"w:{Buffer(ins.unit).name.lower()}": sram}
    if ins.op is Opcode.STORE:
        rows, cols = a.get("rows", 0), a.get("cols", 0)
        if a.get("stream") == WINDOW_WRITE:  # into the write buffer: its drains bill the traffic
            return {}
        return {"dram:w": rows * cols * ITEM[DTYPES[a.get("dtype", 0)]],
                f"r:{Buffer(ins.unit).name.lower()}": rows * cols * ITEM[DTYPES[a.get("src_dtype", 0)]]}
    if ins.op is Opcode.GEMM and array is not None:
        m, tn, tk = a.get("valid", 0), a.get("tn", 0), a.get("tk", 0)
        ab, kind, wdtype = ITEM[DTYPES[a.get("inp_dtype", 0)]], KINDS[a.get("kind", 0)], DTYPES[a.get("wgt_dtype", 0)]
        packed = kind in ("sign", "ternary") and wdtype == "uint8"  # else dense or decoded to fp16
        wbytes = tn * tk // (8 if kind == "sign" else 4) if packed else tn * tk * ITEM[wdtype]
        drained = {"w:accumulator": m * tn * 4 if a.get("flags", 0) & LAST else 0}  # complete sums, once
        if array.dataflow == "output_stationary":
            return {"r:weight": wbytes, "r:activation": m * tk * ab, **drained}
        # weights once, A once per column fold; partial sums drained per row fold, or kept in the PEs
        folds_n, folds_k = math.ceil(tn / array.cols), math.ceil(tk / array.rows)
        if array.partial_sums == "pe":
            return {"r:weight": wbytes, "r:activation": folds_n * m * tk * ab, **drained}
        return {"r:weight": wbytes, "r:activation": folds_n * m * tk * ab,
                "r:accumulator": folds_k * m * tn * 4, "w:accumulator": folds_k * m * tn * 4}
    if ins.op is Opcode.ALU:
        n = a.get("rows", 0) * a.get("cols", 0)
        buf = Buffer(ins.unit).name.lower()
        out = {f"w:{buf}": n * ITEM[DTYPES[a.get("dtype", 0)]]}
        if AluOp(a.get("alu", 0)) is not AluOp.ZERO:
            out[f"r:{buf}"] = n * ITEM[DTYPES[a.get("src_dtype", 0)]]
        second = Operand(a.get("operand", 0))
        if second in (Operand.TILE, Operand.ROW):
            src2 = Buffer(a.get("src2_buffer", 0)).name.lower()
            k = n if second is Operand.TILE else a.get("cols", 0)
            out[f"r:{src2}"] = out.get(f"r:{src2}", 0) + k * ITEM[DTYPES[a.get("src2_dtype", 0)]]
        return out
    return {}


@dataclass
class Timeline:
    """Start and end cycle of every instruction, and what each waited for."""

    start: list[int]
    end: list[int]
    stalls: list[dict[str, int]]  # per instruction: cause -> cycles
    cycles: int
    traffic: list[dict[str, int]] = field(default_factory=list)


class DramChannel:
    """Busy intervals of the one DRAM channel; a transfer takes the first gap at or after it is ready."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def reserve(self, ready: int, length: int) -> int:
        i = bisect.bisect_right(self.ends, ready)
        t = ready
        while i < len(self.starts) and self.starts[i] < t + length:
            t = max(t, self.ends[i])
            i += 1
        self.starts.insert(i, t)
        self.ends.insert(i, t + length)
        return t


def duration(ins: Instr, spec: AccelSpec, traffic: dict[str, int], host_cycles: dict[int, int]) -> int:
    a = ins.args
    if ins.op is Opcode.GEMM:
        array = spec.arrays[ins.unit]
        base = gemm_cycles(array, a.get("valid", 0), a.get("tn", 0), a.get("tk", 0), bool(a.get("flags", 0) & LAST))
        bound = max((traffic.get(f"{d}:{b}", 0) / spec.buffers[b].bytes_per_cycle for b in spec.buffers
                     for d in ("r", "w")), default=0)
        return max(base, math.ceil(bound))
    if ins.op is Opcode.ALU:
        return max(1, math.ceil(a.get("rows", 0) * a.get("cols", 0) / spec.vector.lanes))
    if ins.op is Opcode.HOST:
        return host_cycles.get(ins.node, 0)
    return 0


def simulate(program: list[Instr], spec: AccelSpec, host_cycles: dict[int, int]) -> Timeline:
    n = len(program)
    start, end = [0] * n, [0] * n
    stalls: list[dict[str, int]] = [{} for _ in range(n)]
    traffic = [sram_traffic(ins, spec.arrays[ins.unit] if ins.op is Opcode.GEMM else None) for ins in program]
    free = {"load": 0, "compute": 0, "store": 0}
    pushed: dict[str, list[int]] = defaultdict(list)  # channel -> end cycle of each token's producer
    popped: dict[str, int] = defaultdict(int)
    per_buffer = spec.dram.channels == "per_buffer"
    channels: dict[int, DramChannel] = defaultdict(DramChannel)  # buffer (or 0: the shared one) -> channel
    filled: dict[int, tuple[int, int]] = {}  # buffer -> (start, end) of its last window fill
    bw, latency = spec.dram.bandwidth_bytes_per_cycle, spec.dram.latency_cycles
    barrier = 0
    for i, ins in enumerate(program):
        stream = ins.args.get("stream", 0) if ins.op is Opcode.LOAD else 0
        in_place = ins.op is Opcode.STORE and ins.args.get("stream") == WINDOW_WRITE
        drain = ins.op is Opcode.STORE and ins.args.get("stream") == DRAIN  # beside the store queue, not in it
        if stream == WINDOW_FILL and spec.dram.prefetch == "run_ahead":
            xfer = max(1, math.ceil(traffic[i].get("dram:r", 0) / bw))
            after = max(filled.get(ins.unit, (0, 0))[0], barrier)  # in order per buffer, after the last barrier
            start[i] = channels[ins.unit if per_buffer else 0].reserve(after, xfer)
            end[i] = start[i] + xfer + latency
            filled[ins.unit] = (start[i], end[i])
            continue
        if ins.queue == "sync":
            start[i] = max(free.values())
            end[i] = start[i] + duration(ins, spec, traffic[i], host_cycles)
            for q in free:
                free[q] = end[i]
            barrier = end[i]
            continue
        q = ins.queue
        base = barrier if drain else free[q]
        ready, cause = base, None
        for direction, count in (("prev", ins.pop_prev), ("next", ins.pop_next)):
            if not count:
                continue
            channel = POPS[(q, direction)]
            k = popped[channel] + count
            if k > len(pushed[channel]):
                raise ValueError(f"instruction {i} ({ins.op.name}) pops a token on {channel} that no earlier "
                                 "instruction pushes")
            t = max(pushed[channel][popped[channel]:k])
            popped[channel] = k
            if t > ready:
                ready, cause = t, STALL_CAUSE[channel]
        if stream == WINDOW_READ and filled.get(ins.unit, (0, 0))[1] > ready:
            ready, cause = filled[ins.unit][1], "waiting for a window fill"
        if cause:
            stalls[i][cause] = ready - base
        if stream == WINDOW_READ or in_place:
            rows, cols = ins.args.get("rows", 0), ins.args.get("cols", 0)
            nbytes = rows * cols * ITEM[DTYPES[ins.args.get("dtype", 0)]]
            start[i], end[i] = ready, ready + max(1, math.ceil(nbytes / spec.buffers[Buffer(ins.unit).name.lower()]
                                                                 .bytes_per_cycle))
        elif ins.op in (Opcode.LOAD, Opcode.STORE):
            nbytes = traffic[i].get("dram:r", 0) + traffic[i].get("dram:w", 0)
            xfer = max(1, math.ceil(nbytes / bw))
            begin = channels[ins.unit if per_buffer else 0].reserve(ready, xfer)
            if begin > ready:
                stalls[i]["waiting for the DRAM channel"] = begin - ready
            start[i] = begin
            end[i] = begin + xfer + (latency if ins.op is Opcode.LOAD else 0)
            if stream == WINDOW_FILL:
                filled[ins.unit] = (start[i], end[i])
        else:
            start[i] = ready
            end[i] = ready + duration(ins, spec, traffic[i], host_cycles)
        if not drain:
            free[q] = end[i]
        for direction, count in (("prev", ins.push_prev), ("next", ins.push_next)):
            if count:
                pushed[CHANNELS[(q, direction)]].extend([end[i]] * count)
    for channel, times in pushed.items():
        if len(times) != popped[channel]:
            raise ValueError(f"{len(times) - popped[channel]} token(s) pushed on {channel} are never popped")
    return Timeline(start, end, stalls, max(end, default=0), traffic)
