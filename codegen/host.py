"""Build a Relax module for the host CPU with TVM's LLVM backend, run it on the Relax VM, time it."""

import os
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, topi
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight as dl

from codegen import census as census_pass
from codegen.schedules.cpu import Elementwise, Matmul
from codegen.schedules.guard import Guarded
from codegen.schedules.reduction import SharedRows, Staged
from targets import Target

# TVM's runtime sizes its thread pool, on first use, to half the logical CPUs unless TVM_NUM_THREADS says
# otherwise (it assumes two hardware threads per core): on a 2-vCPU machine without SMT every build ran on
# one thread, timed against onnxruntime on two. Every CPU the OS gives us is a core to use.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))


def runtime_threads() -> int:
    """The threads TVM's runtime runs parallel loops on in this process."""
    return int(tvm.get_global_func("runtime.NumThreads")())


def tvm_target(target: Target) -> tvm.target.Target:
    """The TVM target dict for a target spec; 'native' resolves to this machine's CPU name."""
    t = target.tvm
    spec: dict = {"kind": t.kind, "mcpu": tvm.target.codegen.llvm_get_system_cpu() if t.mcpu == "native"
                  else t.mcpu, "num-cores": t.num_cores or os.cpu_count() or 1}
    if t.mtriple:
        spec["mtriple"] = t.mtriple
    if t.mattr:
        spec["mattr"] = list(t.mattr)
    return tvm.target.Target(spec)


def cpu_pipeline(target: tvm.target.Target, census: list[dict] | None = None) -> tvm.transform.Pass:
    """TVM's CPU pipeline with dlight schedules after fusion, so matmuls and reductions are
    tiled, vectorised and parallel rather than the naive loops legalisation produces; exp, softmax, tanh,
    erf and sigmoid as TVM's polynomial fast_* forms first (FastMath). With `census`, the final module's
    kernel calls are appended to it (codegen/census.py)."""
    return tvm.transform.Sequential([
        FastMath(),
        *cpu_generic.library_dispatch_passes(target),
        *cpu_generic.legalize_passes(target),
        cpu_schedules(),
        *cpu_generic.dataflow_lower_passes(target),
        *cpu_generic.finalize_passes(target),
        *([census_pass.recorder(census)] if census is not None else []),
    ])


@relax.expr_functor.mutator
class _FastMath(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.sigmoid":
            return self.builder_.call_te(lambda x: 1.0 / (1.0 + topi.fast_exp(-x)), call.args[0])
        return call


@tvm.transform.module_pass(opt_level=0, name="FastMath")
class FastMath:
    """relax's FastMathTransform (exp, softmax, tanh, erf -> topi.fast_*), and sigmoid as 1 / (1 + fast_exp(-x)).

    LLVM has no vector expf: exp inside a vectorised loop becomes one libm call per element, so a prefill's
    SiLU (16 x 1536) took 100 us and the model's 30 of them 3 ms of 33 (SmolLM2, znver4). The polynomial
    forms vectorise; their error (~1e-7 relative, fp32's own) is far inside the verifier's tolerance, and
    onnxruntime (MLAS) and llama.cpp use vectorised approximations of their own."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = relax.transform.FastMathTransform()(mod)
        rewriter = _FastMath(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()


def cpu_schedules() -> tvm.transform.Pass:
    """The schedule rules, first match wins: GEMMs, GEMVs, row reductions, elementwise chains."""
    return dl.ApplyDefaultSchedule(Matmul(), Guarded(dl.cpu.GEMV()), Staged(), Guarded(SharedRows(dl.cpu.Reduction())),
                                   Elementwise())


def build(mod: tvm.IRModule, target: tvm.target.Target, census: list[dict] | None = None) -> relax.VMExecutable:
    with target:
        return tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, census))


def export(ex: relax.VMExecutable, path: Path) -> None:
    ex.export_library(str(path))


def load(path: Path) -> relax.VirtualMachine:
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu(0))


def run(vm: relax.VirtualMachine, inputs: list[np.ndarray], dev: tvm.runtime.Device | None = None
        ) -> list[np.ndarray]:
    """Run `main` on the inputs, copied to dev (the CPU unless given); outputs as numpy arrays."""
    dev = tvm.cpu(0) if dev is None else dev
    out = vm["main"](*[tvm.runtime.tensor(x, dev) for x in inputs])
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def time_ms(vm: relax.VirtualMachine, inputs: list[np.ndarray], repeat: int = 20,
            min_total_s: float = 0.5) -> list[float]:
    """Per-run wall times in ms: at least `repeat` runs and at least `min_total_s` seconds."""
    dev = tvm.cpu(0)
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    vm["main"](*args)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_total_s and len(times) < 10_000):
        t0 = time.perf_counter()
        vm["main"](*args)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def profile_calls(vm: relax.VirtualMachine, inputs: list[np.ndarray], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Wall time per run in each function the VM calls (kernels and builtins), by name, from the VM's
    instrument: us per run and calls per run. The instrument itself adds a few us to every call it times."""
    dev = tvm.cpu(0)
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    vm["main"](*args)
    us: dict[str, float] = {}
    calls: dict[str, float] = {}
    started: list[float] = []

    def instrument(_func: object, name: str, before: bool, _ret: object, *_args: object) -> int:
        if before:
            started.append(time.perf_counter())
        else:
            us[name] = us.get(name, 0.0) + (time.perf_counter() - started.pop()) * 1e6 / rounds
            calls[name] = calls.get(name, 0) + 1 / rounds
        return 0

    vm.set_instrument(instrument)
    try:
        for _ in range(rounds):
            vm["main"](*args)
    finally:
        vm.set_instrument(None)
    return {"us": us, "calls": {k: round(v, 3) for k, v in calls.items()}}
