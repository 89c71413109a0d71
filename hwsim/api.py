"""The typed Python API behind the CLI: compile and inspect.

`compile_model` takes a model (an .onnx path or a built-in name) through import -> passes -> TVM
build -> verification against onnxruntime -> measurement, and writes an output directory atomically.
"""

import functools
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from codegen import cross, cuda, toolchain
from codegen.rpc import check_reachable
from hwsim import interp, roofline
from hwsim.artifacts import (
    atomic_dir,
    sha256_file,
    sha256_json,
    sha256_text,
    source_hash,
    tool_versions,
    write_atomic,
    write_json,
)
from hwsim.buildcache import PENDING, deterministic, failure_line, file_hash, lookup
from hwsim.buildcache import record_failure as record_failure_at
from hwsim.errors import CachedFailure, HwsimError
from hwsim.frontend import import_model, load_onnx
from hwsim.frontend.importer import graph_name
from hwsim.ir import Graph, print_graph
from hwsim.memory import memory_report
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
from hwsim.precision import RULE as VERIFICATION_RULE
from hwsim.precision import Reference, reference, verify_outputs
from hwsim.reference import onnxruntime_session, random_inputs, time_onnxruntime
from models.zoo import DEFAULT_MODEL, ZOO, zoo_onnx
from targets import Target, load_target

MANIFEST_SCHEMA = "hwsim.manifest/1"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path
    default_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    builtin: bool = False


@dataclass(frozen=True)
class CompileResult:
    out_dir: Path
    manifest: dict[str, Any]
    cached: bool


def resolve_model(model: str | None, progress: Progress | None = None) -> ModelSource:
    """An .onnx path, or a built-in model name (exported and cached on first use)."""
    model = model or DEFAULT_MODEL
    path = Path(model)
    if path.suffix == ".onnx" or path.exists():
        if not path.is_file():
            raise HwsimError(f"{path}: no such file")
        return ModelSource(graph_name(path), path.resolve())
    onnx_path = zoo_onnx(model, on_build=progress)
    return ModelSource(model, onnx_path, dict(ZOO[model].default_shapes), builtin=True)


def _model_files(path: Path) -> list[Path]:
    """The .onnx file and the external data files it references (their bytes define the model)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable models are reported by load_onnx with a proper message
        return [path]
    files = {path}
    for t in proto.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                files.add(path.parent / kv.value)
    return sorted(files)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_graph(src: ModelSource, shapes: dict[str, tuple[int, ...]] | None) -> Graph:
    """Load, import and run the default pass pipeline; shapes given override the model's defaults."""
    graph = import_model(load_onnx(src.path), {**src.default_shapes, **(shapes or {})}, name=src.name)
    run_pipeline(graph, DEFAULT_PIPELINE)
    return graph


def default_out_dir(src: ModelSource, target: Target) -> Path:
    return Path("build") / src.name / target.name


@dataclass(frozen=True)
class BuildPlan:
    """What one build is and where it goes: enough to find it in the cache without building anything."""

    src: ModelSource
    spec: Target
    out_dir: Path
    key: str  # content hash of (model files, options, target, CPU, tool versions, hwsim's source)
    options: dict[str, Any]
    hashes: dict[Path, str]


def plan_build(model: str | None = None, *, target: str = "host", shapes: dict[str, tuple[int, ...]] | None = None,
               out: Path | None = None, seed: int = 0, rtol: float = 1e-3, runs: int = 20, rpc: str | None = None,
               rpc_key: str | None = None, progress: Progress | None = None) -> BuildPlan:
    """Resolve the model and target and compute the build's cache key; builds nothing (cheap enough to
    look up every job of a matrix before starting any)."""
    spec = load_target(target)
    src = resolve_model(model, progress)
    out_dir = Path(out) if out else default_out_dir(src, spec)
    hashes = {f: file_hash(f) for f in _model_files(src.path) if f.is_file()}
    options = {"shapes": {k: list(v) for k, v in sorted((shapes or {}).items())}, "seed": seed, "rtol": rtol,
               "runs": runs, "rpc": rpc, "rpc_key": rpc_key}
    key = sha256_json({"model": list(hashes.values()), "options": options,
                       "default_shapes": {k: list(v) for k, v in src.default_shapes.items()},
                       "target": spec.source.read_text(), "cpu": cpu_name(), "tools": tool_versions(),
                       "gpu": _gpu_name() if spec.kind == "gpu" else None,
                       "source": source_hash(), "verification": VERIFICATION_RULE})
    return BuildPlan(src, spec, out_dir, key, options, hashes)


