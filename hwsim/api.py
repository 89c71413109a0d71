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
from hwsim import hosttiming, interp, roofline
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
from hwsim.passes import CPU_PIPELINE, DEFAULT_PIPELINE, run_pipeline
from hwsim.precision import RULE as VERIFICATION_RULE
from hwsim.precision import Reference, reference, verify_outputs
from hwsim.reference import random_inputs
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
    raises CachedFailure at once, unless `retry_failed`. A host build is timed after it is built, in fresh
    processes (measure_pending); with `measure` False it is built and verified but not timed (its manifest
    says the latency is pending): a matrix builds host jobs in parallel and times them all together later.
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
    if measure and spec.kind == "cpu" and not spec.tvm.mtriple and not rpc:
        hosttiming.passes()  # a bad HWSIM_TIMING_PASSES is an error now, not after the build
    plan = plan_build(model, target=target, shapes=shapes, out=out, seed=seed, rtol=rtol, runs=runs, rpc=rpc,
                      rpc_key=rpc_key, progress=step)
    src, out_dir = plan.src, plan.out_dir
    found = lookup(plan.out_dir, plan.key)
    if found is not None and found.get("status") != "failed":
        if measure and PENDING in found.get("latency", {}):
            return CompileResult(out_dir, _measured(plan, found, step), cached=True)
        return CompileResult(out_dir, found, cached=True)
    if found is not None and not retry_failed:
        raise CachedFailure(failure_line(found))
    if out_dir.exists() and not force:
        raise HwsimError(f"{out_dir} already exists and holds a different build: pass --force to replace it, "
                         "or choose another --out")
    try:
        with atomic_dir(out_dir, force=force) as tmp:
            manifest = _build(src, spec, shapes, tmp, seed=seed, rtol=rtol, runs=runs, rpc=rpc, rpc_key=rpc_key,
                              step=step)
            manifest.update(cache_key=plan.key, options=plan.options,
                            model={"name": src.name, "path": str(src.path), "builtin": src.builtin,
                                   "files": {f.name: h for f, h in plan.hashes.items()}})
            write_json(tmp / "manifest.json", manifest)
    except Exception as e:
        if record_failure and deterministic(e):
            record_failure_at(out_dir, plan.key, e, plan.options)
        raise
    if measure and PENDING in manifest.get("latency", {}):
        manifest = _measured(plan, manifest, step)
    return CompileResult(out_dir, manifest, cached=False)


def _for_target(graph: Graph, spec: Target) -> Graph:
    """The graph a target's code is generated from: CPU builds run CPU_PIPELINE on a clone (the manifest's
    IR, memory, roofline and the verifier's interpreter keep the imported graph)."""
    if spec.kind != "cpu":
        return graph
    lowered = graph.clone()
    run_pipeline(lowered, CPU_PIPELINE)
    return lowered


def _measured(plan: BuildPlan, manifest: dict[str, Any], step: Progress) -> dict[str, Any]:
    (got,) = measure_pending([(plan, manifest)], progress=step)
    if isinstance(got, HwsimError):
        raise got
    return got


def _build(src: ModelSource, spec: Target, shapes: dict[str, tuple[int, ...]] | None, tmp: Path, *,
           seed: int, rtol: float, runs: int, rpc: str | None, rpc_key: str | None, step: Progress
           ) -> dict[str, Any]:
    """Build and verify; a host build measured here is left pending (measure_pending times it afterwards)."""
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
    mod = timed("lowering to Relax", lambda: to_relax(_for_target(graph, spec), tvm_target))
    lib = tmp / "model.so"
    census: list[dict[str, Any]] = []
    threads = int(tvm_target.attrs.get("num-cores", os.cpu_count() or 1))
    inputs = random_inputs(graph, seed)
    names = [v.name for v in graph.inputs]
    feeds = dict(zip(names, inputs, strict=True))
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
    manifest["latency"] = {PENDING: "built and verified; timed later, alone on the machine"}
    return _with_estimates(manifest, graph, spec)


def _calibrated(profile: dict[str, dict[str, float]], manifest: dict[str, Any], threads: int, step: Progress
                ) -> dict[str, Any]:
    """The calibrated host model's prediction for this build beside its measurement, in total, per kernel
    class and for the ten costliest kernels (measured per call by the VM's instrument in a fresh process:
    `profile`, codegen.host.profile_calls)."""
    from codegen import calibrate
    from hwsim import hostmodel

    if not calibrate.enabled():
        return {"skipped": "HWSIM_CALIBRATE=0: the calibrated host model was not run"}
    cal = calibrate.cached(threads, step)
    census = manifest["census"]
    pred = hostmodel.predict(census, cal)
    measured_ms = manifest["latency"]["tvm"]["median_ms"]
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
            "measured_by": f"the VM's per-call instrument in a fresh process, mean of 3 runs, less its own "
                           f"{cal.instrument_us} us a call"}


