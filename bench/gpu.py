"""GPU kernel benchmark: packed sign/ternary GEMV and GEMM (hwsim's CUDA kernels) against dense fp16 matmul,
and the prefill overhead of an unmerged LoRDBA vs fp16 LoRA branch over an fp16 base layer. Not a test:
prints a table, writes JSON. Needs an NVIDIA GPU; without one it says so and exits 2 (no figures are made up).

Baselines, measured in the same run: torch fp16 `linear` where the installed torch has CUDA (the project pins
a CPU torch, so on most machines it has not, and the JSON says so), and TVM's own dense fp16 matmul (dlight).

    .venv/bin/python bench/gpu.py [--target nvidia-h100] [--rounds 7] [--out bench/results/gpu.json] [--build-only]
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwsim.overhead import interleaved, prefill_graphs


def build_kernel(m: int, n: int, k: int, bits: int | None, target) -> tuple:
    """One kernel as hwsim builds it for CUDA (bits 1 or 2: the word GEMV for decode, decode + matmul scheduled
    by dlight for prefill), or a dense fp16 matmul (bits None): (library, inputs, numpy reference)."""
    import tvm
    from tvm import te
    from tvm.s_tir import dlight as dl

    from codegen.kernels import choose_accumulate
    from models.formats.packing import pack_i2, pack_signs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    if bits is None:
        xt, wt = te.placeholder((m, k), "float16", name="x"), te.placeholder((n, k), "float16", name="w")
        r = te.reduce_axis((0, k), name="r")
        y = te.compute((m, n), lambda i, j: te.sum(xt[i, r].astype("float32") * wt[j, r].astype("float32"), axis=r))
        func = te.create_prim_func([xt, wt, y])
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float16)
        inputs, ref = [x.astype(np.float16), w], x.astype(np.float16).astype(np.float32) @ w.T.astype(np.float32)
    else:
        w = rng.choice([-1, 1], (n, k)) if bits == 1 else rng.integers(-1, 2, (n, k))
        packed = pack_signs(w) if bits == 1 else pack_i2(w)
        kernel = choose_accumulate(bits, m, n, k, target, packed)
        func = kernel.func
        inputs, ref = [x, kernel.relayout(packed) if kernel.relayout else packed], x @ w.T.astype(np.float32)
    with target:
        mod = dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.Matmul(), dl.gpu.Fallback())(
            tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
    return tvm.tirx.build(mod, target=target), inputs, ref


def tvm_gpu_kernel(m: int, n: int, k: int, bits: int | None, target) -> Callable[[], float]:
    """build_kernel's kernel on the GPU, checked against numpy once; returns a measurement."""
    import tvm

    lib, inputs, ref = build_kernel(m, n, k, bits, target)
    dev = tvm.cuda(0)
    args = [tvm.runtime.tensor(a, dev) for a in (*inputs, np.zeros((m, n), np.float32))]
    lib["main"](*args)
    err = np.abs(args[-1].numpy() - ref).max() / np.abs(ref).max()
    if err > 1e-2:
        raise SystemExit(f"GPU kernel {m}x{n}x{k} bits={bits} is wrong: rel. error {err:.2e}")
    evaluator = lib.time_evaluator("main", dev, number=20, repeat=3)
    return lambda: float(np.median(evaluator(*args).results) * 1e3)


def torch_fp16(m: int, n: int, k: int) -> Callable[[], float] | str:
    """torch fp16 linear on the GPU, timed with CUDA events; or why it cannot run."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA here"
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16)

    def measure() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.nn.functional.linear(x, w)
        start.record()
        for _ in range(20):
            torch.nn.functional.linear(x, w)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 20
    return measure


def prefill_builds(tokens: int, d: int, r: int, target) -> dict:
    """Each prefill graph (bench/kernels.py), through hwsim's passes, built for CUDA."""
    from codegen import cuda
    from codegen.relax_lower import to_relax
    from hwsim.passes import DEFAULT_PIPELINE, run_pipeline

    out = {}
    for name, graph in prefill_graphs(tokens, d, r, base_dtype="float16").items():
        run_pipeline(graph, DEFAULT_PIPELINE)
        out[name] = (graph, cuda.build(to_relax(graph, target), target))
    return out


