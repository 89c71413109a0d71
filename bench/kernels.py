"""Kernel benchmark on the host CPU: packed sign/ternary GEMV against dense and low-bit baselines, and the
prefill overhead of an unmerged LoRDBA vs fp16 LoRA branch. Not a test: prints a table, writes JSON.

Every figure is `measured` on this machine in one run with the same thread count; compare the ratios,
not the absolute times (the machines are shared and noisy).

    .venv/bin/python bench/kernels.py [--threads 2] [--tokens 128 --d 4096] [--out bench/results/kernels.json]
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwsim.overhead import branch_overhead, interleaved


def median_ms(fn: Callable[[], object], runs: int = 10) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def tvm_kernel(m: int, n: int, k: int, bits: int, threads: int, algorithm: str) -> Callable[[], float]:
    """One accumulate kernel as hwsim builds it for this CPU: `lut` (what dispatch picks here) or `select`.
    Checked against numpy once; returns a measurement."""
    import tvm

    from codegen.kernels import choose_accumulate
    from codegen.kernels.accumulate import accumulate_kernel
    from models.formats.packing import pack_i2, pack_signs

    rng = np.random.default_rng(0)
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": threads})
    w = rng.choice([-1, 1], (n, k)) if bits == 1 else rng.integers(-1, 2, (n, k))
    packed = pack_signs(w) if bits == 1 else pack_i2(w)
    kernel = choose_accumulate(bits, m, n, k, target, packed)
    if algorithm == "select":
        func, weights = accumulate_kernel(m, n, k, "k", bits), packed
    elif kernel.algorithm == "lut":
        func, weights = kernel.func, kernel.relayout(packed)
    else:
        raise SystemExit(f"this CPU has no byte shuffle for the LUT kernel at {m}x{n}x{k}")
    lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=target)
    x = rng.standard_normal((m, k)).astype(np.float32)
    args = [tvm.runtime.tensor(a) for a in (x, weights, np.zeros((m, n), np.float32))]
    lib["k"](*args)
    ref = x @ w.T.astype(np.float32)
    err = np.abs(args[2].numpy() - ref).max() / np.abs(ref).max()
    if err > 1e-3:
        raise SystemExit(f"{algorithm} kernel {m}x{n}x{k} is wrong: rel. error {err:.2e}")
    evaluator = lib.time_evaluator("k", tvm.cpu(), number=10, repeat=3)
    return lambda: float(np.median(evaluator(*args).results) * 1e3)


def ort_session(model, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_matmul(m: int, n: int, k: int, threads: int) -> Callable[[], float]:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                          initializer=[numpy_helper.from_array(w, "w")])
    sess = ort_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), threads)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    return lambda: median_ms(lambda: sess.run(None, {"x": x}))


def ort_matmul_nbits(m: int, n: int, k: int, bits: int, threads: int) -> Callable[[], float]:
    """com.microsoft MatMulNBits, block 128, accuracy_level 4 (the fast CPU path, notes section 6)."""
    from onnx import TensorProto, helper, numpy_helper

    block = 128
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1 << bits, (n, k // block, block)).astype(np.uint8)
    per = 8 // bits
    packed = np.zeros((n, k // block, block * bits // 8), np.uint8)
    for j in range(per):
        packed |= q[:, :, j::per] << (bits * j)
    scales = (rng.random((n, k // block)) * 0.01).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=4)
    g = helper.make_graph([node], "nbits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                          initializer=[numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    sess = ort_session(model, threads)
    x = rng.standard_normal((m, k)).astype(np.float32)
    return lambda: median_ms(lambda: sess.run(None, {"x": x}))


def torch_linear(m: int, n: int, k: int, threads: int) -> Callable[[], float]:
    import torch

    torch.set_num_threads(threads)
    w, x = torch.randn(n, k), torch.randn(m, k)

    def measure() -> float:
        with torch.no_grad():
            return median_ms(lambda: torch.nn.functional.linear(x, w))
    return measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each figure is their median")
    p.add_argument("--tokens", type=int, default=128, help="prefill tokens of the branch-overhead layer")
    p.add_argument("--d", type=int, default=4096, help="width of the branch-overhead layer")
    p.add_argument("--out", type=Path, default=Path("bench/results/kernels.json"))
    args = p.parse_args()
    t = args.threads
    os.environ["TVM_NUM_THREADS"] = str(t)
    rows = []
    for n, k in ((4096, 4096), (11008, 4096)):
        print(f"building and checking the {n}x{k} GEMV kernels")
        ms = interleaved({
            "sign_gemv_tvm_ms": tvm_kernel(1, n, k, 1, t, "lut"), "sign_select_ms": tvm_kernel(1, n, k, 1, t, "select"),
            "ternary_gemv_tvm_ms": tvm_kernel(1, n, k, 2, t, "lut"),
            "ternary_select_ms": tvm_kernel(1, n, k, 2, t, "select"), "torch_fp32_gemv_ms": torch_linear(1, n, k, t),
            "ort_fp32_matmul_ms": ort_matmul(1, n, k, t), "ort_matmulnbits4_ms": ort_matmul_nbits(1, n, k, 4, t),
            "ort_matmulnbits2_ms": ort_matmul_nbits(1, n, k, 2, t)}, args.rounds)
        r = {"shape": f"{n}x{k}", **ms}
        r["sign_speedup_vs_torch_fp32"] = r["torch_fp32_gemv_ms"] / r["sign_gemv_tvm_ms"]
        r["sign_speedup_vs_ort_nbits4"] = r["ort_matmulnbits4_ms"] / r["sign_gemv_tvm_ms"]
        r["ternary_speedup_vs_torch_fp32"] = r["torch_fp32_gemv_ms"] / r["ternary_gemv_tvm_ms"]
        rows.append(r)
    print("building the prefill layers")
    tokens, d, rank = args.tokens, args.d, 16
    prefill = branch_overhead(tokens, d, rank, t, args.rounds, extra={"torch": torch_linear(tokens, d, d, t)})
    prefill["torch_fp32_base_ms"] = prefill.pop("extra_ms")["torch"]
    from rich.console import Console
    from rich.table import Table

    from hwsim.api import cpu_name

    cpu = cpu_name()
    table = Table(title=f"GEMV, measured on {cpu}, {t} threads (median ms; sign/ternary gemv = LUT kernel)")
    for col in rows[0]:
        table.add_column(col.replace("_", " "), justify="right")
    for r in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else v for v in r.values()))
    Console(width=240).print(table)
    print(f"prefill {tokens}x{d}, r={rank}: base {prefill['base_ms']:.2f} ms (torch fp32: "
          f"{prefill['torch_fp32_base_ms']:.2f} ms); "
          f"LoRDBA branch {prefill['lordba_branch_ms']:.2f} ms = {100 * prefill['lordba_overhead']:.1f}% overhead, "
          f"fp16 LoRA branch {prefill['lora_fp16_branch_ms']:.2f} ms = {100 * prefill['lora_fp16_overhead']:.1f}% "
          f"(by difference of whole layers: {100 * prefill['lordba_overhead_by_difference']:.1f}% and "
          f"{100 * prefill['lora_fp16_overhead_by_difference']:.1f}%)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"provenance": "measured", "device": f"host: {cpu}, {t} threads", "rounds": args.rounds, "gemv": rows,
              "prefill": prefill}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
