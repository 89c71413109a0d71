"""`hwsim compile --target <accelerator>`: lower the graph to an instruction stream, simulate its timing,
run it functionally on the simulated schedule, and check the outputs against the reference interpreter
and onnxruntime. Writes the program as text (program.txt) and binary (program.bin); the manifest holds the
simulation, marked `simulated`.

The orchestration lives with the compiler: the simulator (hwsim/accel) reads an instruction stream and imports
no compiler code.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from codegen.accel.lower import lower
from hwsim import interp
from hwsim.accel import functional, isa
from hwsim.accel.program import AccelProgram
from hwsim.accel.stats import summarise
from hwsim.accel.timing import simulate
from hwsim.artifacts import sha256_file
from hwsim.ir import Graph
from hwsim.precision import Reference, verify_outputs
from targets import Target


def program_text(program: AccelProgram) -> str:
    """A header (DRAM layout, where each layer runs) and then one line per instruction."""
    lines = [f"# hwsim accelerator program for {program.target.name}: {len(program.instrs)} instructions, "
             f"{program.dram_bytes} bytes of DRAM", "# DRAM:"]
    seen: set[tuple[int, str]] = set()
    for t in sorted(program.tensors.values(), key=lambda t: (t.addr, t.name)):
        if (t.addr, t.name) in seen:
            continue
        seen.add((t.addr, t.name))
        lines.append(f"#   0x{t.addr:08x} {t.nbytes:10d} B  {t.kind:10s} {t.dtype}{list(t.shape)}  {t.name}")
    lines.append("# layers:")
    for p in program.layers:
        lines.append(f"#   {p.index:4d} {p.op:18s} {p.unit:12s} {p.name}{'  -- ' + p.detail if p.detail else ''}")
    return "\n".join(lines) + "\n" + isa.to_text(program.instrs, program.node_names())


def build_accel(graph: Graph, spec: Target, tmp: Path, feeds: dict[str, np.ndarray], ref: Reference, seed: int,
                timed: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    """The accelerator-specific part of the manifest; raises VerificationError on a mismatch."""
    program = timed("tiling and lowering to accelerator instructions", lambda: lower(graph, spec))
    (tmp / "program.txt").write_text(program_text(program))
    (tmp / "program.bin").write_bytes(isa.encode(program.instrs))
    t0 = time.perf_counter()
    timeline = timed("simulating cycles", lambda: simulate(program.instrs, spec.accel, program.host_cycles))
    sim_seconds = time.perf_counter() - t0
    got = timed("running the program functionally", lambda: functional.run(program, timeline, feeds))
    rows = verify_outputs(ref, got, interp.run(graph, feeds), f"functional simulation of {spec.name}")
    simulation = summarise(program, timeline)
    simulation["simulator_seconds"] = round(sim_seconds, 3)
    where = f"hwsim functional model of {spec.name} (instructions run in their simulated order)"
    return {
        "target": {"name": spec.name, "kind": spec.kind, "device": f"{spec.name} ({spec.description}); simulated"},
        "artifacts": {"program": {"file": "program.bin", "sha256": sha256_file(tmp / "program.bin")},
                      "program_text": {"file": "program.txt", "sha256": sha256_file(tmp / "program.txt")}},
        "verification": {**ref.record(), "executed_on": where, "seed": seed, "passed": True, "outputs": rows},
        "latency": {"simulated": {"provenance": "simulated", "device": spec.name, "model": simulation["model"],
                                  "median_ms": simulation["latency_ms"], "cycles": simulation["cycles"]}},
        "simulation": simulation,
        "energy": {"provenance": "simulated", "model": simulation["model"], "source": simulation["energy_source"],
                   "compute_pj": simulation["energy_pj"]["compute"], "memory_pj": simulation["energy_pj"]["memory"],
                   "table": simulation["energy_table"]},
    }