def prefill_cases(tokens: int, d: int, r: int, target) -> dict[str, Callable[[], float]]:
    import tvm

    from codegen import cuda

    rng = np.random.default_rng(1)
    xs, base_out = (rng.standard_normal((tokens, d)).astype(np.float32) for _ in range(2))
    out = {}
    for name, (graph, ex) in prefill_builds(tokens, d, r, target).items():
        vm = tvm.relax.VirtualMachine(ex, tvm.cuda(0))
        inputs = [xs, base_out][:len(graph.inputs)]
        out[name] = lambda vm=vm, inputs=inputs: float(np.median(cuda.time_ms(vm, inputs, repeat=20)))
    return out


SHAPES = ((1, 4096, 4096), (1, 11008, 4096), (128, 4096, 4096), (128, 11008, 4096))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="nvidia-h100", help="GPU target whose arch the kernels are built for")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each figure is their median")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    p.add_argument("--build-only", action="store_true",
                   help="build every kernel and prefill graph for the target and stop: no GPU needed, nothing timed")
    args = p.parse_args()
    from codegen import cuda
    from targets import load_target

    cuda.require_nvcc()
    target = cuda.tvm_target(load_target(args.target))
    if args.build_only:
        for m, n, k in SHAPES:
            for bits in (1, 2, None):
                build_kernel(m, n, k, bits, target)
        built = prefill_builds(128, 4096, 16, target)
        print(f"built {3 * len(SHAPES)} kernels and {len(built)} prefill graphs for {args.target}; nothing measured")
        return
    if not cuda.has_gpu():
        print("bench/gpu.py needs an NVIDIA GPU visible to TVM; none here, so no figures "
              "(--build-only checks that everything builds)", file=sys.stderr)
        raise SystemExit(2)
    rows = []
    for m, n, k in SHAPES:
        cases = {"sign_ms": tvm_gpu_kernel(m, n, k, 1, target), "ternary_ms": tvm_gpu_kernel(m, n, k, 2, target),
                 "tvm_fp16_dense_ms": tvm_gpu_kernel(m, n, k, None, target)}
        torch_case = torch_fp16(m, n, k)
        if callable(torch_case):
            cases["torch_fp16_ms"] = torch_case
        row: dict = {"shape": f"{m}x{n}x{k}", **interleaved(cases, args.rounds)}
        base = row.get("torch_fp16_ms")
        row["torch_fp16"] = "measured" if base else torch_case
        for kind in ("sign", "ternary"):
            row[f"{kind}_speedup_vs_tvm_fp16"] = row["tvm_fp16_dense_ms"] / row[f"{kind}_ms"]
            if base:
                row[f"{kind}_speedup_vs_torch_fp16"] = base / row[f"{kind}_ms"]
        rows.append(row)
    tokens, d, rank = 128, 4096, 16
    pre = interleaved(prefill_cases(tokens, d, rank, target), args.rounds)
    prefill = {"tokens": tokens, "d": d, "r": rank, "base_fp16_ms": pre["base"],
               "lordba_branch_ms": pre["lordba"], "lora_fp16_branch_ms": pre["lora-fp16"],
               "lordba_overhead": pre["lordba"] / pre["base"], "lora_fp16_overhead": pre["lora-fp16"] / pre["base"],
               "lordba_overhead_by_difference": pre["base+lordba"] / pre["base"] - 1,
               "lora_fp16_overhead_by_difference": pre["base+lora-fp16"] / pre["base"] - 1}
    device = cuda.device_name()
    for r in rows:
        print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    print(f"prefill {tokens}x{d}, r={rank} on {device}: fp16 base {prefill['base_fp16_ms']:.3f} ms; LoRDBA branch "
          f"{100 * prefill['lordba_overhead']:.1f}%, fp16 LoRA branch {100 * prefill['lora_fp16_overhead']:.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"provenance": "measured", "device": device, "target": args.target,
                                    "rounds": args.rounds, "kernels": rows, "prefill": prefill}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
