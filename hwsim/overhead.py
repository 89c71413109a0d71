"""The prefill cost of an unmerged adapter branch over its base layer: LoRDBA (two sign accumulations) and
fp16 LoRA (two fp16 matmuls), each r, on `tokens` x `d`, built by hwsim for the host CPU and measured in
interleaved rounds. Shared by bench/kernels.py and the comparison report, so both report the same figure.
"""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hwsim.ir import Graph


def interleaved(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median over `rounds` of each case's per-round median, the cases taking turns within a round, so a
    burst of load from other jobs hits all of them rather than one. The pause before each case lets the
    previous runtime's spinning worker threads (TVM, OpenMP, onnxruntime) go to sleep first."""
    from rich.progress import Progress

    samples: dict[str, list[float]] = {name: [] for name in cases}
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=rounds * len(cases))
        for _ in range(rounds):
            for name, measure in cases.items():
                time.sleep(0.05)
                samples[name].append(measure())
                progress.advance(task)
    return {name: float(np.median(v)) for name, v in samples.items()}


PREFILL_CASES = (("base", "none", True), ("lordba", "lordba", False), ("lora-fp16", "lora-fp16", False),
                 ("base+lordba", "lordba", True), ("base+lora-fp16", "lora-fp16", True))


def prefill_graphs(tokens: int, d: int, r: int, base_dtype: str = "float32") -> "dict[str, Graph]":
    """The base layer alone; each branch alone, added onto a given base output (its whole extra cost); and
    base + branch in one graph. A branch costs a few % of a layer, less than the run-to-run noise of the
    layer, so the branch-alone time is the figure and the difference a cross-check. `base_dtype` float16
    gives the GPU's fp16 base layer."""
    from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
    from models.formats import Lordba

    rng = np.random.default_rng(0)
    f32, bt = DType.FLOAT32, DType(base_dtype)
    x = Value("x", TensorType((tokens, d), f32))
    w = Value.const("w", (rng.standard_normal((d, d)) / np.sqrt(d)).astype(bt.numpy))
    a, b = rng.standard_normal((r, d)) * 0.02, rng.standard_normal((d, r)) * 0.02
    lordba = Lordba.fit(a, b, 2.0).pack()

    def graph(branch: str, with_base: bool) -> Graph:
        base = Value("base", TensorType((tokens, d), f32))
        nodes = []
        if with_base and bt is f32:
            nodes = [Node(Op.MATMUL, [x, w], [base])]
        elif with_base:  # fp16 weights and activations, fp32 out
            xb, yb = Value("xb", TensorType((tokens, d), bt)), Value("yb", TensorType((tokens, d), bt))
            nodes = [Node(Op.CAST, [x], [xb], {"to": bt}), Node(Op.MATMUL, [xb, w], [yb]),
                     Node(Op.CAST, [yb], [base], {"to": f32})]
        if branch == "none":
            return Graph(branch, [x], [base], nodes)
        y, out = Value("y", TensorType((tokens, d), f32)), Value("out", TensorType((tokens, d), f32))
        if branch == "lordba":
            h = Value("h", TensorType((tokens, r), f32))
            c = {k_: Value.const(k_, v) for k_, v in lordba.items()}
            nodes += [
                Node(Op.SIGN_ACCUMULATE, [x, c["signs_A"], c["v"], c["mu"]], [h], {"k": d, "pre": 1, "post": 1}),
                Node(Op.SIGN_ACCUMULATE, [h, c["signs_B"], c["u"]], [y], {"k": r, "pre": 0, "post": 1})]
        else:  # fp16 LoRA: x -> fp16, two fp16 matmuls (fp32 accumulation), back to fp32, scaled
            xh, h, yh = (Value(nm, TensorType(s, DType.FLOAT16)) for nm, s in
                         (("xh", (tokens, d)), ("h", (tokens, r)), ("yh", (tokens, d))))
            y32 = Value("y32", TensorType((tokens, d), f32))
            nodes += [Node(Op.CAST, [x], [xh], {"to": DType.FLOAT16}),
                      Node(Op.MATMUL, [xh, Value.const("a", a.T.astype(np.float16))], [h]),
                      Node(Op.MATMUL, [h, Value.const("b", b.T.astype(np.float16))], [yh]),
                      Node(Op.CAST, [yh], [y32], {"to": f32}),
                      Node(Op.MUL, [y32, Value.const("s", np.array(2.0, np.float32))], [y])]
        nodes.append(Node(Op.ADD, [base, y], [out]))
        return Graph(branch, [x] if with_base else [x, base], [out], nodes)

    return {name: graph(branch, with_base) for name, branch, with_base in PREFILL_CASES}


def prefill_cases(tokens: int, d: int, r: int, threads: int) -> dict[str, Callable[[], float]]:
    """Each prefill graph (see prefill_graphs), through hwsim's pass pipeline (which fuses the branch's final
    add into its accumulate kernel) and compiled for the host CPU, as a measurement."""
    import tvm
    from tvm import relax

    from codegen import host
    from codegen.relax_lower import to_relax
    from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
    from targets import load_target

    target = tvm.target.Target({**host.tvm_target(load_target("host")).export(), "num-cores": threads})
    rng = np.random.default_rng(1)
    xs, base_out = (rng.standard_normal((tokens, d)).astype(np.float32) for _ in range(2))
    out = {}
    for name, graph in prefill_graphs(tokens, d, r).items():
        run_pipeline(graph, DEFAULT_PIPELINE)
        vm = relax.VirtualMachine(host.build(to_relax(graph, target), target), tvm.cpu())
        inputs = [xs, base_out][:len(graph.inputs)]
        out[name] = lambda vm=vm, inputs=inputs: float(np.median(host.time_ms(vm, inputs, repeat=5, min_total_s=0)))
    return out


def branch_overhead(tokens: int, d: int, r: int, threads: int, rounds: int = 7,
                    extra: dict[str, Callable[[], float]] | None = None) -> dict[str, Any]:
    """Median ms of the base layer and of each branch alone, their ratios, and the whole-layer cross-check;
    `extra` measurements (e.g. another runtime's base layer) take their turns in the same rounds."""
    from hwsim.api import cpu_name

    pre = interleaved({**prefill_cases(tokens, d, r, threads), **(extra or {})}, rounds)
    return {"extra_ms": {k: pre[k] for k in extra or {}},
            "provenance": "measured", "device": f"host: {cpu_name()}, {threads} threads", "tokens": tokens, "d": d,
            "r": r, "rounds": rounds, "base_ms": pre["base"], "lordba_branch_ms": pre["lordba"],
            "lora_fp16_branch_ms": pre["lora-fp16"], "lordba_overhead": pre["lordba"] / pre["base"],
            "lora_fp16_overhead": pre["lora-fp16"] / pre["base"],
            "base_plus_lordba_ms": pre["base+lordba"], "base_plus_lora_fp16_ms": pre["base+lora-fp16"],
            "lordba_overhead_by_difference": pre["base+lordba"] / pre["base"] - 1,
            "lora_fp16_overhead_by_difference": pre["base+lora-fp16"] / pre["base"] - 1}
