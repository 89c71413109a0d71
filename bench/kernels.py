"""Kernel benchmark on the host CPU: packed sign/ternary GEMV against dense and low-bit baselines, and the
prefill overhead of an unmerged LoRDBA vs fp16 LoRA branch. Not a test: prints a table, writes JSON.

Every figure is `measured` on this machine in one run with the same thread count; compare the ratios,
not the absolute times (the machines are shared and noisy).

    .venv/bin/python bench/kernels.py [--threads 2] [--out bench/results/kernels.json]
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def median_ms(fn, runs: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def tvm_kernel_ms(m: int, n: int, k: int, bits: int, threads: int, algorithm: str) -> float:
    """One accumulate kernel as hwsim builds it for this CPU: `lut` (what dispatch picks here) or `select`."""
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
    ev = lib.time_evaluator("k", tvm.cpu(), number=10, repeat=5)(*args)
    return float(np.median(ev.results) * 1e3)


def ort_session(model, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_matmul_ms(m: int, n: int, k: int, threads: int) -> float:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                          initializer=[numpy_helper.from_array(w, "w")])
    sess = ort_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), threads)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    return median_ms(lambda: sess.run(None, {"x": x}))


def ort_matmul_nbits_ms(m: int, n: int, k: int, bits: int, threads: int) -> float:
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
    return median_ms(lambda: sess.run(None, {"x": x}))


def torch_gemv_ms(n: int, k: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    w, x = torch.randn(n, k), torch.randn(1, k)
    with torch.no_grad():
        return median_ms(lambda: torch.nn.functional.linear(x, w))


def prefill_overheads(tokens: int, d: int, r: int, threads: int) -> dict[str, float]:
    """Base layer alone vs base + LoRDBA branch vs base + fp16 LoRA branch, all compiled by hwsim."""
    import tvm
    from tvm import relax

    from codegen import host
    from codegen.relax_lower import to_relax
    from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
    from models.formats import Lordba
    from targets import load_target

    rng = np.random.default_rng(0)
    f32 = DType.FLOAT32
    x = Value("x", TensorType((tokens, d), f32))
    w = Value.const("w", (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32))
    a, b = rng.standard_normal((r, d)) * 0.02, rng.standard_normal((d, r)) * 0.02
    lordba = Lordba.fit(a, b, 2.0).pack()

    def graph(branch: str) -> Graph:
        base = Value("base", TensorType((tokens, d), f32))
        nodes = [Node(Op.MATMUL, [x, w], [base])]
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
        return Graph(branch, [x], [out], nodes)

    spec = load_target("host")
    target = host.tvm_target(spec)
    target = tvm.target.Target({**target.export(), "num-cores": threads})
    xs = rng.standard_normal((tokens, d)).astype(np.float32)
    out = {}
    for branch in ("none", "lordba", "lora-fp16"):
        vm = relax.VirtualMachine(host.build(to_relax(graph(branch), target), target), tvm.cpu())
        out[branch] = float(np.median(host.time_ms(vm, [xs], repeat=30)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=Path("bench/results/kernels.json"))
    args = p.parse_args()
    t = args.threads
    os.environ["TVM_NUM_THREADS"] = str(t)
    rows = []
    for n, k in ((4096, 4096), (11008, 4096)):
        r = {"shape": f"{n}x{k}", "sign_gemv_tvm_ms": tvm_kernel_ms(1, n, k, 1, t, "lut"),
             "sign_select_ms": tvm_kernel_ms(1, n, k, 1, t, "select"),
             "ternary_gemv_tvm_ms": tvm_kernel_ms(1, n, k, 2, t, "lut"),
             "ternary_select_ms": tvm_kernel_ms(1, n, k, 2, t, "select"), "torch_fp32_gemv_ms": torch_gemv_ms(n, k, t),
             "ort_fp32_matmul_ms": ort_matmul_ms(1, n, k, t),
             "ort_matmulnbits4_ms": ort_matmul_nbits_ms(1, n, k, 4, t),
             "ort_matmulnbits2_ms": ort_matmul_nbits_ms(1, n, k, 2, t)}
        r["sign_speedup_vs_torch_fp32"] = r["torch_fp32_gemv_ms"] / r["sign_gemv_tvm_ms"]
        r["sign_speedup_vs_ort_nbits4"] = r["ort_matmulnbits4_ms"] / r["sign_gemv_tvm_ms"]
        r["ternary_speedup_vs_torch_fp32"] = r["torch_fp32_gemv_ms"] / r["ternary_gemv_tvm_ms"]
        rows.append(r)
    pre = prefill_overheads(128, 4096, 16, t)
    prefill = {"tokens": 128, "d": 4096, "r": 16, "base_ms": pre["none"],
               "lordba_overhead": pre["lordba"] / pre["none"] - 1,
               "lora_fp16_overhead": pre["lora-fp16"] / pre["none"] - 1,
               "base_plus_lordba_ms": pre["lordba"], "base_plus_lora_fp16_ms": pre["lora-fp16"]}
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
    print(f"prefill {prefill['tokens']}x{prefill['d']}, r={prefill['r']}: base {prefill['base_ms']:.2f} ms; "
          f"LoRDBA branch overhead {100 * prefill['lordba_overhead']:.1f}%, "
          f"fp16 LoRA branch overhead {100 * prefill['lora_fp16_overhead']:.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"provenance": "measured", "device": f"host: {cpu}, {t} threads", "gemv": rows,
              "prefill": prefill}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
