"""Whole-model CPU latency: hwsim's host build against onnxruntime on the same ONNX file and torch eager on the
same weights, per variant (adapter format + base format), decode (one token over a KV cache) and prefill.
Not a test: prints a table, writes JSON.

One harness for all (bench/harness.py): each contestant is a prepared call on the same inputs (hwsim: the
Relax VM's `main`; onnxruntime: I/O binding, its best settings, the same thread count; torch: the variant's
module under no_grad), timed in one Python loop, interleaved rounds; each contestant's first output (the
logits) is checked against onnxruntime's. A whole model's weights (hundreds of MB) dwarf the last-level
cache, so every call streams them from DRAM: there is no separate cold mode here. ms/token is the decode
call's time (one token) and the prefill call's time over its tokens; `weights GB/s` is the bytes of the
weights as each contestant stores them (hwsim keeps an fp16 base in fp16; onnxruntime folds its casts to
fp32 at load) per decode call over its time, beside the DRAM read bandwidth measured in the same run.
Every figure is `measured` on this machine, in one run: compare ratios, not absolute times.

With --llama-cpp, llama.cpp joins (bench/llamacpp.py: built from the llama-cpp-python sdist's vendored
source; the zoo model's base as GGUF F32, F16, Q4_0, TQ2_0 and TQ1_0; timed by its own llama-bench after the
other contestants' rounds, on the base alone since llama-bench loads no adapter).

    .venv/bin/python bench/whole_model.py [--model smollm2-135m] [--threads 2] [--rounds 5]
        [--variants lora-fp16+fp32,lora-fp16+fp16,lordba+ternary] [--out bench/results/whole_model.json]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# Run as a script, bench/ comes first on the path, where kernels.py would shadow the `kernels` package that
# transformers imports: look here only after the installed packages.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

from harness import Contestant, Prepared, dram_read_gbs  # noqa: E402

from hwsim.artifacts import write_atomic  # noqa: E402
from hwsim.overhead import interleaved  # noqa: E402


def _bytes_read(graph, fold_casts: bool) -> int:
    """Bytes of the constants the graph's matmuls and accumulations read per call: hwsim's view (an fp16
    weight cast up stays fp16), or with every such cast folded (onnxruntime's: the weight read at fp32)."""
    from hwsim.ir import Op, OpGroup, weight_source

    read: dict[int, int] = {}
    for n in graph.nodes:
        if n.op is Op.MATMUL or n.op in OpGroup.ACCUMULATE:
            for v in n.inputs[1:]:
                if (s := weight_source(v)) is not None:
                    read[id(s.const)] = v.type.nbytes if fold_casts and s.widened else s.const.type.nbytes
    return sum(read.values())


def formatted_base(model: str, variant: dict):
    """The variant's torch model (the torch contestant), loaded and formatted once for all its phases."""
    from models.variants import apply_formats, load_adapter_for, load_base

    base = load_base(model)
    apply_formats(base, load_adapter_for(base, None), variant["adapter_format"], variant["base_format"])
    return base


def contestants(base, variant: dict, phase: str, build: Path, threads: int, seed: int):
    """hwsim, onnxruntime and torch on one variant and phase, with the shared inputs and the reference logits."""
    import onnxruntime as ort
    import torch
    import tvm

    from codegen import host
    from hwsim.api import import_graph, resolve_model

    onnx_path = variant["exports"][phase]["path"]
    shapes = {k: tuple(v) for k, v in variant["exports"][phase]["shapes"].items()}
    graph = import_graph(resolve_model(onnx_path), shapes)
    wrapper = base.wrapper(phase)
    args = base.inputs(seed, batch=1, seq=graph.inputs[0].type.shape[1], phase=phase, context=_context(graph, phase))
    feeds = [a.numpy() for a in args]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    expected = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds, strict=True)))
    reference = expected[0]

    def make_hwsim(_copy: int):
        vm = host.load(build / "model.so")
        ins, out = [tvm.runtime.tensor(x) for x in feeds], [None]

        def call() -> None:
            out[0] = vm["main"](*ins)
        return call, lambda: (out[0][0] if not hasattr(out[0], "numpy") else out[0]).numpy()

    def make_ort(_copy: int):
        io = sess.io_binding()
        for i, x in zip(sess.get_inputs(), feeds, strict=True):
            io.bind_ortvalue_input(i.name, ort.OrtValue.ortvalue_from_numpy(x))
        outs = [ort.OrtValue.ortvalue_from_shape_and_type(list(e.shape), e.dtype.type) for e in expected]
        for o, v in zip(sess.get_outputs(), outs, strict=True):
            io.bind_ortvalue_output(o.name, v)
        return (lambda: sess.run_with_iobinding(io)), outs[0].numpy

    def make_torch(_copy: int):
        torch.set_num_threads(threads)
        out = [None]

        def call() -> None:
            with torch.no_grad():
                out[0] = wrapper(*args)
        return call, lambda: (out[0][0] if isinstance(out[0], tuple) else out[0]).numpy()

    tol = 2e-2  # fp16 paths and summation order; a wrong kernel is off by far more
    hw_bytes, ort_bytes = _bytes_read(graph, fold_casts=False), _bytes_read(graph, fold_casts=True)
    return [Contestant("hwsim", hw_bytes, make_hwsim, tol), Contestant("onnxruntime", ort_bytes, make_ort, tol),
            Contestant("torch", hw_bytes, make_torch, tol)], reference


