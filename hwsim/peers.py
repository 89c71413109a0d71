"""The accelerator model's validation peers: SCALE-Sim 3.0.0 (cycles) and ZigZag 3.9.1 (energy), each run on a
dense GEMM, and hwsim run on the same GEMM with an accelerator description that matches the peer's
configuration. bench/accel_peers.py tabulates them; tests check a few small GEMMs.
"""

import contextlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = COLS = 32

# ZigZag tpu_like.yaml per-access costs, as pJ per byte: MAC 0.04 pJ; rf_128B (weights, in the PEs) 0.095 pJ per
# 8-bit access; rf_2B (partial sums, in the PEs) 0.021 pJ per access; sram_2MB (inputs, outputs) 416.16 pJ read /
# 378.4 pJ write per 2048-bit access; DRAM 700 / 750 pJ per 64-bit access.
ZIGZAG_ENERGY = {"int8_mac_pj": 0.04, "register_pj_per_byte": 0.095, "psum_register_pj_per_access": 0.021,
                 "weight_sram_pj_per_byte": 0.095,
                 "activation_sram_pj_per_byte": 416.16 / 256, "accumulator_sram_pj_per_byte": 416.16 / 256,
                 "dram_read_pj_per_byte": 700 / 8, "dram_write_pj_per_byte": 750 / 8}


NOT_MODELLED_PJ = 1e-9  # a figure the peer does not model: negligible (target files take no zero)


def accel_toml(dataflow: str, act_kib: int, wgt_kib: int, acc_kib: int, bandwidth: float, energy: dict,
               partial_sums: str = "accumulator", rows: int = ROWS, cols: int = COLS, staging: str = "tiles",
               channels: str = "shared", prefetch: str = "in_order") -> str:
    """An accelerator file with one `rows` x `cols` int8 MAC array (partial-sum policy `partial_sums`, staging
    `staging`, DRAM `channels` and `prefetch`: see targets/accel.py); energy figures not given are negligible."""
    e = {"fp16_mac_pj": 1.0, "int8_mac_pj": 0.04, **{k: NOT_MODELLED_PJ for k in (
        "sign_add_pj", "ternary_add_pj", "vector_op_pj", "register_pj_per_byte", "psum_register_pj_per_access",
        "weight_sram_pj_per_byte",
        "activation_sram_pj_per_byte", "accumulator_sram_pj_per_byte", "dram_read_pj_per_byte",
        "dram_write_pj_per_byte")}, **energy}
    lines = "\n".join(f"{k} = {v}" for k, v in e.items())
    cited = {k: "not modelled by the peer: negligible" for k in e} | {
        "fp16_mac_pj": "placeholder: the peer's GEMMs are int8", "int8_mac_pj": "ZigZag 3.9.1 MAC unit_energy"} | {
        k: "the caller's peer table (ZIGZAG_ENERGY: ZigZag tpu_like.yaml)" for k in energy}
    sources = "\n".join(f'{k} = "{v}"' for k, v in cited.items())
    return f"""name = "peer"
kind = "accel"
description = "a {rows}x{cols} {dataflow} int8 array matching a peer's configuration"
clock_mhz = 1000.0
host = "cortex-a76"
[arrays.mac]
rows = {rows}
cols = {cols}
dataflow = "{dataflow}"
pe = "mac"
kinds = ["int8"]
partial_sums = "{partial_sums}"
staging = "{staging}"
[buffers.weight]
kib = {wgt_kib}
banks = 1
bytes_per_cycle = 1024
[buffers.activation]
kib = {act_kib}
banks = 1
bytes_per_cycle = 1024
[buffers.accumulator]
kib = {acc_kib}
banks = 1
bytes_per_cycle = 4096
[vector]
lanes = 32
ops = ["ADD"]
[dram]
bandwidth_bytes_per_cycle = {bandwidth}
latency_cycles = 0
channels = "{channels}"
prefetch = "{prefetch}"
[area]
mac_pe_units = 1.0
adder_pe_units = 0.45
sram_units_per_kib = 1.6
[energy]
table = "peer configuration"
memory = "peer DRAM"
process_nm = 45
{lines}
[energy.sources]
process_nm = "peer configuration"
{sources}
"""


