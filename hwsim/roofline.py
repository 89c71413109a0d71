"""Roofline estimates of latency and energy on the IR, for targets this machine cannot time (a GPU without
one, an ARM board without --rpc), beside measurements where they exist, and for the host CPU of an
accelerator (the ops the accelerator lacks).

Each IR node costs max(bytes moved / DRAM bandwidth, ops / peak rate); a GPU adds one launch overhead per
kernel its build launches. Assumptions, stated in every result: each node reads its inputs and writes its
outputs through DRAM (no fusion, no cache reuse: an upper bound on traffic, which matters for the small
elementwise nodes TVM fuses), constants at their stored size (packed bits for accumulate ops), nodes computed
from constants alone (a weight's cast and transpose) folded at compile time as TVM's FoldConstant does (no
run-time cost; consumers read the folded constant, so an fp16 weight cast to fp32 is read at 4 bytes, except by
a CPU's matmuls, which read the fp16 constant itself), every op at
the fp32 rate (CPU: cores x FMA pipes x fp32 lanes x 2; GPU: the fp32 SIMT rate, since the kernels TVM's
dlight rules generate here do not use tensor cores). Matmul ops (Q8_0 ones too) are 2*M*N*K; accumulate
ops 2*M*N*K too (decoded +-1 weights go through FMAs).

Energy, from the target's own [energy] table (its node and DRAM; the result names the table): a matmul's
M*N*K MACs at its operands' MAC figure (fp32 or fp16 FMA, int8 MAC, Q8_0 too), an accumulate op's M*N*K adds of
float activations at fp32_add_pj (the weights only pick add, subtract or skip), other float ops at one FMA per two
ops, integer and boolean ops at int32_add_pj per op, data movement at no compute; every byte a node moves at
the DRAM pJ/byte (no cache reuse, as for the latency).
"""

from dataclasses import asdict, dataclass

from hwsim.ir import DType, Graph, Node, Op, OpGroup, weight_source
from targets import Target, energy_record

ASSUMPTIONS = ("unfused: each IR node reads its inputs and writes its outputs in DRAM; fp32 rate for all ops "
               "(no tensor cores in these kernels); nodes of constants alone folded at compile time (TVM "
               "FoldConstant: an fp16 weight cast to fp32 is read at 4 bytes, by CPU matmuls at 2); GPUs: one "
               "launch overhead per kernel launch of the build; "
               "energy: matmul MACs at the operands' MAC pJ, sign/ternary accumulate adds at fp32_add_pj, other "
               "float ops at one FMA per 2 ops, integer ops at int32_add_pj, data movement free, every byte moved "
               "at dram_pj_per_byte")
MOVES = OpGroup.LAYOUT | {Op.CONCAT, Op.SPLIT, Op.SLICE, Op.GATHER, Op.GATHER_ELEMENTS, Op.GATHER_ND,
                          Op.BROADCAST_TO}  # no arithmetic: memory energy only


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
    if n.op in (Op.MATMUL, Op.Q8_MATMUL):
        return 2 * out.size * n.inputs[0].type.shape[-1]
    if n.op in OpGroup.ACCUMULATE:
        return 2 * out.size * n.attrs["k"]
    return sum(v.type.size for v in n.outputs)


def node_bytes(n: Node) -> int:
    """Bytes a node reads and writes; a gather reads only the rows it selects (an embedding lookup does not
    stream the whole table)."""
    out = sum(v.type.nbytes for v in n.outputs)
    if n.op is Op.GATHER:
        return sum(v.type.nbytes for v in n.inputs[1:]) + 2 * out
    return sum(v.type.nbytes for v in n.inputs) + out


