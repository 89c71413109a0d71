"""Whole-model CPU latency: hwsim's host build against onnxruntime on the same ONNX file, llama.cpp on the same
base weights and torch eager on the same weights, per variant (adapter format + base format), decode (one token
over a KV cache) and prefill. Not a test: prints a table, writes JSON.

This shared machine has phases, seconds to minutes long, in which the same build runs 1.3-2x slower, and a
process that has loaded many models runs some of them slower than a fresh one. So hwsim and onnxruntime are
timed as `hwsim compile` times a host build (hwsim/hosttiming.py): each build in `--passes` fresh processes
(alternate passes in opposite orders over the builds), `--rounds` rounds of at least 0.1 s in each, the build
and onnxruntime (its InferenceSession on the same inputs and threads) alternating round by round; llama.cpp's
llama-bench runs in each pass too, between the builds' processes, one process per GGUF type and phase whose
samples are cut into the same number of rounds. Every contestant's figure is its quietest round's median; the
spread of its round medians is printed beside it. torch eager (7-70x behind) is timed in this process
(bench/harness.py's loop, interleaved rounds). Before timing, each build's logits (and torch's) are checked
against onnxruntime's on the same inputs.

ms/token is the decode call's time (one token) and the prefill call's time over its tokens; `weights GB/s` is
the bytes of the weights as each contestant stores them (hwsim keeps an fp16 base in fp16; onnxruntime folds
its casts to fp32 at load; llama.cpp: the GGUF file) per decode call over its time, beside the DRAM read
bandwidth measured before and after the timing in the same run (a TVM streaming read; the higher of the two is
the one divided by). Every figure is `measured` on this machine: compare ratios, not absolute times.

With --llama-cpp, llama.cpp joins (bench/llamacpp.py: built from the llama-cpp-python sdist's vendored
source; the zoo model's base as GGUF F32, F16, Q4_0, TQ2_0 and TQ1_0; timed by its own llama-bench, on the base
alone since llama-bench loads no adapter).

    .venv/bin/python bench/whole_model.py [--model smollm2-135m] [--threads 2] [--passes 6] [--rounds 3]
        [--variants lora-fp16+fp32,lora-fp16+fp16,lordba+ternary,lordba+ternary+q8_0] [--llama-cpp]
        [--gguf F16,TQ2_0]
        [--out bench/results/whole_model.json]
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
        if n.op in (Op.MATMUL, Op.Q8_MATMUL) or n.op in OpGroup.ACCUMULATE:
            for v in n.inputs[1:]:
                if (s := weight_source(v)) is not None:
                    read[id(s.const)] = v.type.nbytes if fold_casts and s.widened else s.const.type.nbytes
    return sum(read.values())


def formatted_base(model: str, variant: dict):
    """The variant's torch model (the torch contestant), loaded and formatted once for all its phases."""
    from models.variants import apply_formats, load_adapter_for, load_base

    base = load_base(model)
    apply_formats(base, load_adapter_for(base, None), variant["adapter_format"], variant["base_format"],
                  head_format=variant.get("head_format") or "fp16")
    return base


def contestants(base, variant: dict, phase: str, build: Path, threads: int, seed: int):
    """hwsim and torch on one variant and phase (checked and timed in this process), the weight bytes
    onnxruntime reads, the reference logits (onnxruntime's), the shared inputs and their names."""
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
    reference = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds, strict=True)))[0]

    def make_hwsim(_copy: int):
        vm = host.load(build / "model.so")
        ins, out = [tvm.runtime.tensor(x) for x in feeds], [None]

        def call() -> None:
            out[0] = vm["main"](*ins)
        return call, lambda: (out[0][0] if not hasattr(out[0], "numpy") else out[0]).numpy()

    def make_torch(_copy: int):
        torch.set_num_threads(threads)
        out = [None]

        def call() -> None:
            with torch.no_grad():
                out[0] = wrapper(*args)
        return call, lambda: (out[0][0] if isinstance(out[0], tuple) else out[0]).numpy()

    tol = 2e-2  # fp16 paths and summation order; a wrong kernel is off by far more
    hw_bytes, ort_bytes = _bytes_read(graph, fold_casts=False), _bytes_read(graph, fold_casts=True)
    return ([Contestant("hwsim", hw_bytes, make_hwsim, tol), Contestant("torch", hw_bytes, make_torch, tol)],
            ort_bytes, reference, feeds, [i.name for i in sess.get_inputs()])


def _context(graph, phase: str) -> int:
    return graph.inputs[1].type.shape[3] if phase == "decode" else 0


def _row(variant: str, phase: str, tokens: int, contestant: str, rounds: list[float], weight_bytes: int,
         timed_by: str) -> dict:
    ms = min(rounds)  # the quietest round's median
    return {"variant": variant, "phase": phase, "tokens": tokens, "contestant": contestant, "ms": ms,
            "round_medians_ms": rounds, "ms_per_token": ms / tokens, "tokens_per_s": tokens * 1e3 / ms,
            "weight_bytes": weight_bytes, "weights_gbs": weight_bytes / ms / 1e6 if phase == "decode" else None,
            "timed_by": timed_by}