@functools.cache
def _gpu_name() -> str:
    return cuda.device_name()


def compile_model(model: str | None = None, *, target: str = "host",
                  shapes: dict[str, tuple[int, ...]] | None = None, out: Path | None = None,
                  force: bool = False, seed: int = 0, rtol: float = 1e-3, runs: int = 20,
                  rpc: str | None = None, rpc_key: str | None = None, record_failure: bool = False,
                  retry_failed: bool = False, measure: bool = True, progress: Progress | None = None) -> CompileResult:
    """Compile, verify and measure; returns the output directory and its manifest.

    An output directory that already holds a build with the same cache key is reused (a warm
    rebuild is a cache hit); any other existing directory needs `force`. With `rpc` (HOST:PORT of a
    TVM RPC server, or of a tracker with `rpc_key`) the artifact is also verified and timed there.
    With `record_failure`, a build that fails for a reason its inputs determine (verification, an
    unsupported op, a compiler error) leaves failure.json under its cache key, and the same build later
    raises CachedFailure at once, unless `retry_failed`. With `measure` False a host build is built and
    verified but not timed (its manifest says the latency is pending): a matrix builds host jobs in parallel
    and times them later, one at a time, by calling again with `measure` True (a cache hit that times it).
    """
    step = progress or (lambda _msg: None)
    step("resolving model")
    spec = load_target(target)
    if spec.tvm is not None and spec.tvm.mtriple:
        toolchain.require_tools()
    if spec.kind == "accel" and rpc:
        raise HwsimError(f"--rpc measures CPU targets; {spec.name} is a simulated accelerator")
    if spec.kind == "gpu":
        cuda.require_nvcc()
        if rpc:
            raise HwsimError(f"--rpc measures CPU targets; {spec.name} is a GPU: run hwsim on a machine with the GPU")
    if rpc:
        check_reachable(rpc)
    if rpc_key and not rpc:
        raise HwsimError("--rpc-key needs --rpc HOST:PORT of the tracker")
    plan = plan_build(model, target=target, shapes=shapes, out=out, seed=seed, rtol=rtol, runs=runs, rpc=rpc,
                      rpc_key=rpc_key, progress=step)
    src, out_dir = plan.src, plan.out_dir
    found = lookup(plan.out_dir, plan.key)
    if found is not None and found.get("status") != "failed":
        if measure and PENDING in found.get("latency", {}):
            step("measuring latency")
            return CompileResult(out_dir, _measure_pending(plan, found, seed, runs), cached=True)
        return CompileResult(out_dir, found, cached=True)
    if found is not None and not retry_failed:
        raise CachedFailure(failure_line(found))
    if out_dir.exists() and not force:
        raise HwsimError(f"{out_dir} already exists and holds a different build: pass --force to replace it, "
                         "or choose another --out")
    try:
        with atomic_dir(out_dir, force=force) as tmp:
            manifest = _build(src, spec, shapes, tmp, seed=seed, rtol=rtol, runs=runs, rpc=rpc, rpc_key=rpc_key,
                              measure=measure, step=step)
            manifest.update(cache_key=plan.key, options=plan.options,
                            model={"name": src.name, "path": str(src.path), "builtin": src.builtin,
                                   "files": {f.name: h for f, h in plan.hashes.items()}})
            write_json(tmp / "manifest.json", manifest)
    except Exception as e:
        if record_failure and deterministic(e):
            record_failure_at(out_dir, plan.key, e, plan.options)
        raise
    return CompileResult(out_dir, manifest, cached=False)