def _rates(spec: Target) -> tuple[float, float]:
    """(DRAM bytes/s, peak fp32 ops/s) of a CPU or GPU target."""
    if spec.gpu is not None:
        return spec.gpu.dram_bandwidth_gbs * 1e9, spec.gpu.fp32_tflops * 1e12
    if spec.cpu is not None:
        cpu = spec.cpu
        cores = spec.tvm.num_cores or 1
        return cpu.dram_bandwidth_gbs * 1e9, cores * cpu.fma_pipes * (cpu.vector_bits // 32) * 2 * cpu.clock_ghz * 1e9
    raise ValueError(f"{spec.name} is neither a CPU nor a GPU target")


def node_seconds(n: Node, spec: Target) -> float:
    bandwidth, rate = _rates(spec)
    return max(node_bytes(n) / bandwidth, node_ops(n) / rate)


def _compute_pj(n: Node, spec: Target) -> float:
    e, ops = spec.energy, node_ops(n)
    if n.op is Op.MATMUL:
        dtypes = {v.type.dtype for v in n.inputs}
        mac = (e.fp16_fma_pj if dtypes == {DType.FLOAT16} else e.int8_mac_pj if dtypes <= {DType.INT8, DType.UINT8}
               else e.fp32_fma_pj)
        return ops / 2 * mac
    if n.op is Op.Q8_MATMUL:
        return ops / 2 * e.int8_mac_pj
    if n.op in OpGroup.ACCUMULATE:
        return ops / 2 * e.fp32_add_pj
    if n.op in MOVES:
        return 0.0
    dtype = n.outputs[0].type.dtype
    if not dtype.is_float:
        return ops * e.int32_add_pj
    return ops / 2 * (e.fp16_fma_pj if dtype is DType.FLOAT16 else e.fp32_fma_pj)


def node_pj(n: Node, spec: Target) -> tuple[float, float]:
    """(compute, memory) pJ of one IR node on a CPU or GPU target, from its energy table (see the module doc)."""
    return _compute_pj(n, spec), node_bytes(n) * spec.energy.dram_pj_per_byte


def folded_at_compile_time(graph: Graph) -> set[int]:
    """Ids of the nodes whose inputs are all constants or outputs of such nodes: TVM's FoldConstant computes
    them when it builds, so they never run."""
    const_ids: set[int] = set()
    folded: set[int] = set()
    for n in graph.nodes:
        if n.inputs and all(v.is_const or id(v) in const_ids for v in n.inputs):
            folded.add(id(n))
            const_ids.update(id(v) for v in n.outputs)
    return folded


def estimate(graph: Graph, spec: Target, launches: int = 0) -> dict:
    """The whole graph on `spec` (a CPU or GPU target): latency, energy (with the table it used), and the ten
    most expensive nodes."""
    bandwidth, rate = _rates(spec)
    rows, compute_pj, memory_pj = [], 0.0, 0.0
    folded = folded_at_compile_time(graph)
    for n in graph.nodes:
        if n.op is Op.RESHAPE or id(n) in folded:  # a view, or computed at build time: no kernel, no traffic
            continue
        ops, moved = node_ops(n), node_bytes(n)
        if n.op is Op.MATMUL and spec.cpu is not None:  # CPU matmuls read an fp16 base's constant itself
            moved -= sum(v.type.nbytes - s.const.type.nbytes for v in n.inputs[1:]
                         if (s := weight_source(v)) is not None and s.widened)
        mem_s, compute_s = moved / bandwidth, ops / rate
        rows.append(NodeEstimate(n.name, n.op.name, ops, moved, max(mem_s, compute_s) * 1e3,
                                 "memory" if mem_s >= compute_s else "compute"))
        c, m = node_pj(n, spec)
        compute_pj, memory_pj = compute_pj + c, memory_pj + m
    kernels_ms = float(sum(r.ms for r in rows))
    launch_ms = launches * spec.gpu.launch_overhead_us * 1e-3 if spec.gpu is not None else 0.0
    top = sorted(rows, key=lambda r: -r.ms)[:10]
    return {"provenance": "estimated", "model": f"roofline from targets/{spec.name}.toml",
            "assumptions": ASSUMPTIONS, "median_ms": float(f"{kernels_ms + launch_ms:.6g}"),
            "kernels_ms": float(f"{kernels_ms:.6g}"), "launch_ms": float(f"{launch_ms:.6g}"), "launches": launches,
            "bytes": int(sum(r.bytes for r in rows)), "ops": int(sum(r.ops for r in rows)),
            "energy_pj": {"compute": round(compute_pj, 1), "memory": round(memory_pj, 1)},
            "energy_table": energy_record(spec),
            "top_nodes": [asdict(r) | {"ms": round(r.ms, 6)} for r in top]}


def estimate_gpu(graph: Graph, spec: Target, launches: int) -> dict:
    if spec.gpu is None:
        raise ValueError(f"{spec.name} is not a GPU target")
    return estimate(graph, spec, launches)