def _rounds(samples: list[float], rounds: int) -> list[float]:
    """Consecutive samples cut into `rounds` rounds, each round's median."""
    return [float(np.median(c)) for c in np.array_split(np.asarray(samples), rounds) if len(c)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--variants", default="lora-fp16+fp32,lora-fp16+fp16,lordba+ternary,lordba+ternary+q8_0",
                   help="ADAPTER_FORMAT+BASE_FORMAT[+HEAD_FORMAT] (the LM head: fp16 by default, or q8_0), "
                        "comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--passes", type=int, default=6, help="fresh processes per build (and llama-bench runs per type)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per process; each figure is the quietest round's")
    p.add_argument("--runs", type=int, default=90,
                   help="timed calls per build and contestant, at least, over all rounds (rounds last 0.1 s at least)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llama-cpp", action="store_true",
                   help="also build and time llama.cpp on the model's base (downloads the llama-cpp-python sdist)")
    p.add_argument("--gguf", default="F32,F16,Q4_0,TQ2_0,TQ1_0", help="llama.cpp's GGUF types, comma-separated")
    p.add_argument("--out", type=Path, default=Path("bench/results/whole_model.json"))
    args = p.parse_args()
    if min(args.passes, args.rounds, args.runs, args.threads) < 1:
        p.error("--passes, --rounds, --runs and --threads must be at least 1")
    import llamacpp

    known = ("F32", "F16", *llamacpp.QUANTISED)
    if unknown := [k for k in args.gguf.split(",") if k not in known]:
        p.error(f"--gguf: unknown type {', '.join(unknown)} (known: {', '.join(known)})")
    t = args.threads
    os.environ["TVM_NUM_THREADS"] = str(t)
    # the builds' own timing and calibration are not used here: this bench times them itself
    os.environ.setdefault("HWSIM_TIMING_PASSES", "1")
    os.environ.setdefault("HWSIM_CALIBRATE", "0")
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from hwsim import hosttiming
    from hwsim.api import cpu_name
    from hwsim.matrix import compile_matrix

    specs = [v.split("+") for v in args.variants.split(",")]
    if bad := next((v for v in specs if len(v) not in (2, 3)), None):
        p.error(f"--variants: {'+'.join(bad)} is not ADAPTER_FORMAT+BASE_FORMAT[+HEAD_FORMAT]")
    pairs = [(*v, "fp16")[:3] for v in specs]
    bandwidth = [dram_read_gbs(t)]
    print(f"DRAM read bandwidth, measured (streaming read): {bandwidth[0]:.1f} GB/s ({t} threads)")
    rows: list[dict] = []
    jobs: list[tuple[dict, hosttiming.Job]] = []  # (the row's fields, the build to time)
    for fmt, base, head in pairs:
        print(f"building {args.model} {fmt} on a {base} base ({head} head) for the host (cached after the first run)")
        res = compile_matrix(args.model, formats=[fmt], base_formats=[base], targets=["host"], train_steps=0,
                             out=Path("build/bench-models") / args.model, overhead=False, head_format=head)
        variant = next(v for v in res.matrix["variants"] if v["adapter_format"] == fmt and v["base_format"] == base
                       and (v.get("head_format") or "fp16") == head)  # None: an fp32 base keeps its own head
        torch_model = formatted_base(args.model, variant)
        for phase in variant["exports"]:
            job = next(j for j in res.matrix["jobs"] if j["variant"] == variant["id"] and j["phase"] == phase)
            if job["status"] != "ok":
                raise SystemExit(f"{variant['id']} ({phase}) did not build: {job.get('error')}")
            build = res.root / job["dir"]
            cs, ort_, ref, feeds, names = contestants(torch_model, variant, phase, build, t, args.seed)
            prepared = {c.name: Prepared(c, ref, 0, cold=False) for c in cs}
            prepared["hwsim"].measure("warm", 2)  # runs it and checks its logits against onnxruntime's
            print(f"timing torch eager on {variant['id']} ({phase}) in this process")
            torch_ms = interleaved({"torch": lambda q=prepared["torch"]: q.measure("warm", 5)}, args.rounds)["torch"]
            tokens = int(np.prod(variant["exports"][phase]["shapes"]["input_ids"]))
            hw, th = (prepared[n].c.weight_bytes for n in ("hwsim", "torch"))
            rows.append(_row(variant["id"], phase, tokens, "torch", [torch_ms], th, "this process, harness loop"))
            jobs.append(({"variant": variant["id"], "phase": phase, "tokens": tokens, "bytes": (hw, ort_)},
                         hosttiming.Job(build / "model.so", Path(variant["exports"][phase]["path"]), names, feeds, t)))
    llama: dict[str, tuple[Path, int]] = {}
    if args.llama_cpp:
        from models.zoo import zoo_dir

        print("building llama.cpp from the llama-cpp-python sdist and converting the model (cached after the first "
              "run)")
        binaries = llamacpp.build(t)
        files = llamacpp.gguf_files(zoo_dir(args.model) / "base", args.model, binaries)
        llama = {k: files[k] for k in args.gguf.split(",")}
    prefill_tokens = next((f["tokens"] for f, _ in jobs if f["phase"] == "prefill"), 16)
    # llama.cpp decodes over the KV cache the builds were exported with (the past keys: [layers, 1, heads, past, d])
    context = next((j.inputs[1].shape[3] for f, j in jobs if f["phase"] == "decode"), 128)
    timed: list[list[list[float]]] = [[[], []] for _ in jobs]  # per job: hwsim's and onnxruntime's round medians
    llama_rounds: dict[tuple[str, str], list[float]] = {}
    # llama-bench's samples per process: as many per round as a build's round has at least, and 20 (a build's
    # round lasts 0.1 s at least: 20 decodes of 5 ms)
    reps = args.rounds * max(20, -(-args.runs // (args.passes * args.rounds)))
    with Progress(transient=True) as progress:
        task = progress.add_task("timing in fresh processes", total=args.passes * (len(jobs) + len(llama)))
        for n in range(args.passes):
            order = list(range(len(jobs)))[:: 1 if n % 2 == 0 else -1]
            got = hosttiming.time_builds([jobs[i][1] for i in order], runs=args.runs // args.passes, passes=1,
                                         rounds=args.rounds, profile=False)
            for i, r in zip(order, got, strict=True):
                if r.error:
                    raise SystemExit(str(r.error))
                timed[i][0] += [float(np.median(x)) for x in r.tvm]
                timed[i][1] += [float(np.median(x)) for x in r.onnxruntime]
            progress.advance(task, len(jobs))
            for kind, (path, _) in llama.items():
                ms = llamacpp.bench(binaries, path, t, prefill_tokens, context, reps)
                for phase, samples in ms.items():
                    llama_rounds.setdefault((kind, phase), []).extend(_rounds(samples, args.rounds))
                progress.advance(task)
    bandwidth.append(dram_read_gbs(t))
    print(f"DRAM read bandwidth after the timing: {bandwidth[1]:.1f} GB/s")
    process = f"fresh processes ({args.passes} passes x {args.rounds} rounds), hwsim/hosttiming.py"
    for (fields, _), (hw_rounds, ort_rounds) in zip(jobs, timed, strict=True):
        hw, ort_ = fields["bytes"]
        rows.append(_row(fields["variant"], fields["phase"], fields["tokens"], "hwsim", hw_rounds, hw, process))
        rows.append(_row(fields["variant"], fields["phase"], fields["tokens"], "onnxruntime", ort_rounds, ort_,
                         process))
    for (kind, phase), rounds in llama_rounds.items():
        path, fallbacks = llama[kind]
        tokens = prefill_tokens if phase == "prefill" else 1
        rows.append(_row(f"base only ({kind})", phase, tokens, f"llama.cpp {kind}" + (
            f" ({fallbacks} tensors fell back)" if fallbacks else ""), rounds, path.stat().st_size,
            f"llama-bench, {args.passes} processes x {args.rounds} rounds"))
    hwsim_ms = {(r["variant"], r["phase"]): r["ms"] for r in rows if r["contestant"] == "hwsim"}
    for r in rows:
        own = hwsim_ms.get((r["variant"], r["phase"]))
        r["hwsim_speedup"] = r["ms"] / own if own else None
    order = {(f["variant"], f["phase"]): i for i, (f, _) in enumerate(jobs)}
    rows.sort(key=lambda r: (order.get((r["variant"], r["phase"]), len(order)), r["phase"], r["contestant"] != "hwsim"))
    peak = max(bandwidth)
    table = Table(title=f"{args.model}, measured on {cpu_name()}, {t} threads (DRAM read {bandwidth[0]:.1f} / "
                        f"{bandwidth[1]:.1f} GB/s before / after)")
    for col in ("variant", "phase", "contestant", "ms", "rounds (min-max)", "ms/token", "tokens/s", "weights GB/s",
                "% DRAM", "hwsim speed-up"):
        table.add_column(col, justify="left" if col in ("variant", "phase", "contestant") else "right")
    for r in rows:
        gbs = r["weights_gbs"]
        spread = r["round_medians_ms"]
        table.add_row(r["variant"], r["phase"], r["contestant"], f"{r['ms']:.2f}",
                      f"{min(spread):.2f}-{max(spread):.2f}", f"{r['ms_per_token']:.2f}",
                      f"{r['tokens_per_s']:.1f}", f"{gbs:.1f}" if gbs else "-",
                      f"{100 * gbs / peak:.0f}%" if gbs else "-",
                      f"{r['hwsim_speedup']:.2f}x" if r["hwsim_speedup"] else "-")
    Console(width=220).print(table)
    result = {"provenance": "measured", "device": f"host: {cpu_name()}, {t} threads", "model": args.model,
              "passes": args.passes, "rounds": args.rounds, "runs": args.runs, "dram_read_gbs": bandwidth,
              "statistic": "each contestant's quietest round's median (round_medians_ms lists them all)",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