def _build(src: ModelSource, spec: Target, shapes: dict[str, tuple[int, ...]] | None, tmp: Path, *,
           seed: int, rtol: float, runs: int, rpc: str | None, rpc_key: str | None, measure: bool,
           step: Progress) -> dict[str, Any]:
    from codegen import host, mca
    from codegen.relax_lower import to_relax

    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        step(name)
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 3)
        return result

    graph = timed("importing ONNX into the IR", lambda: import_graph(src, shapes))
    ir_text = print_graph(graph)
    (tmp / "ir.txt").write_text(ir_text)
    if spec.kind == "accel":
        return _build_accel(src, graph, ir_text, spec, tmp, seed, rtol, timings, timed)
    tvm_target = cuda.tvm_target(spec) if spec.kind == "gpu" else host.tvm_target(spec)
    mod = timed("lowering to Relax", lambda: to_relax(graph, tvm_target))
    lib = tmp / "model.so"
    census: list[dict[str, Any]] = []
    threads = int(tvm_target.attrs.get("num-cores", os.cpu_count() or 1))
    inputs = random_inputs(graph, seed)
    names = [v.name for v in graph.inputs]
    feeds = dict(zip(names, inputs, strict=True))
    session = onnxruntime_session(src.path, min(threads, os.cpu_count() or 1))
    gpu_build: cuda.GpuBuild | None = None
    if spec.kind == "gpu":
        gpu_build = timed("building with TVM for CUDA", lambda: cuda.build_and_export(mod, tvm_target, tmp))
        timed(f"compiling the CUDA kernels with nvcc for {spec.tvm.arch}",
              lambda: gpu_build.compile_offline(spec.tvm.arch, tmp, tvm_target))
        if not cuda.has_gpu():
            return _unverified_gpu_manifest(graph, ir_text, mod, lib, spec, tvm_target, gpu_build, seed, rtol,
                                            timings)
        vm = cuda.load(lib)

        def execute(xs: list[np.ndarray]) -> list[np.ndarray]:
            return cuda.run(vm, xs)
    elif spec.tvm.mtriple:
        executable = timed("building with TVM", lambda: host.build(mod, tvm_target))
        timed("linking for aarch64", lambda: cross.export(executable, lib))
        bundled = timed("bundling the runner", lambda: cross.bundle(tmp, step))
        emulated: list[cross.QemuRun] = []

        def execute(xs: list[np.ndarray]) -> list[np.ndarray]:
            emulated.append(cross.run_qemu(tmp, xs, threads=threads))
            return emulated[-1].outputs
    else:
        timed("building with TVM", lambda: host.export(host.build(mod, tvm_target, census), lib))
        vm = host.load(lib)

        def execute(xs: list[np.ndarray]) -> list[np.ndarray]:
            return host.run(vm, xs)

    where = f"qemu-aarch64, {spec.name} build" if spec.tvm.mtriple else (
        f"GPU: {cuda.device_name()}" if gpu_build else "host")
    ref = timed("running the reference (onnxruntime)", lambda: reference(src.path, feeds, rtol,
                                                                        min(threads, os.cpu_count() or 1)))
    rows = timed(f"verifying against onnxruntime ({where})",
                 lambda: verify_outputs(ref, execute(inputs), interp.run(graph, feeds), f"TVM build on {where}"))
    manifest = _manifest(graph, ir_text, mod, lib, spec, tvm_target, timings)
    manifest["verification"] = {**ref.record(), "executed_on": where, "seed": seed, "passed": True, "outputs": rows}
    if gpu_build:
        device = f"{spec.name} build on {cuda.device_name()}"
        manifest["target"].update(arch=spec.tvm.arch, device=device)
        gpu_ms = timed("measuring latency on the GPU", lambda: cuda.time_ms(vm, inputs, repeat=runs))
        manifest["artifacts"].update(gpu_build.artifacts())
        manifest["device_kernels"] = gpu_build.kernels
        manifest["latency"] = {"tvm": _latency(gpu_ms, device)}
        return _with_estimates(manifest, graph, spec, gpu_build.launches)
    if spec.tvm.mtriple:
        manifest["artifacts"]["runner"] = {f.name: sha256_file(f) for f in bundled}
        manifest["target"]["device"] = f"{spec.name} ({spec.description}); not measured here"
        manifest["emulation"] = {
            "command": emulated[-1].command,
            "note": "qemu-aarch64 user-mode emulation on the build machine: a functional check, not a latency"}
        manifest["latency"] = {}
        asm = executable.mod.imports[0].inspect_source("asm")
        manifest["estimates"] = {"loops": timed("estimating loop cycles with llvm-mca", lambda: mca.estimate_loops(
            asm, triple=spec.tvm.mtriple, mcpu=spec.tvm.mca_cpu or spec.tvm.mcpu))}
    if rpc:
        manifest["latency"] = _measure_remote(lib, rpc, rpc_key, inputs, ref, spec, runs, manifest, timed)
    if spec.tvm.mtriple or rpc:
        return _with_estimates(manifest, graph, spec)

    device = f"{spec.name}: {cpu_name()} ({tvm_target.attrs['mcpu']}), {threads} threads"
    manifest["target"]["device"] = device
    manifest["census"] = census[-1]
    if not measure:
        manifest["latency"] = {PENDING: "built and verified; timed later, alone on the machine"}
        return _with_estimates(manifest, graph, spec)
    manifest["latency"] = timed("measuring latency", lambda: _host_latency(vm, session, names, inputs, runs, device))
    manifest["latency"]["calibrated"] = timed("predicting with the calibrated host model", lambda: _calibrated(
        vm, inputs, manifest, threads, step))
    return _with_estimates(manifest, graph, spec)


