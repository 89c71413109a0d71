"""Roofline latency estimates for targets nothing here can run on (a GPU when none is present), and for the
host CPU of an accelerator (the ops the accelerator lacks).

Each IR node costs max(bytes moved / DRAM bandwidth, ops / peak rate); the model adds one launch overhead
per kernel the build actually launches. Assumptions, stated in the result: every node reads its inputs and
writes its outputs through DRAM (no fusion, no cache reuse: an upper bound on traffic, which matters for
small elementwise nodes that TVM fuses), constants at their stored size (packed bits for accumulate ops),
and every op at the fp32 SIMT rate, because the kernels TVM's dlight rules generate here do not use tensor
cores. Matmul ops are 2*M*N*K; accumulate ops 2*M*N*K too (decoded +-1 weights go through FMAs).
"""

from dataclasses import asdict, dataclass

import numpy as np

from hwsim.ir import Graph, Node, Op, OpGroup
from targets import Target

ASSUMPTIONS = ("unfused: each IR node reads its inputs and writes its outputs in DRAM; fp32 SIMT rate for all "
               "ops (no tensor cores in these kernels); one launch overhead per kernel launch of the build")


@dataclass(frozen=True)
class NodeEstimate:
    node: str
    op: str
    ops: int
    bytes: int
    ms: float
    bound: str  # "memory" or "compute"


def node_ops(n: Node) -> int:
    out = n.outputs[0].type
    if n.op is Op.MATMUL:
        return 2 * out.size * n.inputs[0].type.shape[-1]
    if n.op in OpGroup.ACCUMULATE:
        return 2 * out.size * n.attrs["k"]
    return sum(v.type.size for v in n.outputs)


def node_bytes(n: Node) -> int:
    return sum(v.type.nbytes for v in n.inputs) + sum(v.type.nbytes for v in n.outputs)


def cpu_node_seconds(n: Node, spec: Target) -> float:
    """One IR node on a CPU target, all its cores: max(bytes / DRAM bandwidth, ops / peak fp32 FMA rate)."""
    cpu = spec.cpu
    if cpu is None:
        raise ValueError(f"{spec.name} is not a CPU target")
    peak = (spec.tvm.num_cores or 1) * cpu.fma_pipes * (cpu.vector_bits // 32) * 2 * cpu.clock_ghz * 1e9
    return max(node_bytes(n) / (cpu.dram_bandwidth_gbs * 1e9), node_ops(n) / peak)


def cpu_node_pj(n: Node, spec: Target) -> float:
    """Energy of one IR node on a CPU target: an fp32 FMA per two ops, and every byte through DRAM."""
    return node_ops(n) / 2 * spec.energy.fp32_fma_pj + node_bytes(n) * spec.energy.dram_pj_per_byte


def estimate_gpu(graph: Graph, spec: Target, launches: int) -> dict:
    """The whole graph on `spec` (a GPU target): total and the ten most expensive nodes."""
    gpu = spec.gpu
    if gpu is None:
        raise ValueError(f"{spec.name} is not a GPU target")
    bandwidth = gpu.dram_bandwidth_gbs * 1e9  # bytes/s
    rate = gpu.fp32_tflops * 1e12  # ops/s
    rows = []
    for n in graph.nodes:
        if n.op in (Op.RESHAPE,):  # a view: no kernel, no traffic
            continue
        ops, moved = node_ops(n), node_bytes(n)
        mem_s, compute_s = moved / bandwidth, ops / rate
        rows.append(NodeEstimate(n.name, n.op.name, ops, moved, max(mem_s, compute_s) * 1e3,
                                 "memory" if mem_s >= compute_s else "compute"))
    kernels_ms = float(sum(r.ms for r in rows))
    launch_ms = launches * gpu.launch_overhead_us * 1e-3
    top = sorted(rows, key=lambda r: -r.ms)[:10]
    return {"provenance": "estimated", "model": f"roofline from targets/{spec.name}.toml",
            "assumptions": ASSUMPTIONS, "median_ms": round(kernels_ms + launch_ms, 4),
            "kernels_ms": round(kernels_ms, 4), "launch_ms": round(launch_ms, 4), "launches": launches,
            "bytes": int(np.sum([r.bytes for r in rows])), "ops": int(np.sum([r.ops for r in rows])),
            "top_nodes": [asdict(r) | {"ms": round(r.ms, 6)} for r in top]}