def _context(graph, phase: str) -> int:
    return graph.inputs[1].type.shape[3] if phase == "decode" else 0


def llama_cpp_rows(model: str, threads: int, reps: int, rows: list[dict]) -> list[dict]:
    """llama.cpp on the model's base weights, each GGUF type, the same phases as the hwsim rows."""
    import llamacpp

    from models.zoo import zoo_dir

    shapes = {r["phase"]: r["tokens"] for r in rows}
    context = 128
    print("building llama.cpp from the llama-cpp-python sdist and converting the model (cached after the first run)")
    binaries = llamacpp.build(threads)
    out = []
    for kind, (path, fallbacks) in llamacpp.gguf_files(zoo_dir(model) / "base", model, binaries).items():
        ms = llamacpp.bench(binaries, path, threads, shapes.get("prefill", 16), context, reps)
        for phase, tokens in shapes.items():
            out.append({"variant": f"base only ({kind})", "phase": phase, "tokens": tokens,
                        "contestant": f"llama.cpp {kind}" + (f" ({fallbacks} tensors fell back)" if fallbacks else ""),
                        "ms": ms[phase], "ms_per_token": ms[phase] / tokens, "tokens_per_s": tokens * 1e3 / ms[phase],
                        "weight_bytes": path.stat().st_size,
                        "weights_gbs": path.stat().st_size / ms[phase] / 1e6 if phase == "decode" else None,
                        "hwsim_speedup": None, "timed_by": "llama-bench"})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--variants", default="lora-fp16+fp32,lora-fp16+fp16,lordba+ternary",
                   help="ADAPTER_FORMAT+BASE_FORMAT, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each figure is their median")
    p.add_argument("--calls", type=int, default=10, help="timed calls per contestant and round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llama-cpp", action="store_true",
                   help="also build and time llama.cpp on the model's base (downloads the llama-cpp-python sdist)")
    p.add_argument("--out", type=Path, default=Path("bench/results/whole_model.json"))
    args = p.parse_args()
    t = args.threads
    os.environ["TVM_NUM_THREADS"] = str(t)
    from rich.console import Console
    from rich.table import Table

    from hwsim.api import cpu_name
    from hwsim.matrix import compile_matrix

    pairs = [tuple(v.split("+")) for v in args.variants.split(",")]
    bandwidth = dram_read_gbs(t)
    print(f"DRAM read bandwidth, measured (streaming read): {bandwidth:.1f} GB/s ({t} threads)")
    rows = []
    for fmt, base in pairs:
        print(f"building {args.model} {fmt} on a {base} base for the host (cached after the first run)")
        res = compile_matrix(args.model, formats=[fmt], base_formats=[base], targets=["host"], train_steps=0,
                             out=Path("build/bench-models") / args.model, overhead=False)
        variant = next(v for v in res.matrix["variants"] if v["adapter_format"] == fmt and v["base_format"] == base)
        torch_model = formatted_base(args.model, variant)
        for phase in variant["exports"]:
            job = next(j for j in res.matrix["jobs"] if j["variant"] == variant["id"] and j["phase"] == phase)
            if job["status"] != "ok":
                raise SystemExit(f"{variant['id']} ({phase}) did not build: {job.get('error')}")
            cs, ref = contestants(torch_model, variant, phase, res.root / job["dir"], t, args.seed)
            prepared = {c.name: Prepared(c, ref, 0, cold=False) for c in cs}
            ms = interleaved({n: (lambda q=q: q.measure("warm", args.calls)) for n, q in prepared.items()},
                             args.rounds)
            tokens = int(np.prod(variant["exports"][phase]["shapes"]["input_ids"]))
            for name, q in prepared.items():
                rows.append({"variant": variant["id"], "phase": phase, "tokens": tokens, "contestant": name,
                             "ms": ms[name], "ms_per_token": ms[name] / tokens, "tokens_per_s": tokens * 1e3 / ms[name],
                             "weight_bytes": q.c.weight_bytes,
                             "weights_gbs": q.c.weight_bytes / ms[name] / 1e6 if phase == "decode" else None,
                             "hwsim_speedup": ms[name] / ms["hwsim"]})
    if args.llama_cpp:
        rows += llama_cpp_rows(args.model, t, args.rounds, rows)
    table = Table(title=f"{args.model}, measured on {cpu_name()}, {t} threads (DRAM read {bandwidth:.1f} GB/s)")
    for col in ("variant", "phase", "contestant", "ms", "ms/token", "tokens/s", "weights GB/s", "% DRAM",
                "hwsim speed-up"):
        table.add_column(col, justify="left" if col in ("variant", "phase", "contestant") else "right")
    for r in rows:
        gbs = r["weights_gbs"]
        table.add_row(r["variant"], r["phase"], r["contestant"], f"{r['ms']:.2f}", f"{r['ms_per_token']:.2f}",
                      f"{r['tokens_per_s']:.1f}", f"{gbs:.1f}" if gbs else "-",
                      f"{100 * gbs / bandwidth:.0f}%" if gbs else "-",
                      f"{r['hwsim_speedup']:.2f}x" if r["hwsim_speedup"] else "-")
    Console(width=200).print(table)
    result = {"provenance": "measured", "device": f"host: {cpu_name()}, {t} threads", "model": args.model,
              "rounds": args.rounds, "calls": args.calls, "dram_read_gbs": bandwidth, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