def _calibrated(vm: Any, inputs: list[np.ndarray], manifest: dict[str, Any], threads: int, step: Progress
                ) -> dict[str, Any]:
    """The calibrated host model's prediction for this build beside its measurement, in total, per kernel
    class and for the ten costliest kernels (measured per call by the VM's instrument)."""
    from codegen import calibrate, host
    from hwsim import hostmodel

    if not calibrate.enabled():
        return {"skipped": "HWSIM_CALIBRATE=0: the calibrated host model was not run"}
    cal = calibrate.cached(threads, step)
    census = manifest["census"]
    pred = hostmodel.predict(census, cal)
    measured_ms = manifest["latency"]["tvm"]["median_ms"]
    profile = host.profile_calls(vm, inputs)
    kernel_class = {k["name"]: k["class"] for k in census["kernels"]}

    def measured(name: str) -> float:
        return max(0.0, profile["us"].get(name, 0.0) - cal.instrument_us * profile["calls"].get(name, 0)) * 1e-3

    kernels: dict[str, dict[str, Any]] = {}
    for row in pred["kernels"]:
        k = kernels.setdefault(row["name"], {"name": row["name"], "class": row["class"], "calls": 0,
                                             "predicted_ms": 0.0, "measured_ms": measured(row["name"])})
        k["calls"] += row["calls"]
        k["predicted_ms"] += row["predicted_ms"]
    classes = {c: {"calls": sum(k["calls"] for k in kernels.values() if k["class"] == c),
                   "predicted_ms": round(pred["classes_ms"][c], 4),
                   "measured_ms": round(sum(k["measured_ms"] for k in kernels.values() if k["class"] == c), 4)}
               for c in hostmodel.CLASSES}
    classes["vm"] = {"calls": pred["vm_calls"], "predicted_ms": round(pred["vm_ms"], 4),
                     "measured_ms": round(sum(measured(n) for n in profile["us"] if n not in kernel_class), 4)}
    top = sorted(kernels.values(), key=lambda k: -k["measured_ms"])[:10]
    return {"provenance": "estimated", "model": "calibrated host model (hwsim/hostmodel.py)",
            "calibration": {"file": str(calibrate.cache_path(threads)), "cpu": cal.cpu, "threads": cal.threads,
                            "benchmarks": len(cal.benchmarks)},
            "median_ms": round(pred["median_ms"], 4),
            "predicted_over_measured": round(pred["median_ms"] / measured_ms, 3),
            "regime": pred["regime"], "weight_bytes": pred["weight_bytes"], "classes": classes,
            "kernels": [k | {"predicted_ms": round(k["predicted_ms"], 4), "measured_ms": round(k["measured_ms"], 4)}
                        for k in top],
            "measured_by": f"the VM's per-call instrument, mean of 3 runs, less its own {cal.instrument_us} us a call"}