def measure_pending(builds: list[tuple[BuildPlan, dict[str, Any]]], progress: Progress | None = None
                    ) -> list[dict[str, Any] | HwsimError]:
    """Time host builds made with `measure` False (see hwsim/hosttiming.py: fresh processes, several passes
    spread over all the builds, the quietest round, onnxruntime alike) and complete their manifests (each
    written atomically). Returns the manifests in order; a build that could not be timed stays pending and
    its error takes its place."""
    from codegen import calibrate, host

    if not builds:
        return []
    step = progress or (lambda _msg: None)
    jobs = []
    for plan, _ in builds:
        graph = import_graph(plan.src, {k: tuple(v) for k, v in plan.options["shapes"].items()})
        threads = int(host.tvm_target(plan.spec).attrs.get("num-cores", os.cpu_count() or 1))
        jobs.append(hosttiming.Job(plan.out_dir / "model.so", plan.src.path, [v.name for v in graph.inputs],
                                   random_inputs(graph, plan.options["seed"]), min(threads, os.cpu_count() or 1)))
    if calibrate.enabled():  # before the timing: a first calibration takes minutes and must run alone
        for threads in sorted({j.threads for j in jobs}):
            calibrate.cached(threads, step)
    t0, passes = time.perf_counter(), hosttiming.passes()
    timed = hosttiming.time_builds(jobs, runs=max(plan.options["runs"] for plan, _ in builds), passes=passes,
                                   progress=step)
    share = round((time.perf_counter() - t0) / len(builds), 3)
    out: list[dict[str, Any] | HwsimError] = []
    for (plan, manifest), job, got in zip(builds, jobs, timed, strict=True):
        if got.error:
            out.append(got.error)
            continue
        device = manifest["target"]["device"]
        method = hosttiming.describe(passes)
        lat = {"tvm": _host_figures(got.tvm, device, method),
               "onnxruntime": _host_figures(got.onnxruntime, device, method)}
        lat["tvm_over_onnxruntime"] = round(lat["tvm"]["median_ms"] / lat["onnxruntime"]["median_ms"], 3)
        lat["roofline"] = manifest["latency"]["roofline"]  # estimated when the build was made (_with_estimates)
        _beside_roofline(lat)
        seconds = {**manifest["compile_seconds"], "measuring latency": share}
        manifest = {**manifest, "latency": lat, "compile_seconds": seconds}
        lat["calibrated"] = _calibrated(got.profile, manifest, job.threads, step)
        write_atomic(plan.out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        out.append(manifest)
    return out


def _with_estimates(manifest: dict[str, Any], graph: Graph, spec: Target, launches: int = 0) -> dict[str, Any]:
    """Add the roofline latency (beside a measurement, with their ratio) and the energy estimate."""
    est = roofline.estimate(graph, spec, launches)
    manifest["latency"]["roofline"] = est
    _beside_roofline(manifest["latency"])
    manifest["energy"] = {"provenance": "estimated", "model": est["model"], "assumptions": est["assumptions"],
                          "compute_pj": est["energy_pj"]["compute"], "memory_pj": est["energy_pj"]["memory"],
                          "table": est["energy_table"]}
    return manifest


def _beside_roofline(lat: dict[str, Any]) -> None:
    """The measured latency over the roofline's, where both are there."""
    if "tvm" in lat and lat["roofline"]["median_ms"] > 0:
        lat["measured_over_estimated"] = float(f"{lat['tvm']['median_ms'] / lat['roofline']['median_ms']:.4g}")


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
        "kernels": sorted(gv.name_hint for gv in mod.functions
                          if "_accumulate_" in gv.name_hint or gv.name_hint.startswith("dense_q8_0_")),
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


def _latency(times_ms: list[float], device: str) -> dict[str, Any]:
    return {"provenance": "measured", "device": device, "median_ms": round(float(np.median(times_ms)), 4),
            "min_ms": round(float(np.min(times_ms)), 4), "runs": len(times_ms)}


def _host_figures(rounds: list[list[float]], device: str, method: str) -> dict[str, Any]:
    """A host build's figure is its quietest round's median (hwsim/hosttiming.py says why); every round's
    median and the median of all runs stay beside it."""
    medians = [round(float(np.median(r)), 4) for r in rounds]
    runs = [t for r in rounds for t in r]
    return {**_latency(runs, device), "median_ms": min(medians), "all_runs_median_ms": round(float(np.median(runs)), 4),
            "round_medians_ms": medians, "method": method}


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
