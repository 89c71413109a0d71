"""Kernel benchmark on the host CPU: packed sign/ternary GEMV against dense and low-bit baselines, warm and
cold cache, and the prefill overhead of an unmerged LoRDBA vs fp16 LoRA branch. Not a test: prints a table,
writes JSON.

Every contestant goes through one harness (bench/harness.py): a prepared call writing into a preallocated
output (TVM: the kernel's function; onnxruntime: I/O binding, one shared thread pool; torch: `mm(out=)`),
timed in the same Python loop, its output checked after each mode. Cold cache rotates weight copies that
together stream more than twice the last-level cache, so each call reads its weights from DRAM; the DRAM
read bandwidth is measured in the same run (a streaming read of 1 GiB, bench/harness.py) and each cold figure is also
given as weight bytes per call / time, as a fraction of it. Figures are `measured` on this machine in one
run with one thread count; compare ratios, not absolute times (the machines are shared and noisy).

    .venv/bin/python bench/kernels.py [--threads 2] [--shapes 4096x4096,11008x4096] [--out bench/results/kernels.json]
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
from harness import Contestant, Prepared, dram_read_gbs, last_level_cache_bytes

from hwsim.artifacts import write_atomic
from hwsim.overhead import branch_overhead, interleaved


def tvm_accumulate(n: int, k: int, bits: int, threads: int, algorithm: str) -> tuple[Contestant, np.ndarray]:
    """hwsim's accumulate kernel for this CPU, `lut` (what dispatch picks for a GEMV here) or `select`, on
    random signs (bits 1) or trits (bits 2); with the dense weights for the reference."""
    import tvm

    from codegen.kernels import choose_accumulate
    from codegen.kernels.accumulate import accumulate_kernel
    from models.formats.packing import pack_i2, pack_signs

    rng = np.random.default_rng(bits)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                "num-cores": threads})
    w = rng.choice([-1, 1], (n, k)) if bits == 1 else rng.integers(-1, 2, (n, k))
    packed = pack_signs(w) if bits == 1 else pack_i2(w)
    if algorithm == "select":
        func, weights = accumulate_kernel(1, n, k, "k", bits), packed
    else:
        kernel = choose_accumulate(bits, 1, n, k, target, packed)
        if kernel.algorithm != "lut":
            raise SystemExit(f"this CPU has no byte shuffle for the LUT kernel at 1x{n}x{k}")
        func, weights = kernel.func, kernel.relayout(packed)
    lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=target)
    fn = lib["k"]

    def make(copy: int):
        x = tvm.runtime.tensor(X[:, :k].copy())
        wt, y = tvm.runtime.tensor(weights.copy()), tvm.runtime.empty((1, n), "float32")
        return (lambda: fn(x, wt, y)), y.numpy

    kind = "sign" if bits == 1 else "ternary"
    return Contestant(f"hwsim {kind} {algorithm}", weights.nbytes, make), w.astype(np.float32)


def hwsim_dense(n: int, k: int, threads: int, w: np.ndarray) -> Contestant:
    """An fp32 x @ W.T layer as hwsim builds it for the host (constant weights, its CPU schedules, the Relax
    VM): one build per weight copy, since the weights are folded into the module."""
    import tvm
    from tvm import relax

    from codegen import host
    from codegen.relax_lower import to_relax
    from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
    from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
    from targets import load_target

    target = tvm.target.Target({**host.tvm_target(load_target("host")).export(), "num-cores": threads})

    def make(copy: int):
        x, y = Value("x", TensorType((1, k), DType.FLOAT32)), Value("y", TensorType((1, n), DType.FLOAT32))
        g = Graph("dense", [x], [y], [Node(Op.MATMUL, [x, Value.const("w", np.ascontiguousarray(w.T))], [y])])
        run_pipeline(g, DEFAULT_PIPELINE)
        vm = relax.VirtualMachine(host.build(to_relax(g, target), target), tvm.cpu())
        xt, out = tvm.runtime.tensor(X[:, :k].copy()), [None]

        def call() -> None:
            out[0] = vm["main"](xt)
        return call, lambda: out[0].numpy()
    return Contestant("hwsim fp32 dense", w.nbytes, make)


def torch_linear(n: int, k: int, threads: int, w: np.ndarray) -> Contestant:
    import torch

    torch.set_num_threads(threads)

    def make(copy: int):
        wt, x, y = torch.from_numpy(w.copy()), torch.from_numpy(X[:, :k].copy()), torch.empty(1, n)

        def call() -> None:
            with torch.no_grad():
                torch.mm(x, wt.t(), out=y)
        return call, y.numpy
    return Contestant("torch fp32", w.nbytes, make)


def ort_contestant(name: str, model_for_copy, k: int, n: int, weight_bytes: int, lut: bool = False,
                   tolerance: float = 1e-3) -> Contestant:
    """An onnxruntime session per weight copy (initialisers are prepacked per session), all on the one global
    thread pool, run through I/O binding into a preallocated output."""
    import onnxruntime as ort

    def make(copy: int):
        opts = ort.SessionOptions()
        opts.use_per_session_threads = False
        opts.log_severity_level = 3
        if lut:
            opts.add_session_config_entry("mlas.use_lut_gemm", "1")
        sess = ort.InferenceSession(model_for_copy().SerializeToString(), opts, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(X[:, :k].copy())
        y = ort.OrtValue.ortvalue_from_shape_and_type([1, n], np.float32)
        io.bind_ortvalue_input("x", x)
        io.bind_ortvalue_output("y", y)
        return (lambda: sess.run_with_iobinding(io)), y.numpy
    return Contestant(name, weight_bytes, make, tolerance)


def _model(node, k: int, n: int, initializers: list):
    from onnx import TensorProto, helper

    g = helper.make_graph([node], "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], initializer=initializers)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def ort_matmul(n: int, k: int, w: np.ndarray) -> Contestant:
    from onnx import helper, numpy_helper

    wt = np.ascontiguousarray(w.T)
    return ort_contestant("onnxruntime fp32 MatMul",
                          lambda: _model(helper.make_node("MatMul", ["x", "w"], ["y"]), k, n,
                                         [numpy_helper.from_array(wt, "w")]), k, n, w.nbytes)


def ort_matmul_nbits(n: int, k: int, bits: int, lut: bool = False) -> tuple[Contestant, np.ndarray]:
    """com.microsoft MatMulNBits, block 128, accuracy_level 4 (its fast CPU path, notes section 6), default
    zero point 2^(bits-1); `lut` turns on MLAS's lookup-table GEMM (`mlas.use_lut_gemm`, 2-bit weights)."""
    from onnx import helper, numpy_helper

    block = 128
    rng = np.random.default_rng(10 + bits)
    q = rng.integers(0, 1 << bits, (n, k // block, block)).astype(np.uint8)
    per = 8 // bits
    packed = np.zeros((n, k // block, block * bits // 8), np.uint8)
    for j in range(per):
        packed |= q[:, :, j::per] << (bits * j)
    scales = (rng.random((n, k // block)) * 0.01 + 0.005).astype(np.float32)
    dense = ((q.astype(np.float32) - (1 << (bits - 1))) * scales[..., None]).reshape(n, k)
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=4)
    inits = [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")]
    # accuracy_level 4 quantises the activations to int8: compare at that precision
    c = ort_contestant(f"onnxruntime MatMulNBits-{bits}{' LUT' if lut else ''}", lambda: _model(node, k, n, inits),
                       k, n, packed.nbytes + scales.nbytes, lut, tolerance=3e-2)
    return c, dense


X = np.random.default_rng(99).standard_normal((1, 16384)).astype(np.float32)


def gemv_round(n: int, k: int, threads: int, rounds: int, calls: int, llc: int, bandwidth: float) -> list[dict]:
    from rich.progress import Progress

    x64 = X[:, :k].astype(np.float64)
    sign, w_sign = tvm_accumulate(n, k, 1, threads, "lut")
    ternary, w_ternary = tvm_accumulate(n, k, 2, threads, "lut")
    select, _ = tvm_accumulate(n, k, 1, threads, "select")
    dense = np.random.default_rng(3).standard_normal((n, k)).astype(np.float32)
    entries: list[tuple[Contestant, np.ndarray]] = [(sign, w_sign), (select, w_sign), (ternary, w_ternary)]
    entries += [(hwsim_dense(n, k, threads, dense), dense), (torch_linear(n, k, threads, dense), dense),
                (ort_matmul(n, k, dense), dense)]
    for bits, lut in ((4, False), (2, False), (2, True)):
        c, w = ort_matmul_nbits(n, k, bits, lut)
        entries.append((c, w))
    prepared = {}
    with Progress(transient=True) as progress:
        task = progress.add_task(f"preparing {n}x{k} (weight copies for the cold cache)", total=len(entries))
        for c, w in entries:
            prepared[c.name] = Prepared(c, x64 @ w.T.astype(np.float64), llc)
            progress.advance(task)
    cases = {f"{name}|{mode}": (lambda p=p, mode=mode: p.measure(mode, calls))
             for name, p in prepared.items() for mode in ("warm", "cold")}
    ms = interleaved(cases, rounds)
    rows = []
    for name, p in prepared.items():
        cold = ms[f"{name}|cold"]
        rows.append({"shape": f"{n}x{k}", "contestant": name, "weight_bytes": p.c.weight_bytes,
                     "copies_cold": len(p.calls), "warm_ms": ms[f"{name}|warm"], "cold_ms": cold,
                     "cold_gbs": p.c.weight_bytes / cold / 1e6,
                     "cold_fraction_of_dram": p.c.weight_bytes / cold / 1e6 / bandwidth})
    base = {r["contestant"]: r for r in rows}
    for r in rows:
        for ref in ("onnxruntime MatMulNBits-4", "onnxruntime fp32 MatMul"):
            for mode in ("warm", "cold"):
                r[f"speedup_vs_{ref.split()[-1].lower()}_{mode}"] = base[ref][f"{mode}_ms"] / r[f"{mode}_ms"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each figure is their median")
    p.add_argument("--calls", type=int, default=50, help="timed calls per contestant, mode and round")
    p.add_argument("--shapes", default="4096x4096,11008x4096", help="GEMV shapes NxK, comma-separated")
    p.add_argument("--tokens", type=int, default=128, help="prefill tokens of the branch-overhead layer")
    p.add_argument("--d", type=int, default=4096, help="width of the branch-overhead layer (0: skip it)")
    p.add_argument("--out", type=Path, default=Path("bench/results/kernels.json"))
    args = p.parse_args()
    t = args.threads
    os.environ["TVM_NUM_THREADS"] = str(t)
    import onnxruntime.capi._pybind_state as ort_state
    from rich.console import Console
    from rich.table import Table

    from hwsim.api import cpu_name

    ort_state.set_global_thread_pool_sizes(t, 1)
    llc = last_level_cache_bytes()
    bandwidth = dram_read_gbs(t)
    print(f"DRAM read bandwidth, measured: {bandwidth:.1f} GB/s ({t} threads); last-level cache {llc >> 20} MiB")
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        print(f"building and checking the {n}x{k} GEMV contestants")
        rows += gemv_round(n, k, t, args.rounds, args.calls, llc, bandwidth)
    cpu = cpu_name()
    table = Table(title=f"GEMV, measured on {cpu}, {t} threads, median ms per call (one harness; cold = weights "
                        f"from DRAM, {bandwidth:.1f} GB/s measured)")
    for col in ("shape", "contestant", "warm ms", "cold ms", "cold GB/s", "% of DRAM BW", "x NBits-4 warm",
                "x NBits-4 cold", "x ORT fp32 cold"):
        table.add_column(col, justify="left" if col in ("shape", "contestant") else "right")
    for r in rows:
        table.add_row(r["shape"], r["contestant"], f"{r['warm_ms']:.3f}", f"{r['cold_ms']:.3f}",
                      f"{r['cold_gbs']:.1f}", f"{100 * r['cold_fraction_of_dram']:.0f}%",
                      f"{r['speedup_vs_matmulnbits-4_warm']:.2f}", f"{r['speedup_vs_matmulnbits-4_cold']:.2f}",
                      f"{r['speedup_vs_matmul_cold']:.2f}")
    Console(width=200).print(table)
    result = {"provenance": "measured", "device": f"host: {cpu}, {t} threads", "rounds": args.rounds,
              "calls": args.calls, "dram_read_gbs": bandwidth, "llc_bytes": llc, "gemv": rows}
    if args.d:
        print("building the prefill layers")
        tokens, d, rank = args.tokens, args.d, 16
        pre = branch_overhead(tokens, d, rank, t, args.rounds)
        print(f"prefill {tokens}x{d}, r={rank}: base {pre['base_ms']:.2f} ms; LoRDBA branch "
              f"{pre['lordba_branch_ms']:.2f} ms = {100 * pre['lordba_overhead']:.1f}% overhead, fp16 LoRA branch "
              f"{pre['lora_fp16_branch_ms']:.2f} ms = {100 * pre['lora_fp16_overhead']:.1f}% (by difference of whole "
              f"layers: {100 * pre['lordba_overhead_by_difference']:.1f}% and "
              f"{100 * pre['lora_fp16_overhead_by_difference']:.1f}%)")
        result["prefill"] = pre
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