def _host_latency(vm: Any, session: Any, names: list[str], inputs: list[np.ndarray], runs: int,
                  device: str, rounds: int = 5) -> dict[str, Any]:
    """The artifact and onnxruntime on the same inputs, the same number of runs, on the same number of threads
    (the session's), in alternating rounds: on a shared machine a burst of load from elsewhere then slows
    both alike instead of whichever ran during it. Each round's median is kept; the quietest round's is beside
    the median of all runs."""
    from codegen import host

    threads = session.get_session_options().intra_op_num_threads
    if host.runtime_threads() != threads:
        raise HwsimError(f"TVM's runtime runs {host.runtime_threads()} threads, onnxruntime {threads}: set "
                         f"TVM_NUM_THREADS={threads} so that both are timed on the same threads")
    tvm_rounds: list[list[float]] = []
    ort_rounds: list[list[float]] = []
    for _ in range(rounds):
        tvm_rounds.append(host.time_ms(vm, inputs, repeat=-(-runs // rounds), min_total_s=0.5 / rounds))
        ort_rounds.append(time_onnxruntime(session, names, inputs, len(tvm_rounds[-1])))
    tvm_ms, ort_ms = [t for r in tvm_rounds for t in r], [t for r in ort_rounds for t in r]
    return {"tvm": _latency(tvm_ms, device, tvm_rounds), "onnxruntime": _latency(ort_ms, device, ort_rounds),
            "tvm_over_onnxruntime": round(float(np.median(tvm_ms) / np.median(ort_ms)), 3)}


def _measure_pending(plan: BuildPlan, manifest: dict[str, Any], seed: int, runs: int) -> dict[str, Any]:
    """Time a host build made with `measure` False, and complete its manifest (written atomically)."""
    from codegen import host

    graph = import_graph(plan.src, {k: tuple(v) for k, v in plan.options["shapes"].items()})
    inputs = random_inputs(graph, seed)
    threads = int(host.tvm_target(plan.spec).attrs.get("num-cores", os.cpu_count() or 1))
    session = onnxruntime_session(plan.src.path, min(threads, os.cpu_count() or 1))
    t0 = time.perf_counter()
    lat = _host_latency(host.load(plan.out_dir / "model.so"), session, [v.name for v in graph.inputs], inputs, runs,
                        manifest["target"]["device"])
    manifest = {**manifest, "latency": lat}
    lat["calibrated"] = _calibrated(host.load(plan.out_dir / "model.so"), inputs, manifest, threads, lambda _: None)
    seconds = {**manifest["compile_seconds"], "measuring latency": round(time.perf_counter() - t0, 3)}
    manifest = _with_estimates({**manifest, "compile_seconds": seconds}, graph, plan.spec)
    write_atomic(plan.out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _with_estimates(manifest: dict[str, Any], graph: Graph, spec: Target, launches: int = 0) -> dict[str, Any]:
    """Add the roofline latency (beside a measurement, with their ratio) and the energy estimate."""
    est = roofline.estimate(graph, spec, launches)
    lat = manifest["latency"]
    lat["roofline"] = est
    if "tvm" in lat and est["median_ms"] > 0:
        lat["measured_over_estimated"] = float(f"{lat['tvm']['median_ms'] / est['median_ms']:.4g}")
    manifest["energy"] = {"provenance": "estimated", "model": est["model"], "assumptions": est["assumptions"],
                          "compute_pj": est["energy_pj"]["compute"], "memory_pj": est["energy_pj"]["memory"],
                          "table": est["energy_table"]}
    return manifest


def _common(graph: Graph, ir_text: str, timings: dict[str, float]) -> dict[str, Any]:
    """What every build's manifest says: tools, inputs, memory, IR."""
    return {
        "schema": MANIFEST_SCHEMA,
        "tools": tool_versions(),
        "inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype.value}
                   for v in graph.inputs],
        "memory": asdict(memory_report(graph)),
        "ir": {"file": "ir.txt", "sha256": sha256_text(ir_text), "nodes": len(graph.nodes),
               "ops": dict(sorted(Counter(n.op.name for n in graph.nodes).items())),
               "param_bytes": graph.param_bytes()},
        "compile_seconds": timings,
    }


def _manifest(graph: Graph, ir_text: str, mod: Any, lib: Path, spec: Target, tvm_target: Any,
              timings: dict[str, float]) -> dict[str, Any]:
    """A TVM build's manifest: the common part, the TVM target, the packed kernels and the library."""
    return {
        **_common(graph, ir_text, timings),
        "target": {"name": spec.name, "kind": spec.kind, "tvm": str(tvm_target)},
        "kernels": sorted(gv.name_hint for gv in mod.functions if "_accumulate_" in gv.name_hint),
        "artifacts": {"library": {"file": lib.name, "sha256": sha256_file(lib)},
                      "ir": {"file": "ir.txt", "sha256": sha256_text(ir_text)}},
    }


def _build_accel(src: ModelSource, graph: Graph, ir_text: str, spec: Target, tmp: Path, seed: int, rtol: float,
                 timings: dict[str, float], timed: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    """An accelerator target: the program, its simulation and its functional check (codegen/accel/build.py)."""
    from codegen.accel.build import build_accel

    inputs = random_inputs(graph, seed)
    feeds = {v.name: x for v, x in zip(graph.inputs, inputs, strict=True)}
    ref = timed("running the reference (onnxruntime)", lambda: reference(src.path, feeds, rtol, os.cpu_count() or 1))
    parts = build_accel(graph, spec, tmp, feeds, ref, seed, timed)
    manifest = {**_common(graph, ir_text, timings), **parts}
    manifest["artifacts"]["ir"] = {"file": "ir.txt", "sha256": sha256_text(ir_text)}
    return manifest


def _unverified_gpu_manifest(graph: Graph, ir_text: str, mod: Any, lib: Path, spec: Target, tvm_target: Any,
                             gpu_build: "cuda.GpuBuild", seed: int, rtol: float,
                             timings: dict[str, float]) -> dict[str, Any]:
    """No GPU here: the build and nvcc's PTX/cubin are the evidence; the latency is a roofline estimate."""
    manifest = _manifest(graph, ir_text, mod, lib, spec, tvm_target, timings)
    manifest["artifacts"].update(gpu_build.artifacts())
    manifest["device_kernels"] = gpu_build.kernels
    manifest["target"].update(arch=spec.tvm.arch, device=f"{spec.name} ({spec.description}); no CUDA GPU here")
    manifest["verification"] = {
        "reference": "onnxruntime", "executed_on": None, "seed": seed, "rtol": rtol, "passed": None, "outputs": [],
        "not_run": "no CUDA GPU on this machine: built by TVM and compiled by nvcc to PTX and cubin "
                   f"for {spec.tvm.arch} only; run the same command on a machine with a GPU to verify and time it"}
    manifest["latency"] = {}
    return _with_estimates(manifest, graph, spec, gpu_build.launches)


def _measure_remote(lib: Path, address: str, key: str | None, inputs: list[np.ndarray], ref: Reference,
                    spec: Target, runs: int, manifest: dict[str, Any],
                    timed: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    """Run the artifact on the RPC device: verify its outputs too, and time it there."""
    from codegen import rpc

    remote = timed("running over TVM RPC", lambda: rpc.run_remote(lib, address, inputs, key=key, repeat=runs))
    rows = verify_outputs(ref, remote.outputs, None, f"TVM build on {remote.device}")
    manifest["verification"]["remote"] = {"device": remote.device,
                                          "max_rel_err": max(r["max_rel_err"] for r in rows), "passed": True}
    device = f"{spec.name} via {remote.device}"
    manifest["target"]["device"] = device
    return {"tvm": {**_latency(remote.times_ms, device), "method": "TVM time_evaluator, mean of 5 runs per repeat"}}


def _latency(times_ms: list[float], device: str, rounds: list[list[float]] | None = None) -> dict[str, Any]:
    out = {"provenance": "measured", "device": device, "median_ms": round(float(np.median(times_ms)), 4),
           "min_ms": round(float(np.min(times_ms)), 4), "runs": len(times_ms)}
    if rounds:
        out["round_medians_ms"] = [round(float(np.median(r)), 4) for r in rounds]
        out["quietest_round_ms"] = min(out["round_medians_ms"])
    return out


@dataclass(frozen=True)
class InspectReport:
    name: str
    nodes: int
    ops: dict[str, int]
    param_bytes_by_dtype: dict[str, int]
    largest: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    layers: list[dict[str, Any]]  # format layers (ai.hwsim ops): lowered to accumulate ops, or why not
    weight_bytes_by_format: dict[str, int]
    peak_activation_bytes: int


def inspect_model(model: str | None = None, *, shapes: dict[str, tuple[int, ...]] | None = None,
                  top: int = 10, progress: Progress | None = None) -> InspectReport:
    """IR summary: ops by type, parameter bytes by dtype, the largest tensors."""
    src = resolve_model(model, progress)
    graph = import_graph(src, shapes)
    by_dtype: Counter[str] = Counter()
    for c in graph.constants():
        by_dtype[c.type.dtype.value] += c.type.nbytes
    values = sorted(graph.values(), key=lambda v: (-v.type.nbytes, v.name))[:top]
    memory = memory_report(graph)
    return InspectReport(
        name=src.name, nodes=len(graph.nodes),
        ops=dict(Counter(n.op.name for n in graph.nodes).most_common()),
        param_bytes_by_dtype=dict(by_dtype.most_common()),
        largest=[{"name": v.name, "type": str(v.type), "bytes": v.type.nbytes,
                  "kind": "constant" if v.is_const else "input" if v.producer is None else "activation"}
                 for v in values],
        inputs=[{"name": v.name, "type": str(v.type)} for v in graph.inputs],
        outputs=[{"name": v.name, "type": str(v.type)} for v in graph.outputs],
        layers=[{"name": layer.name, "op": layer.op_type, "lowered": layer.lowered, "status": layer.status}
                for layer in graph.layers],
        weight_bytes_by_format=memory.weight_bytes_by_format,
        peak_activation_bytes=memory.peak_activation_bytes,
    )
