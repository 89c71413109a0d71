"""What a simulated run cost, per layer and in total: cycles, array utilisation, stall cycles by cause, bytes
moved per memory level, and energy by component from the target's energy table.

Stall cycles are the compute queue's (the arrays and the vector unit waiting for data, a free buffer slot or
a stored accumulator, or for the DRAM channel); the load and store queues' waits are reported apart.

Energy model: each PE operation at its kind's pJ (a MAC, or an adder PE's add/subtract), plus its register
traffic (the stationary weight's bytes at register_pj_per_byte, and a read and a write of its partial-sum
register at psum_register_pj_per_access); each vector
element at vector_op_pj; each buffer byte read or written at that buffer's pJ/byte; DRAM bytes at the read
and write pJ/byte; host-run layers at the host CPU's figures (hwsim/roofline.py). No leakage or clock power.
"""

from collections import defaultdict
from typing import Any

from hwsim.accel.isa import DTYPES, KINDS, Instr, Opcode
from hwsim.accel.program import AccelProgram
from hwsim.accel.timing import ITEM, Timeline
from targets import cite_energy, energy_record
from targets.accel import AccelEnergy, AccelSpec

COMPUTE = ("array", "registers", "vector", "host_compute")  # the rest moves data: SRAM, DRAM, host memory


def _level(key: str) -> tuple[str, str]:
    """A traffic key ("dram:r", "w:weight", ...) as (memory level, "read" or "write")."""
    a, b = key.split(":")
    if a == "dram":
        return "dram", "read" if b == "r" else "write"
    return b, "read" if a == "r" else "write"


def _ops(ins: Instr) -> int:
    a = ins.args
    return a.get("valid", 0) * a.get("tn", 0) * a.get("tk", 0)


def _register_pj(ins: Instr, e: AccelEnergy) -> float:
    """Register energy per PE operation: the weight's bytes (packed bits on adder PEs) and a read and a write
    of the partial-sum register."""
    a = ins.args
    kind, wdtype = KINDS[a.get("kind", 0)], DTYPES[a.get("wgt_dtype", 0)]
    wbytes = (1 / 8 if kind == "sign" else 1 / 4) if wdtype == "uint8" and kind in ("sign", "ternary") else ITEM[wdtype]
    return wbytes * e.register_pj_per_byte + 2 * e.psum_register_pj_per_access


def summarise(program: AccelProgram, timeline: Timeline) -> dict[str, Any]:
    """Per-layer rows and totals, every latency marked `simulated`."""
    spec: AccelSpec = program.target.accel
    e = spec.energy
    mhz = spec.clock_mhz
    rows = []
    totals: dict[str, Any] = {k: defaultdict(int) for k in ("bytes", "energy_pj", "stalls", "waits", "busy", "ops")}
    for plan in program.layers:
        idx = range(plan.first, plan.last)
        nbytes: dict[str, int] = defaultdict(int)
        energy: dict[str, float] = defaultdict(float)
        stalls: dict[str, int] = defaultdict(int)
        waits: dict[str, int] = defaultdict(int)
        busy: dict[str, int] = defaultdict(int)
        ops: dict[str, int] = defaultdict(int)
        for i in idx:
            ins = program.instrs[i]
            for key, v in timeline.traffic[i].items():
                level, direction = _level(key)
                nbytes[f"{level}_{direction}"] += v
                if level == "dram":
                    energy["dram"] += v * getattr(e, f"dram_{direction}_pj_per_byte")
                else:
                    energy[f"sram_{level}"] += v * getattr(e, f"{level}_sram_pj_per_byte")
            for cause, cycles in timeline.stalls[i].items():
                if ins.queue == "compute":
                    stalls[cause] += cycles
                else:
                    waits[f"{ins.queue}: {cause}"] += cycles
            if ins.op is Opcode.GEMM:
                array = spec.arrays[ins.unit]
                n_ops = _ops(ins)
                ops[array.name] += n_ops
                busy[array.name] += timeline.end[i] - timeline.start[i]
                energy["array"] += n_ops * e.op_pj(array.pe, KINDS[ins.args.get("kind", 0)])
                energy["registers"] += n_ops * _register_pj(ins, e)
            elif ins.op is Opcode.ALU:
                n_el = ins.args.get("rows", 0) * ins.args.get("cols", 0)
                ops["vector"] += n_el
                busy["vector"] += timeline.end[i] - timeline.start[i]
                energy["vector"] += n_el * e.vector_op_pj
            elif ins.op is Opcode.HOST:
                compute, memory = program.host_pj.get(plan.index, (0.0, 0.0))
                energy["host_compute"] += compute
                energy["host_memory"] += memory
                busy["host"] += timeline.end[i] - timeline.start[i]
        starts = [timeline.start[i] for i in idx]
        cycles = (max(timeline.end[i] for i in idx) - min(starts)) if starts else 0
        util = {name: round(ops[name] / (cycles * a.pes), 4) for name, a in ((a.name, a) for a in spec.arrays)
                if ops.get(name) and cycles}
        rows.append({"index": plan.index, "name": plan.name, "op": plan.op, "unit": plan.unit, "detail": plan.detail,
                     "instructions": len(idx), "cycles": cycles, "busy_cycles": dict(busy), "utilisation": util,
                     "stall_cycles": dict(stalls), "queue_waits": dict(waits), "bytes": dict(nbytes),
                     "energy_pj": {k: round(v, 1) for k, v in energy.items()}})
        for name, d in (("bytes", nbytes), ("energy_pj", energy), ("stalls", stalls), ("waits", waits),
                        ("busy", busy), ("ops", ops)):
            for k, v in d.items():
                totals[name][k] += v
    cycles = timeline.cycles
    energy_total = sum(totals["energy_pj"].values())
    table = {**energy_record(program.target), "host_layers": energy_record(program.host)}
    compute = sum(v for k, v in totals["energy_pj"].items() if k in COMPUTE)
    return {
        "provenance": "simulated",
        "model": f"hwsim cycle-approximate accelerator model, targets/{program.target.name}.toml",
        "clock_mhz": mhz,
        "cycles": cycles,
        "latency_ms": round(cycles / (mhz * 1e3), 6),
        "instructions": len(program.instrs),
        "utilisation": {a.name: round(totals["ops"][a.name] / (cycles * a.pes), 4) if cycles else 0.0
                        for a in spec.arrays},
        "busy_cycles": dict(totals["busy"]),
        "stall_cycles": dict(sorted(totals["stalls"].items())),
        "queue_waits": dict(sorted(totals["waits"].items())),
        "bytes": dict(sorted(totals["bytes"].items())),
        "energy_uj": round(energy_total * 1e-6, 4),
        "energy_pj_by_component": {k: round(v, 1) for k, v in sorted(totals["energy_pj"].items())},
        "energy_pj": {"compute": round(compute, 1), "memory": round(energy_total - compute, 1)},
        "energy_source": cite_energy(table),
        "energy_table": table,
        "layers": rows,
    }