def hwsim_gemm(m: int, k: int, n: int, toml: str) -> dict:
    """Lower and simulate one int8 GEMM (x [m, k] @ W [k, n]) on the accelerator described by `toml`."""
    from codegen.accel.lower import lower
    from hwsim.accel.stats import summarise
    from hwsim.accel.timing import simulate
    from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
    from targets import load_target

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "peer.toml"
        path.write_text(toml)
        spec = load_target(str(path))
    x, y = Value("x", TensorType((m, k), DType.INT8)), Value("y", TensorType((m, n), DType.INT8))
    graph = Graph("gemm", [x], [y], [Node(Op.MATMUL, [x, Value.const("w", np.zeros((k, n), np.int8))], [y])])
    t0 = time.perf_counter()
    program = lower(graph, spec)
    timeline = simulate(program.instrs, spec.accel, program.host_cycles)
    summary = summarise(program, timeline)
    return {"compute_cycles": summary["busy_cycles"]["mac"], "total_cycles": summary["cycles"],
            "dram_bytes": summary["bytes"].get("dram_read", 0) + summary["bytes"].get("dram_write", 0),
            "energy_pj": summary["energy_pj_by_component"], "seconds": time.perf_counter() - t0,
            "tiles": program.layers[0].detail}


SCALESIM_CFG = """[general]
run_name = hwsim_peer
[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {kb}
FilterSramSzkB : {kb}
OfmapSramSzkB : {kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {bw}
Dataflow : {df}
ReadRequestBuffer : 32
WriteRequestBuffer : 32
[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : {bw}
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : {bw}
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2
[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40
[run_presets]
InterfaceBandwidth : USER
UseRamulatorTrace : False
"""


def scalesim_gemm(m: int, k: int, n: int, df: str, sram_kb: int, bandwidth: int, rows: int = ROWS,
                  cols: int = COLS) -> dict:
    """SCALE-Sim on one GEMM: a `rows` x `cols` array, dataflow `df` (os, ws), `sram_kb` KB for each operand,
    `bandwidth` words (bytes) per cycle on each operand's DRAM interface. Compute cycles are its total minus
    its stalls; `total_cycles` is its compute report's "Total Cycles" (from the first demand to the last, after
    the initial fill and before the final drain), `overall_cycles` its "Total Cycles (incl. prefetch)" (from the
    first DRAM read to the last DRAM write), `dram_bytes` its DRAM reads and writes (one-byte words)."""
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory() as d:
        Path(d, "scale.cfg").write_text(SCALESIM_CFG.format(rows=rows, cols=cols, kb=sram_kb, bw=bandwidth, df=df))
        Path(d, "topo.csv").write_text(f"Layer Name, M, N, K,\ng, {m}, {n}, {k},\n")  # trailing commas: required
        Path(d, "layout.csv").write_text("Layer name, IFMAP SRAM Block Size, IFMAP SRAM Bank Number, "
                                         "FILTER SRAM Block Size, FILTER SRAM Bank Number,\ng, 1, 1, 1, 1,\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False, config=f"{d}/scale.cfg", topology=f"{d}/topo.csv",
                           layout=f"{d}/layout.csv", input_type_gemm=True)
            sim.run_scale(top_path=d)
        layer = sim.runner.single_layer_sim_object_list[0]
        overall, total, stalls, *_ = layer.get_compute_report_items()
        detail = layer.get_detail_report_items()
        reads = {"ifmap": int(detail[11]), "filter": int(detail[14])}
        return {"compute_cycles": int(total - stalls), "total_cycles": int(total), "stall_cycles": int(stalls),
                "overall_cycles": int(overall), "dram_read_bytes": reads, "dram_write_bytes": int(detail[17]),
                "dram_bytes": sum(reads.values()) + int(detail[17]), "seconds": time.perf_counter() - t0}


def zigzag_gemm(m: int, k: int, n: int) -> dict:
    """ZigZag on one int8 GEMM: tpu_like.yaml and its mapping, opt=latency; energy in pJ and its parts."""
    import yaml
    import zigzag
    from zigzag.api import get_hardware_performance_zigzag

    logging.disable(logging.CRITICAL)
    inputs = os.path.join(os.path.dirname(zigzag.__file__), "inputs")
    layer = {"id": 0, "name": "g", "operator_type": "Gemm", "equation": "O[b][k]+=W[k][c]*I[b][c]",
             "dimension_relations": [], "loop_dims": ["B", "K", "C"], "loop_sizes": [m, n, k],
             "operand_precision": {"W": 8, "I": 8, "O": 16, "O_final": 8}, "operand_source": {"I": 0, "W": 0}}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "w.yaml").write_text(yaml.safe_dump([layer]))
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            energy, latency, cmes = get_hardware_performance_zigzag(
                workload=f"{d}/w.yaml", accelerator=f"{inputs}/hardware/tpu_like.yaml",
                mapping=f"{inputs}/mapping/tpu_like.yaml", opt="latency", dump_folder=d, pickle_filename=f"{d}/c.p")
        cme = cmes[0][1][0][0]
        mem = {str(op): [float(x) for x in levels] for op, levels in cme.mem_energy_breakdown.items()}
        return {"energy_pj": float(energy), "latency_cycles": float(latency), "mac_pj": float(cme.mac_energy),
                "memory_pj": mem, "seconds": time.perf_counter() - t0}
